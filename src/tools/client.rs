//! The DNS client of the operator tools: one question, with an optional EDNS Client Subnet,
//! to one server; over UDP with a timeout and retries, then over TCP when the answer comes
//! back truncated (or at once, when asked). Messages are built and parsed with NLnet Labs'
//! `domain`, so records are shown in their presentation format whatever their type.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};

use domain::base::message::RecordSection;
use domain::base::wire::ParseError;
use domain::base::{Message, MessageBuilder, Name, ParsedName, Rtype};
use domain::rdata::AllRecordData;

/// How to ask.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long to wait for each UDP attempt, and for a TCP exchange.
    pub timeout: Duration,
    /// UDP attempts after the first.
    pub retries: u32,
    /// TCP from the start.
    pub tcp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            retries: 2,
            tcp: false,
        }
    }
}

/// An EDNS Client Subnet to send: the network and its source prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ecs {
    /// Network address (the bits past `len` are zero).
    pub addr: IpAddr,
    /// Source prefix length.
    pub len: u8,
}

impl std::fmt::Display for Ecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Ecs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One record in presentation form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Rr {
    /// Owner, lowercased, absolute (`www.example.test.`).
    pub name: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Type mnemonic (`A`, `TYPE65280`).
    #[serde(rename = "type")]
    pub rtype: String,
    /// Record data in presentation form.
    pub data: String,
}

impl Rr {
    /// The record without its TTL: what two answers are compared by.
    pub fn key(&self) -> (String, String, String) {
        (self.name.clone(), self.rtype.clone(), self.data.clone())
    }
}

/// A reply, parsed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reply {
    /// RCODE mnemonic, extended bits included (`NOERROR`, `NXDOMAIN`, `BADVERS`).
    pub rcode: String,
    /// AA flag.
    pub aa: bool,
    /// The answer section.
    pub answer: Vec<Rr>,
    /// The authority section.
    pub authority: Vec<Rr>,
    /// The ECS scope prefix length of the reply's ECS option, if it carried one.
    pub scope: Option<u8>,
    /// `udp` or `tcp` (the transport of the reply kept).
    pub transport: &'static str,
    /// Round trip of the exchange that gave this reply, in milliseconds.
    pub ms: f64,
}

/// `ADDR[:PORT]` (port 53 when left out; `[v6]:port` or a bare IPv6 address).
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("'{s}' is not ADDR[:PORT] (e.g. 127.0.0.1:5300, [::1]:53)"))
}

/// A record type by mnemonic or `TYPEnn`.
pub fn parse_type(s: &str) -> Result<u16, String> {
    Rtype::from_str(&s.to_ascii_uppercase())
        .map(|t| t.to_int())
        .map_err(|_| format!("'{s}' is not a record type (A, AAAA, MX, TYPE65280, ...)"))
}

/// A record type's mnemonic.
pub fn type_name(t: u16) -> String {
    Rtype::from_int(t).to_string()
}

/// A prefix to send as ECS: `ADDR/LEN`, or a bare address (/32, /128).
pub fn parse_prefix(s: &str) -> Result<Ecs, String> {
    let net = match s.parse::<ipnet::IpNet>() {
        Ok(n) => n.trunc(),
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => ipnet::IpNet::from(ip),
            Err(_) => return Err(format!("'{s}' is not an address or a prefix (ADDR/LEN)")),
        },
    };
    Ok(Ecs {
        addr: net.network(),
        len: net.prefix_len(),
    })
}

/// An absolute name in presentation form (a trailing dot added when missing).
pub fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_ascii_lowercase()
    } else {
        format!("{}.", name.to_ascii_lowercase())
    }
}

/// The query message: RD clear, EDNS (1232 octets) with the ECS option when given.
pub fn query(name: &str, qtype: u16, ecs: Option<&Ecs>, id: u16) -> Result<Vec<u8>, String> {
    let qname = Name::<Vec<u8>>::from_str(name)
        .map_err(|e| format!("'{name}' is not a domain name: {e}"))?;
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(id);
    let mut b = b.question();
    b.push((&qname, Rtype::from_int(qtype)))
        .map_err(|e| format!("cannot build the query: {e}"))?;
    let mut b = b.additional();
    b.opt(|o| {
        o.set_udp_payload_size(1232);
        if let Some(e) = ecs {
            o.client_subnet(e.len, 0, e.addr)?;
        }
        Ok(())
    })
    .map_err(|e| format!("cannot build the query: {e}"))?;
    Ok(b.finish())
}

/// Parses a reply into presentation-form records.
pub fn parse_reply(bytes: &[u8], transport: &'static str, ms: f64) -> Result<Reply, String> {
    let msg = Message::from_octets(bytes.to_vec())
        .map_err(|_| "reply shorter than a header".to_string())?;
    let answer = section(msg.answer())?;
    let authority = section(msg.authority())?;
    let scope = msg
        .opt()
        .and_then(|o| o.opt().client_subnet())
        .map(|c| c.scope_prefix_len());
    Ok(Reply {
        rcode: msg.opt_rcode().to_string(),
        aa: msg.header().aa(),
        answer,
        authority,
        scope,
        transport,
        ms,
    })
}

/// The records of one section (an OPT left out).
fn section(s: Result<RecordSection<'_, Vec<u8>>, ParseError>) -> Result<Vec<Rr>, String> {
    let s = s.map_err(|e| format!("malformed reply: {e}"))?;
    let mut out = Vec::new();
    for rr in s {
        let rr = rr.map_err(|e| format!("malformed reply: {e}"))?;
        if rr.rtype() == Rtype::OPT {
            continue;
        }
        let rec = rr
            .to_record::<AllRecordData<&[u8], ParsedName<&[u8]>>>()
            .map_err(|e| format!("malformed record in reply: {e}"))?;
        if let Some(rec) = rec {
            out.push(Rr {
                name: absolute(&rec.owner().to_string()),
                ttl: rec.ttl().as_secs(),
                rtype: rec.rtype().to_string(),
                data: rec.data().to_string(),
            });
        }
    }
    Ok(out)
}

/// A random message ID.
fn random_id() -> u16 {
    let mut b = [0u8; 2];
    if crate::sys::fill_random(&mut b).is_err() {
        // The clock's low bits will do for matching a reply to a question.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        return n as u16;
    }
    u16::from_ne_bytes(b)
}

/// Asks `server` one question: UDP (retried), TCP when truncated or when `opts.tcp`.
pub fn ask(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    ecs: Option<&Ecs>,
    opts: &Options,
) -> Result<Reply, String> {
    let id = random_id();
    let q = query(name, qtype, ecs, id)?;
    if !opts.tcp {
        let t0 = Instant::now();
        let bytes = udp(server, &q, opts)?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        // TC: the whole answer over TCP (RFC 7766).
        if bytes.len() < 3 || bytes[2] & 0x02 == 0 {
            return parse_reply(&bytes, "udp", ms);
        }
    }
    let t0 = Instant::now();
    let bytes = tcp(server, &q, opts.timeout)?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    parse_reply(&bytes, "tcp", ms)
}

/// Whether `reply` answers `q`: the same ID and question (names compared without case).
fn answers(q: &[u8], reply: &[u8]) -> bool {
    let qe = question_end(q);
    reply.len() >= qe
        && qe > 12
        && reply[..2] == q[..2]
        && reply[2] & 0x80 != 0
        && reply[4..6] == q[4..6]
        && reply[12..qe].eq_ignore_ascii_case(&q[12..qe])
}

/// The end of a query's question section (the OPT follows it).
fn question_end(q: &[u8]) -> usize {
    let mut i = 12;
    while i < q.len() && q[i] != 0 {
        i += 1 + q[i] as usize;
    }
    (i + 5).min(q.len())
}

fn udp(server: SocketAddr, q: &[u8], opts: &Options) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let err = |e: std::io::Error| format!("{server}: {e}");
    let sock = UdpSocket::bind(local).map_err(err)?;
    sock.connect(server).map_err(err)?;
    let mut buf = vec![0u8; 65535];
    for _ in 0..=opts.retries {
        sock.send(q).map_err(err)?;
        let deadline = Instant::now() + opts.timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).map_err(err)?;
            match sock.recv(&mut buf) {
                Ok(n) if answers(q, &buf[..n]) => return Ok(buf[..n].to_vec()),
                Ok(_) => continue, // a late reply to an earlier try, or noise
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(format!(
                        "{server}: nothing listens there (connection refused)"
                    ))
                }
                Err(_) => break,
            }
        }
    }
    Err(format!(
        "{server}: no answer over UDP after {} tries of {:?}",
        opts.retries + 1,
        opts.timeout
    ))
}

fn tcp(server: SocketAddr, q: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let err = |e: std::io::Error| format!("{server} (TCP): {e}");
    let mut s = TcpStream::connect_timeout(&server, timeout).map_err(err)?;
    s.set_read_timeout(Some(timeout)).map_err(err)?;
    s.set_write_timeout(Some(timeout)).map_err(err)?;
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(q);
    s.write_all(&msg).map_err(err)?;
    loop {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(err)?;
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut reply).map_err(err)?;
        if answers(q, &reply) {
            return Ok(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_prefixes_and_types() {
        assert_eq!(
            parse_server("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(parse_server("[::1]:5300").unwrap().port(), 5300);
        assert_eq!(parse_server("::1").unwrap().port(), 53);
        assert!(parse_server("example.test").is_err());
        assert_eq!(
            parse_prefix("198.51.100.7/24").unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(parse_prefix("2001:db8::1").unwrap().len, 128);
        assert_eq!(parse_type("aaaa").unwrap(), 28);
        assert_eq!(parse_type("TYPE65280").unwrap(), 65280);
        assert_eq!(type_name(33), "SRV");
        assert!(parse_type("NOPE").is_err());
    }

    #[test]
    fn a_query_round_trips_through_the_parser() {
        let ecs = parse_prefix("192.0.2.0/24").unwrap();
        let q = query("www.example.test", 1, Some(&ecs), 7).unwrap();
        assert_eq!(&q[..2], &[0, 7]);
        assert_eq!(q[2] & 0x01, 0, "RD clear");
        assert!(answers(&q, &{
            let mut r = q.clone();
            r[2] |= 0x80;
            r
        }));
        let r = parse_reply(&q, "udp", 0.0).unwrap();
        assert_eq!(r.scope, Some(0));
        assert!(r.answer.is_empty());
    }
}
