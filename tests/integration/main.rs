//! The integration tests: one binary, one module per area, all through the real `gtmd`
//! binary (spawned by `harness::Server` on free loopback ports, stopped on drop).
#![allow(missing_docs)]
// A test that walks one story (a differential run, a flood, a scenario) reads top to
// bottom; the 100-line rule holds for src/, bench/ and tools/.
#![allow(clippy::too_many_lines)]

mod harness;

mod cases;
mod checklist;
mod cli;
mod control;
mod cookies;
mod crud;
mod ctl;
mod differential;
mod dnstap;
mod fleet;
mod fleet_cluster;
mod fleet_health;
mod fleet_rollout;
mod includes;
mod logs;
mod metrics;
mod ops;
mod prober;
mod rrl;
mod scenarios;
mod tcp;
mod tools;
mod xdp;
mod xdpload;
mod zonefile;
