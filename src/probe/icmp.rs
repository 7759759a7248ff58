//! ICMP echo for ping checks: one socket per address family shared by every ping check.
//! A raw socket (CAP_NET_RAW) where we may open one; otherwise an unprivileged ping socket
//! (SOCK_DGRAM/ICMP, allowed by `net.ipv4.ping_group_range`), whose identifier the kernel
//! chooses and whose replies it delivers to us alone. Replies are matched to checks by
//! sequence number (and, on raw sockets, by our identifier) and source address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tracing::{info, warn};

/// Which kind of socket a family got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Dgram,
}

struct Sock {
    source: Option<IpAddr>,
    v6: bool,
    sock: Socket,
    kind: Kind,
}

pub(super) struct Icmp {
    /// One socket per (vantage point, family), opened on first use.
    socks: Vec<Sock>,
    /// (source, family) pairs that could not be opened (logged once).
    failed: Vec<(Option<IpAddr>, bool)>,
    /// Sockets already handed to the poller.
    registered: usize,
    ident: u16,
    seq: u16,
    /// seq -> (task, sent at, target)
    pending: HashMap<u16, (usize, Instant, IpAddr)>,
}

fn open(domain: Domain, proto: Protocol, source: Option<IpAddr>) -> Option<(Socket, Kind)> {
    for (ty, kind) in [(Type::RAW, Kind::Raw), (Type::DGRAM, Kind::Dgram)] {
        if let Ok(s) = Socket::new(domain, ty, Some(proto)) {
            let bound = source.is_none_or(|src| s.bind(&SocketAddr::new(src, 0).into()).is_ok());
            if bound && s.set_nonblocking(true).is_ok() {
                return Some((s, kind));
            }
        }
    }
    None
}

impl Icmp {
    /// No sockets yet: each (vantage point, family) gets one on first use.
    pub(super) fn new() -> Self {
        Self {
            socks: Vec::new(),
            failed: Vec::new(),
            registered: 0,
            ident: (std::process::id() & 0xFFFF) as u16,
            seq: 0,
            pending: HashMap::new(),
        }
    }

    /// Sockets opened since the last call, with their index, for the poller.
    pub(super) fn new_fds(&mut self) -> Vec<(usize, RawFd)> {
        let v: Vec<(usize, RawFd)> = self
            .socks
            .iter()
            .enumerate()
            .skip(self.registered)
            .map(|(i, s)| (i, s.sock.as_raw_fd()))
            .collect();
        self.registered = self.socks.len();
        v
    }

    /// Whether echo requests can be sent from `source` in this family (the socket is
    /// opened now when it was not).
    pub(super) fn usable(&mut self, source: Option<IpAddr>, v6: bool) -> bool {
        self.socket(source, v6).is_some()
    }

    fn socket(&mut self, source: Option<IpAddr>, v6: bool) -> Option<usize> {
        if let Some(i) = self
            .socks
            .iter()
            .position(|s| s.source == source && s.v6 == v6)
        {
            return Some(i);
        }
        if self.failed.contains(&(source, v6)) {
            return None;
        }
        let (domain, proto, fam) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6, "IPv6")
        } else {
            (Domain::IPV4, Protocol::ICMPV4, "IPv4")
        };
        let src = source.map(|s| s.to_string()).unwrap_or_default();
        match open(domain, proto, source) {
            Some((sock, kind)) => {
                match kind {
                    Kind::Raw => {
                        info!(family = fam, source = %src, "ping checks use a raw ICMP socket")
                    }
                    Kind::Dgram => info!(
                        family = fam,
                        source = %src,
                        "ping checks use an unprivileged ICMP socket (no CAP_NET_RAW)"
                    ),
                }
                self.socks.push(Sock {
                    source,
                    v6,
                    sock,
                    kind,
                });
                Some(self.socks.len() - 1)
            }
            None => {
                warn!(
                    family = fam,
                    source = %src,
                    "ping checks cannot run: no raw socket (CAP_NET_RAW), ping sockets not allowed \
                     (net.ipv4.ping_group_range), or the source address is not local"
                );
                self.failed.push((source, v6));
                None
            }
        }
    }

    /// Sends `count` echo requests to `target` for task `task`; returns how many went out.
    pub(super) fn send(
        &mut self,
        task: usize,
        source: Option<IpAddr>,
        target: IpAddr,
        count: u32,
    ) -> Result<u32, String> {
        let v6 = target.is_ipv6();
        let i = self
            .socket(source, v6)
            .ok_or_else(|| "no ICMP socket for this family".to_string())?;
        let (sock, kind) = (&self.socks[i].sock, self.socks[i].kind);
        let mut sent = 0;
        for _ in 0..count {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let mut pkt = [0u8; 16];
            pkt[0] = if v6 { 128 } else { 8 };
            pkt[4..6].copy_from_slice(&self.ident.to_be_bytes());
            pkt[6..8].copy_from_slice(&seq.to_be_bytes());
            pkt[8..16].copy_from_slice(b"gtmd-hc\0");
            if !v6 && kind == Kind::Raw {
                let c = checksum(&pkt);
                pkt[2..4].copy_from_slice(&c.to_be_bytes());
            }
            // ICMPv6 checksums are filled in by the kernel (IPV6_CHECKSUM), as are the
            // identifier and checksum of ping sockets.
            let to = SockAddr::from(SocketAddr::new(target, 0));
            match sock.send_to(&pkt, &to) {
                Ok(_) => {
                    self.pending.insert(seq, (task, Instant::now(), target));
                    sent += 1;
                }
                Err(e) => {
                    return if sent > 0 {
                        Ok(sent)
                    } else {
                        Err(format!("send: {e}"))
                    }
                }
            }
        }
        Ok(sent)
    }

    /// Forgets the outstanding requests of `task` (its check ended).
    pub(super) fn forget(&mut self, task: usize) {
        self.pending.retain(|_, (t, _, _)| *t != task);
    }

    /// Forgets every outstanding request (a reload renumbers the checks).
    pub(super) fn forget_all(&mut self) {
        self.pending.clear();
    }

    /// Reads every reply waiting; returns (task, round trip) per matched reply.
    pub(super) fn recv(&mut self) -> Vec<(usize, Duration)> {
        let mut out = Vec::new();
        for Sock { sock, kind, v6, .. } in &self.socks {
            let (kind, v6) = (*kind, *v6);
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = crate::sys::recv_from(sock, &mut buf) {
                let data = &buf[..n];
                let icmp = if !v6 && kind == Kind::Raw {
                    let ihl = ((data.first().copied().unwrap_or(0) & 0x0F) as usize) * 4;
                    data.get(ihl..).unwrap_or(&[])
                } else {
                    data
                };
                if icmp.len() < 8 || icmp[0] != if v6 { 129 } else { 0 } {
                    continue;
                }
                let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
                if kind == Kind::Raw && ident != self.ident {
                    continue; // another pinger's reply
                }
                let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
                let from_ip = from.as_socket().map(|a| a.ip());
                if let Some(&(task, at, target)) = self.pending.get(&seq) {
                    if from_ip == Some(target) {
                        self.pending.remove(&seq);
                        out.push((task, at.elapsed()));
                    }
                }
            }
        }
        out
    }
}

/// RFC 1071 Internet checksum.
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksum_of_echo_request() {
        // type 8, code 0, id 1, seq 1: sum 0x0801 -> checksum 0xF7FD
        assert_eq!(super::checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xF7FD);
    }
}
