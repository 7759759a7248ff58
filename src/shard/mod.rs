//! Step 4 of `config -> compile -> tables -> shards`: per-core shard threads.
//!
//! Each shard owns, per listener, one SO_REUSEPORT UDP socket (served by an [`UdpIo`]
//! backend: io_uring or recvmmsg/sendmmsg; with `io = "xdp"` also an AF_XDP socket on its
//! RX queue, `xdp/`) and one SO_REUSEPORT TCP listener (served by a companion thread on
//! the same CPU). A shard reads the published [`Snapshot`] through a
//! per-thread cache of the pointer, answers with [`crate::wire::respond`], and counts into
//! its own [`Counters`] (`counters.rs`), and, with `[dnstap]`, hands sampled queries to the
//! query log's writer through its own ring (`tap.rs`). Nothing on this path takes a lock or
//! allocates.

pub mod counters;
mod mmsg;
pub mod rrl;
pub mod socket;
pub mod tap;
mod tcp;
pub use tcp::serve as tcp_serve;
mod uring;
pub mod xdp;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};

use crate::config::IoMode;
use crate::tables::gslb::{ClientAddr, Local, Selection};
use crate::tables::Snapshot;
use crate::wire::{respond, Query, Transport};

use counters::bump;
pub use counters::{Counters, Summary};
pub use tcp::TcpLimits;

/// Longest a shard blocks in one wait, so that shutdown is seen promptly (gdnsd's
/// `FAST_RCVTIMEO_US` plays the same role). Reloads need no wake-up: the snapshot pointer
/// is checked at every batch.
pub const WAIT_BOUND: Duration = Duration::from_millis(100);

/// The published snapshot: one pointer, swapped whole by the control thread.
pub type Published = Arc<ArcSwap<Snapshot>>;

/// What a backend needs from its shard: the answer function with its scratch space,
/// the shutdown flag and the counters.
pub struct ShardCtx {
    /// Shard number (for logs).
    pub id: usize,
    cache: Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
    query: Box<Query>,
    local: Local,
    /// Response rate limiting state, made when a snapshot first turns RRL on.
    rrl: Option<Box<rrl::Table>>,
    /// The query log's ring (`[dnstap]`, set at start-up), or none.
    tap: Option<Box<tap::Tap>>,
    /// This thread's counters (UDP or TCP).
    pub counters: Arc<Counters>,
    /// Set by the control thread to stop.
    pub stop: Arc<AtomicBool>,
}

/// [`respond`], counted: the outcome and the query type in `counters`, and with
/// per-domain metrics on, the access domain and line the answer was selected for.
#[inline(always)]
fn respond_counted(
    snap: &Snapshot,
    pkt: &[u8],
    (query, local, counters): (&mut Query, &mut Local, &Counters),
    (t, client): (Transport, Option<ClientAddr>),
    out: &mut [u8],
) -> crate::wire::respond::Outcome {
    let per_domain = !snap.metric_series.ads.is_empty();
    if per_domain {
        local.selected = Selection::NONE;
    }
    let o = respond(snap, pkt, query, t, client, local, out);
    counters.record(&o, query.qtype);
    if per_domain && local.selected != Selection::NONE {
        counters.record_selection(&snap.metric_series, local.selected);
    }
    o
}

impl ShardCtx {
    /// A context reading `published`.
    pub fn new(
        id: usize,
        published: &Published,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            id,
            cache: Cache::new(published.clone()),
            query: Box::new(Query::new()),
            local: Local::new(0x5EED_0000 + id as u64 * 7919),
            rrl: None,
            tap: None,
            counters,
            stop,
        }
    }

    /// Logs this thread's sampled queries to `tap` (`[dnstap]`).
    pub fn set_tap(&mut self, tap: tap::Tap) {
        self.tap = Some(Box::new(tap));
    }

    /// Answers one UDP packet from `client` (`peer`: the sockaddr it came from, for the
    /// query log) into `out`; returns the response length (0: send nothing).
    #[inline]
    pub fn answer(
        &mut self,
        pkt: &[u8],
        client: Option<ClientAddr>,
        peer: &[u8],
        out: &mut [u8],
    ) -> usize {
        let snap = self.cache.load();
        let q = (&mut *self.query, &mut self.local, &*self.counters);
        let o = respond_counted(snap, pkt, q, (Transport::Udp, client), out);
        let len = match &snap.rrl {
            Some(conf) if o.len != 0 => {
                // After the answer is built (its class is known), before it is sent.
                let table = match &mut self.rrl {
                    Some(t) if Arc::ptr_eq(t.conf(), conf) => t,
                    slot => rrl_table(slot, conf),
                };
                match table.check(snap, &o, &self.query, client, self.id) {
                    rrl::Verdict::Pass => o.len,
                    rrl::Verdict::Drop => {
                        bump(&self.counters.limited);
                        0
                    }
                    rrl::Verdict::Slip => {
                        bump(&self.counters.limited);
                        bump(&self.counters.slipped);
                        crate::wire::respond::slip(out, o.len, &self.query)
                    }
                }
            }
            _ => o.len,
        };
        if let Some(t) = &mut self.tap {
            t.offer(false, tap::Peer::Sockaddr(peer), pkt, &out[..len]);
        }
        len
    }

    /// Rewrites the UDP answer of `len` octets in `out` to the last query as a truncated one
    /// (TC=1, no records: the client asks again over TCP), counted as truncated; for a
    /// transport that cannot send it whole. Returns the new length (0: drop it).
    #[inline]
    pub fn truncate(&mut self, out: &mut [u8], len: usize) -> usize {
        let n = crate::wire::respond::slip(out, len, &self.query);
        if n != 0 {
            bump(&self.counters.truncated);
        }
        n
    }

    /// Answers one TCP message from `peer` (never rate limited).
    #[inline]
    pub fn answer_tcp(
        &mut self,
        pkt: &[u8],
        client: Option<ClientAddr>,
        peer: &std::net::SocketAddr,
        out: &mut [u8],
    ) -> usize {
        let snap = self.cache.load();
        let q = (&mut *self.query, &mut self.local, &*self.counters);
        let o = respond_counted(snap, pkt, q, (Transport::Tcp, client), out);
        if let Some(t) = &mut self.tap {
            t.offer(true, tap::Peer::Addr(peer), pkt, &out[..o.len]);
        }
        o.len
    }

    /// Whether the control thread asked us to stop. Called once per turn of the thread's
    /// loop (at least every [`WAIT_BOUND`]), so it also beats the thread's heartbeat (the
    /// systemd watchdog's liveness) and lets go of a replaced snapshot: a shard with
    /// nothing to answer would otherwise hold the old tables until its next query, and
    /// the retire thread could not free them (twice the memory on an idle server).
    #[inline]
    pub fn stopping(&mut self) -> bool {
        bump(&self.counters.heartbeat);
        self.cache.load();
        self.stop.load(Relaxed)
    }
}

/// The shard's RRL table for `conf`: the one it has when only the snapshot changed, a new
/// one when RRL was just turned on or the table size changed.
#[cold]
#[inline(never)]
fn rrl_table<'a>(
    slot: &'a mut Option<Box<rrl::Table>>,
    conf: &Arc<crate::config::Rrl>,
) -> &'a mut rrl::Table {
    let keep = match slot {
        Some(t) => t.adopt(conf.clone()),
        None => false,
    };
    if !keep {
        *slot = Some(Box::new(rrl::Table::new(conf.clone())));
        static ONCE: std::sync::Once = std::sync::Once::new();
        if !socket::STEERED.load(Relaxed) {
            ONCE.call_once(|| {
                tracing::warn!(
                    "rrl: on, but queries are not steered to shards by source (RRL was off at \
                     start-up): with several shards, each limits the share of a prefix it \
                     receives until a restart"
                )
            });
        }
    }
    slot.as_mut().expect("just set")
}

/// A UDP I/O backend (Knot's `udp_api_t` in spirit): owns the shard's UDP sockets and
/// runs the receive-answer-send loop until [`ShardCtx::stopping`].
pub trait UdpIo: Send {
    /// Backend name for logs ("io-uring", "io-uring+defer-taskrun", "mmsg").
    fn name(&self) -> &'static str;
    /// Serves until stopped. Returns only on stop or on a fatal error.
    fn serve(&mut self, ctx: &mut ShardCtx) -> io::Result<()>;
}

/// Builds the UDP backend for a shard's sockets. `Auto` is recvmmsg/sendmmsg: measured
/// against io_uring (SINGLE_ISSUER + DEFER_TASKRUN) in `bench/run`, it cost 1-9% less server
/// CPU per query at a fixed 20k qps in each of three runs and was level or cheaper at
/// saturation (PERF.md). io_uring stays one setting away (`io = "io-uring"`).
/// With `io = "xdp"`, a shard given an AF_XDP socket `xsk` (on `iface`) serves it and its
/// kernel sockets; one without (a shard beyond `[server.xdp] queues`, or XDP could not
/// attach) serves its kernel sockets with recvmmsg/sendmmsg.
pub fn make_backend(
    mode: IoMode,
    sockets: Vec<std::net::UdpSocket>,
    xsk: Option<(xdp::Socket, &str)>,
) -> io::Result<Box<dyn UdpIo>> {
    Ok(match (mode, xsk) {
        (IoMode::Xdp, Some((x, iface))) => Box::new(xdp::XdpIo::new(x, sockets, iface)?),
        (IoMode::Mmsg | IoMode::Auto | IoMode::Xdp, _) => Box::new(mmsg::Mmsg::new(sockets)?),
        (IoMode::IoUring, _) => Box::new(uring::Uring::new(sockets)?),
    })
}
