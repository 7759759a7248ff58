//! Fleet membership (`gtmd_members`): every edge sharing health writes a heartbeat under
//! its name every [`BEAT`] (2 s) and watches everyone's; from the heartbeats it keeps the
//! table of members, judged live by this edge's own clock (receipt time), and hands the
//! prober a [`View`] of it, from which every edge computes the same probe assignment
//! (`probe/members.rs`).
//!
//! The bucket is in memory (heartbeats are rewritten every 2 s: an engine restart loses
//! nothing that matters), history 1, entries removed after [`MEMBERS_MAX_AGE`] (Debian's
//! nats-server 2.9 has no per-key TTL and sends no delete markers: a member's absence is
//! judged by the receivers, from the time its last heartbeat arrived).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::control::api::ApiContext;
use crate::probe::members::{Member, View, BEAT};
use crate::probe::shared::Shared;

/// The KV bucket of the heartbeats.
pub const MEMBERS_BUCKET: &str = "gtmd_members";
/// Heartbeats older than this are removed by the engine.
pub const MEMBERS_MAX_AGE: Duration = Duration::from_secs(15);

/// One edge's heartbeat, as stored under its name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    /// The edge's name.
    pub edge: String,
    /// A random number drawn at its start.
    pub boot: u64,
    /// Its vantage group.
    pub group: String,
    /// gtmd's version there.
    pub version: String,
    /// The epoch it serves (0: its own file).
    pub epoch: u64,
    /// `ok`, or `refused epoch N` (its last epoch did not load there).
    pub apply: String,
    /// It found itself isolated: it probes nothing and its votes do not count.
    pub isolated: bool,
    /// How long it has been running (ms).
    pub up_ms: u64,
    /// When it was written (Unix ms, its clock: shown, never compared).
    pub at_ms: u64,
}

/// This edge's side of membership, kept across sessions.
pub(super) struct Members {
    shared: Arc<Shared>,
    api: Arc<ApiContext>,
    boot: u64,
    started: Instant,
    /// The members heard from, by name.
    table: HashMap<String, Member>,
    /// When this edge last wrote its heartbeat.
    last_beat: Option<Instant>,
    /// The last live set logged.
    logged: Vec<String>,
    /// Keys whose value was no heartbeat (warned about once).
    bad: std::collections::HashSet<String>,
}

impl Members {
    pub(super) fn new(
        shared: Arc<Shared>,
        api: Arc<ApiContext>,
        boot: u64,
        started: Instant,
    ) -> Self {
        Self {
            shared,
            api,
            boot,
            started,
            table: HashMap::new(),
            last_beat: None,
            logged: Vec::new(),
            bad: Default::default(),
        }
    }

    /// The bucket, created when missing.
    pub(super) async fn bucket(js: &jetstream::Context) -> Result<kv::Store, String> {
        super::kv_bucket(
            js,
            super::BucketSpec {
                name: MEMBERS_BUCKET,
                description: "gtmd: each edge's heartbeat",
                history: 1,
                max_age: Some(MEMBERS_MAX_AGE),
                memory: true,
            },
        )
        .await
    }

    /// Writes this edge's heartbeat when one is due.
    pub(super) async fn beat(&mut self, bucket: &kv::Store) -> Result<(), String> {
        if self.last_beat.is_some_and(|t| t.elapsed() < BEAT) {
            return Ok(());
        }
        self.last_beat = Some(Instant::now());
        let (epoch, apply) = self.serving();
        let hb = Heartbeat {
            edge: self.shared.edge().to_string(),
            boot: self.boot,
            group: self.shared.sharding().group.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            epoch,
            apply,
            isolated: self.shared.isolated(),
            up_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            at_ms: crate::control::ops::unix_ms(),
        };
        let body = serde_json::to_vec(&hb).unwrap_or_default();
        bucket
            .put(hb.edge.as_str(), body.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot write this edge's heartbeat to {MEMBERS_BUCKET}: {e}"))
    }

    /// The epoch this edge serves now and its last apply's outcome (`ok`, or
    /// `refused epoch N`).
    fn serving(&self) -> (u64, String) {
        let f = self.api.ops.fleet().unwrap_or_default();
        let apply = match f["refused"]["epoch"].as_u64() {
            Some(n) => format!("refused epoch {n}"),
            None => "ok".into(),
        };
        (f["epoch"].as_u64().unwrap_or(0), apply)
    }

    /// A heartbeat from the bucket (this edge's own too: it joins as the others do).
    pub(super) fn receive(&mut self, entry: &kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        let hb = match serde_json::from_slice::<Heartbeat>(&entry.value) {
            Ok(h) if h.edge == entry.key => h,
            _ => {
                if self.bad.insert(entry.key.clone()) {
                    warn!(key = %entry.key, "fleet: {MEMBERS_BUCKET} holds something that is not this key's heartbeat: ignored");
                }
                return;
            }
        };
        let now = Instant::now();
        let beats = match self.table.get(&hb.edge) {
            Some(m) if m.boot == hb.boot && m.live_or_joining(now) => m.beats.saturating_add(1),
            _ => 1,
        };
        self.table.insert(
            hb.edge.clone(),
            Member {
                edge: hb.edge,
                group: hb.group,
                boot: hb.boot,
                up_ms: hb.up_ms,
                version: hb.version,
                epoch: hb.epoch,
                apply: hb.apply,
                isolated: hb.isolated,
                beats,
                received: now,
            },
        );
    }

    /// Hands the prober the view of the table now; logs when the live members change.
    pub(super) fn publish(&mut self) {
        let now = Instant::now();
        // Members not heard from in a while are forgotten (shown until then).
        self.table
            .retain(|_, m| now.saturating_duration_since(m.received) < MEMBERS_MAX_AGE * 4);
        let mut members: Vec<Member> = self.table.values().cloned().collect();
        members.sort_by(|a, b| a.edge.cmp(&b.edge));
        // This edge's own entry says what it serves now, not at its last heartbeat: the
        // checks it shares are those of its current epoch.
        let (epoch, apply) = self.serving();
        if let Some(m) = members.iter_mut().find(|m| m.edge == self.shared.edge()) {
            m.epoch = epoch;
            m.apply = apply;
        }
        let view = View::new(
            self.shared.edge(),
            self.shared.sharding().probes_per_group,
            members,
            now,
        );
        let mut live: Vec<String> = view
            .members
            .iter()
            .filter(|m| m.live(now))
            .map(|m| format!("{}{}", m.edge, if m.isolated { " (isolated)" } else { "" }))
            .collect();
        live.sort();
        if live != self.logged {
            info!(edge = %self.shared.edge(), members = %live.join(","), "fleet: live members changed");
            self.logged = live;
        }
        self.shared.set_view(view);
    }

    /// The session ended: nobody is known any more (this edge probes everything itself
    /// until it has joined again).
    pub(super) fn reset(&mut self) {
        self.table.clear();
        self.last_beat = None;
        self.publish();
    }
}

/// `GET /v1/fleet` on an edge sharing health: this edge's settings and assignment, every
/// member heard from, and per check the fresh votes and its probers. `None` for any other
/// path.
pub fn route(
    ctx: &ApiContext,
    req: &crate::control::http::Request,
    path: &str,
) -> Option<crate::control::http::Response> {
    use crate::control::http::Response;
    if path.trim_end_matches('/') != "/v1/fleet" {
        return None;
    }
    if req.method != "GET" {
        let mut r = Response::error(405, format!("{} is not allowed here", req.method));
        r.headers.push(("Allow", "GET".to_string()));
        return Some(r);
    }
    let Some(s) = &ctx.shared else {
        return Some(Response::error(
            404,
            "not a fleet edge sharing health ([fleet] with share-health = true)".to_string(),
        ));
    };
    Some(Response::json(200, fleet_json(s)))
}

/// The body of `GET /v1/fleet`.
fn fleet_json(s: &Shared) -> serde_json::Value {
    use serde_json::json;
    let now = Instant::now();
    let view = s.view();
    let (probed, checks, holding) = s.counts();
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let members: Vec<serde_json::Value> = view
        .members
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            v["live"] = m.live(now).into();
            v["age_ms"] = ms(now.saturating_duration_since(m.received)).into();
            v
        })
        .collect();
    let votes: Vec<serde_json::Value> = s
        .tally()
        .into_iter()
        .map(|(a, c, up, down)| {
            let id = crate::probe::members::check_id(&a, &c);
            let probers: Vec<&str> = if view.joined {
                view.probers(id)
            } else {
                vec![s.edge()]
            };
            json!({"address": a, "check": c, "up": up, "down": down, "probers": probers})
        })
        .collect();
    let sh = s.sharding();
    json!({
        "edge": s.edge(),
        "group": sh.group,
        "probes_per_group": sh.probes_per_group,
        "min_vantages": sh.min_vantages,
        "anchors": sh.anchors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "joined": view.joined,
        "isolated": s.isolated(),
        "expected_votes": view.expected(),
        "probed": probed,
        "checks": checks,
        "holding": holding,
        "members": members,
        "votes": votes,
    })
}

/// What `GET /v1/state` shows of the fleet under `fleet`: whether this edge is a member,
/// isolated, the live members, and its share of the checks.
pub fn summary(s: &Shared) -> serde_json::Value {
    let now = Instant::now();
    let view = s.view();
    let (probed, checks, holding) = s.counts();
    let live: Vec<&str> = view
        .members
        .iter()
        .filter(|m| m.live(now))
        .map(|m| m.edge.as_str())
        .collect();
    serde_json::json!({
        "edge": s.edge(),
        "joined": view.joined,
        "isolated": s.isolated(),
        "live_members": live,
        "probed": probed,
        "checks": checks,
        "holding": holding,
    })
}
