//! The integration tests: one binary, one module per area, all through the real `gtmd`
//! binary (spawned by `harness::Server` on free loopback ports, stopped on drop).
#![allow(missing_docs)]

mod harness;

mod cases;
mod checklist;
mod cli;
mod control;
mod cookies;
mod differential;
mod metrics;
mod prober;
mod rrl;
mod scenarios;
mod tcp;
mod zonefile;
