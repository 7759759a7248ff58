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
//! Imports go one way: a module uses only modules below it in this order, so there is no
//! cycle (`tools/module-graph`, run by `tools/test`, holds `src/` to the next line).
//!
//! Layers, lowest first: sys < dns < config < tables < wire < compile < health < shard < probe < control < tools
//!
//! ```text
//!   tools    probe, diff, explain (CLI clients)   -> health, compile, wire, tables, config, dns, sys
//!   control  lifecycle, reload, the control API,  -> every module below
//!            fleet epochs over NATS (`gtmd publish`, the `fleet` thread)
//!   probe    health checks (one thread)           -> health, shard (WAIT_BOUND), tables, config
//!   shard    per-core threads, sockets, RRL       -> wire, tables, config, dns
//!   health   the health writer, its change log    -> tables, config
//!   compile  Config -> Snapshot (`gtmd check`)    -> wire (cookie secret), tables, config, dns
//!   wire     hot path: bytes + &Snapshot -> bytes -> tables, dns
//!   tables   Snapshot, with its health state      -> config (the GSLB model), dns
//!   config   TOML, zone files -> validated Config -> dns
//!   dns      DNS numbers and wire names (leaf)    -> nothing
//!   sys      safe wrappers of a few syscalls (leaf) -> nothing
//! ```
//!
//! `wire` names no `config` or `compile` item: the [`tables::Snapshot`] it reads carries the
//! validated GSLB model and RRL settings for the control side and the shards, not for it.
//!
//! * [`dns`]: record types, classes, RCODEs, option codes, wire-name helpers, cookie secrets.
//! * [`config`]: the TOML spec and zone files, validated, every error with file and line.
//! * [`compile`]: turns a config into one immutable [`tables::Snapshot`]; `gtmd check`.
//! * [`tables`]: the flat answer tables and health bitmaps a shard reads: the only data on
//!   the hot path.
//! * [`wire`]: sans-I/O query parsing and answer writing (the hot path itself).
//! * [`shard`]: per-core threads, the io_uring and recvmmsg UDP backends, TCP.
//! * [`probe`]: the prober thread: TCP and HTTP health checks with anti-flap thresholds.
//! * [`health`]: the single writer of the health bitmaps, and where its changes go (log,
//!   alert webhook).
//! * [`sys`]: the syscalls outside the socket backends (priority, affinity, random, clock,
//!   poll), the only `unsafe` outside `shard`.
//! * [`control`]: process lifecycle: start, reload, shutdown, counters, the control API.
//! * [`tools`]: operator tools run by `gtmd probe`, `gtmd diff`, `gtmd explain`: a DNS
//!   client, and the server's compiler and answer path replayed offline.

pub mod compile;
pub mod config;
pub mod control;
pub mod dns;
pub mod health;
pub mod probe;
pub mod shard;
pub mod sys;
pub mod tables;
pub mod tools;
pub mod wire;
