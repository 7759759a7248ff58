//! DNS over TCP (RFC 7766, RFC 9210) for one shard: a readiness loop (mio/epoll, edge
//! triggered) on the shard's SO_REUSEPORT listeners. Length-prefixed messages; several
//! queries pipelined on a connection are all answered, in order. A message shorter than a
//! DNS header closes the connection.
//!
//! Resources are bounded as RFC 7766 6.2.3 and 10 ask, with Knot DNS's two timeouts
//! (`tcp-idle-timeout`, `tcp-io-timeout`, same defaults) and more of our own:
//!
//! - **Idle timeout**: a connection that has sent no complete query for `idle_timeout`
//!   (counted from the accept, then from its last complete query) is closed. Octets of an
//!   unfinished message do not count as activity.
//! - **I/O deadline**: a message whose first octet has arrived must be complete within
//!   `io_timeout`, and each answer must be handed to the kernel within `io_timeout` of being
//!   next in line; otherwise the connection is closed (slow loris, clients that never read).
//! - **Cap**: at `max_connections` the connection idle the longest is closed to admit the
//!   new one, so fresh clients are served while a flood of idle or stalled connections
//!   lasts; a newly accepted connection is served at once (its query usually came with
//!   the handshake).
//! - **Per source**: one source address (an IPv4 address, an IPv6 /64) may hold at most
//!   `max_per_source` connections; further ones are closed at once.
//! - **Bounded buffers**: answers are gathered in a per-shard batch and written straight
//!   away; only what the kernel does not take stays with the connection (about
//!   [`BATCH`] octets, plus one answer), and the connection is not read again until that is
//!   written. Input is read into a per-shard buffer; only an unfinished message (or, while
//!   answers wait, the unread rest of one read) stays with the connection, growing with
//!   what arrives. Both are freed as soon as they are empty, so an idle connection holds no
//!   buffer at all, and freed memory is handed back to the system. The kernel may queue at
//!   most [`KERNEL_UNSENT`] unsent octets per connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};

// The allocator of the `gtmd` binary, linked here for `Conns::return_memory`.
use mimalloc as _;

use super::counters::CloseReason;
use super::{bump, Counters, ShardCtx, WAIT_BOUND};
use crate::dns::HEADER_LEN;
use crate::tables::gslb::ClientAddr;

/// TCP limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Open connections per shard; at the cap the longest-idle one makes room.
    pub max_connections: usize,
    /// Open connections per source address (IPv4 address, IPv6 /64) per shard; 0: no limit.
    pub max_per_source: usize,
    /// Time without a complete query before a connection is closed.
    pub idle_timeout: Duration,
    /// Time to receive a started message, or to write one answer.
    pub io_timeout: Duration,
}

/// Octets read from a socket at a time.
const READ_CHUNK: usize = 4096;
/// Answers gathered before one write. A connection whose answers are not read keeps at
/// most this much plus one answer, and is not read again until that is written.
const BATCH: usize = 4096;
/// Unsent octets the kernel may queue for a connection (TCP_NOTSENT_LOWAT) before writes
/// would block: one answer of any size is always taken whole, but a client that does not
/// read cannot park megabytes in the kernel (autotuned send buffers grow to 4 MiB); its
/// answers back up into our small buffer instead, and the I/O deadline closes it.
const KERNEL_UNSENT: usize = 64 * 1024;
/// The largest DNS message over TCP.
const MAX_MSG: usize = 65535;
/// Connections accepted from one listener in one turn before others are served.
const ACCEPTS_PER_TURN: usize = 256;
/// Reads one connection may do in one turn before others are served.
const READS_PER_TURN: usize = 16;

/// Freed buffer octets after which memory is handed back to the system.
const RETURN_AFTER: usize = 1 << 20;

/// No slot (end of a list).
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

/// A doubly linked list threaded through the connection slots.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

#[derive(Debug, Clone, Copy)]
enum Which {
    /// Every connection, by time of its last complete query (oldest first).
    Idle,
    /// Connections with a message to finish or an answer to write, by when that started.
    Io,
}

struct Conn {
    stream: TcpStream,
    source: IpAddr,
    client: Option<ClientAddr>,
    /// The peer's address and port (for the query log).
    peer: SocketAddr,
    /// Input not yet answered: an unfinished message, or whole messages left while
    /// answers wait to be written.
    rbuf: Vec<u8>,
    /// Answers not yet written: `wbuf[wpos..]`; `head_end` is where the answer being
    /// written ends.
    wbuf: Vec<u8>,
    wpos: usize,
    head_end: usize,
    /// Accept, or the last complete query.
    last_query: Instant,
    /// Since when this connection owes us a message or we owe it an answer.
    io_since: Option<Instant>,
    idle: Link,
    io: Link,
    eof: bool,
}

impl Conn {
    fn owes(&self) -> bool {
        !self.rbuf.is_empty() || self.wpos < self.wbuf.len()
    }
}

/// How far [`Conns::accept_all`] got.
enum Accepted {
    /// The backlog is empty.
    All,
    /// The turn's budget ran out: come back at once (connections are served in between).
    Budget,
    /// Accepting failed: come back at the next wake-up.
    Stuck,
}

/// What one turn of a connection achieved.
#[derive(Debug, Default)]
struct Turn {
    /// At least one complete query was answered.
    queries: bool,
    /// At least one answer was completely written.
    answers: bool,
    /// Stopped with input left to read (the turn's read budget ran out).
    more: bool,
}

/// The connection is to be closed.
struct Close;

/// One shard's connections.
struct Conns {
    limits: TcpLimits,
    /// Token of slot 0 (listeners come first).
    first: usize,
    slots: Vec<Option<Conn>>,
    free: Vec<u32>,
    live: usize,
    idle: List,
    io: List,
    per_source: HashMap<IpAddr, u32>,
    /// Octets of connection buffers freed since memory was last handed back.
    freed: usize,
    last_return: Instant,
    /// Connections to serve again before waiting (their read budget ran out).
    again: Vec<u32>,
    rd: Box<[u8]>,
    batch: Box<[u8]>,
    /// The shard's TCP counters (closes are counted by reason).
    counters: Arc<Counters>,
}

/// Serves TCP on `listeners` until the shard's stop flag is set.
pub fn serve(
    listeners: Vec<std::net::TcpListener>,
    limits: TcpLimits,
    ctx: &mut ShardCtx,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    for l in &listeners {
        // Accepted connections inherit both (Linux copies TCP options from the listener).
        let s = socket2::SockRef::from(l);
        s.set_tcp_nodelay(true)?;
        s.set_tcp_notsent_lowat(KERNEL_UNSENT as u32)?;
    }
    let mut ls: Vec<TcpListener> = listeners.into_iter().map(TcpListener::from_std).collect();
    for (i, l) in ls.iter_mut().enumerate() {
        poll.registry().register(l, Token(i), Interest::READABLE)?;
    }
    let mut cs = Conns::new(limits, ls.len(), ctx.counters.clone());
    let mut events = Events::with_capacity(256);
    let mut again = Vec::new();
    // Listeners with connections left to accept: (token, whether to come back at once).
    let mut listen_again: Vec<(usize, bool)> = Vec::with_capacity(ls.len());
    let mut listeners: Vec<usize> = Vec::with_capacity(ls.len());
    while !ctx.stopping() {
        let wait = if cs.again.is_empty() && listen_again.iter().all(|&(_, now)| !now) {
            cs.next_deadline()
                .map_or(WAIT_BOUND, |d| d.saturating_duration_since(Instant::now()))
                .min(WAIT_BOUND)
        } else {
            Duration::ZERO
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let reg = poll.registry();
        std::mem::swap(&mut again, &mut cs.again);
        for i in again.drain(..) {
            cs.service(i, ctx, reg);
        }
        // Connections first: what they sent is answered before new ones may push them out.
        for ev in events.iter() {
            let t = ev.token().0;
            if let Some(i) = t.checked_sub(cs.first).and_then(|i| u32::try_from(i).ok()) {
                cs.service(i, ctx, reg);
            }
        }
        listeners.clear();
        listeners.extend(listen_again.drain(..).map(|(t, _)| t));
        for ev in events.iter() {
            let t = ev.token().0;
            if t < cs.first && !listeners.contains(&t) {
                listeners.push(t);
            }
        }
        for &t in &listeners {
            match cs.accept_all(&mut ls[t], ctx, reg) {
                Accepted::All => {}
                Accepted::Budget => listen_again.push((t, true)),
                Accepted::Stuck => listen_again.push((t, false)),
            }
        }
        let now = Instant::now();
        cs.expire(now, reg);
        cs.return_memory(now);
    }
    Ok(())
}

/// The key connections are counted under per source: the address, or an IPv6 /64 (one
/// host or site usually has a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

impl Conns {
    fn new(limits: TcpLimits, first: usize, counters: Arc<Counters>) -> Self {
        Self {
            counters,
            limits,
            first,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            idle: EMPTY,
            io: EMPTY,
            per_source: HashMap::new(),
            again: Vec::new(),
            freed: 0,
            last_return: Instant::now(),
            rd: vec![0u8; READ_CHUNK].into_boxed_slice(),
            batch: vec![0u8; BATCH + 2 + MAX_MSG].into_boxed_slice(),
        }
    }

    fn conn(&self, i: u32) -> &Conn {
        self.slots[i as usize].as_ref().expect("live slot")
    }

    fn conn_mut(&mut self, i: u32) -> &mut Conn {
        self.slots[i as usize].as_mut().expect("live slot")
    }

    fn link(&mut self, w: Which, i: u32) -> &mut Link {
        let c = self.conn_mut(i);
        match w {
            Which::Idle => &mut c.idle,
            Which::Io => &mut c.io,
        }
    }

    fn list(&mut self, w: Which) -> &mut List {
        match w {
            Which::Idle => &mut self.idle,
            Which::Io => &mut self.io,
        }
    }

    fn unlink(&mut self, w: Which, i: u32) {
        let Link { prev, next } = *self.link(w, i);
        if prev == NIL {
            self.list(w).head = next;
        } else {
            self.link(w, prev).next = next;
        }
        if next == NIL {
            self.list(w).tail = prev;
        } else {
            self.link(w, next).prev = prev;
        }
        *self.link(w, i) = UNLINKED;
    }

    fn push_back(&mut self, w: Which, i: u32) {
        let tail = self.list(w).tail;
        *self.link(w, i) = Link {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.list(w).head = i;
        } else {
            self.link(w, tail).next = i;
        }
        self.list(w).tail = i;
    }

    /// The earliest idle or I/O deadline.
    fn next_deadline(&self) -> Option<Instant> {
        let io = (self.io.head != NIL).then(|| {
            self.conn(self.io.head).io_since.expect("in the io list") + self.limits.io_timeout
        });
        let idle = (self.idle.head != NIL)
            .then(|| self.conn(self.idle.head).last_query + self.limits.idle_timeout);
        match (io, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes connections past their I/O deadline or idle timeout.
    fn expire(&mut self, now: Instant, reg: &Registry) {
        while self.io.head != NIL {
            let i = self.io.head;
            let since = self.conn(i).io_since.expect("in the io list");
            if now.saturating_duration_since(since) < self.limits.io_timeout {
                break;
            }
            self.close(i, reg, CloseReason::IoTimeout);
        }
        while self.idle.head != NIL {
            let i = self.idle.head;
            if now.saturating_duration_since(self.conn(i).last_query) < self.limits.idle_timeout {
                break;
            }
            self.close(i, reg, CloseReason::IdleTimeout);
        }
    }

    fn close(&mut self, i: u32, reg: &Registry, why: CloseReason) {
        bump(&self.counters.tcp_closed[why as usize]);
        self.unlink(Which::Idle, i);
        if self.conn(i).io_since.is_some() {
            self.unlink(Which::Io, i);
        }
        let mut c = self.slots[i as usize].take().expect("live slot");
        let _ = reg.deregister(&mut c.stream);
        if let Some(n) = self.per_source.get_mut(&c.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&c.source);
            }
        }
        self.free.push(i);
        self.live -= 1;
        self.freed += c.rbuf.capacity() + c.wbuf.capacity();
    }

    /// Accepts the pending connections on `l`, up to [`ACCEPTS_PER_TURN`].
    fn accept_all(&mut self, l: &mut TcpListener, ctx: &mut ShardCtx, reg: &Registry) -> Accepted {
        let mut made_room = false;
        for _ in 0..ACCEPTS_PER_TURN {
            match l.accept() {
                Ok((s, peer)) => self.admit(s, peer, ctx, reg),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::All,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                // Out of descriptors: the longest-idle connection makes room, once per
                // round (if something else holds the descriptors, wait for the next event).
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && !made_room
                        && self.idle.head != NIL =>
                {
                    made_room = true;
                    self.close(self.idle.head, reg, CloseReason::Evicted);
                }
                // Out of descriptors or memory with nothing to give back: try again at the
                // next wake-up (within `WAIT_BOUND`).
                Err(_) => return Accepted::Stuck,
            }
        }
        Accepted::Budget
    }

    fn admit(&mut self, mut s: TcpStream, peer: SocketAddr, ctx: &mut ShardCtx, reg: &Registry) {
        let source = source_key(peer.ip());
        let held = self.per_source.get(&source).copied().unwrap_or(0) as usize;
        if self.limits.max_per_source > 0 && held >= self.limits.max_per_source {
            bump(&ctx.counters.tcp_refused);
            return; // dropped: closed at once
        }
        if self.live >= self.limits.max_connections {
            self.close(self.idle.head, reg, CloseReason::Evicted);
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let token = Token(self.first + i as usize);
        if reg
            .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            self.free.push(i);
            return;
        }
        bump(&ctx.counters.tcp_connections);
        let now = Instant::now();
        self.slots[i as usize] = Some(Conn {
            stream: s,
            source,
            client: Some(ClientAddr::from_ip(peer.ip())),
            peer,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            head_end: 0,
            last_query: now,
            io_since: None,
            idle: UNLINKED,
            io: UNLINKED,
            eof: false,
        });
        self.live += 1;
        self.push_back(Which::Idle, i);
        *self.per_source.entry(source).or_insert(0) += 1;
        // Its query usually arrived with the handshake: answer it before later accepts
        // can push this connection out.
        self.service(i, ctx, reg);
    }

    /// Serves connection `i` after a readiness event.
    fn service(&mut self, i: u32, ctx: &mut ShardCtx, reg: &Registry) {
        let Some(Some(c)) = self.slots.get_mut(i as usize) else {
            return; // closed since the event was queued
        };
        let held = c.rbuf.capacity() + c.wbuf.capacity();
        let turn = match turn(c, ctx, &mut self.rd, &mut self.batch) {
            Ok(t) => t,
            Err(Close) => {
                self.close(i, reg, CloseReason::Client);
                return;
            }
        };
        let now = Instant::now();
        if turn.queries {
            self.conn_mut(i).last_query = now;
            self.unlink(Which::Idle, i);
            self.push_back(Which::Idle, i);
        }
        if turn.more {
            self.again.push(i);
        }
        let c = self.conn_mut(i);
        let (owes, since) = (c.owes(), c.io_since);
        match (owes, since) {
            (false, None) => {}
            (false, Some(_)) => {
                self.conn_mut(i).io_since = None;
                self.unlink(Which::Io, i);
            }
            (true, None) => {
                self.conn_mut(i).io_since = Some(now);
                self.push_back(Which::Io, i);
            }
            // A message received or an answer written: the next one gets a full deadline.
            (true, Some(_)) if turn.queries || turn.answers => {
                self.conn_mut(i).io_since = Some(now);
                self.unlink(Which::Io, i);
                self.push_back(Which::Io, i);
            }
            (true, Some(_)) => {}
        }
        let c = self.conn_mut(i);
        if c.rbuf.is_empty() {
            c.rbuf = Vec::new();
        }
        let now_held = c.rbuf.capacity() + c.wbuf.capacity();
        self.freed += held.saturating_sub(now_held);
    }

    /// Hands freed buffer memory back to the system once a MiB of it has gathered (at
    /// most once a second). mimalloc, the `gtmd` binary's allocator, purges the pages a
    /// thread freed only when that thread allocates again or asks; after a flood of
    /// connections this thread goes quiet, so it asks.
    fn return_memory(&mut self, now: Instant) {
        if self.freed < RETURN_AFTER
            || now.saturating_duration_since(self.last_return) < Duration::from_secs(1)
        {
            return;
        }
        self.freed = 0;
        self.last_return = now;
        unsafe extern "C" {
            fn mi_collect(force: bool);
        }
        // SAFETY: mimalloc's own entry point (linked through the `mimalloc` crate), safe
        // to call from any thread at any time; with another global allocator it only
        // tidies mimalloc's unused heap.
        unsafe { mi_collect(true) };
    }
}

/// Reads what is there, answers every complete message, writes what the kernel takes.
/// Stops reading while answers wait to be written (and waits for WRITABLE).
fn turn(c: &mut Conn, ctx: &mut ShardCtx, rd: &mut [u8], batch: &mut [u8]) -> Result<Turn, Close> {
    let mut t = Turn::default();
    let mut reads = 0;
    loop {
        if c.wpos < c.wbuf.len() {
            flush(c, &mut t)?;
            if c.wpos < c.wbuf.len() {
                return Ok(t);
            }
        }
        if complete(&c.rbuf) {
            let (used, out, bad) = answer(ctx, c.client, &c.peer, &c.rbuf, batch);
            t.queries |= used > 0;
            c.rbuf.drain(..used);
            if c.rbuf.capacity() > 4 * c.rbuf.len().max(READ_CHUNK) {
                c.rbuf.shrink_to_fit();
            }
            send(c, &batch[..out], &mut t)?;
            if bad {
                return Err(Close);
            }
            continue;
        }
        if c.eof {
            return Err(Close); // nothing left to answer or write
        }
        if reads == READS_PER_TURN {
            t.more = true;
            return Ok(t);
        }
        reads += 1;
        // With an unfinished message, read no further than its end.
        let want = match c.rbuf.len() {
            0 => READ_CHUNK,
            1 => READ_CHUNK - 1,
            n => (message_end(&c.rbuf) - n).min(READ_CHUNK),
        };
        match c.stream.read(&mut rd[..want]) {
            Ok(0) => c.eof = true,
            Ok(n) if c.rbuf.is_empty() => {
                let (used, out, bad) = answer(ctx, c.client, &c.peer, &rd[..n], batch);
                t.queries |= used > 0;
                if used < n && !bad {
                    append(&mut c.rbuf, &rd[used..n]);
                }
                send(c, &batch[..out], &mut t)?;
                if bad {
                    return Err(Close);
                }
            }
            Ok(n) => append(&mut c.rbuf, &rd[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(t),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Close),
        }
    }
}

/// Where the length-prefixed message at the start of `buf` (at least 2 octets) ends.
fn message_end(buf: &[u8]) -> usize {
    2 + usize::from(u16::from_be_bytes([buf[0], buf[1]]))
}

/// Appends `data` to the input kept for a connection. It grows with what arrives (by
/// doubling, never past the end of the message being received): a length prefix alone
/// does not make us set aside 64 KiB.
fn append(buf: &mut Vec<u8>, data: &[u8]) {
    let need = buf.len() + data.len();
    if need > buf.capacity() {
        let mut cap = (2 * buf.capacity()).max(need);
        let mut head = [0u8; 2];
        for (h, b) in head.iter_mut().zip(buf.iter().chain(data)) {
            *h = *b;
        }
        if need >= 2 {
            cap = cap.min(message_end(&head).max(need));
        }
        buf.reserve_exact(cap - buf.len());
    }
    buf.extend_from_slice(data);
}

/// Whether `buf` starts with a complete length-prefixed message.
fn complete(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf.len() - 2 >= usize::from(u16::from_be_bytes([buf[0], buf[1]]))
}

/// Answers the complete messages at the start of `input` into `batch` (each with its
/// length prefix) until about [`BATCH`] octets of answers are gathered. Returns the input
/// octets used, the batch length, and whether a message shorter than a header was met
/// (the connection is then closed after what was answered before it).
fn answer(
    ctx: &mut ShardCtx,
    client: Option<ClientAddr>,
    peer: &SocketAddr,
    input: &[u8],
    batch: &mut [u8],
) -> (usize, usize, bool) {
    let (mut pos, mut out) = (0, 0);
    while out < BATCH && input.len() - pos >= 2 {
        let len = usize::from(u16::from_be_bytes([input[pos], input[pos + 1]]));
        if len < HEADER_LEN {
            return (pos, out, true);
        }
        if input.len() - pos - 2 < len {
            break;
        }
        let msg = &input[pos + 2..pos + 2 + len];
        let n = ctx.answer_tcp(msg, client, peer, &mut batch[out + 2..out + 2 + MAX_MSG]);
        if n > 0 {
            batch[out..out + 2].copy_from_slice(&(n as u16).to_be_bytes());
            out += 2 + n;
        }
        pos += 2 + len;
    }
    (pos, out, false)
}

/// Writes a batch of whole answers; keeps what the kernel does not take.
fn send(c: &mut Conn, data: &[u8], t: &mut Turn) -> Result<(), Close> {
    debug_assert!(c.wpos == c.wbuf.len());
    let mut done = 0;
    while done < data.len() {
        match c.stream.write(&data[done..]) {
            Ok(0) => return Err(Close),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Close),
        }
    }
    if done == data.len() {
        t.answers |= done > 0;
        return Ok(());
    }
    // Find the answer being written when the kernel stopped taking octets.
    let mut end = 0;
    loop {
        let next = end + 2 + usize::from(u16::from_be_bytes([data[end], data[end + 1]]));
        if next > done {
            end = next;
            break;
        }
        t.answers = true;
        end = next;
    }
    c.wbuf.clear();
    c.wbuf.extend_from_slice(&data[done..]);
    c.wpos = 0;
    c.head_end = end - done;
    Ok(())
}

/// Writes pending answers; frees the buffer once they are all written.
fn flush(c: &mut Conn, t: &mut Turn) -> Result<(), Close> {
    while c.wpos < c.wbuf.len() {
        match c.stream.write(&c.wbuf[c.wpos..]) {
            Ok(0) => return Err(Close),
            Ok(n) => {
                c.wpos += n;
                while c.head_end <= c.wpos {
                    t.answers = true;
                    if c.head_end >= c.wbuf.len() {
                        break;
                    }
                    let h = c.head_end;
                    c.head_end += 2 + usize::from(u16::from_be_bytes([c.wbuf[h], c.wbuf[h + 1]]));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Close),
        }
    }
    c.wbuf = Vec::new();
    c.wpos = 0;
    c.head_end = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let k = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(k("192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2::ffff"));
        assert_eq!(
            k("2001:db8:1:2::1"),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    }

    #[test]
    fn kept_input_grows_with_what_arrives() {
        let mut b = Vec::new();
        append(&mut b, &[0xff, 0xff, 1]);
        assert!(b.capacity() < 16, "a length prefix sets nothing aside");
        for _ in 0..100 {
            append(&mut b, &[0; 600]);
        }
        assert!(b.capacity() <= 2 * b.len());
        while b.len() < 65537 {
            let n = (65537 - b.len()).min(4096);
            append(&mut b, &vec![0; n]);
        }
        assert_eq!(b.capacity(), 65537, "never past the message's end");
        let mut b = Vec::new();
        append(&mut b, &[0, 2, 1, 2, 0, 9, 1]);
        assert_eq!(b.capacity(), 7, "a leftover is kept exactly");
    }

    #[test]
    fn complete_messages() {
        assert!(!complete(&[]));
        assert!(!complete(&[0]));
        assert!(!complete(&[0, 2, 1]));
        assert!(complete(&[0, 2, 1, 2]));
        assert!(complete(&[0, 0]));
        assert!(complete(&[0, 1, 9, 0]));
    }
}
