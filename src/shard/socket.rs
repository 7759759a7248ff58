//! Listening sockets with the options the fast servers set (Knot `net.c`, gdnsd
//! `dnsio_udp.c`): SO_REUSEPORT so each shard has its own socket, IPV6_V6ONLY so v4 and v6
//! listeners coexist, IP_FREEBIND so an address may come up after us, IP_PMTUDISC_OMIT
//! against forged-PMTU fragmentation, and large buffers against bursts.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Socket buffer size asked for (the kernel caps it at net.core.[rw]mem_max).
const SOCK_BUF: usize = 4 << 20;

fn base(addr: &SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(*addr), ty, Some(proto))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        let _ = s.set_freebind_v6(true);
    } else {
        let _ = s.set_freebind_v4(true);
    }
    Ok(s)
}

/// A bound UDP socket for one shard.
pub fn udp(addr: &SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = base(addr, Type::DGRAM, Protocol::UDP)?;
    let _ = s.set_recv_buffer_size(SOCK_BUF);
    let _ = s.set_send_buffer_size(SOCK_BUF);
    set_pmtudisc_omit(&s, addr.is_ipv6());
    s.bind(&SockAddr::from(*addr))?;
    Ok(s.into())
}

/// A bound, listening, non-blocking TCP socket for one shard.
pub fn tcp(addr: &SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = base(addr, Type::STREAM, Protocol::TCP)?;
    let _ = s.set_tcp_nodelay(true);
    s.bind(&SockAddr::from(*addr))?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// IP_PMTUDISC_OMIT: never fragment by a (possibly forged) path MTU; send at interface MTU.
fn set_pmtudisc_omit(s: &Socket, v6: bool) {
    use std::os::fd::AsRawFd;
    let (level, opt, val) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_OMIT,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_OMIT,
        )
    };
    // SAFETY: valid fd, option value is a c_int that outlives the call.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &val as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
