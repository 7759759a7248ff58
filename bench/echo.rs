//! `gtmd-echo`: the physical limit of the kernel's UDP path on this machine. One thread,
//! one socket, recvmmsg a batch, set QR in each packet, sendmmsg it back. No parsing, no
//! lookup: whatever a DNS server adds on top of this is its own cost.
//!
//! Usage: `gtmd-echo [ADDR:PORT]` (default 127.0.0.1:5399). Stops on SIGTERM/SIGINT.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

const BATCH: usize = 64;
const SIZE: usize = 2048;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5399".into());
    let bind = |a: &str| -> std::io::Result<UdpSocket> {
        let a: std::net::SocketAddr = a
            .parse()
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let s = socket2::Socket::new(socket2::Domain::for_address(a), socket2::Type::DGRAM, None)?;
        // The same buffer sizes gtmd asks for, so the comparison is of the work, not the buffers.
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&a.into())?;
        Ok(s.into())
    };
    let sock = bind(&addr).unwrap_or_else(|e| {
        eprintln!("gtmd-echo: cannot bind {addr}: {e}");
        std::process::exit(2)
    });
    eprintln!(
        "gtmd-echo listening udp={}",
        sock.local_addr().expect("bound")
    );
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; SIZE]; BATCH];
    let mut addrs: Vec<libc::sockaddr_storage> = (0..BATCH)
        // SAFETY: sockaddr_storage is plain data; all-zero is AF_UNSPEC.
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        // SAFETY: an all-zero iovec is a null, empty buffer; set below before use.
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        // SAFETY: an all-zero mmsghdr names nothing; its pointers are set below before use.
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    loop {
        for i in 0..BATCH {
            iov[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: SIZE,
            };
            msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_len = 0;
        }
        // SAFETY: msgs points at BATCH valid headers and buffers owned above.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        for i in 0..n as usize {
            let len = msgs[i].msg_len as usize;
            if len > 2 {
                bufs[i][2] |= 0x80;
            }
            iov[i].iov_len = len;
        }
        let mut sent = 0;
        while sent < n as usize {
            // SAFETY: as above; the first n headers describe the received packets.
            let r = unsafe {
                libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), (n as usize - sent) as u32, 0)
            };
            sent += if r <= 0 { 1 } else { r as usize };
        }
    }
}
