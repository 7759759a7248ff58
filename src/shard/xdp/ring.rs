//! One AF_XDP socket with its own UMEM and four rings (fill, completion, RX, TX), over
//! libc: the kernel ABI of `linux/if_xdp.h` (Documentation/networking/af_xdp.rst), as
//! libxdp's `xsk.c` drives it. The UMEM is split in two fixed pools: [`RX_FRAMES`] frames
//! circulate fill -> RX -> fill, [`TX_FRAMES`] frames circulate free list -> TX ->
//! completion -> free list, so no ring can overflow and nothing is allocated per packet.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Frame (chunk) size: a page, the largest aligned-mode chunk.
pub const FRAME: usize = 4096;
/// Frames of the receive pool, and the size of the fill and RX rings.
pub const RX_FRAMES: u32 = 1024;
/// Frames of the transmit pool, and the size of the TX and completion rings.
pub const TX_FRAMES: u32 = 1024;
/// Frames a copy-mode kick may send, asked of kernels with `XDP_MAX_TX_SKB_BUDGET`
/// (the kernel's default and floor is 32): one syscall per batch instead of one per 32.
pub const TX_BUDGET: u32 = 128;
/// `XDP_MAX_TX_SKB_BUDGET` (linux/if_xdp.h, 6.17): not in the libc crate yet.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
const UMEM_LEN: usize = FRAME * (RX_FRAMES + TX_FRAMES) as usize;

/// A mapped ring: producer and consumer indices shared with the kernel, and the entries.
struct Ring {
    map: *mut libc::c_void,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    /// The ring's flags word (`XDP_RING_NEED_WAKEUP`).
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
    /// Our side's index (the producer for fill and TX, the consumer for RX and completion).
    local: u32,
}

impl Ring {
    /// Maps the ring of `entries` entries of `size` octets at page offset `pgoff` of `fd`.
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        entries: u32,
        size: usize,
        pgoff: libc::off_t,
    ) -> io::Result<Self> {
        let map_len = off.desc as usize + entries as usize * size;
        // SAFETY: a fresh shared mapping of the socket's ring; the kernel checks the size
        // against the ring it made; the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = |o: u64| map.cast::<u8>().wrapping_add(o as usize);
        let mut r = Self {
            map,
            map_len,
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            desc: at(off.desc),
            mask: entries - 1,
            local: 0,
        };
        // SAFETY: producer and consumer are aligned u32s inside the mapping (kernel offsets).
        r.local = unsafe { (*r.producer).load(Ordering::Relaxed) };
        Ok(r)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the mapping, which lives as long as `self`.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as `producer`.
        unsafe { &*self.consumer }
    }

    /// Whether the kernel set `XDP_RING_NEED_WAKEUP` on this ring (a producer ring of
    /// ours): it will not look at the ring again until a syscall wakes it. Read after our
    /// producer index is published, with a full fence between (the store and this load
    /// must not swap, or a flag set just after our check would be missed until the next
    /// turn's poll); libxdp's `xsk_ring_prod__needs_wakeup` is the same read.
    fn needs_wakeup(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        // SAFETY: the flags word is an aligned u32 inside the mapping (kernel offset).
        let flags = unsafe { &*self.flags }.load(Ordering::Relaxed);
        flags & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries the kernel left for us to consume (RX, completion).
    fn available(&self) -> u32 {
        self.producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.local)
    }

    /// Free entries we may produce (fill, TX).
    fn room(&self) -> u32 {
        (self.mask + 1).wrapping_sub(
            self.local
                .wrapping_sub(self.consumer().load(Ordering::Acquire)),
        )
    }

    /// Entry `i` (an index of our side, masked here), as a `T`.
    fn entry<T>(&self, i: u32) -> *mut T {
        self.desc
            .wrapping_add((i & self.mask) as usize * std::mem::size_of::<T>())
            .cast()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

/// An AF_XDP socket bound to one queue of one interface.
pub struct Xsk {
    fd: OwnedFd,
    umem: *mut u8,
    fill: Ring,
    comp: Ring,
    rx: Ring,
    tx: Ring,
    /// Transmit frames not in the kernel's hands.
    free_tx: Vec<u64>,
    /// Bound in zero-copy mode (else copy mode).
    pub zero_copy: bool,
    /// Bound with `XDP_USE_NEED_WAKEUP`: the kernel says through the fill and TX rings'
    /// flags when it needs a syscall to look at them (else every kick is needed).
    pub need_wakeup: bool,
    /// The queue it is bound to.
    pub queue: u32,
    /// Frames one kick sends: [`TX_BUDGET`] in zero-copy mode and where the kernel takes
    /// `XDP_MAX_TX_SKB_BUDGET` (6.17+), else the kernel's fixed 32.
    pub tx_budget: u32,
}

// SAFETY: the socket, its UMEM and its rings belong to the one shard thread it is moved to;
// nothing else holds the pointers.
unsafe impl Send for Xsk {}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setopt<T>(fd: RawFd, opt: libc::c_int, v: &T, len: usize) -> io::Result<()> {
    // SAFETY: `v` is a valid value of at least `len` octets for the call.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            len as libc::socklen_t,
        )
    })
}

impl Xsk {
    /// Opens a socket on queue `queue` of interface `ifindex`: zero-copy when the driver
    /// supports it, else copy mode; with `XDP_USE_NEED_WAKEUP`, and without it only when
    /// the kernel refuses the flag (EINVAL: a kernel that does not know it). A queue
    /// still held by a socket just closed (the kernel frees its packet memory a moment
    /// later, deferred: EBUSY, as when gtmd restarts at once) is waited for, up to 2 s.
    pub fn open(ifindex: u32, queue: u32) -> io::Result<Self> {
        let mut tries = 0;
        loop {
            match Self::open_any(ifindex, queue) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 40 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// [`Xsk::open`]'s one try over the modes.
    fn open_any(ifindex: u32, queue: u32) -> io::Result<Self> {
        let mut last = io::Error::from_raw_os_error(libc::EINVAL);
        for need_wakeup in [true, false] {
            for zero_copy in [true, false] {
                match Self::open_mode(ifindex, queue, zero_copy, need_wakeup) {
                    Ok(x) => return Ok(x),
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(e),
                    Err(e) => last = e,
                }
            }
            // Copy mode failed too: only an EINVAL may be the flag's doing.
            if last.raw_os_error() != Some(libc::EINVAL) {
                break;
            }
        }
        Err(last)
    }

    fn open_mode(ifindex: u32, queue: u32, zero_copy: bool, need_wakeup: bool) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        check(raw)?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an anonymous private mapping, checked below.
        let umem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                UMEM_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if umem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut x = Self::rings(fd, umem.cast(), zero_copy, queue).inspect_err(|_| {
            // SAFETY: the mapping just made, not referenced elsewhere.
            unsafe { libc::munmap(umem, UMEM_LEN) };
        })?;
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: if zero_copy {
                libc::XDP_ZEROCOPY
            } else {
                libc::XDP_COPY
            } | if need_wakeup {
                libc::XDP_USE_NEED_WAKEUP
            } else {
                0
            },
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp for the call.
        check(unsafe {
            libc::bind(
                x.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })?;
        x.need_wakeup = need_wakeup;
        // Zero-copy drivers send from their own NAPI loop, with no such budget. In copy
        // mode, older kernels answer ENOPROTOOPT: they send 32 frames per kick.
        if zero_copy || setopt(x.fd.as_raw_fd(), XDP_MAX_TX_SKB_BUDGET, &TX_BUDGET, 4).is_ok() {
            x.tx_budget = TX_BUDGET;
        }
        // The receive pool goes to the fill ring, the transmit pool to the free list.
        for i in 0..RX_FRAMES {
            x.fill_one(i as u64 * FRAME as u64);
        }
        x.fill.producer().store(x.fill.local, Ordering::Release);
        x.free_tx = (RX_FRAMES..RX_FRAMES + TX_FRAMES)
            .map(|i| i as u64 * FRAME as u64)
            .collect();
        Ok(x)
    }

    /// Registers the UMEM and maps the four rings (the socket is not bound yet).
    fn rings(fd: OwnedFd, umem: *mut u8, zero_copy: bool, queue: u32) -> io::Result<Self> {
        let raw = fd.as_raw_fd();
        // The first version of the struct: later fields (flags, TX metadata) stay 0 and
        // older kernels accept it.
        let reg = libc::xdp_umem_reg_v1 {
            addr: umem as u64,
            len: UMEM_LEN as u64,
            chunk_size: FRAME as u32,
            headroom: 0,
        };
        setopt(raw, libc::XDP_UMEM_REG, &reg, std::mem::size_of_val(&reg))?;
        for (opt, n) in [
            (libc::XDP_UMEM_FILL_RING, RX_FRAMES),
            (libc::XDP_UMEM_COMPLETION_RING, TX_FRAMES),
            (libc::XDP_RX_RING, RX_FRAMES),
            (libc::XDP_TX_RING, TX_FRAMES),
        ] {
            setopt(raw, opt, &n, 4)?;
        }
        // SAFETY: all-zero is a valid xdp_mmap_offsets (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&off) as libc::socklen_t;
        // SAFETY: `off` has room for `len` octets.
        check(unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        })?;
        if len as usize != std::mem::size_of_val(&off) {
            return Err(io::Error::other(
                "the kernel's AF_XDP ring offsets are of an old layout (kernel before 5.4)",
            ));
        }
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let fill = Ring::map(
            raw,
            &off.fr,
            RX_FRAMES,
            8,
            libc::XDP_UMEM_PGOFF_FILL_RING as _,
        )?;
        let pg = libc::XDP_UMEM_PGOFF_COMPLETION_RING as _;
        let comp = Ring::map(raw, &off.cr, TX_FRAMES, 8, pg)?;
        let rx = Ring::map(raw, &off.rx, RX_FRAMES, desc, libc::XDP_PGOFF_RX_RING)?;
        let tx = Ring::map(raw, &off.tx, TX_FRAMES, desc, libc::XDP_PGOFF_TX_RING)?;
        let mut comp = comp;
        let mut rx = rx;
        // Our side of the consumer rings starts at the kernel's consumer index.
        comp.local = comp.consumer().load(Ordering::Relaxed);
        rx.local = rx.consumer().load(Ordering::Relaxed);
        Ok(Self {
            fd,
            umem,
            fill,
            comp,
            rx,
            tx,
            free_tx: Vec::new(),
            zero_copy,
            need_wakeup: false,
            queue,
            tx_budget: 32,
        })
    }

    /// The socket's descriptor (for the XSKMAP and poll).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Writes one fill entry (published by the caller's `Release` store).
    fn fill_one(&mut self, addr: u64) {
        // SAFETY: the fill ring never holds more than RX_FRAMES entries (the pool's size),
        // so slot `local` is ours.
        unsafe { *self.fill.entry::<u64>(self.fill.local) = addr };
        self.fill.local = self.fill.local.wrapping_add(1);
    }

    /// Takes back the transmit frames the kernel has sent.
    pub fn reclaim(&mut self) {
        let n = self.comp.available();
        for _ in 0..n {
            // SAFETY: the kernel produced this entry (below its producer index).
            let addr = unsafe { *self.comp.entry::<u64>(self.comp.local) };
            self.comp.local = self.comp.local.wrapping_add(1);
            self.free_tx.push(addr & !(FRAME as u64 - 1));
        }
        if n > 0 {
            self.comp
                .consumer()
                .store(self.comp.local, Ordering::Release);
        }
    }

    /// Receives up to `max` frames, limited by the free transmit frames, calling
    /// `f(rx frame, tx frame)` for each; `f` returns the length of the frame to send from
    /// the transmit frame (0: none). Returns how many frames were received and sent.
    pub(super) fn serve_batch(
        &mut self,
        max: u32,
        mut f: impl FnMut(&[u8], &mut [u8]) -> usize,
    ) -> (u32, u32) {
        // Reserve transmit room before taking from RX, so that every query can be answered.
        let n = self
            .rx
            .available()
            .min(max)
            .min(self.free_tx.len() as u32)
            .min(self.tx.room());
        if n == 0 {
            return (0, 0);
        }
        let mut sent = 0;
        for _ in 0..n {
            // SAFETY: the kernel produced this entry (below its producer index).
            let d = unsafe { *self.rx.entry::<libc::xdp_desc>(self.rx.local) };
            self.rx.local = self.rx.local.wrapping_add(1);
            let chunk = d.addr & !(FRAME as u64 - 1);
            let tx_addr = self.free_tx.pop().unwrap_or(0); // n <= free_tx.len()
            let in_rx_pool = chunk < RX_FRAMES as u64 * FRAME as u64;
            let ok = in_rx_pool
                && (d.addr as usize).saturating_add(d.len as usize) <= chunk as usize + FRAME;
            let len = if ok {
                // SAFETY: the received frame lies in one chunk of the receive pool, which
                // the kernel handed to us through RX and gets back only below; the transmit
                // frame is a chunk of the transmit pool (disjoint) that we own.
                let (rx, tx) = unsafe {
                    (
                        std::slice::from_raw_parts(self.umem.add(d.addr as usize), d.len as usize),
                        std::slice::from_raw_parts_mut(self.umem.add(tx_addr as usize), FRAME),
                    )
                };
                f(rx, tx)
            } else {
                0
            };
            if len == 0 {
                self.free_tx.push(tx_addr);
            } else {
                let desc = libc::xdp_desc {
                    addr: tx_addr,
                    len: len.min(FRAME) as u32,
                    options: 0,
                };
                // SAFETY: TX room was reserved above.
                unsafe { *self.tx.entry::<libc::xdp_desc>(self.tx.local) = desc };
                self.tx.local = self.tx.local.wrapping_add(1);
                sent += 1;
            }
            // Back to the fill ring; a descriptor outside the receive pool (a kernel bug)
            // is not ours to give.
            if in_rx_pool {
                self.fill_one(chunk);
            }
        }
        self.rx.consumer().store(self.rx.local, Ordering::Release);
        self.fill
            .producer()
            .store(self.fill.local, Ordering::Release);
        if sent > 0 {
            self.tx.producer().store(self.tx.local, Ordering::Release);
        }
        (n, sent)
    }

    /// Sends up to `max` frames (at most the free transmit frames and the TX ring's room):
    /// `f` writes each into a transmit frame and returns its length (0: stop here, that
    /// frame stays free). Returns how many were put on TX; the caller kicks the kernel
    /// ([`Xsk::tx_needs_kick`], [`Xsk::kick`]) and takes the sent frames back with
    /// [`Xsk::reclaim`]. For a sender (the AF_XDP load generator); the server's path is
    /// [`Xsk::serve_batch`].
    pub fn transmit(&mut self, max: u32, mut f: impl FnMut(&mut [u8]) -> usize) -> u32 {
        let n = max.min(self.free_tx.len() as u32).min(self.tx.room());
        let mut sent = 0;
        while sent < n {
            let Some(addr) = self.free_tx.pop() else {
                break;
            };
            // SAFETY: `addr` is a chunk of the transmit pool taken from our free list, so
            // neither the kernel nor another slice has it.
            let buf =
                unsafe { std::slice::from_raw_parts_mut(self.umem.add(addr as usize), FRAME) };
            let len = f(buf).min(FRAME);
            if len == 0 {
                self.free_tx.push(addr);
                break;
            }
            let desc = libc::xdp_desc {
                addr,
                len: len as u32,
                options: 0,
            };
            // SAFETY: `sent < n <= room`: the slot is ours.
            unsafe { *self.tx.entry::<libc::xdp_desc>(self.tx.local) = desc };
            self.tx.local = self.tx.local.wrapping_add(1);
            sent += 1;
        }
        if sent > 0 {
            self.tx.producer().store(self.tx.local, Ordering::Release);
        }
        sent
    }

    /// Takes up to `max` received frames, calling `f` on each, and gives their frames back
    /// to the fill ring. Returns how many were received. For a receiver that does not
    /// answer (the AF_XDP load generator).
    pub fn receive(&mut self, max: u32, mut f: impl FnMut(&[u8])) -> u32 {
        let n = self.rx.available().min(max);
        for _ in 0..n {
            // SAFETY: the kernel produced this entry (below its producer index).
            let d = unsafe { *self.rx.entry::<libc::xdp_desc>(self.rx.local) };
            self.rx.local = self.rx.local.wrapping_add(1);
            let chunk = d.addr & !(FRAME as u64 - 1);
            let in_rx_pool = chunk < RX_FRAMES as u64 * FRAME as u64;
            if in_rx_pool
                && (d.addr as usize).saturating_add(d.len as usize) <= chunk as usize + FRAME
            {
                // SAFETY: the frame lies in one chunk of the receive pool, ours until it
                // goes back to the fill ring below.
                f(unsafe {
                    std::slice::from_raw_parts(self.umem.add(d.addr as usize), d.len as usize)
                });
            }
            if in_rx_pool {
                self.fill_one(chunk);
            }
        }
        if n > 0 {
            self.rx.consumer().store(self.rx.local, Ordering::Release);
            self.fill
                .producer()
                .store(self.fill.local, Ordering::Release);
        }
        n
    }

    /// Frames given to TX that the kernel has not taken yet.
    pub fn tx_pending(&self) -> u32 {
        self.tx
            .local
            .wrapping_sub(self.tx.consumer().load(Ordering::Acquire))
    }

    /// The kernel's counters of this socket (`XDP_STATISTICS`): frames dropped for want of
    /// room in RX or of fill entries, invalid descriptors.
    pub fn stats(&self) -> Option<libc::xdp_statistics> {
        // SAFETY: all-zero is a valid xdp_statistics (plain integers).
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
        // SAFETY: `st` has room for `len` octets.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut st as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(st)
    }

    /// Whether sending what TX holds needs a [`Xsk::kick`]: always without need-wakeup;
    /// with it, when the TX ring's flag asks, which in copy mode is always (the kernel
    /// keeps it set: it sends only inside the syscall) and in zero-copy mode when the
    /// driver is idle.
    pub fn tx_needs_kick(&self) -> bool {
        !self.need_wakeup || self.tx.needs_wakeup()
    }

    /// Whether the kernel needs a syscall (poll, recvfrom) to take fill entries and
    /// receive: with need-wakeup, only when the fill ring's flag asks (a zero-copy driver
    /// that went idle); without it, every turn.
    pub fn rx_needs_kick(&self) -> bool {
        !self.need_wakeup || self.fill.needs_wakeup()
    }

    /// Waits up to `ms` milliseconds for a received frame (poll for POLLIN); with
    /// need-wakeup in copy mode the poll also sends what TX holds. For a tool with nothing
    /// else to wait on (a shard polls this socket together with its kernel sockets).
    pub fn wait(&self, ms: i32) {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call.
        unsafe { libc::poll(&mut p, 1, ms) };
    }

    /// Tells the kernel to send what TX holds (copy mode sends up to `tx_budget` frames a
    /// call).
    pub fn kick(&self) {
        // SAFETY: a zero-length sendto on our socket, no buffers.
        unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
    }
}

impl Drop for Xsk {
    fn drop(&mut self) {
        // The rings unmap themselves; the socket closes after this. The UMEM goes last:
        // the kernel holds its pages until the socket is released.
        // SAFETY: the mapping made in `open_mode`, unmapped once.
        unsafe { libc::munmap(self.umem.cast(), UMEM_LEN) };
    }
}
