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
