//! Listening sockets with the options the fast servers set (Knot `net.c`, gdnsd
//! `dnsio_udp.c`): SO_REUSEPORT so each shard has its own socket, IPV6_V6ONLY so v4 and v6
//! listeners coexist, IP_FREEBIND so an address may come up after us, IP_PMTUDISC_OMIT
//! against forged-PMTU fragmentation, and large buffers against bursts.
//!
//! SO_REUSEPORT lets any socket of the same user join the group and take a share of the
//! queries, so before binding its shard sockets gtmd makes sure nobody serves the address:
//! a probe socket bound without SO_REUSEPORT fails with EADDRINUSE when any socket of any
//! process holds the address, or an overlapping one (`0.0.0.0` and `127.0.0.1`, a
//! dual-stack `[::]`), on that port. The probe must be closed before the shard sockets are
//! bound, so every gtmd in a network namespace probes and binds under one lock
//! ([`BindLock`]): two started at once cannot both pass the probe.

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

/// Binds `addr` as nobody sharing it would: UDP without SO_REUSEADDR or SO_REUSEPORT, so
/// any other UDP socket on an overlapping address and the port makes it fail with
/// EADDRINUSE. With port 0 the kernel picks a port no socket uses. Same family options as
/// the shard sockets (IPV6_V6ONLY, IP_FREEBIND), so it conflicts exactly where they would.
pub fn probe_udp(addr: &SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(*addr), Type::DGRAM, Some(Protocol::UDP))?;
    probe_bind(s, addr)
}

/// TCP as [`probe_udp`], with SO_REUSEADDR only: connections a previous instance left in
/// TIME_WAIT do not count, a listener (or any bound socket without SO_REUSEADDR) does.
pub fn probe_tcp(addr: &SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    probe_bind(s, addr)
}

fn probe_bind(s: Socket, addr: &SocketAddr) -> io::Result<Socket> {
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        let _ = s.set_freebind_v6(true);
    } else {
        let _ = s.set_freebind_v4(true);
    }
    s.bind(&SockAddr::from(*addr))?;
    Ok(s)
}

/// Held while a gtmd probes and binds its listeners: an abstract Unix socket (one
/// namespace per network namespace, like ports; gone when the process is) per user (only
/// the same user can join a SO_REUSEPORT group). Released on drop.
#[derive(Debug)]
pub struct BindLock(#[allow(dead_code)] Option<std::os::unix::net::UnixListener>);

impl BindLock {
    /// Takes the lock, waiting up to `wait` for another gtmd to finish binding. `None`
    /// inside when it stays taken (a stuck or hostile holder): the probe still protects
    /// against everything already bound, only two simultaneous starts could then race.
    pub fn take(wait: std::time::Duration) -> Self {
        use std::os::linux::net::SocketAddrExt;
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        let name = format!("gtmd-bind-lock-{uid}");
        let t0 = std::time::Instant::now();
        loop {
            let taken = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a));
            match taken {
                Ok(l) => return Self(Some(l)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && t0.elapsed() < wait => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => {
                    tracing::warn!(
                        "start-up bind lock @{name} not taken ({e}): binding without it"
                    );
                    return Self(None);
                }
            }
        }
    }
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

/// Whether UDP queries reach shards by source prefix ([`steer_by_source`]): RRL's per-shard
/// tables then see every response to a prefix. Set at start-up.
pub static STEERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the kernel hand every UDP query from one source prefix (IPv4 `/v4_prefix`, IPv6
/// `/v6_prefix`) to the same socket of the SO_REUSEPORT group `socks` (in bind order, one
/// per shard), instead of spreading a prefix's ports over all shards: a classic BPF program
/// (SO_ATTACH_REUSEPORT_CBPF) that hashes the masked source address. Response rate
/// limiting needs it: each shard owns its bucket table, so each prefix must have one shard.
pub fn steer_by_source(
    socks: &[std::net::UdpSocket],
    v6: bool,
    v4_prefix: u8,
    v6_prefix: u8,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if socks.len() < 2 {
        STEERED.store(true, std::sync::atomic::Ordering::Relaxed);
        return Ok(());
    }
    const K: u32 = 0x9E37_79B1; // Fibonacci hashing
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let ld_src = |off: i32| {
        op(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_NET_OFF + off) as u32,
        )
    };
    let alu_k = |f: u32, k: u32| op(libc::BPF_ALU | f | libc::BPF_K, k);
    let mask = |prefix: u32| {
        if prefix >= 32 {
            u32::MAX
        } else {
            !(u32::MAX >> prefix)
        }
    };
    let mut prog = Vec::new();
    // X accumulates the hash of the masked address words.
    prog.push(op(libc::BPF_LDX | libc::BPF_W | libc::BPF_IMM, 0));
    let (first, words, prefix) = if v6 {
        (8, 4, v6_prefix as u32) // source address at offset 8 of the IPv6 header
    } else {
        (12, 1, v4_prefix as u32) // and at offset 12 of the IPv4 header
    };
    for w in 0..words {
        let bits = prefix.saturating_sub(32 * w);
        if bits == 0 {
            break;
        }
        prog.push(ld_src(first + 4 * w as i32));
        prog.push(alu_k(libc::BPF_AND, mask(bits)));
        prog.push(op(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0));
        prog.push(alu_k(libc::BPF_MUL, K));
        prog.push(op(libc::BPF_MISC | libc::BPF_TAX, 0));
    }
    prog.push(op(libc::BPF_MISC | libc::BPF_TXA, 0));
    prog.push(alu_k(libc::BPF_RSH, 16));
    prog.push(alu_k(libc::BPF_MOD, socks.len() as u32));
    prog.push(op(libc::BPF_RET | libc::BPF_A, 0));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: valid fd; the program outlives the call (the kernel copies it).
    let r = unsafe {
        libc::setsockopt(
            socks[0].as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        STEERED.store(false, std::sync::atomic::Ordering::Relaxed);
        return Err(io::Error::last_os_error());
    }
    STEERED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}
