//! The default UDP backend: recvmmsg/sendmmsg in batches of [`BATCH`] (measured cheaper per
//! query than io_uring, PERF.md; and it runs where io_uring is disabled by sysctl or
//! seccomp, as in many containers).
//! One socket blocks in recvmmsg with SO_RCVTIMEO = [`super::WAIT_BOUND`]; several are
//! polled with the same bound.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use super::{ShardCtx, UdpIo, WAIT_BOUND};
use crate::tables::gslb::ClientAddr;

/// Packets per recvmmsg/sendmmsg call.
const BATCH: usize = 64;
/// Receive buffer per packet: larger queries are dropped (no DNS query needs more).
const RBUF: usize = 4096;
/// Send buffer per packet: the largest UDP answer we send.
const SBUF: usize = crate::wire::respond::MIN_OUT;

pub(super) struct Mmsg {
    socks: Vec<UdpSocket>,
}

impl Mmsg {
    pub(super) fn new(socks: Vec<UdpSocket>) -> io::Result<Self> {
        for s in &socks {
            if socks.len() == 1 {
                s.set_read_timeout(Some(WAIT_BOUND))?;
            } else {
                s.set_nonblocking(true)?;
            }
        }
        Ok(Self { socks })
    }
}

/// The batch's buffers; boxed once per shard so the kernel pointers into it stay valid.
pub(super) struct Bufs {
    rbuf: [[u8; RBUF]; BATCH],
    sbuf: [[u8; SBUF]; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    riov: [libc::iovec; BATCH],
    siov: [libc::iovec; BATCH],
    rmsg: [libc::mmsghdr; BATCH],
    smsg: [libc::mmsghdr; BATCH],
}

impl Bufs {
    /// Zeroed buffers with the receive iovecs set.
    pub(super) fn new() -> Box<Self> {
        // SAFETY: every field is plain old data for which all-zero is valid.
        let mut b: Box<Self> = unsafe { Box::new_zeroed().assume_init() };
        for i in 0..BATCH {
            b.riov[i] = libc::iovec {
                iov_base: b.rbuf[i].as_mut_ptr().cast(),
                iov_len: RBUF,
            };
        }
        b
    }
}

impl UdpIo for Mmsg {
    fn name(&self) -> &'static str {
        "mmsg"
    }

    fn serve(&mut self, ctx: &mut ShardCtx) -> io::Result<()> {
        let mut b = Bufs::new();
        let mut pfds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let single = self.socks.len() == 1;
        while !ctx.stopping() {
            if !single {
                // SAFETY: pfds is a valid array of pollfd for its length.
                let r = unsafe {
                    libc::poll(
                        pfds.as_mut_ptr(),
                        pfds.len() as _,
                        WAIT_BOUND.as_millis() as i32,
                    )
                };
                if r <= 0 {
                    continue;
                }
            }
            for p in &pfds {
                if !single && p.revents & libc::POLLIN == 0 {
                    continue;
                }
                batch(p.fd, &mut b, ctx, single);
            }
        }
        Ok(())
    }
}

/// One recvmmsg, answers, one (or, on partial sends, a few) sendmmsg.
pub(super) fn batch(fd: i32, b: &mut Bufs, ctx: &mut ShardCtx, blocking: bool) {
    for i in 0..BATCH {
        b.rmsg[i].msg_hdr = libc::msghdr {
            msg_name: (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast(),
            msg_namelen: std::mem::size_of::<libc::sockaddr_storage>() as u32,
            msg_iov: &mut b.riov[i],
            msg_iovlen: 1,
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        };
        b.rmsg[i].msg_len = 0;
    }
    let flags = if blocking {
        libc::MSG_WAITFORONE
    } else {
        libc::MSG_DONTWAIT
    };
    // SAFETY: rmsg describes BATCH valid buffers owned by `b`, alive for the call.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            b.rmsg.as_mut_ptr(),
            BATCH as u32,
            flags,
            std::ptr::null_mut(),
        )
    };
    if n <= 0 {
        return; // timeout (bounded wait), EINTR or EAGAIN
    }
    let mut out = 0usize;
    for i in 0..n as usize {
        let len = b.rmsg[i].msg_len as usize;
        if b.rmsg[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            ctx.counters.drop_one();
            continue;
        }
        let namelen = b.rmsg[i].msg_hdr.msg_namelen as usize;
        // SAFETY: the kernel wrote a sockaddr of `namelen` bytes into addrs[i].
        let sa = unsafe {
            std::slice::from_raw_parts(
                (&b.addrs[i] as *const libc::sockaddr_storage).cast::<u8>(),
                namelen.min(std::mem::size_of::<libc::sockaddr_storage>()),
            )
        };
        let client = ClientAddr::from_sockaddr(sa);
        let (rbuf, sbuf) = (&b.rbuf[i], &mut b.sbuf[out]);
        let rlen = ctx.answer(&rbuf[..len], client, sa, sbuf);
        if rlen == 0 {
            continue;
        }
        b.siov[out] = libc::iovec {
            iov_base: b.sbuf[out].as_mut_ptr().cast(),
            iov_len: rlen,
        };
        b.smsg[out].msg_hdr = libc::msghdr {
            msg_name: (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast(),
            msg_namelen: b.rmsg[i].msg_hdr.msg_namelen,
            msg_iov: &mut b.siov[out],
            msg_iovlen: 1,
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        };
        out += 1;
    }
    let mut sent = 0usize;
    while sent < out {
        // SAFETY: smsg[sent..out] describe buffers owned by `b`, alive for the call.
        let r = unsafe { libc::sendmmsg(fd, b.smsg[sent..].as_mut_ptr(), (out - sent) as u32, 0) };
        if r <= 0 {
            // The first remaining message failed (e.g. an unreachable peer): skip it.
            ctx.counters.drop_one();
            sent += 1;
        } else {
            sent += r as usize;
        }
    }
}
