//! DNS over TCP (RFC 7766, RFC 9210) for one shard: a readiness loop (mio/epoll) on the
//! shard's SO_REUSEPORT listeners. Length-prefixed messages; several queries pipelined on a
//! connection are all answered, in order; a connection idle longer than the configured
//! timeout is closed; at the connection cap new connections are accepted and closed at
//! once (so clients fail fast instead of hanging in the backlog). A message shorter than a
//! DNS header closes the connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::{bump, ShardCtx, WAIT_BOUND};
use crate::tables::gslb::ClientAddr;

/// TCP limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Open connections per shard.
    pub max_connections: usize,
    /// Idle time before a connection is closed.
    pub idle_timeout: Duration,
}

/// Bytes buffered for a connection's replies before we stop reading from it (a client that
/// pipelines but never reads must not grow our memory without bound).
const MAX_PENDING_OUT: usize = 256 * 1024;

struct Conn {
    stream: TcpStream,
    client: Option<ClientAddr>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    last: Instant,
    writable_armed: bool,
}

/// Serves TCP on `listeners` until the shard's stop flag is set.
pub fn serve(
    listeners: Vec<std::net::TcpListener>,
    limits: TcpLimits,
    ctx: &mut ShardCtx,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut ls: Vec<TcpListener> = listeners.into_iter().map(TcpListener::from_std).collect();
    for (i, l) in ls.iter_mut().enumerate() {
        poll.registry().register(l, Token(i), Interest::READABLE)?;
    }
    let first_conn = ls.len();
    let mut next = first_conn;
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut events = Events::with_capacity(256);
    let mut out = vec![0u8; 65535];
    let mut last_sweep = Instant::now();
    while !ctx.stopping() {
        match poll.poll(&mut events, Some(WAIT_BOUND)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t < first_conn {
                loop {
                    match ls[t].accept() {
                        Ok((mut s, peer)) => {
                            if conns.len() >= limits.max_connections {
                                bump(&ctx.counters.tcp_refused);
                                continue; // dropped: closed at once
                            }
                            bump(&ctx.counters.tcp_connections);
                            let _ = s.set_nodelay(true);
                            let tok = next;
                            next += 1;
                            poll.registry()
                                .register(&mut s, Token(tok), Interest::READABLE)?;
                            conns.insert(
                                tok,
                                Conn {
                                    stream: s,
                                    client: Some(ClientAddr::from_ip(peer.ip())),
                                    rbuf: Vec::with_capacity(512),
                                    wbuf: Vec::new(),
                                    last: Instant::now(),
                                    writable_armed: false,
                                },
                            );
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break, // EMFILE and the like: retried at the next event
                    }
                }
                continue;
            }
            let Some(c) = conns.get_mut(&t) else { continue };
            let alive = service(c, ctx, &mut out);
            if !alive {
                let mut c = conns.remove(&t).expect("present");
                let _ = poll.registry().deregister(&mut c.stream);
                continue;
            }
            let want_w = !c.wbuf.is_empty();
            if want_w != c.writable_armed {
                let interest = if want_w {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                poll.registry()
                    .reregister(&mut c.stream, Token(t), interest)?;
                c.writable_armed = want_w;
            }
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) >= Duration::from_millis(100) {
            last_sweep = now;
            conns.retain(|_, c| {
                let keep = now.duration_since(c.last) < limits.idle_timeout;
                if !keep {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
                keep
            });
        }
    }
    Ok(())
}

/// Reads what is there, answers every complete message, writes what it can.
/// Returns false when the connection is to be closed.
fn service(c: &mut Conn, ctx: &mut ShardCtx, out: &mut [u8]) -> bool {
    let mut eof = false;
    let mut chunk = [0u8; 4096];
    // mio is edge-triggered: keep going until the socket would block, unless the client
    // is not reading its answers (then wait for WRITABLE and come back here).
    loop {
        let mut full = false;
        loop {
            if c.wbuf.len() >= MAX_PENDING_OUT {
                full = true;
                break;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    c.last = Instant::now();
                    // Answer as we go so a large pipelined burst does not sit in rbuf.
                    if !drain(c, ctx, out) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if !flush(c) {
            return false;
        }
        if !(full && c.wbuf.len() < MAX_PENDING_OUT) {
            break;
        }
    }
    !(eof && c.wbuf.is_empty())
}

/// Answers every complete length-prefixed message in `rbuf`.
fn drain(c: &mut Conn, ctx: &mut ShardCtx, out: &mut [u8]) -> bool {
    let mut pos = 0;
    while c.rbuf.len() - pos >= 2 {
        let len = u16::from_be_bytes([c.rbuf[pos], c.rbuf[pos + 1]]) as usize;
        if len < crate::wire::parse::HEADER_LEN {
            return false;
        }
        if c.rbuf.len() - pos - 2 < len {
            break;
        }
        let msg = &c.rbuf[pos + 2..pos + 2 + len];
        let n = ctx.answer_tcp(msg, c.client, out);
        if n > 0 {
            c.wbuf.extend_from_slice(&(n as u16).to_be_bytes());
            c.wbuf.extend_from_slice(&out[..n]);
        }
        pos += 2 + len;
    }
    c.rbuf.drain(..pos);
    true
}

fn flush(c: &mut Conn) -> bool {
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(0) => return false,
            Ok(n) => {
                c.wbuf.drain(..n);
                c.last = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}
