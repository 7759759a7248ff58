//! Half-open TCP checks: a SYN sent on a raw socket (CAP_NET_RAW), a SYN-ACK means the port
//! listens (the kernel then resets the half-open connection, so the application never sees
//! it), a RST means it does not. Packets are built with `pnet_packet`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use pnet_packet::tcp::{self, MutableTcpPacket, TcpFlags, TcpPacket};
use pnet_packet::Packet;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tracing::{info, warn};

pub(super) struct Syn {
    v4: Option<Socket>,
    v6: Option<Socket>,
    next_port: u16,
    /// (target ip, target port, our port) -> task
    pending: HashMap<(IpAddr, u16, u16), usize>,
}

fn raw(domain: Domain) -> Option<Socket> {
    let s = Socket::new(domain, Type::RAW, Some(Protocol::TCP)).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

impl Syn {
    /// Opens the raw sockets, or says why half-open checks fall back to connects.
    pub(super) fn open() -> Self {
        let (v4, v6) = (raw(Domain::IPV4), raw(Domain::IPV6));
        if v4.is_some() {
            info!("half-open TCP checks use a raw socket");
        } else {
            warn!("half-open TCP checks need CAP_NET_RAW: they run as connect checks");
        }
        Self {
            v4,
            v6,
            next_port: (std::process::id() % 20_000) as u16,
            pending: HashMap::new(),
        }
    }

    /// Whether a half-open check to `target` can run.
    pub(super) fn can(&self, target: &SocketAddr) -> bool {
        if target.is_ipv4() {
            self.v4.is_some()
        } else {
            self.v6.is_some()
        }
    }

    pub(super) fn fds(&self) -> Vec<RawFd> {
        [&self.v4, &self.v6]
            .into_iter()
            .flatten()
            .map(|s| s.as_raw_fd())
            .collect()
    }

    /// Sends a SYN to `target` for `task`.
    pub(super) fn send(&mut self, task: usize, target: SocketAddr) -> Result<(), String> {
        // The source address the kernel would use for this destination.
        let probe = UdpSocket::bind(if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })
        .and_then(|u| u.connect(target).map(|_| u))
        .and_then(|u| u.local_addr())
        .map_err(|e| format!("no route: {e}"))?;
        self.next_port = self.next_port.wrapping_add(1);
        let port = 40_000 + self.next_port % 20_000;
        let mut buf = [0u8; 20];
        {
            let mut t = MutableTcpPacket::new(&mut buf).expect("20-octet buffer");
            t.set_source(port);
            t.set_destination(target.port());
            t.set_sequence(0x6774_6d64 ^ task as u32);
            t.set_data_offset(5);
            t.set_flags(TcpFlags::SYN);
            t.set_window(64240);
            let sum = match (probe.ip(), target.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => tcp::ipv4_checksum(&t.to_immutable(), &s, &d),
                (IpAddr::V6(s), IpAddr::V6(d)) => tcp::ipv6_checksum(&t.to_immutable(), &s, &d),
                _ => return Err("address family mismatch".into()),
            };
            t.set_checksum(sum);
        }
        let sock = if target.is_ipv4() { &self.v4 } else { &self.v6 };
        let sock = sock.as_ref().ok_or("no raw socket")?;
        sock.send_to(&buf, &SockAddr::from(SocketAddr::new(target.ip(), 0)))
            .map_err(|e| format!("send SYN: {e}"))?;
        self.pending
            .insert((target.ip(), target.port(), port), task);
        Ok(())
    }

    /// Forgets the outstanding SYN of `task`.
    pub(super) fn forget(&mut self, task: usize) {
        self.pending.retain(|_, t| *t != task);
    }

    /// Forgets every outstanding SYN (a reload renumbers the checks).
    pub(super) fn forget_all(&mut self) {
        self.pending.clear();
    }

    /// Reads the segments waiting; returns (task, port open) for each answer to our SYNs.
    pub(super) fn recv(&mut self) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        for (sock, v4) in [(&self.v4, true), (&self.v6, false)] {
            let Some(sock) = sock else { continue };
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = crate::sys::recv_from(sock, &mut buf) {
                let data = &buf[..n];
                // IPv4 raw sockets deliver the IP header, IPv6 ones do not.
                let seg = if v4 {
                    let ihl = ((data.first().copied().unwrap_or(0) & 0x0F) as usize) * 4;
                    data.get(ihl..).unwrap_or(&[])
                } else {
                    data
                };
                let (Some(t), Some(src)) = (TcpPacket::new(seg), from.as_socket()) else {
                    continue;
                };
                let key = (src.ip(), t.get_source(), t.get_destination());
                let flags = t.get_flags();
                if flags & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN | TcpFlags::ACK
                    || flags & TcpFlags::RST != 0
                {
                    if let Some(task) = self.pending.remove(&key) {
                        out.push((task, flags & TcpFlags::SYN != 0));
                    }
                }
                let _ = t.payload();
            }
        }
        out
    }
}
