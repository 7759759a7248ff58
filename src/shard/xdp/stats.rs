//! What one AF_XDP socket counts, for `/metrics`: gtmd's own frame counts (written by the
//! shard's UDP thread per batch) and the kernel's `XDP_STATISTICS` for the socket (read by
//! the same thread with getsockopt about once a second, never per packet, and once more
//! when the socket closes). Written by that thread only with relaxed stores, read by the
//! control thread at a scrape: no lock, no read-modify-write.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The kernel's counters of `struct xdp_statistics`, in its order: the name (the field's,
/// and the metric's `gtmd_xdp_NAME_total`) and what it counts.
pub const KERNEL: [(&str, &str); 6] = [
    (
        "rx_dropped",
        "Frames for the socket the kernel dropped (larger than a frame, no fill entry to receive into, ...).",
    ),
    (
        "rx_invalid_descs",
        "Receive-side descriptors the kernel found invalid.",
    ),
    (
        "tx_invalid_descs",
        "TX ring descriptors the kernel found invalid (not sent).",
    ),
    (
        "rx_ring_full",
        "Frames dropped because the socket's RX ring was full (the shard was behind).",
    ),
    (
        "rx_fill_ring_empty_descs",
        "Times the kernel needed a frame to receive into and found the fill ring empty.",
    ),
    (
        "tx_ring_empty_descs",
        "Times the kernel was asked to send and found the TX ring empty.",
    ),
];

/// One socket's counters.
#[derive(Debug)]
#[repr(align(128))]
pub struct Stats {
    /// The shard serving the socket (which is bound to the queue of the same number).
    pub shard: usize,
    /// Frames taken from the RX ring.
    pub received: AtomicU64,
    /// Answer frames put on the TX ring.
    pub answered: AtomicU64,
    /// The kernel's counters, in [`KERNEL`] order.
    pub kernel: [AtomicU64; KERNEL.len()],
}

impl Stats {
    /// Zeroed counters of shard `shard`'s socket.
    pub fn new(shard: usize) -> Self {
        Self {
            shard,
            received: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            kernel: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Stores what the kernel last said (`XDP_STATISTICS`).
    pub(super) fn set_kernel(&self, st: &libc::xdp_statistics) {
        let v = [
            st.rx_dropped,
            st.rx_invalid_descs,
            st.tx_invalid_descs,
            st.rx_ring_full,
            st.rx_fill_ring_empty_descs,
            st.tx_ring_empty_descs,
        ];
        for (c, v) in self.kernel.iter().zip(v) {
            c.store(v, Relaxed);
        }
    }

    /// The kernel counter named `name` (a [`KERNEL`] name), for the closing log line.
    pub(super) fn kernel(&self, name: &str) -> u64 {
        KERNEL
            .iter()
            .position(|(n, _)| *n == name)
            .map_or(0, |i| self.kernel[i].load(Relaxed))
    }
}
