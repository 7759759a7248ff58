//! The io_uring UDP backend (`io = "io-uring"`), through the `io-uring` crate; the default
//! is recvmmsg/sendmmsg (`mmsg.rs`), measured cheaper per query (PERF.md).
//!
//! One multishot RECVMSG per socket draws from a provided-buffer ring, so a single
//! submission keeps receiving until the buffers run out; each completion is answered at
//! once, its buffer handed straight back to the ring, and the reply queued as a SENDMSG
//! from a fixed pool of send slots. All replies of a batch go to the kernel in the one
//! `io_uring_enter` that also waits for the next batch. The ring is set up with
//! SINGLE_ISSUER and DEFER_TASKRUN where the kernel accepts them (6.1+), else plainly.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::types::{BufRingEntry, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, types, IoUring};

use super::{ShardCtx, UdpIo, WAIT_BOUND};
use crate::tables::gslb::ClientAddr;

/// Provided receive buffers (a power of two, as the buffer ring requires).
const NBUFS: u16 = 1024;
/// Size of one receive buffer: recvmsg_out header, peer address, payload.
const BUF_SIZE: usize = 2048;
/// Replies in flight at once; when all are busy a reply goes out by a direct sendto.
const SLOTS: usize = 1024;
/// Buffer group id of the ring.
const BGID: u16 = 0;
/// user_data tags.
const TAG_RECV: u64 = 1 << 32;
const TAG_SEND: u64 = 2 << 32;
const SBUF: usize = crate::wire::respond::MIN_OUT;

pub(super) struct Uring {
    socks: Vec<UdpSocket>,
    ring: IoUring,
    defer: bool,
    /// Buffer ring entries (page-aligned) and the buffers behind them.
    ring_mem: *mut BufRingEntry,
    ring_layout: std::alloc::Layout,
    bufs: Vec<u8>,
    /// The msghdr template multishot recvmsg reads (namelen, controllen).
    recv_hdr: Box<libc::msghdr>,
    slots: Vec<Slot>,
    free: Vec<u16>,
    tail: u16,
}

// SAFETY: the raw pointers refer to memory owned by this value; it is moved into the shard
// thread before use and only used there.
unsafe impl Send for Uring {}

struct Slot {
    buf: Box<[u8; SBUF]>,
    addr: libc::sockaddr_storage,
    iov: libc::iovec,
    hdr: libc::msghdr,
}

impl Uring {
    pub(super) fn new(socks: Vec<UdpSocket>) -> io::Result<Self> {
        let entries = 1024;
        // GTMD_URING_PLAIN=1 (a benchmark switch, see PERF.md): no SINGLE_ISSUER or
        // DEFER_TASKRUN, to measure what they bring.
        let plain = std::env::var_os("GTMD_URING_PLAIN").is_some_and(|v| v == "1");
        let tuned = if plain {
            Err(io::Error::other("plain ring asked for"))
        } else {
            IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                // Created here, used by the shard thread: SINGLE_ISSUER binds the ring to
                // the task that enables it, so it starts disabled and `serve` enables it.
                .setup_r_disabled()
                .setup_cqsize(8192)
                .build(entries)
        };
        let (ring, defer) = match tuned {
            Ok(r) => (r, true),
            Err(_) => (IoUring::builder().setup_cqsize(8192).build(entries)?, false),
        };
        let ring_layout = std::alloc::Layout::from_size_align(
            NBUFS as usize * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .expect("constant layout");
        // SAFETY: non-zero size; zeroed memory is a valid empty buffer ring.
        let ring_mem = unsafe { std::alloc::alloc_zeroed(ring_layout) } as *mut BufRingEntry;
        if ring_mem.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut me = Self {
            socks,
            ring,
            defer,
            ring_mem,
            ring_layout,
            bufs: vec![0u8; NBUFS as usize * BUF_SIZE],
            recv_hdr: Box::new(
                // SAFETY: all-zero msghdr is valid.
                unsafe { std::mem::zeroed() },
            ),
            slots: Vec::with_capacity(SLOTS),
            free: (0..SLOTS as u16).rev().collect(),
            tail: 0,
        };
        // SAFETY: ring_mem is page-aligned, holds NBUFS entries and lives as long as `me`
        // (freed in Drop after the ring is gone).
        unsafe {
            me.ring
                .submitter()
                .register_buf_ring_with_flags(me.ring_mem as u64, NBUFS, BGID, 0)?;
        }
        for bid in 0..NBUFS {
            me.provide(bid);
        }
        me.publish_tail();
        me.recv_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        for _ in 0..SLOTS {
            me.slots.push(Slot {
                buf: Box::new([0; SBUF]),
                // SAFETY: sockaddr_storage is plain data; all-zero is AF_UNSPEC.
                addr: unsafe { std::mem::zeroed() },
                // SAFETY: an all-zero iovec is a null, empty buffer, set before use.
                iov: unsafe { std::mem::zeroed() },
                // SAFETY: an all-zero msghdr names nothing, its pointers set before use.
                hdr: unsafe { std::mem::zeroed() },
            });
        }
        Ok(me)
    }

    /// Puts buffer `bid` back into the ring at the local tail (published separately).
    fn provide(&mut self, bid: u16) {
        let idx = (self.tail & (NBUFS - 1)) as usize;
        // SAFETY: idx < NBUFS, inside the ring allocation.
        let e = unsafe { &mut *self.ring_mem.add(idx) };
        e.set_addr(self.bufs.as_ptr() as u64 + bid as u64 * BUF_SIZE as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes provided buffers visible to the kernel (release store of the tail).
    fn publish_tail(&self) {
        // SAFETY: the tail field overlays the first entry's reserved field of the ring.
        unsafe {
            let tail = BufRingEntry::tail(self.ring_mem) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    fn arm(&mut self, k: usize) -> io::Result<()> {
        let fd = types::Fd(self.socks[k].as_raw_fd());
        let e = opcode::RecvMsgMulti::new(fd, &*self.recv_hdr, BGID)
            .build()
            .user_data(TAG_RECV | k as u64);
        // SAFETY: recv_hdr and the buffer ring outlive the operation (owned by self).
        unsafe { self.push(&e) }
    }

    /// Pushes an SQE, submitting first if the queue is full.
    unsafe fn push(&mut self, e: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller guarantees the entry's buffers stay valid.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Answers one received message and queues the reply.
    fn on_recv(&mut self, ctx: &mut ShardCtx, k: usize, bid: u16, len: usize) {
        let off = bid as usize * BUF_SIZE;
        let Some(slot_i) = self.free.pop() else {
            self.on_recv_direct(ctx, k, bid, len);
            return;
        };
        let slot = &mut self.slots[slot_i as usize];
        let data = &self.bufs[off..off + len];
        let rlen = match RecvMsgOut::parse(data, &self.recv_hdr) {
            Ok(m) if !m.is_payload_truncated() && !m.is_name_data_truncated() => {
                let name = m.name_data();
                let n = name
                    .len()
                    .min(std::mem::size_of::<libc::sockaddr_storage>());
                // SAFETY: copying at most sizeof(sockaddr_storage) bytes into it.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        name.as_ptr(),
                        &mut slot.addr as *mut _ as *mut u8,
                        n,
                    );
                }
                slot.hdr.msg_namelen = n as u32;
                ctx.answer(
                    m.payload_data(),
                    ClientAddr::from_sockaddr(name),
                    name,
                    &mut slot.buf[..],
                )
            }
            _ => {
                ctx.counters.drop_one();
                0
            }
        };
        self.provide(bid);
        if rlen == 0 {
            self.free.push(slot_i);
            return;
        }
        let slot = &mut self.slots[slot_i as usize];
        slot.iov = libc::iovec {
            iov_base: slot.buf.as_mut_ptr().cast(),
            iov_len: rlen,
        };
        slot.hdr.msg_name = (&mut slot.addr as *mut libc::sockaddr_storage).cast();
        slot.hdr.msg_iov = &mut slot.iov;
        slot.hdr.msg_iovlen = 1;
        let e = opcode::SendMsg::new(types::Fd(self.socks[k].as_raw_fd()), &slot.hdr)
            .build()
            .user_data(TAG_SEND | slot_i as u64);
        // SAFETY: the slot is not reused until its completion returns it to `free`.
        if unsafe { self.push(&e) }.is_err() {
            ctx.counters.drop_one();
            self.free.push(slot_i);
        }
    }

    /// Every send slot is in flight: answer with a direct sendto (never drop a query).
    fn on_recv_direct(&mut self, ctx: &mut ShardCtx, k: usize, bid: u16, len: usize) {
        let off = bid as usize * BUF_SIZE;
        let mut out = [0u8; SBUF];
        let data = &self.bufs[off..off + len];
        if let Ok(m) = RecvMsgOut::parse(data, &self.recv_hdr) {
            let name = m.name_data();
            let rlen = ctx.answer(
                m.payload_data(),
                ClientAddr::from_sockaddr(name),
                name,
                &mut out,
            );
            if rlen > 0 {
                // SAFETY: name is a sockaddr of name.len() bytes written by the kernel.
                let r = unsafe {
                    libc::sendto(
                        self.socks[k].as_raw_fd(),
                        out.as_ptr().cast(),
                        rlen,
                        libc::MSG_DONTWAIT,
                        name.as_ptr().cast(),
                        name.len() as u32,
                    )
                };
                if r < 0 {
                    ctx.counters.drop_one();
                }
            }
        }
        self.provide(bid);
    }
}

impl UdpIo for Uring {
    fn name(&self) -> &'static str {
        if self.defer {
            "io-uring+defer-taskrun"
        } else {
            "io-uring"
        }
    }

    fn serve(&mut self, ctx: &mut ShardCtx) -> io::Result<()> {
        if self.defer {
            self.ring.submitter().register_enable_rings()?;
        }
        for k in 0..self.socks.len() {
            self.arm(k)?;
        }
        let ts = Timespec::new()
            .sec(WAIT_BOUND.as_secs())
            .nsec(WAIT_BOUND.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(8192);
        while !ctx.stopping() {
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(ud, res, flags) in &cqes {
                let idx = (ud & 0xFFFF_FFFF) as usize;
                if ud & TAG_SEND != 0 {
                    if res < 0 {
                        ctx.counters.drop_one();
                    }
                    self.free.push(idx as u16);
                    continue;
                }
                if res >= 0 {
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        self.on_recv(ctx, idx, bid, res as usize);
                    }
                } else if res != -libc::ENOBUFS {
                    tracing::debug!(shard = ctx.id, err = -res, "recvmsg completion error");
                }
                if !cqueue::more(flags) {
                    self.publish_tail();
                    self.arm(idx)?; // multishot ended (no buffers, or an error): re-arm
                }
            }
            self.publish_tail();
        }
        Ok(())
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
        // SAFETY: allocated in `new` with this layout; the kernel no longer uses it.
        unsafe { std::alloc::dealloc(self.ring_mem as *mut u8, self.ring_layout) };
    }
}
