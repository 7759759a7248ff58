//! The shard's side of the query log (`[dnstap]`): each shard thread hands sampled queries
//! and their answers to the control side's dnstap writer through its own [`Ring`], without
//! blocking, locking or allocating. A ring is two bounded lock-free queues of the same
//! pre-allocated [`Slot`]s (crossbeam's `ArrayQueue`): the shard takes a free slot, copies
//! the query and the answer into its buffer (mapped once at start-up, large enough for the
//! largest messages of its transport, resident only as far as messages reach: see
//! [`crate::sys::lasting_pages`]), and queues it; the writer encodes it and gives it back. No
//! free slot (the writer is behind): the query is not logged and the drop is counted.
//! With `[dnstap]` off a shard has no [`Tap`] and pays one test per query.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::counters::bump;

/// Slots per UDP shard thread (each holds a query and an answer of up to 4 KiB).
pub const UDP_SLOTS: usize = 1024;
/// Slots per TCP shard thread (each can hold a query and an answer of up to 64 KiB; the
/// memory of a slot is only touched as far as its messages reach).
pub const TCP_SLOTS: usize = 256;
/// Largest UDP message either way (the receive buffers and the answer limit).
pub const UDP_MESSAGE: usize = 4096;
/// Largest TCP message either way.
pub const TCP_MESSAGE: usize = 65535;

/// Who sent a query.
#[derive(Debug, Clone, Copy)]
pub enum Peer<'a> {
    /// The `sockaddr_in`/`sockaddr_in6` the kernel gave with a datagram.
    Sockaddr(&'a [u8]),
    /// A TCP connection's peer.
    Addr(&'a SocketAddr),
}

/// One logged query: when, from whom, over what, and its messages.
#[derive(Debug)]
pub struct Slot {
    /// Wall-clock time the shard answered, seconds and nanoseconds since the Unix epoch.
    pub sec: u64,
    /// See `sec`.
    pub nsec: u32,
    /// The client's address (the first 4 octets for IPv4).
    pub addr: [u8; 16],
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// The client's port.
    pub port: u16,
    /// Over TCP (else UDP).
    pub tcp: bool,
    /// The query is `buf[..qlen]`, the answer `buf[qlen..qlen + rlen]` (empty: none sent).
    pub qlen: usize,
    /// See `qlen`.
    pub rlen: usize,
    /// The messages: this slot's share of its ring's mapping.
    buf: &'static mut [u8],
}

impl Slot {
    fn new(buf: &'static mut [u8]) -> Self {
        Self {
            sec: 0,
            nsec: 0,
            addr: [0; 16],
            v6: false,
            port: 0,
            tcp: false,
            qlen: 0,
            rlen: 0,
            buf,
        }
    }

    /// The query.
    pub fn query(&self) -> &[u8] {
        &self.buf[..self.qlen]
    }

    /// The answer (empty when none was sent).
    pub fn response(&self) -> &[u8] {
        &self.buf[self.qlen..self.qlen + self.rlen]
    }

    fn set_peer(&mut self, peer: Peer<'_>) {
        match peer {
            Peer::Sockaddr(sa) => {
                let family = if sa.len() >= 2 {
                    u16::from_ne_bytes([sa[0], sa[1]]) as i32
                } else {
                    0
                };
                if family == libc::AF_INET6 && sa.len() >= 24 {
                    self.v6 = true;
                    self.port = u16::from_be_bytes([sa[2], sa[3]]);
                    self.addr.copy_from_slice(&sa[8..24]);
                } else if family == libc::AF_INET && sa.len() >= 8 {
                    self.v6 = false;
                    self.port = u16::from_be_bytes([sa[2], sa[3]]);
                    self.addr[..4].copy_from_slice(&sa[4..8]);
                } else {
                    (self.v6, self.port, self.addr) = (false, 0, [0; 16]);
                }
            }
            Peer::Addr(SocketAddr::V4(a)) => {
                self.v6 = false;
                self.port = a.port();
                self.addr[..4].copy_from_slice(&a.ip().octets());
            }
            Peer::Addr(SocketAddr::V6(a)) => {
                self.v6 = true;
                self.port = a.port();
                self.addr.copy_from_slice(&a.ip().octets());
            }
        }
    }
}

/// Why a frame was not written, as [`Stats::dropped`] and [`Ring`] count it.
pub const DROP_REASONS: [&str; 5] = [
    "queue_full",
    "oversize",
    "no_reader",
    "slow_reader",
    "write_error",
];

/// One shard thread's queues: `free` slots for it to fill, `full` ones for the writer.
#[derive(Debug)]
pub struct Ring {
    /// The shard thread it belongs to (for the writer's logs).
    pub shard: usize,
    free: ArrayQueue<Box<Slot>>,
    full: ArrayQueue<Box<Slot>>,
    /// Frames lost because no slot was free (written by the shard thread only).
    pub queue_full: AtomicU64,
    /// Frames lost because the messages did not fit a slot (cannot happen with the
    /// transports' limits; counted, never a panic).
    pub oversize: AtomicU64,
}

impl Ring {
    /// `slots` slots of `message` octets each way, in one mapping made now and kept for
    /// the life of the process (rings are made once, at start-up).
    pub fn new(shard: usize, slots: usize, message: usize) -> std::io::Result<Self> {
        let free = ArrayQueue::new(slots.max(1));
        let pages = crate::sys::lasting_pages(slots * 2 * message)?;
        for buf in pages.chunks_mut(2 * message.max(1)) {
            let _ = free.push(Box::new(Slot::new(buf)));
        }
        Ok(Self {
            shard,
            free,
            full: ArrayQueue::new(slots.max(1)),
            queue_full: AtomicU64::new(0),
            oversize: AtomicU64::new(0),
        })
    }

    /// The oldest queued slot (the writer's side).
    pub fn pop(&self) -> Option<Box<Slot>> {
        self.full.pop()
    }

    /// Gives a slot back once written (the writer's side).
    pub fn recycle(&self, slot: Box<Slot>) {
        // Never full: there are as many slots as places.
        let _ = self.free.push(slot);
    }
}

/// What the writer counts (the shards count in their [`Ring`]s); `/metrics` reads both.
#[derive(Debug)]
pub struct Stats {
    /// Every shard thread's ring.
    pub rings: Vec<Arc<Ring>>,
    /// Frames written whole to the socket or file.
    pub frames: AtomicU64,
    /// Frames lost by the writer, by [`DROP_REASONS`] index (the first two stay 0 here).
    pub dropped: [AtomicU64; DROP_REASONS.len()],
    /// 1 while the socket's reader is connected (or the file open).
    pub connected: AtomicU64,
}

impl Stats {
    /// Counters at zero for `rings`.
    pub fn new(rings: Vec<Arc<Ring>>) -> Self {
        Self {
            rings,
            frames: AtomicU64::new(0),
            dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            connected: AtomicU64::new(0),
        }
    }

    /// Frames lost for reason `i` of [`DROP_REASONS`], shards and writer summed.
    pub fn dropped(&self, i: usize) -> u64 {
        let rings: u64 = match i {
            0 => self.rings.iter().map(|r| r.queue_full.load(Relaxed)).sum(),
            1 => self.rings.iter().map(|r| r.oversize.load(Relaxed)).sum(),
            _ => 0,
        };
        rings + self.dropped.get(i).map_or(0, |c| c.load(Relaxed))
    }
}

/// What a tap logs (`[dnstap]`'s flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    /// AUTH_QUERY frames.
    pub queries: bool,
    /// AUTH_RESPONSE frames.
    pub responses: bool,
    /// AUTH_RESPONSE frames carry the query.
    pub responses_with_queries: bool,
}

/// A shard thread's tap: its ring, the sampling countdown, what to copy.
#[derive(Debug)]
pub struct Tap {
    ring: Arc<Ring>,
    sample: u32,
    countdown: u32,
    logged: Logged,
}

impl Tap {
    /// Logs one query in `sample` into `ring`, as `logged` says.
    pub fn new(ring: Arc<Ring>, sample: u32, logged: Logged) -> Self {
        Self {
            ring,
            sample: sample.max(1),
            countdown: 1,
            logged,
        }
    }

    /// Counts one query toward the sample; logs it when its turn comes.
    #[inline]
    pub fn offer(&mut self, tcp: bool, peer: Peer<'_>, query: &[u8], response: &[u8]) {
        self.countdown -= 1;
        if self.countdown == 0 {
            self.countdown = self.sample;
            self.log(tcp, peer, query, response);
        }
    }

    /// Copies a sampled query and its answer into a free slot and queues it.
    #[inline(never)]
    fn log(&mut self, tcp: bool, peer: Peer<'_>, query: &[u8], response: &[u8]) {
        let l = self.logged;
        let query = if l.queries || l.responses_with_queries {
            query
        } else {
            &[]
        };
        let response = if l.responses { response } else { &[] };
        // The frames the writer makes of it: what a drop loses.
        let frames = u64::from(l.queries && !query.is_empty()) + u64::from(!response.is_empty());
        let Some(mut slot) = self.ring.free.pop() else {
            add(&self.ring.queue_full, frames);
            return;
        };
        if query.len() + response.len() > slot.buf.len() {
            add(&self.ring.oversize, frames);
            self.ring.recycle(slot);
            return;
        }
        (slot.sec, slot.nsec) = crate::sys::wall_clock();
        slot.tcp = tcp;
        slot.set_peer(peer);
        let (q, rest) = slot.buf.split_at_mut(query.len());
        q.copy_from_slice(query);
        rest[..response.len()].copy_from_slice(response);
        (slot.qlen, slot.rlen) = (query.len(), response.len());
        // Never full: there are as many places as slots.
        let _ = self.ring.full.push(slot);
    }
}

/// Adds `n` to a counter only this thread writes.
#[inline]
fn add(c: &AtomicU64, n: u64) {
    if n == 1 {
        bump(c);
    } else {
        c.store(c.load(Relaxed) + n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Logged = Logged {
        queries: true,
        responses: true,
        responses_with_queries: false,
    };

    #[test]
    fn samples_copies_and_drops_when_full() {
        let ring = Arc::new(Ring::new(3, 2, 16).unwrap());
        let mut tap = Tap::new(ring.clone(), 2, ALL);
        let peer: SocketAddr = "[2001:db8::1]:5353".parse().unwrap();
        for i in 0..8u8 {
            tap.offer(true, Peer::Addr(&peer), &[i; 3], &[i; 5]);
        }
        // Queries 0, 2, 4, 6 are sampled; two slots: 0 and 2 queued, 4 and 6 dropped
        // (two frames each).
        assert_eq!(ring.queue_full.load(Relaxed), 4);
        let a = ring.pop().unwrap();
        assert_eq!((a.query(), a.response()), (&[0u8; 3][..], &[0u8; 5][..]));
        assert!(a.v6 && a.tcp && a.port == 5353 && a.addr[0] == 0x20);
        assert!(a.sec > 1_700_000_000);
        let b = ring.pop().unwrap();
        assert_eq!(b.query(), &[2u8; 3]);
        assert!(ring.pop().is_none());
        ring.recycle(a);
        // Too large for a slot: counted, the slot stays free.
        tap.offer(false, Peer::Addr(&peer), &[9; 40], &[]);
        tap.offer(false, Peer::Addr(&peer), &[9; 40], &[]);
        assert_eq!(ring.oversize.load(Relaxed), 1);
        // A UDP peer from the kernel's sockaddr_in; no answer: the query alone.
        let mut sa = [0u8; 16];
        sa[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sa[2..4].copy_from_slice(&53000u16.to_be_bytes());
        sa[4..8].copy_from_slice(&[192, 0, 2, 7]);
        tap.offer(false, Peer::Sockaddr(&sa), &[1; 4], &[]);
        let c = ring.pop().unwrap();
        assert!(!c.v6 && !c.tcp && c.port == 53000 && c.addr[..4] == [192, 0, 2, 7]);
        assert_eq!((c.query().len(), c.response().len()), (4, 0));
        let stats = Stats::new(vec![ring.clone()]);
        assert_eq!((stats.dropped(0), stats.dropped(1)), (4, 1));
    }

    /// The shard's promise: logging a query (sampled, copied, queued) or dropping it
    /// allocates nothing.
    #[test]
    fn logging_allocates_nothing() {
        use crate::wire::respond::tests::counting::allocs;
        let ring = Arc::new(Ring::new(0, 4, UDP_MESSAGE).unwrap());
        let mut tap = Tap::new(ring.clone(), 1, ALL);
        let mut sa = [0u8; 28];
        sa[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        let peer: SocketAddr = "192.0.2.1:53".parse().unwrap();
        let (q, r) = ([1u8; 512], [2u8; UDP_MESSAGE]);
        let before = allocs();
        for _ in 0..100 {
            tap.offer(false, Peer::Sockaddr(&sa), &q, &r);
            tap.offer(true, Peer::Addr(&peer), &q, &[]);
            while let Some(s) = ring.pop() {
                ring.recycle(s);
            }
        }
        for _ in 0..10 {
            tap.offer(false, Peer::Sockaddr(&sa), &q, &r);
        }
        assert_eq!(allocs() - before, 0);
        assert_eq!(ring.queue_full.load(Relaxed), 12);
    }
}
