//! The AF_XDP backend (`io = "xdp"`): gtmd's XDP program (`tools/xdp/gtmd-xdp.c`,
//! committed compiled as `gtmd-xdp.o` and loaded with aya) redirects UDP to gtmd's
//! listeners on `[server.xdp]`'s interface into one AF_XDP socket per RX queue (`ring.rs`);
//! shard `i` serves queue `i`: it parses the frame in place (`frame.rs`), answers with the
//! same [`super::ShardCtx::answer`] as the kernel-socket backends, writes the reply frame
//! (addresses and ports swapped, checksums computed) into a transmit frame and kicks the
//! kernel. Everything else (TCP, ARP, ICMP, other ports, fragments) passes to the kernel,
//! and each shard still serves its kernel UDP sockets (queries that do not come through
//! the interface, e.g. over loopback). The program is attached through a bpf_link, which
//! the kernel drops when gtmd's descriptor closes: on exit, also on a crash.

pub mod frame;
pub mod ring;
pub mod stats;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, XskMap};
use aya::programs::{Xdp, XdpMode};
use tracing::{info, warn};

use super::mmsg;
use super::{ShardCtx, UdpIo, WAIT_BOUND};
use crate::config::Xdp as XdpConf;
use crate::wire::respond::MIN_OUT;
pub use stats::Stats;

/// Frames taken from the RX ring per turn, at most: one copy-mode kick sends the socket's
/// `tx_budget` (32, or [`ring::TX_BUDGET`] where the kernel lets us raise it), so a
/// turn takes that many.
const BATCH: u32 = ring::TX_BUDGET;

/// The compiled XDP program (see `tools/xdp/build`).
static PROGRAM: &[u8] = aya::include_bytes_aligned!("gtmd-xdp.o");

/// The loaded and attached program; dropping it detaches it.
pub struct Attached {
    ebpf: aya::Ebpf,
    interface: String,
}

impl Attached {
    /// Detaches the program (logged).
    pub fn detach(self) {
        let interface = self.interface.clone();
        drop(self.ebpf);
        info!(interface, "xdp: program detached");
    }
}

/// While busy (full batches) with need-wakeup, the turns between two polls that are only
/// for the kernel UDP sockets (at most this many batches of AF_XDP frames before them).
const KERNEL_EVERY: u32 = 8;

/// How often a shard reads its socket's `XDP_STATISTICS` into its [`Stats`].
const STATS_EVERY: Duration = Duration::from_secs(1);

/// One shard's AF_XDP socket, bound to its RX queue, and its counters.
pub struct Socket(ring::Xsk, Arc<Stats>);

impl Socket {
    /// The socket's counters (for `/metrics`).
    pub fn stats(&self) -> Arc<Stats> {
        self.1.clone()
    }
}

/// Loads the XDP program, opens one AF_XDP socket per queue of `conf` (zero-copy where
/// the driver supports it, else copy mode), lets the program redirect UDP to the
/// listeners `listen` into them, and attaches it to the interface (native mode, else
/// generic). Returns the attachment and the sockets, queue `i` at index `i`. Warns when
/// answers of `udp_payload` octets would not fit the interface's MTU.
pub fn attach(
    conf: &XdpConf,
    listen: &[SocketAddr],
    shards: usize,
    udp_payload: u16,
) -> Result<(Attached, Vec<Socket>), String> {
    let iface = &conf.interface;
    let ifindex = ifindex(iface).map_err(|e| format!("server.xdp.interface: {e}"))?;
    if conf.queues as usize > shards {
        return Err(format!(
            "server.xdp.queues = {} needs as many shards (shard i serves queue i), there are {shards}",
            conf.queues
        ));
    }
    let mut sockets = Vec::new();
    for q in 0..conf.queues {
        let x = ring::Xsk::open(ifindex, q).map_err(|e| socket_error(iface, q, &e))?;
        sockets.push(Socket(x, Arc::new(Stats::new(q as usize))));
    }
    let xsks: Vec<&ring::Xsk> = sockets.iter().map(|s| &s.0).collect();
    let (ebpf, mode) = load(ifindex, iface, listen, &xsks)?;
    let zero_copy = sockets.iter().all(|s| s.0.zero_copy);
    let need_wakeup = sockets.iter().all(|s| s.0.need_wakeup);
    let tx_budget = sockets.iter().map(|s| s.0.tx_budget).min().unwrap_or(0);
    // aya attaches through bpf_link_create where the kernel has it (5.9), else netlink.
    use aya::util::KernelVersion;
    let link = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 9, 0));
    info!(
        interface = %iface,
        queues = conf.queues,
        mode,
        sockets = if zero_copy { "zero-copy" } else { "copy" },
        need_wakeup,
        tx_budget,
        attach = if link { "bpf_link" } else { "netlink" },
        "xdp: program attached, UDP to the listeners goes to AF_XDP sockets"
    );
    if !link {
        warn!(
            interface = %iface,
            "xdp: kernel before 5.9: attached by netlink, so a crash of gtmd leaves the program \
             on the interface (`ip link set dev {iface} xdp off` removes it)"
        );
    }
    if !need_wakeup {
        warn!(
            interface = %iface,
            "xdp: the kernel refused XDP_USE_NEED_WAKEUP (EINVAL): sockets bound without it, \
             so each shard polls every turn and kicks TX after every batch"
        );
    }
    if !zero_copy {
        info!(interface = %iface, "xdp: the driver offers no zero-copy AF_XDP: copy mode (one copy per packet each way)");
    }
    let mtu = mtu(iface);
    if udp_payload as usize + 48 > mtu {
        warn!(
            interface = %iface,
            mtu,
            udp_payload,
            "xdp: answers are not fragmented: those that do not fit the MTU go out truncated \
             (TC=1, the client retries over TCP); set server.udp-payload to at most the MTU \
             minus 48"
        );
    }
    Ok((
        Attached {
            ebpf,
            interface: iface.clone(),
        },
        sockets,
    ))
}

/// The index of interface `iface`.
pub fn ifindex(iface: &str) -> Result<u32, String> {
    let name = std::ffi::CString::new(iface).map_err(|_| "bad interface name")?;
    // SAFETY: a valid NUL-terminated name for the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("no interface '{iface}' here"));
    }
    Ok(ifindex)
}

/// Loads the XDP program, lets it redirect UDP to `listen` into `xsks` (each on its
/// queue), and attaches it to `iface` (native mode, else generic); returns the program
/// and the mode.
fn load(
    ifindex: u32,
    iface: &str,
    listen: &[SocketAddr],
    xsks: &[&ring::Xsk],
) -> Result<(aya::Ebpf, &'static str), String> {
    let mut ebpf =
        aya::Ebpf::load(PROGRAM).map_err(|e| bpf_error("cannot load the XDP program", &e))?;
    fill_maps(&mut ebpf, listen, xsks)?;
    let prog: &mut Xdp = ebpf
        .program_mut("gtmd_xdp")
        .ok_or("the XDP object has no program gtmd_xdp")?
        .try_into()
        .map_err(|e| bpf_error("gtmd_xdp", &e))?;
    prog.load()
        .map_err(|e| bpf_error("the kernel refused the XDP program", &e))?;
    let mode = match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
        Ok(_) => "native",
        Err(native) => match prog.attach_to_if_index(ifindex, XdpMode::Skb) {
            Ok(_) => {
                warn!(interface = %iface, "xdp: native mode refused ({}): generic (skb) mode, slower", chain(&native));
                "generic"
            }
            Err(e) => return Err(bpf_error(&format!("cannot attach to {iface}"), &e)),
        },
    };
    Ok((ebpf, mode))
}

/// Attaches gtmd's XDP program to `iface` so that UDP to one of `to` (address and port;
/// 0.0.0.0 or :: for any address of that port; at most 64 of each family, the size of
/// the program's maps) goes to `xsk`, on its queue; everything else passes to the
/// kernel. For a tool that receives through AF_XDP (the load generator `gtmd-xdpload`).
/// Returns the attachment (detached when dropped) and the mode (`native`, `generic`).
pub fn redirect(
    iface: &str,
    to: &[SocketAddr],
    xsk: &ring::Xsk,
) -> Result<(Attached, &'static str), String> {
    let (ebpf, mode) = load(ifindex(iface)?, iface, to, &[xsk])?;
    let interface = iface.to_string();
    Ok((Attached { ebpf, interface }, mode))
}

/// The listeners into `dst4`/`dst6` (address and port in network order; 0.0.0.0 and ::
/// as wildcards), the sockets into `xsks` by queue.
fn fill_maps(
    ebpf: &mut aya::Ebpf,
    listen: &[SocketAddr],
    sockets: &[&ring::Xsk],
) -> Result<(), String> {
    let map = |e: &mut aya::Ebpf, n: &str| e.map_mut(n).is_some();
    if !map(ebpf, "dst4") || !map(ebpf, "dst6") || !map(ebpf, "xsks") {
        return Err("the XDP object lacks its maps".into());
    }
    for a in listen {
        let port = a.port().to_be_bytes();
        let r = match a {
            SocketAddr::V4(v4) => {
                let m = ebpf.map_mut("dst4").expect("checked");
                let mut k = [0u8; 8];
                k[..4].copy_from_slice(&v4.ip().octets());
                k[4..6].copy_from_slice(&port);
                HashMap::<_, [u8; 8], u8>::try_from(m).and_then(|mut m| m.insert(k, 1, 0))
            }
            SocketAddr::V6(v6) => {
                let m = ebpf.map_mut("dst6").expect("checked");
                let mut k = [0u8; 20];
                k[..16].copy_from_slice(&v6.ip().octets());
                k[16..18].copy_from_slice(&port);
                HashMap::<_, [u8; 20], u8>::try_from(m).and_then(|mut m| m.insert(k, 1, 0))
            }
        };
        r.map_err(|e| bpf_error(&format!("cannot add listener {a}"), &e))?;
    }
    let m = ebpf.map_mut("xsks").expect("checked");
    let mut xsks = XskMap::try_from(m).map_err(|e| bpf_error("xsks", &e))?;
    for s in sockets {
        xsks.set(s.queue, s.fd(), 0)
            .map_err(|e| bpf_error("cannot add an AF_XDP socket to the map", &e))?;
    }
    Ok(())
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

const CAPS: &str = "XDP needs root, or CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW";

fn bpf_error(what: &str, e: &dyn std::error::Error) -> String {
    let s = chain(e);
    if s.contains("Operation not permitted") || s.contains("EPERM") {
        format!("{what}: {s} ({CAPS})")
    } else {
        format!("{what}: {s}")
    }
}

fn socket_error(iface: &str, queue: u32, e: &io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => format!(" ({CAPS})"),
        Some(libc::EINVAL) => format!(" (does {iface} have a queue {queue}? `ethtool -l {iface}`)"),
        Some(libc::ENOBUFS) => " (its packet memory, 8 MiB, is over RLIMIT_MEMLOCK: grant \
                                CAP_IPC_LOCK, or raise the limit: LimitMEMLOCK= under systemd)"
            .to_string(),
        _ => String::new(),
    };
    format!("AF_XDP socket on {iface} queue {queue}: {e}{hint}")
}

/// The interface's MTU (1500 when it cannot be read).
fn mtu(iface: &str) -> usize {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}

/// A shard's UDP backend: its AF_XDP socket and its kernel sockets.
pub(super) struct XdpIo {
    xsk: ring::Xsk,
    stats: Arc<Stats>,
    kernel: Vec<UdpSocket>,
    mtu: usize,
}

impl XdpIo {
    pub(super) fn new(s: Socket, kernel: Vec<UdpSocket>, iface: &str) -> io::Result<Self> {
        for k in &kernel {
            k.set_nonblocking(true)?;
        }
        Ok(Self {
            xsk: s.0,
            stats: s.1,
            kernel,
            mtu: mtu(iface),
        })
    }
}

impl UdpIo for XdpIo {
    fn name(&self) -> &'static str {
        if self.xsk.zero_copy {
            "xdp-zerocopy"
        } else {
            "xdp-copy"
        }
    }

    fn serve(&mut self, ctx: &mut ShardCtx) -> io::Result<()> {
        let mut scratch = vec![0u8; MIN_OUT].into_boxed_slice();
        let mut bufs = mmsg::Bufs::new();
        let mut pfds: Vec<libc::pollfd> = std::iter::once(self.xsk.fd())
            .chain(self.kernel.iter().map(|s| s.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Full batches in a row (0: the last turn was not busy).
        let mut busy = 0u32;
        let (mut received, mut answered) = (0u64, 0u64);
        let mut stats_at = Instant::now();
        while !ctx.stopping() {
            self.xsk.reclaim();
            if self.xsk.tx_pending() > 0 && self.xsk.tx_needs_kick() {
                self.xsk.kick();
            }
            // Busy: poll (timeout 0) only when the fill ring asks for a wakeup, or when
            // the kernel sockets are due; else poll to wait (bounded) for work.
            let polled =
                !(busy > 0 && !busy.is_multiple_of(KERNEL_EVERY) && !self.xsk.rx_needs_kick());
            if polled && self.poll(&mut pfds, busy > 0) < 0 {
                continue; // EINTR
            }
            let (mtu, batch) = (self.mtu, self.xsk.tx_budget.min(BATCH));
            let (n, sent) = self
                .xsk
                .serve_batch(batch, |rx, tx| answer(ctx, &mut scratch, rx, tx, mtu));
            if sent > 0 && self.xsk.tx_needs_kick() {
                self.xsk.kick();
            }
            if n > 0 {
                received += n as u64;
                answered += sent as u64;
                self.stats.received.store(received, Relaxed);
                self.stats.answered.store(answered, Relaxed);
            }
            // Busy: a turn of 32 or more (the kernel's default kick) means more waits.
            busy = if n >= batch.min(32) {
                busy.wrapping_add(1).max(1)
            } else {
                0
            };
            for p in pfds[1..].iter().filter(|_| polled) {
                if p.revents & libc::POLLIN != 0 {
                    mmsg::batch(p.fd, &mut bufs, ctx, false);
                }
            }
            if stats_at.elapsed() >= STATS_EVERY {
                stats_at = Instant::now();
                self.read_stats();
            }
        }
        self.read_stats();
        let st = &self.stats;
        info!(
            shard = ctx.id,
            queue = self.xsk.queue,
            received,
            answered,
            rx_dropped = st.kernel("rx_dropped"),
            rx_ring_full = st.kernel("rx_ring_full"),
            fill_ring_empty = st.kernel("rx_fill_ring_empty_descs"),
            invalid = st.kernel("rx_invalid_descs") + st.kernel("tx_invalid_descs"),
            "xdp: AF_XDP socket closed"
        );
        Ok(())
    }
}

impl XdpIo {
    /// One poll over the AF_XDP socket and the kernel sockets: at once when `busy`, else
    /// waiting up to 1 ms while TX has frames pending, up to [`WAIT_BOUND`] otherwise.
    /// With need-wakeup it also wakes the kernel's receive (zero-copy) or sends what TX
    /// holds (copy mode).
    #[inline]
    fn poll(&self, pfds: &mut [libc::pollfd], busy: bool) -> i32 {
        let wait = if busy {
            0
        } else if self.xsk.tx_pending() > 0 {
            1
        } else {
            WAIT_BOUND.as_millis() as i32
        };
        // SAFETY: pfds is a valid array of pollfd for its length.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as _, wait) }
    }

    /// The kernel's counters of the socket into [`Stats`] (one getsockopt).
    #[cold]
    fn read_stats(&self) {
        if let Some(st) = self.xsk.stats() {
            self.stats.set_kernel(&st);
        }
    }
}

/// Answers the query frame `rx` into the frame `tx`; returns the frame's length (0: none).
#[inline]
fn answer(ctx: &mut ShardCtx, scratch: &mut [u8], rx: &[u8], tx: &mut [u8], mtu: usize) -> usize {
    let Some(q) = frame::parse(rx) else {
        return 0;
    };
    let mut sa = [0u8; 28];
    let sa_len = frame::sockaddr(rx, &q, &mut sa);
    let mut n = ctx.answer(&rx[q.start..q.end], Some(q.client), &sa[..sa_len], scratch);
    let h = frame::header_len(q.v6);
    // The IP packet must fit the MTU (no fragmentation here) and the frame: a larger
    // answer goes out truncated (TC=1), and the client asks again over TCP.
    if n != 0 && (h + n > tx.len() || h - 14 + n > mtu) {
        n = ctx.truncate(scratch, n);
        if h + n > tx.len() || h - 14 + n > mtu {
            ctx.counters.drop_one();
            return 0;
        }
    }
    if n == 0 {
        return 0;
    }
    tx[h..h + n].copy_from_slice(&scratch[..n]);
    frame::reply(rx, &q, tx, n)
}
