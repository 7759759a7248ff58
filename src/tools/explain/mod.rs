//! `gtmd explain`: what one client gets for one question and why, offline. The
//! configuration is compiled by the server's compiler, health is set through the server's
//! health writer (from a running server's `GET /v1/state` when given, else every address
//! up but those configured down), and the question is answered by the server's own
//! `wire::respond`; the explanation is then read from the same model and tables (the line
//! index, the access domain's route for the line, the route's active pool). It cannot
//! diverge from what the server would answer with that configuration and that health.
//!
//! With `--compare OLD`, the same client is explained under the old configuration too,
//! and what changes is listed (the what-if of an edit before it is reloaded).

mod model;
mod show;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::client::{self, Ecs, Reply};
use super::state::{self, ServerState};
use super::{load, Failure};
use crate::config::gslb::Mode;
use crate::health::Writer;
use crate::tables::gslb::{ClientAddr, Local};
use crate::tables::Snapshot;
use crate::wire::{Query, Transport};

pub use model::{AddrView, Asker, LineMatch, PoolView, Step};

/// The question and the client.
#[derive(Debug, Clone)]
pub struct Args {
    /// Query name.
    pub name: String,
    /// Query type.
    pub qtype: u16,
    /// The resolver's address (the query's source).
    pub client: IpAddr,
    /// The ECS the resolver sends, if any.
    pub ecs: Option<Ecs>,
    /// The configuration (`None`: the embedded default).
    pub config: Option<PathBuf>,
    /// A running server's control API, for health.
    pub server: Option<String>,
    /// Its bearer token (needed beyond loopback).
    pub token_file: Option<PathBuf>,
    /// PEM certificates to verify an HTTPS control API by (default: the system's roots).
    pub cacert: Option<PathBuf>,
    /// Another configuration to compare with (the one serving now).
    pub compare: Option<PathBuf>,
    /// JSON output.
    pub json: bool,
}

/// The whole explanation of one question under one configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    /// The configuration file.
    pub config: String,
    /// `name TYPE`.
    pub question: String,
    /// Who asks, as the line lookup sees it.
    pub asker: Asker,
    /// The line and the prefix that decided it.
    pub line: LineMatch,
    /// Where health came from.
    pub health: String,
    /// One step per access domain the answer went through (a CNAME chain may pass several).
    pub steps: Vec<Step>,
    /// Other facts: a static name, a disabled access domain, no access domain of this type.
    pub notes: Vec<String>,
    /// The reply `wire::respond` gave (one sample of a varying answer).
    pub reply: Reply,
}

/// Runs explain (and the comparison) and prints it.
pub fn run(a: &Args) -> Result<(), Failure> {
    let server = match &a.server {
        Some(url) => {
            let token = match &a.token_file {
                Some(f) => Some(state::read_token(f).map_err(Failure::Usage)?),
                None => None,
            };
            let auth = state::Auth {
                token: token.as_deref(),
                cacert: a.cacert.as_deref(),
            };
            let st = state::fetch(url, &auth, Duration::from_secs(5)).map_err(Failure::Network)?;
            Some(st)
        }
        None => None,
    };
    let new = explain(a, a.config.as_deref(), server.as_ref())?;
    let old = match &a.compare {
        Some(p) => Some(explain(a, Some(p.as_path()), server.as_ref())?),
        None => None,
    };
    let changes = old.as_ref().map(|o| show::changes(o, &new));
    if a.json {
        let doc = serde_json::json!({
            "explanation": new,
            "compare": old.as_ref().map(|o| serde_json::json!({
                "old": o,
                "changes": changes,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", show::text(&new));
        if let (Some(o), Some(c)) = (&old, &changes) {
            print!("{}", show::changes_text(o, &new, c));
        }
    }
    Ok(())
}

/// Explains the question under the configuration at `path`.
fn explain(
    a: &Args,
    path: Option<&std::path::Path>,
    server: Option<&ServerState>,
) -> Result<Explanation, Failure> {
    let (cfg, snap) = load(path)?;
    let mut writer = health(&snap, server);
    if let Some(st) = server {
        keep_active(&mut writer, &snap, st);
    }
    let name = client::absolute(&a.name);
    let reply = answer(&snap, &name, a.qtype, a.client, a.ecs.as_ref())?;
    let asker = model::asker(&cfg, a.client, a.ecs.as_ref());
    let line = model::line_match(&snap, &asker);
    let (steps, notes) = model::steps(&snap, &name, a.qtype, &line, &asker, &reply, server);
    Ok(Explanation {
        config: cfg.source.to_string(),
        question: format!("{name} {}", client::type_name(a.qtype)),
        asker,
        line,
        health: match server {
            Some(st) => format!("{}/v1/state (generation {})", st.url, st.generation),
            None => "assumed: every address up but those configured down or disabled (no --server)"
                .into(),
        },
        steps,
        notes,
        reply,
    })
}

/// The snapshot's health as the server has it: each address the server reports pinned
/// up or down by its state, the others by their configuration (auto: up).
fn health(snap: &Arc<Snapshot>, server: Option<&ServerState>) -> Writer {
    let mut pins = HashMap::new();
    if let Some(st) = server {
        for a in snap.model.addresses.iter() {
            if let Some(s) = st.addresses.get(&a.name) {
                pins.insert(a.name.clone(), if s.up { Mode::Up } else { Mode::Down });
            }
        }
    }
    Writer::new(snap.clone(), pins)
}

/// Non-preemptive routes stay on the pool the server answers from now.
fn keep_active(w: &mut Writer, snap: &Snapshot, st: &ServerState) {
    for s in 0..snap.model.slots.len() {
        if let Some(Some(pool)) = st.active.get(&snap.slot_key(s)) {
            if let Some(p) = snap.model.pools.iter().position(|p| &p.name == pool) {
                w.keep_active(s, p as u32);
            }
        }
    }
}

/// The answer the server's own code gives (over TCP: no size limit in the way).
fn answer(
    snap: &Snapshot,
    name: &str,
    qtype: u16,
    client: IpAddr,
    ecs: Option<&Ecs>,
) -> Result<Reply, Failure> {
    let pkt = client::query(name, qtype, ecs, 0x6774).map_err(Failure::Usage)?;
    let mut q = Query::new();
    let mut local = Local::new(1);
    let mut out = vec![0u8; 65535];
    let o = crate::wire::respond(
        snap,
        &pkt,
        &mut q,
        Transport::Tcp,
        Some(ClientAddr::from_ip(client)),
        &mut local,
        &mut out,
    );
    client::parse_reply(&out[..o.len], "tcp", 0.0)
        .map_err(|e| Failure::Usage(format!("the answer does not parse (a bug): {e}")))
}
