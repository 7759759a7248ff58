//! The few system calls gtmd makes outside its socket backends, each behind a safe function.
//!
//! `unsafe` lives in two places only: the shard backends (`shard::{mmsg, uring, socket,
//! tcp}`, which own their buffers and the kernel's view of them) and this module (a leaf:
//! plain calls on plain data). Everything else calls these. Every `unsafe` block says why it
//! holds (`clippy::undocumented_unsafe_blocks` is denied in `lib.rs`).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Lowers the calling thread's scheduling priority (nice 10), for control-side work (parsing
/// include files, freeing an old snapshot) that runs on the shards' CPUs and must yield to
/// them. Failure is harmless and ignored.
pub fn lower_thread_priority() {
    // SAFETY: a plain syscall on this thread's own id, no memory passed.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as u32, 10) };
}

/// Runs `f` with transparent huge pages off for this process (new page faults get 4 KiB
/// pages), then turns them back on if they were on: for memory the shards never read (a
/// configuration being read and validated). Where free memory goes back to the host (a VM
/// with virtio-balloon free page reporting, like the one PERF.md measures on) a fresh huge
/// page is faulted in at ~5 s per GiB against ~0.8 s for small pages. Failure (an old
/// kernel) is harmless: `f` runs either way.
pub fn without_huge_pages<R>(f: impl FnOnce() -> R) -> R {
    /// Turns huge pages back on when dropped, `f` having returned or unwound.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            if self.0 {
                // SAFETY: prctl with integer arguments only; changes this process's THP flag.
                unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
            }
        }
    }
    // SAFETY: prctl with integer arguments only: reads, then sets, this process's THP flag.
    let turned_off = unsafe {
        libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    };
    let _restore = Restore(turned_off);
    f()
}

/// A transparent huge page (x86-64, arm64 with 4 KiB pages), and a small page: the sizes
/// [`collapse_resident`] works with ([`can_collapse`] says no elsewhere).
const HUGE: usize = 2 << 20;
const SMALL: usize = 4096;

/// Whether [`collapse_resident`] can put memory back on huge pages here and should:
/// 4 KiB pages and 2 MiB huge pages, transparent huge pages not `never` (`MADV_COLLAPSE`
/// would ignore that setting: the operator's choice is kept), not turned off for this
/// process (`PR_SET_THP_DISABLE` inherited or set by whoever started gtmd), and
/// `MADV_COLLAPSE` (Linux 6.1) working on a fresh 2 MiB of memory. Decided once, at the
/// first call: make it at start-up, before anything turns huge pages off for a while.
/// A reload compiles on small pages only where this holds (`compile::compile_with`), or
/// its tables would stay on them.
pub fn can_collapse() -> bool {
    static CAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN.get_or_init(|| {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let enabled = read("/sys/kernel/mm/transparent_hugepage/enabled");
        let pmd = read("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
        // SAFETY: plain sysconf and prctl calls with integer arguments only.
        let (page, thp_off) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0),
            )
        };
        if enabled.is_empty()
            || enabled.contains("[never]")
            || pmd.trim() != HUGE.to_string()
            || page != SMALL as libc::c_long
            || thp_off != 0
        {
            return false;
        }
        probe_collapse()
    })
}

/// `MADV_COLLAPSE` on 2 MiB of fresh, written memory: whether it succeeds.
fn probe_collapse() -> bool {
    let len = 2 * HUGE;
    // SAFETY: a new private anonymous mapping; no existing memory is named.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    let block = (p as usize).next_multiple_of(HUGE);
    // SAFETY: [block, block + HUGE) lies inside the mapping just made (2 huge pages
    // long), which nothing else references: its pages are written, then advised.
    let ok = unsafe {
        std::ptr::write_bytes(block as *mut u8, 1, HUGE);
        libc::madvise(block as *mut libc::c_void, HUGE, libc::MADV_COLLAPSE) == 0
    };
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(p, len) };
    ok
}

/// Why a [`collapse_resident`] pass stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollapseStop {
    /// Huge pages are off for the process (a reload is reading or compiling): the kernel
    /// refuses every block until they are back on.
    ThpOff,
    /// The kernel had no huge page to give (`ENOMEM`), or the memory cgroup no room for
    /// one (`EBUSY`): going on would only reclaim and compact for each block.
    NoMemory,
}

/// Whether transparent huge pages are turned off for this process (PR_SET_THP_DISABLE:
/// inherited, or [`without_huge_pages`] running in some thread).
pub fn huge_pages_off() -> bool {
    // SAFETY: prctl with integer arguments only: reads this process's THP flag.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) > 0 }
}

/// Hands memory the allocator holds freed back to the system now (mimalloc purges it
/// lazily, from whichever thread allocates next: after a reload freed the old snapshot,
/// that was the next reload, which then paid for it). The retire thread calls it once
/// the replaced snapshot is freed.
pub fn return_freed_memory() {
    // SAFETY: mimalloc's own entry point, no arguments to uphold; safe from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Runs `f` on small pages where [`collapse_resident`] can put its memory back on huge
/// pages afterwards ([`can_collapse`]), else as the system gives: what a reload's
/// compile and publish do (`compile::compile_with`, `control::hugepages`).
pub fn small_pages_if_collapsible<R>(f: impl FnOnce() -> R) -> R {
    if can_collapse() {
        without_huge_pages(f)
    } else {
        f()
    }
}

/// Quarters of a block's pages that must be resident for [`collapse_resident`] to take
/// it (3: three quarters).
const COLLAPSE_RESIDENT: usize = 3;

/// What one [`collapse_resident`] pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collapsed {
    /// 2 MiB blocks looked at (whole, aligned, at least [`COLLAPSE_RESIDENT`] quarters
    /// resident).
    pub blocks: usize,
    /// Of those, the ones the kernel collapsed (or found collapsed already).
    pub huge: usize,
    /// Why the pass stopped early, if it did.
    pub stopped: Option<CollapseStop>,
}

/// Puts this process's resident anonymous memory back on transparent huge pages: every
/// 2 MiB-aligned block of a private writable anonymous mapping with at least
/// [`COLLAPSE_RESIDENT`] of its pages resident is collapsed (`MADV_COLLAPSE`,
/// synchronous: the calling thread pays for it), one block per call, with a `pause` after
/// each block the kernel had to copy. The pages not resident become zeroed memory in the
/// huge page (what they read as before): the allocator hands freed memory back in
/// pieces smaller than a block, so once a reload's old tables are freed most blocks of
/// the new ones have a few holes, and requiring every page would leave them on small
/// pages (a quarter of a block at most is the memory this costs). Blocks less resident
/// are left alone. A page mapped to the shared zero page (read,
/// never written) counts as resident and becomes real memory in the huge page: memory
/// that is allocated zeroed and only read grows resident memory by that much. Contents
/// never change; a thread touching a block while the kernel copies it waits for the copy
/// (a fraction of a millisecond), hence the pause. Blocks the kernel refuses (pinned
/// pages: an AF_XDP UMEM, io_uring buffers; `MADV_NOHUGEPAGE`) are skipped.
/// For after a reload compiled on small pages (`control::hugepages`).
pub fn collapse_resident(pause: Duration) -> Collapsed {
    let mut done = Collapsed::default();
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return done;
    };
    let mut resident = vec![0u8; HUGE / SMALL];
    for (start, end) in anonymous_ranges(&maps) {
        let mut block = start.next_multiple_of(HUGE);
        while block + HUGE <= end {
            let at = block as *mut libc::c_void;
            block += HUGE;
            // SAFETY: mincore writes one octet per page of the range into `resident`,
            // which has HUGE / SMALL of them; an unmapped range only fails (ENOMEM).
            if unsafe { libc::mincore(at, HUGE, resident.as_mut_ptr()) } != 0 {
                break; // unmapped since /proc/self/maps was read
            }
            if resident.iter().filter(|r| *r & 1 != 0).count()
                < COLLAPSE_RESIDENT * (HUGE / SMALL) / 4
            {
                continue;
            }
            if huge_pages_off() {
                done.stopped = Some(CollapseStop::ThpOff);
                return done;
            }
            done.blocks += 1;
            let t0 = std::time::Instant::now();
            // SAFETY: advice that keeps the contents of the range: the kernel copies the
            // block into one huge page and maps it in place, or fails and leaves it.
            let r = unsafe { libc::madvise(at, HUGE, libc::MADV_COLLAPSE) };
            let err = (r != 0).then(|| io::Error::last_os_error().raw_os_error());
            match err {
                None => done.huge += 1,
                Some(Some(libc::ENOMEM | libc::EBUSY)) => {
                    done.stopped = Some(CollapseStop::NoMemory);
                    return done;
                }
                // Refused for this block only (pinned, busy, zero-page, no-huge-page
                // mapping), or for all while huge pages are off: checked above.
                Some(_) => continue,
            }
            // Already huge takes a few microseconds; a copy, far longer.
            if t0.elapsed() > Duration::from_micros(50) {
                std::thread::sleep(pause);
            }
        }
    }
    done
}

/// `(start, end)` of each private, writable, anonymous mapping in `/proc/self/maps`'s
/// text (no file, or the `[heap]`), at least one huge page long.
fn anonymous_ranges(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let path = f.nth(3).unwrap_or("");
            if perms != "rw-p" || !(path.is_empty() || path == "[heap]") {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            (b.saturating_sub(a) >= HUGE).then_some((a, b))
        })
        .collect()
}

/// The CPUs this process may run on (its affinity mask: under `taskset -c 2,3` or a cgroup
/// cpuset that is 2 and 3, not 0 and 1), in order; all CPUs if the mask cannot be read.
pub fn usable_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, all-zero is an empty set; sched_getaffinity writes at
    // most size_of::<cpu_set_t>() octets into it; CPU_ISSET only reads it.
    let cpus: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        } else {
            Vec::new()
        }
    };
    if cpus.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        cpus
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_thread_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data, all-zero is an empty set; CPU_SET writes inside it
    // (it ignores a cpu past CPU_SETSIZE); sched_setaffinity only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fills `buf` from the kernel's random source (getrandom(2), blocking only until the pool
/// is initialised at boot), retrying interrupted and short reads.
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: getrandom writes at most rest.len() octets at rest's start.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if r > 0 {
            got += r as usize;
        } else {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Milliseconds of CLOCK_MONOTONIC_COARSE, wrapping at 2^32 (about 49 days): the
/// vDSO's cheapest clock, read per query by rate limiting (its tick, 1-4 ms, is finer than
/// buckets that refill per millisecond).
#[inline]
pub fn coarse_millis() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

/// `len` octets of zeroed memory for the life of the process, in small pages only: an
/// anonymous mapping (nothing resident until written) with transparent huge pages refused
/// (`MADV_NOHUGEPAGE`; refusal failing is harmless), never unmapped. For buffers sized for
/// the largest message but mostly written at their start (the query log's slots): from
/// the allocator, whose arena asks for huge pages, each one written would make 2 MiB
/// resident.
pub fn lasting_pages(len: usize) -> io::Result<&'static mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: a new private anonymous mapping; no existing memory is named.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: advice on the mapping just made, of its length.
    unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
    // SAFETY: the mapping is `len` octets, readable and writable, zero-filled by the kernel
    // (so initialised), referenced nowhere else, and never unmapped: a unique 'static slice.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// Wall-clock time (CLOCK_REALTIME, read through the vDSO): seconds and nanoseconds
/// since the Unix epoch, as the query log stamps a logged query (without `SystemTime`'s
/// checked subtraction).
#[inline]
pub fn wall_clock() -> (u64, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Waits until `fd` is readable or `timeout` passes; true when it is readable. An
/// interrupted wait counts as not readable (the caller loops).
pub fn wait_readable(fd: &impl AsRawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, owned by this frame, for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// `recv_from` on a socket2 socket into an initialised buffer: the received octets are
/// `buf[..n]`.
pub fn recv_from(sock: &socket2::Socket, buf: &mut [u8]) -> io::Result<(usize, socket2::SockAddr)> {
    // SAFETY: [u8] and [MaybeUninit<u8>] have one layout, and the kernel only ever writes
    // initialised octets into the buffer, so `buf` stays initialised (socket2 documents
    // this cast for `Read`).
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    sock.recv_from(uninit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_random_and_clock() {
        let cpus = usable_cpus();
        assert!(!cpus.is_empty());
        pin_thread_to(cpus[0]).unwrap();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill_random(&mut a).unwrap();
        fill_random(&mut b).unwrap();
        assert_ne!(a, b);
        let t0 = coarse_millis();
        std::thread::sleep(Duration::from_millis(30));
        let dt = coarse_millis().wrapping_sub(t0);
        assert!((20..1000).contains(&dt), "{dt} ms");
    }

    #[test]
    fn anonymous_ranges_of_maps() {
        let maps = "\
55d0c0000000-55d0c0400000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000400000 rw-p 00000000 00:00 0 \n\
7f0000400000-7f0000401000 rw-p 00000000 00:00 0 \n\
7f0000500000-7f0000900000 r--p 00000000 00:00 0 \n\
7f0000900000-7f0000d00000 rw-s 00000000 00:0e 1234                       /memfd:x
7f0001000000-7f0001400000 rw-p 00001000 fd:01 42                         /usr/bin/gtmd
7ffd00000000-7ffd00400000 rw-p 00000000 00:00 0                          [stack]
";
        assert_eq!(
            anonymous_ranges(maps),
            [
                (0x55d0c0000000, 0x55d0c0400000),
                (0x7f0000000000, 0x7f0000400000)
            ]
        );
    }

    /// Memory written on small pages (THP off for the process) is found resident and,
    /// where the kernel can, collapsed; its contents stay. The count of huge pages made
    /// depends on the machine (THP `never`, an old kernel, no huge page free): only
    /// checked where [`can_collapse`] says it works and the pass was not stopped.
    #[test]
    fn collapse_keeps_contents() {
        let mut v: Vec<u64> = without_huge_pages(|| (0..(8 * HUGE / 8) as u64).collect());
        // Holes, as the allocator leaves them when it hands freed memory back: a sixteenth
        // of every block (taken), and most of one block (left on small pages).
        let base = v.as_mut_ptr() as usize;
        let first = base.next_multiple_of(HUGE);
        let drop = |from: usize, pages: usize| {
            // SAFETY: whole pages inside `v`'s allocation; they read as zero afterwards,
            // which the checks below expect.
            unsafe {
                libc::madvise(
                    from as *mut libc::c_void,
                    pages * SMALL,
                    libc::MADV_DONTNEED,
                )
            };
        };
        for b in 0..7 {
            let block = first + b * HUGE;
            if block + HUGE <= base + v.len() * 8 {
                drop(block + HUGE / 2, HUGE / SMALL / 16);
            }
        }
        drop(first, HUGE / SMALL / 2);
        let zeroed = |i: usize| {
            let at = base + i * 8;
            let in_block = |b: usize| {
                let block = first + b * HUGE;
                (block + HUGE / 2..block + HUGE / 2 + HUGE / 16).contains(&at)
                    && block + HUGE <= base + v.len() * 8
            };
            (first..first + HUGE / 2).contains(&at) || (0..7).any(in_block)
        };
        let done = collapse_resident(Duration::ZERO);
        if can_collapse() && done.stopped.is_none() {
            assert!(done.blocks >= 6, "{done:?}");
            assert!(done.huge >= 6, "{done:?}");
            let resident = |at: usize| {
                let mut r = [0u8; 1];
                // SAFETY: one page inside `v`; mincore only writes `r`.
                unsafe { libc::mincore(at as *mut libc::c_void, SMALL, r.as_mut_ptr()) };
                r[0] & 1 != 0
            };
            // Checked before `v` is read (a read maps absent pages to the zero page): a
            // hole of a block collapsed is memory again; the half-empty block's is not.
            let hole = first + HUGE + HUGE / 2;
            assert!(
                resident(hole),
                "a block with a sixteenth missing is collapsed"
            );
            assert!(!resident(first), "a block half missing is left alone");
        }
        let want = |i: usize| if zeroed(i) { 0 } else { i as u64 };
        assert!(v.iter().enumerate().all(|(i, &x)| x == want(i)));
    }

    #[test]
    fn readable_and_recv_from() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        b.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        let to = b.local_addr().unwrap().as_socket().unwrap();
        assert!(!wait_readable(&b, Duration::from_millis(10)));
        a.send_to(b"hello", to).unwrap();
        assert!(wait_readable(&b, Duration::from_secs(2)));
        let mut buf = [0u8; 64];
        let (n, from) = recv_from(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from.as_socket(), Some(a.local_addr().unwrap()));
    }
}
