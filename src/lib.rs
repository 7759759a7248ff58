//! gtmd: a global traffic manager, answering DNS from precompiled tables.
//!
//! The data flows through these modules, each a folder:
//!
//! ```text
//!   config  -> compile -> tables -> shard      (control path: TOML to flat tables)
//!   (file)     (check)    (Snapshot) (per-core threads answering UDP/TCP)
//!   probe / operator  -> health --------^        (bitmaps read lock-free per query)
//!                            ^
//!   control: loads, publishes the Snapshot behind one pointer, reloads on SIGHUP,
//!            stops on SIGTERM, sums the shards' counters.
//! ```
//!
//! * [`config`]: the TOML spec and zone files, validated, every error with file and line.
//! * [`compile`]: turns a config into one immutable [`tables::Snapshot`]; `gtmd check`.
//! * [`tables`]: the flat answer tables a shard reads; the only data on the hot path.
//! * [`wire`]: sans-I/O query parsing and answer writing (the hot path itself).
//! * [`shard`]: per-core threads, the io_uring and recvmmsg UDP backends, TCP.
//! * [`probe`]: the prober thread: TCP and HTTP health checks with anti-flap thresholds.
//! * [`health`]: the lock-free health bitmaps shards read, and their single writer.
//! * [`control`]: process lifecycle: start, reload, shutdown, counters, the control API.

pub mod compile;
pub mod config;
pub mod control;
pub mod health;
pub mod probe;
pub mod shard;
pub mod tables;
pub mod wire;
