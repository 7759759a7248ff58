//! The query log's writer (`[dnstap]`): one thread that drains every shard thread's
//! [`Ring`], encodes each logged query as dnstap messages (AUTH_QUERY, AUTH_RESPONSE) in
//! Frame Streams data frames (`encode.rs`), and writes them to the sink:
//!
//! - **socket**: a reader's Unix socket, with fstrm's bidirectional handshake (READY,
//!   ACCEPT, START; STOP and FINISH at shutdown). Writes never block: frames wait in a
//!   bounded buffer, and when it is full (the reader is slow) or there is no reader, they
//!   are dropped and counted. A reader that goes away is retried every second.
//! - **file**: Frame Streams' unidirectional form (START, the frames, STOP at shutdown),
//!   created at start-up.
//!
//! It never touches a shard: when it falls behind, the shards find no free slot and count
//! the drop themselves (`shard::tap`).

mod encode;

use std::collections::VecDeque;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::config::dnstap::{Dnstap, Sink};
use crate::shard::tap::{Ring, Slot, Stats, DROP_REASONS};
use encode::{control, parse_control, Encoder, Kind, Meta, ACCEPT, READY, START, STOP};

/// Frames waiting for a slow socket reader, at most (then they are dropped).
const SOCKET_BUFFER: usize = 256 * 1024;
/// Between attempts to reach a socket reader.
const RETRY: Duration = Duration::from_secs(1);
/// Longest wait for the reader during the handshake and the shutdown.
const HANDSHAKE: Duration = Duration::from_secs(1);
/// The writer's sleep when every ring is empty: 1 ms after a logged query, doubling to 16
/// ms while nothing comes (a UDP ring's 1,024 slots hold 16 ms of 64,000 queries a second;
/// an idle writer wakes 60 times a second, not 1,000).
const IDLE: Duration = Duration::from_millis(1);
/// See [`IDLE`].
const IDLE_MAX: Duration = Duration::from_millis(16);
/// Slots taken from one ring before looking at the next.
const TURN: usize = 256;

fn reason(name: &str) -> usize {
    DROP_REASONS.iter().position(|r| *r == name).unwrap_or(0)
}

/// The sink, opened before any DNS socket (a file that cannot be created fails start-up),
/// waiting for the shards' rings.
pub struct Opened {
    out: Out,
    cfg: Dnstap,
}

/// Opens `cfg`'s sink: creates the file and writes its START frame, or makes a first
/// attempt to reach the socket's reader (none yet is not an error: it is retried).
pub fn open(cfg: &Dnstap) -> Result<Opened, String> {
    let out = match &cfg.sink {
        Sink::File(p) => {
            let f = std::fs::File::create(p)
                .map_err(|e| format!("dnstap.file: cannot create {}: {e}", p.display()))?;
            let mut w = BufWriter::with_capacity(64 * 1024, f);
            w.write_all(&control(START))
                .and_then(|()| w.flush())
                .map_err(|e| format!("dnstap.file: cannot write {}: {e}", p.display()))?;
            info!(file = %p.display(), "dnstap: writing the query log");
            Out::File {
                w,
                path: p.clone(),
                failing: false,
            }
        }
        Sink::Socket(p) => {
            let mut c = Conn::new(p.clone());
            c.reconnect(None);
            Out::Socket(c)
        }
    };
    Ok(Opened {
        out,
        cfg: cfg.clone(),
    })
}

/// The running writer.
pub struct Writer {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    /// What it counts, with the rings.
    pub stats: Arc<Stats>,
}

impl Opened {
    /// Starts the writer thread over `rings`.
    pub fn spawn(self, rings: Vec<Arc<Ring>>) -> io::Result<Writer> {
        let stats = Arc::new(Stats::new(rings));
        let stop = Arc::new(AtomicBool::new(false));
        let meta = Meta {
            identity: self.cfg.identity.clone(),
            version: self.cfg.version.clone(),
            responses_with_queries: self.cfg.responses_with_queries,
        };
        let mut run = Run {
            out: self.out,
            stats: stats.clone(),
            meta,
            queries: self.cfg.log_queries,
            responses: self.cfg.log_responses,
            enc: Encoder::default(),
            frame: Vec::with_capacity(2 * crate::shard::tap::TCP_MESSAGE + 512),
        };
        run.stats
            .connected
            .store(u64::from(run.out.connected()), Relaxed);
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dnstap".into())
            .spawn(move || run.until_stopped(&s))?;
        Ok(Writer {
            thread,
            stop,
            stats,
        })
    }
}

impl Writer {
    /// Writes what the rings still hold, finishes the stream (STOP; FINISH from a socket
    /// reader, bounded) and waits for the thread. Call once the shards have stopped.
    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        let _ = self.thread.join();
    }
}

/// The writer thread's state.
struct Run {
    out: Out,
    stats: Arc<Stats>,
    meta: Meta,
    queries: bool,
    responses: bool,
    enc: Encoder,
    frame: Vec<u8>,
}

impl Run {
    fn until_stopped(&mut self, stop: &AtomicBool) {
        let mut idle = IDLE;
        loop {
            // Read before draining: once set, no shard writes any more.
            let stopping = stop.load(Relaxed);
            let mut n = 0;
            let stats = self.stats.clone();
            for ring in &stats.rings {
                for _ in 0..TURN {
                    let Some(slot) = ring.pop() else { break };
                    self.emit(&slot);
                    ring.recycle(slot);
                    n += 1;
                }
            }
            self.out.flush(&self.stats);
            // Reconnecting is due whether or not queries keep coming.
            self.out.tick(&self.stats);
            if n > 0 {
                idle = IDLE;
            } else {
                if stopping {
                    break;
                }
                std::thread::sleep(idle);
                idle = (idle * 2).min(IDLE_MAX);
            }
        }
        self.out.finish(&self.stats);
    }

    /// Writes a slot's frames: the query (AUTH_QUERY), the response (AUTH_RESPONSE).
    fn emit(&mut self, slot: &Slot) {
        for (on, kind, len) in [
            (self.queries, Kind::Query, slot.qlen),
            (self.responses, Kind::Response, slot.response().len()),
        ] {
            if on && len > 0 {
                self.frame.clear();
                self.enc.frame(&self.meta, slot, kind, &mut self.frame);
                self.out.write(&self.frame, &self.stats);
            }
        }
    }
}

/// Where frames go.
enum Out {
    File {
        w: BufWriter<std::fs::File>,
        path: PathBuf,
        /// The last write failed (logged once until one succeeds).
        failing: bool,
    },
    Socket(Conn),
}

impl Out {
    fn connected(&self) -> bool {
        match self {
            Self::File { .. } => true,
            Self::Socket(c) => c.stream.is_some(),
        }
    }

    fn write(&mut self, frame: &[u8], stats: &Stats) {
        match self {
            Self::File { w, path, failing } => match w.write_all(frame) {
                Ok(()) => {
                    stats.frames.fetch_add(1, Relaxed);
                    if *failing {
                        *failing = false;
                        info!(file = %path.display(), "dnstap: writing the query log again");
                    }
                }
                Err(e) => {
                    stats.dropped[reason("write_error")].fetch_add(1, Relaxed);
                    if !*failing {
                        *failing = true;
                        error!(file = %path.display(), "dnstap: cannot write the query log ({e}): frames are dropped and counted");
                    }
                }
            },
            Self::Socket(c) => c.queue(frame, stats),
        }
    }

    fn flush(&mut self, stats: &Stats) {
        match self {
            Self::File { w, path, failing } => {
                if let Err(e) = w.flush() {
                    if !*failing {
                        *failing = true;
                        error!(file = %path.display(), "dnstap: cannot write the query log ({e})");
                    }
                }
            }
            Self::Socket(c) => c.send(stats),
        }
    }

    /// Reconnecting to a socket reader when it is time to try again.
    fn tick(&mut self, stats: &Stats) {
        if let Self::Socket(c) = self {
            if c.stream.is_none() && Instant::now() >= c.next_try {
                c.reconnect(Some(stats));
            }
        }
    }

    /// The end of the stream: STOP (and FINISH from a socket reader).
    fn finish(&mut self, stats: &Stats) {
        match self {
            Self::File { w, path, .. } => {
                if let Err(e) = w.write_all(&control(STOP)).and_then(|()| w.flush()) {
                    error!(file = %path.display(), "dnstap: cannot finish the query log: {e}");
                }
            }
            Self::Socket(c) => c.finish(stats),
        }
        stats.connected.store(0, Relaxed);
    }
}

/// A socket reader's connection and the frames waiting for it.
struct Conn {
    path: PathBuf,
    stream: Option<UnixStream>,
    /// Frames not yet written: `buf[sent..]`; `ends` holds where each frame ends.
    buf: Vec<u8>,
    ends: VecDeque<usize>,
    sent: usize,
    next_try: Instant,
    /// The reader's absence was logged (once until it is back).
    absent_logged: bool,
}

impl Conn {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            stream: None,
            buf: Vec::with_capacity(SOCKET_BUFFER),
            ends: VecDeque::with_capacity(4096),
            sent: 0,
            next_try: Instant::now(),
            absent_logged: false,
        }
    }

    /// Connects and shakes hands; logs the outcome when it changes.
    fn reconnect(&mut self, stats: Option<&Stats>) {
        self.next_try = Instant::now() + RETRY;
        match handshake(&self.path) {
            Ok(s) => {
                info!(socket = %self.path.display(), "dnstap: writing the query log to the reader");
                self.stream = Some(s);
                self.absent_logged = false;
                if let Some(st) = stats {
                    st.connected.store(1, Relaxed);
                }
            }
            Err(e) => {
                if !self.absent_logged {
                    warn!(socket = %self.path.display(), "dnstap: no reader ({e}): frames are dropped and counted until one accepts; retrying every second");
                    self.absent_logged = true;
                }
            }
        }
    }

    /// Queues a frame, or drops it (no reader; a reader too slow to keep up).
    fn queue(&mut self, frame: &[u8], stats: &Stats) {
        if self.stream.is_none() {
            stats.dropped[reason("no_reader")].fetch_add(1, Relaxed);
            return;
        }
        if self.buf.len() + frame.len() > SOCKET_BUFFER {
            self.send(stats);
        }
        if self.stream.is_none() || self.buf.len() + frame.len() > SOCKET_BUFFER {
            let why = if self.stream.is_none() {
                "no_reader"
            } else {
                "slow_reader"
            };
            stats.dropped[reason(why)].fetch_add(1, Relaxed);
            return;
        }
        self.buf.extend_from_slice(frame);
        self.ends.push_back(self.buf.len());
    }

    /// Writes what the socket takes without blocking; counts whole frames written. An
    /// error (the reader went away) drops what waits and the connection.
    fn send(&mut self, stats: &Stats) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        while self.sent < self.buf.len() {
            match s.write(&self.buf[self.sent..]) {
                Ok(0) => return self.lost(stats, "closed the connection".into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(stats, e.to_string()),
            }
        }
        while self.ends.front().is_some_and(|&end| end <= self.sent) {
            self.ends.pop_front();
            stats.frames.fetch_add(1, Relaxed);
        }
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        } else if self.sent >= SOCKET_BUFFER / 2 {
            self.buf.drain(..self.sent);
            for end in &mut self.ends {
                *end -= self.sent;
            }
            self.sent = 0;
        }
    }

    /// The reader is gone: what waited is dropped (counted), reconnecting starts.
    fn lost(&mut self, stats: &Stats, why: String) {
        let lost = self.ends.len() as u64;
        stats.dropped[reason("no_reader")].fetch_add(lost, Relaxed);
        stats.connected.store(0, Relaxed);
        self.stream = None;
        self.buf.clear();
        self.ends.clear();
        self.sent = 0;
        self.next_try = Instant::now() + RETRY;
        self.absent_logged = true;
        warn!(socket = %self.path.display(), frames_lost = lost, "dnstap: the reader went away ({why}): frames are dropped and counted until one accepts; retrying every second");
    }

    /// Writes what waits (bounded), STOP, and waits for FINISH (bounded).
    fn finish(&mut self, stats: &Stats) {
        let Some(s) = self.stream.as_ref() else {
            return;
        };
        if s.set_nonblocking(false).is_err() || s.set_write_timeout(Some(HANDSHAKE)).is_err() {
            return;
        }
        self.send(stats);
        if let Some(s) = self.stream.as_mut() {
            if !self.ends.is_empty() {
                stats.dropped[reason("slow_reader")].fetch_add(self.ends.len() as u64, Relaxed);
            }
            if s.write_all(&control(STOP)).is_ok() {
                let _ = read_control(s);
            }
        }
        self.stream = None;
    }
}

/// Connects to a reader and shakes hands: READY, the reader's ACCEPT (of our content
/// type), START. Bounded by [`HANDSHAKE`]; the stream is then non-blocking.
fn handshake(path: &Path) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(HANDSHAKE))?;
    s.set_write_timeout(Some(HANDSHAKE))?;
    s.write_all(&control(READY))?;
    match read_control(&mut s)? {
        ACCEPT => {}
        other => {
            return Err(io::Error::other(format!(
                "the reader answered control frame {other}, not ACCEPT of protobuf:dnstap.Dnstap"
            )))
        }
    }
    s.write_all(&control(START))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Reads one control frame; its type if it is for our content type (or names none).
fn read_control(s: &mut UnixStream) -> io::Result<u32> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if head[..4] != [0, 0, 0, 0] || !(4..=512).contains(&len) {
        return Err(io::Error::other("the reader sent no control frame"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    parse_control(&body)
        .ok_or_else(|| io::Error::other("the reader does not accept protobuf:dnstap.Dnstap"))
}
