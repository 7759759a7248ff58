//! A minimal DNS client for the tests: a query builder ([`Q`]), UDP and TCP exchanges, and
//! a response parser ([`Msg`]) that checks every record fits its message.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

pub fn udp_exchange(addr: SocketAddr, q: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    // From the address family's wildcard, so that the kernel picks the source address of
    // the route (loopback, or a veth in the XDP tests).
    let s = UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.send_to(q, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    match s.recv(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

pub fn tcp_send(s: &mut TcpStream, q: &[u8]) {
    let mut b = (q.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(q);
    s.write_all(&b).unwrap();
}

pub fn tcp_recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut l = [0u8; 2];
    s.read_exact(&mut l).ok()?;
    let mut b = vec![0u8; u16::from_be_bytes(l) as usize];
    s.read_exact(&mut b).ok()?;
    Some(b)
}

/// Wire-format name from "a.b.c" (case kept).
pub fn wire(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

/// (payload, version, DO, options) of a query's OPT.
pub type EdnsSpec = (u16, u8, bool, Vec<(u16, Vec<u8>)>);

/// A query under construction.
#[derive(Clone)]
pub struct Q {
    pub id: u16,
    pub flags: u16,
    pub name: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<EdnsSpec>,
    pub extra_ar: Vec<Vec<u8>>,
    pub counts_override: Option<[u16; 4]>,
}

impl Q {
    pub fn new(name: &str, qtype: u16) -> Self {
        Self {
            id: 0xBEEF,
            flags: 0x0100,
            name: wire(name),
            qtype,
            qclass: 1,
            edns: None,
            extra_ar: Vec::new(),
            counts_override: None,
        }
    }
    pub fn edns(mut self, payload: u16) -> Self {
        self.edns = Some((payload, 0, false, Vec::new()));
        self
    }
    pub fn opt(mut self, code: u16, data: &[u8]) -> Self {
        self.edns
            .as_mut()
            .expect("edns first")
            .3
            .push((code, data.to_vec()));
        self
    }
    pub fn ecs(self, family: u16, source: u8, scope: u8, addr: &[u8]) -> Self {
        let mut d = family.to_be_bytes().to_vec();
        d.push(source);
        d.push(scope);
        d.extend_from_slice(addr);
        self.opt(8, &d)
    }
    pub fn build(&self) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.flags.to_be_bytes());
        let ar = self.edns.is_some() as u16 + self.extra_ar.len() as u16;
        let counts = self.counts_override.unwrap_or([1, 0, 0, ar]);
        for c in counts {
            p.extend_from_slice(&c.to_be_bytes());
        }
        p.extend_from_slice(&self.name);
        p.extend_from_slice(&self.qtype.to_be_bytes());
        p.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some((payload, version, dnssec_ok, opts)) = &self.edns {
            p.push(0);
            p.extend_from_slice(&41u16.to_be_bytes());
            p.extend_from_slice(&payload.to_be_bytes());
            p.push(0);
            p.push(*version);
            p.push(if *dnssec_ok { 0x80 } else { 0 });
            p.push(0);
            let mut rd = Vec::new();
            for (c, d) in opts {
                rd.extend_from_slice(&c.to_be_bytes());
                rd.extend_from_slice(&(d.len() as u16).to_be_bytes());
                rd.extend_from_slice(d);
            }
            p.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            p.extend_from_slice(&rd);
        }
        for r in &self.extra_ar {
            p.extend_from_slice(r);
        }
        p
    }
}

/// One parsed resource record.
#[derive(Debug, Clone)]
pub struct Rr {
    pub name: String,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
    /// Decoded data for common types (address, name, SOA fields).
    pub data: String,
    /// The record data in presentation format ([`rdata_text`]).
    pub text: String,
}

impl Rr {
    /// The whole record in presentation format: `owner TTL CLASS TYPE data`.
    pub fn show(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.name,
            self.ttl,
            class_name(self.class),
            type_name(self.rtype),
            self.text
        )
        .trim_end()
        .to_string()
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Msg {
    pub raw: Vec<u8>,
    pub id: u16,
    pub flags: u16,
    pub counts: [u16; 4],
    pub question_raw: Vec<u8>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
}

impl Msg {
    pub fn rcode(&self) -> u16 {
        let ext = self.opt().map_or(0, |o| (o.ttl >> 24) as u16);
        (ext << 4) | (self.flags & 0xF)
    }
    pub fn aa(&self) -> bool {
        self.flags & 0x0400 != 0
    }
    pub fn tc(&self) -> bool {
        self.flags & 0x0200 != 0
    }
    pub fn opt(&self) -> Option<&Rr> {
        self.additional.iter().find(|r| r.rtype == 41)
    }
    /// The data of every EDNS option of the OPT with code `code`.
    pub fn options(&self, code: u16) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let Some(o) = self.opt() else { return out };
        let rd = &o.rdata;
        let mut i = 0;
        while i + 4 <= rd.len() {
            let c = u16::from_be_bytes([rd[i], rd[i + 1]]);
            let l = u16::from_be_bytes([rd[i + 2], rd[i + 3]]) as usize;
            if c == code {
                out.push(rd[i + 4..i + 4 + l].to_vec());
            }
            i += 4 + l;
        }
        assert_eq!(i, rd.len(), "OPT options overrun its RDATA");
        out
    }
    /// The one option `code`, if present.
    pub fn option(&self, code: u16) -> Option<Vec<u8>> {
        let mut v = self.options(code);
        assert!(v.len() <= 1, "option {code} twice");
        v.pop()
    }
    /// Data of the answer records of type `t`, sorted.
    pub fn answers(&self, t: u16) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == t)
            .map(|r| r.data.clone())
            .collect();
        v.sort();
        v
    }

    pub fn parse(b: &[u8]) -> Self {
        let be = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let counts = [be(4), be(6), be(8), be(10)];
        let mut pos = 12;
        let qstart = pos;
        for _ in 0..counts[0] {
            let (_, p) = read_name(b, pos);
            pos = p + 4;
        }
        let question_raw = b[qstart..pos].to_vec();
        let mut secs = [Vec::new(), Vec::new(), Vec::new()];
        for (s, sec) in secs.iter_mut().enumerate() {
            for _ in 0..counts[s + 1] {
                let (name, p) = read_name(b, pos);
                let rtype = be(p);
                let class = be(p + 2);
                let ttl = u32::from_be_bytes([b[p + 4], b[p + 5], b[p + 6], b[p + 7]]);
                let len = be(p + 8) as usize;
                let rd = p + 10;
                let rdata = b[rd..rd + len].to_vec();
                let data = match rtype {
                    1 => format!("{}.{}.{}.{}", rdata[0], rdata[1], rdata[2], rdata[3]),
                    28 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&rdata[..]).unwrap())
                        .to_string(),
                    2 | 5 | 12 => read_name(b, rd).0,
                    6 => {
                        let (m, p1) = read_name(b, rd);
                        let (r, p2) = read_name(b, p1);
                        let mut t = Vec::new();
                        for k in 0..5 {
                            let o = p2 + 4 * k;
                            t.push(
                                u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
                                    .to_string(),
                            );
                        }
                        format!("{m} {r} {}", t.join(" "))
                    }
                    15 => format!("{} {}", be(rd), read_name(b, rd + 2).0),
                    16 | 13 => {
                        let mut s = Vec::new();
                        let mut i = 0;
                        while i < rdata.len() {
                            let l = rdata[i] as usize;
                            s.push(String::from_utf8_lossy(&rdata[i + 1..i + 1 + l]).to_string());
                            i += 1 + l;
                        }
                        s.join(" ")
                    }
                    _ => format!("{rdata:?}"),
                };
                let text = rdata_text(b, rtype, rd, len);
                sec.push(Rr {
                    name,
                    rtype,
                    class,
                    ttl,
                    rdata,
                    data,
                    text,
                });
                pos = rd + len;
            }
        }
        assert_eq!(pos, b.len(), "trailing bytes in response");
        let [answer, authority, additional] = secs;
        Self {
            raw: b.to_vec(),
            id: be(0),
            flags: be(2),
            counts,
            question_raw,
            answer,
            authority,
            additional,
        }
    }
}

/// Reads a possibly compressed name (case kept), returns it and the position after it.
pub fn read_name(b: &[u8], mut pos: usize) -> (String, usize) {
    let mut out = String::new();
    let mut end = None;
    let mut hops = 0;
    loop {
        let l = b[pos] as usize;
        if l == 0 {
            pos += 1;
            break;
        }
        if l >= 0xC0 {
            let t = ((l & 0x3F) << 8) | b[pos + 1] as usize;
            assert!(t < pos, "compression pointer must point backwards");
            if end.is_none() {
                end = Some(pos + 2);
            }
            pos = t;
            hops += 1;
            assert!(hops < 64);
            continue;
        }
        out.push_str(&String::from_utf8_lossy(&b[pos + 1..pos + 1 + l]));
        out.push('.');
        pos += 1 + l;
    }
    if out.is_empty() {
        out.push('.');
    }
    (out, end.unwrap_or(pos))
}

/// Record data in presentation format, names absolute and in the case sent: A, AAAA, NS,
/// CNAME, PTR, DNAME, SOA, MX, TXT, SRV, DS, CAA, TSIG (algorithm, time signed, fudge, MAC
/// in hex or `-`, original ID, error, other data in hex or `-`); any other type, and data
/// that does not fit its type, in RFC 3597's generic form `\# LENGTH HEX`.
pub fn rdata_text(b: &[u8], rtype: u16, rd: usize, len: usize) -> String {
    let data = &b[rd..rd + len];
    let be16 = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let end = rd + len;
    // A name in the data: read within the message, and must end inside the data.
    let name = |at: usize| {
        let (n, next) = read_name(b, at);
        (next <= end).then_some((n, next))
    };
    let text = (|| -> Option<String> {
        Some(match rtype {
            1 if len == 4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?).to_string(),
            28 if len == 16 => {
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?).to_string()
            }
            2 | 5 | 12 | 39 => {
                let (n, next) = name(rd)?;
                (next == end).then_some(n)?
            }
            6 => {
                let (m, p1) = name(rd)?;
                let (r, p2) = name(p1)?;
                (p2 + 20 == end).then_some(())?;
                let t: Vec<String> = (0..5).map(|k| be32(p2 + 4 * k).to_string()).collect();
                format!("{m} {r} {}", t.join(" "))
            }
            15 if len >= 3 => {
                let (n, next) = name(rd + 2)?;
                (next == end).then_some(())?;
                format!("{} {n}", be16(rd))
            }
            16 => {
                let mut parts = Vec::new();
                let mut i = 0;
                while i < len {
                    let l = data[i] as usize;
                    parts.push(quoted(data.get(i + 1..i + 1 + l)?));
                    i += 1 + l;
                }
                parts.join(" ")
            }
            33 if len >= 7 => {
                let (n, next) = name(rd + 6)?;
                (next == end).then_some(())?;
                format!("{} {} {} {n}", be16(rd), be16(rd + 2), be16(rd + 4))
            }
            43 if len >= 4 => format!(
                "{} {} {} {}",
                be16(rd),
                data[2],
                data[3],
                hex(&data[4..]).to_uppercase()
            ),
            257 if len >= 2 => {
                let tl = data[1] as usize;
                let tag = data.get(2..2 + tl)?;
                format!(
                    "{} {} {}",
                    data[0],
                    String::from_utf8_lossy(tag),
                    quoted(&data[2 + tl..])
                )
            }
            250 => {
                let (alg, p) = name(rd)?;
                (p + 10 <= end).then_some(())?;
                let time = (u64::from(be16(p)) << 32) | u64::from(be32(p + 2));
                let fudge = be16(p + 6);
                let mac_len = be16(p + 8) as usize;
                let m = p + 10;
                (m + mac_len + 6 <= end).then_some(())?;
                let (orig, error, other_len) = (
                    be16(m + mac_len),
                    be16(m + mac_len + 2),
                    be16(m + mac_len + 4),
                );
                let o = m + mac_len + 6;
                (o + other_len as usize == end).then_some(())?;
                let or_dash = |d: &[u8]| {
                    if d.is_empty() {
                        "-".to_string()
                    } else {
                        hex(d)
                    }
                };
                format!(
                    "{alg} {time} {fudge} {} {orig} {} {}",
                    or_dash(&b[m..m + mac_len]),
                    tsig_error_name(error),
                    or_dash(&b[o..end])
                )
            }
            _ => return None,
        })
    })();
    text.unwrap_or_else(|| format!("\\# {len} {}", hex(data)).trim_end().to_string())
}

/// Lowercase hex of `d`, no separators.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A character-string in presentation format: quoted, `"` and `\` escaped, octets outside
/// printable ASCII as `\DDD`.
fn quoted(d: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in d {
        match c {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(c as char);
            }
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\{c:03}")),
        }
    }
    s.push('"');
    s
}

const TYPES: [(u16, &str); 27] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (13, "HINFO"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (35, "NAPTR"),
    (39, "DNAME"),
    (41, "OPT"),
    (43, "DS"),
    (44, "SSHFP"),
    (46, "RRSIG"),
    (47, "NSEC"),
    (48, "DNSKEY"),
    (65, "HTTPS"),
    (249, "TKEY"),
    (250, "TSIG"),
    (251, "IXFR"),
    (252, "AXFR"),
    (253, "MAILB"),
    (254, "MAILA"),
    (255, "ANY"),
    (257, "CAA"),
];
const CLASSES: [(u16, &str); 5] = [(1, "IN"), (3, "CH"), (4, "HS"), (254, "NONE"), (255, "ANY")];
const RCODES: [(u16, &str); 15] = [
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (6, "YXDOMAIN"),
    (7, "YXRRSET"),
    (8, "NXRRSET"),
    (9, "NOTAUTH"),
    (10, "NOTZONE"),
    (16, "BADVERS"),
    (17, "BADKEY"),
    (18, "BADTIME"),
    (23, "BADCOOKIE"),
];
const OPCODES: [(u16, &str); 5] = [
    (0, "QUERY"),
    (1, "IQUERY"),
    (2, "STATUS"),
    (4, "NOTIFY"),
    (5, "UPDATE"),
];

fn name_of(table: &[(u16, &str)], prefix: &str, v: u16) -> String {
    table
        .iter()
        .find(|(c, _)| *c == v)
        .map_or_else(|| format!("{prefix}{v}"), |(_, n)| n.to_string())
}

/// `name` (any case) in `table`, `PREFIXnnn` or a bare number.
fn code_of(table: &[(u16, &str)], prefix: &str, name: &str) -> Option<u16> {
    let up = name.to_ascii_uppercase();
    if let Some((c, _)) = table.iter().find(|(_, n)| *n == up) {
        return Some(*c);
    }
    up.strip_prefix(prefix).unwrap_or(&up).parse().ok()
}

pub fn type_name(t: u16) -> String {
    name_of(&TYPES, "TYPE", t)
}
pub fn type_code(name: &str) -> Option<u16> {
    code_of(&TYPES, "TYPE", name)
}
pub fn class_name(c: u16) -> String {
    name_of(&CLASSES, "CLASS", c)
}
pub fn class_code(name: &str) -> Option<u16> {
    code_of(&CLASSES, "CLASS", name)
}
pub fn rcode_name(r: u16) -> String {
    name_of(&RCODES, "RCODE", r)
}
pub fn rcode_code(name: &str) -> Option<u16> {
    code_of(&RCODES, "RCODE", name)
}
pub fn opcode_name(o: u16) -> String {
    name_of(&OPCODES, "OPCODE", o)
}
pub fn opcode_code(name: &str) -> Option<u16> {
    code_of(&OPCODES, "OPCODE", name)
}

/// The error field of a TSIG (RFC 8945 3: 16 is BADSIG there, not BADVERS).
fn tsig_error_name(e: u16) -> String {
    match e {
        16 => "BADSIG".into(),
        22 => "BADTRUNC".into(),
        _ => rcode_name(e),
    }
}
