//! The prober on a fleet edge sharing health: which checks this edge probes (probe
//! sharding, [`super::members`]), the fleet's verdict per template with the
//! `min-vantages` rule ([`super::verdict::fleet_template`]), and prober isolation
//! (`[fleet] anchors`).
//!
//! **Isolation.** When at least [`SUSPECT_PERCENT`] of the checks this edge probes failed
//! their last try, it probes its anchors (from the same vantage points as its checks: a
//! TCP connect to `IP:PORT`, an ICMP echo to `IP`, every [`ANCHOR_INTERVAL`]). When every
//! anchor fails too, the edge marks itself *isolated*: its verdicts say so (the other
//! edges stop counting them), its heartbeat says so (the other edges stop giving it
//! checks to probe), and its own verdicts no longer count in its own answers while it is
//! a member of the fleet. It keeps probing the anchors; the first anchor that answers
//! clears it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::shared::Key;
use super::{release, verdict, Outlet, Prober, Report, Task};
use crate::config::gslb::{HealthCheck, Protocol};

/// The share (percent) of this edge's checks failing at which it probes its anchors.
pub(super) const SUSPECT_PERCENT: usize = 80;
/// How often an anchor is probed while this edge suspects isolation (also its timeout).
pub(super) const ANCHOR_INTERVAL: Duration = Duration::from_secs(1);

/// The fleet's last verdict per (address, template), and those holding now.
#[derive(Default)]
pub(super) struct Decided {
    last: HashMap<Key, bool>,
    held: HashSet<Key>,
}

/// Prober isolation's state.
#[derive(Default)]
pub(super) struct Isolation {
    /// Most checks fail: the anchors are being probed.
    suspect: bool,
    /// The anchors failed too.
    isolated: bool,
    /// Each anchor task's last result since the anchors were started.
    results: HashMap<usize, bool>,
    /// Anchor tasks that could not be sent (no ICMP socket, not permitted): no result,
    /// neither failing nor answering.
    unusable: HashSet<usize>,
    /// When the share of failing checks was last counted.
    counted: Option<Instant>,
    /// A check's result came since.
    dirty: bool,
}

/// The share of failing checks is counted at most this often (it walks every check).
const RECOUNT: Duration = Duration::from_millis(200);

impl Outlet {
    /// Takes the templates of a new task list (each address's, with their rates), and
    /// forgets held verdicts of checks gone.
    pub(super) fn set_templates(&mut self, list: &[Task]) {
        let mut m: HashMap<String, Vec<(String, u32)>> = HashMap::new();
        for t in list.iter().filter(|t| !t.anchor) {
            let v = m.entry(t.address.clone()).or_default();
            if !v.iter().any(|(c, _)| *c == t.check.name) {
                v.push((t.check.name.clone(), t.check.failure_rate));
            }
        }
        let keep = |k: &Key| {
            m.get(&k.0)
                .is_some_and(|v| v.iter().any(|(c, _)| *c == k.1))
        };
        let mut d = self.decided.borrow_mut();
        d.last.retain(|k, _| keep(k));
        d.held.retain(keep);
        drop(d);
        self.templates = m;
    }

    /// The fleet's verdict on `address`: per template, this edge's own verdict (when it
    /// probes the template and is not isolated) and the other edges' votes, with the
    /// `min-vantages` rule; a template with too few fresh votes holds its last verdict,
    /// a template never decided is left out (the others decide, as on a single node), and
    /// an address with no template decided is left as it is.
    pub(super) fn fleet_vote(&self, address: &str) {
        let Some(s) = &self.shared else {
            return;
        };
        let Some(templates) = self.templates.get(address) else {
            return;
        };
        let view = s.view();
        let need = s.sharding().min_vantages.min(view.expected()).max(1);
        let ignore = view.isolation_ignored();
        let own_counts = !(view.joined && s.isolated()) || ignore;
        let others = s.remote_votes(address, Instant::now(), ignore);
        let reports = self.reports.lock().expect("reports lock");
        let mine = reports.get(address).filter(|_| own_counts);
        let mut d = self.decided.borrow_mut();
        let mut all_up = true;
        // Templates with a verdict (decided now, or held at their last one); one never
        // decided is left out, as a single node leaves out a template without a result.
        let mut decided = 0;
        for (t, rate) in templates {
            let own = mine.and_then(|v| verdict::template_up(v.iter().map(Report::vote), t));
            let theirs: Vec<Option<bool>> = others
                .iter()
                .filter(|(c, _)| c == t)
                .map(|&(_, v)| v)
                .collect();
            let key = (address.to_string(), t.clone());
            match verdict::fleet_template(own, &theirs, *rate, need) {
                Some(up) => {
                    d.held.remove(&key);
                    d.last.insert(key, up);
                    all_up &= up;
                    decided += 1;
                }
                None => {
                    let last = d.last.get(&key).copied();
                    d.held.insert(key);
                    if let Some(up) = last {
                        all_up &= up;
                        decided += 1;
                    }
                }
            }
        }
        s.set_held(d.held.len());
        drop(d);
        drop(reports);
        // An address with no template decided yet is left as it is.
        if decided > 0 {
            self.set_probe(address, all_up);
        }
    }
}

impl Prober {
    /// Takes a new membership view, if there is one: checks this edge no longer probes
    /// stop (their results dropped; this edge's last verdict counts until it ages out,
    /// as on the other edges), checks it now probes start at once in the state the fleet
    /// last decided, and the addresses concerned (and those holding) are counted again.
    pub(super) fn take_view(&mut self) {
        let Some(s) = self.out.shared.clone() else {
            return;
        };
        let gen = s.view_generation();
        if self.view_gen == Some(gen) {
            return;
        }
        self.view_gen = Some(gen);
        let view = s.view();
        let me = s.edge().to_string();
        let now = Instant::now();
        let mut touched = Vec::new();
        for i in 0..self.list.len() {
            let t = &mut self.list[i];
            if t.anchor {
                continue;
            }
            let p = view.probes(&me, t.id);
            if p == t.probing {
                continue;
            }
            t.probing = p;
            touched.push(t.address.clone());
            if p {
                // Handed over: it starts where the fleet left it, so `down-after` applies
                // (a fresh state would let the first result decide).
                if t.flap.up().is_none() {
                    let key = (t.address.clone(), t.check.name.clone());
                    let last = self.out.decided.borrow().last.get(&key).copied();
                    t.flap = verdict::Flap::assume(last.unwrap_or(true));
                }
                t.next = now;
                self.timers.schedule(now, i);
                continue;
            }
            if let Some(f) = t.inflight.take() {
                release(&self.poll, f);
                if let Some(x) = self.icmp.as_mut() {
                    x.forget(i);
                }
                if let Some(x) = self.syn.as_mut() {
                    x.forget(i);
                }
            }
            t.flap = Default::default();
            t.report = None;
            let (address, check, source) = (&t.address, &t.check.name, t.source);
            let src = source.map(|x| x.to_string());
            if let Some(v) = self
                .out
                .reports
                .lock()
                .expect("reports lock")
                .get_mut(address)
            {
                v.retain(|r| !(r.check == *check && r.source == src));
            }
            s.drop_mine(address, check);
        }
        let checks: Vec<&Task> = self.list.iter().filter(|t| !t.anchor).collect();
        let probed = checks.iter().filter(|t| t.probing).count();
        s.set_probed(probed, checks.len());
        self.undecided = checks
            .iter()
            .filter(|t| t.probing && t.flap.up().is_none())
            .count();
        if !touched.is_empty() {
            info!(
                edge = %me,
                probed,
                tasks = checks.len(),
                joined = view.joined,
                "fleet: probe assignment changed"
            );
        }
        // A new view may change how many fresh votes a template needs: those holding
        // are counted again too.
        touched.extend(self.out.decided.borrow().held.iter().map(|k| k.0.clone()));
        touched.sort();
        touched.dedup();
        for a in touched {
            self.out.vote(&a);
        }
    }

    /// Appends the anchor tasks: each anchor from each vantage point of the checks (a
    /// source of the anchor's family, else the system's choice).
    pub(super) fn add_anchors(&mut self, list: &mut Vec<Task>) {
        let Some(s) = &self.out.shared else {
            return;
        };
        let anchors = s.sharding().anchors.clone();
        let mut sources: Vec<Option<IpAddr>> = list.iter().map(|t| t.source).collect();
        sources.sort();
        sources.dedup();
        if sources.is_empty() {
            sources.push(None);
        }
        let now = Instant::now();
        let on = self.isolation.suspect || self.isolation.isolated;
        self.isolation.results.clear();
        self.isolation.unusable.clear();
        for a in anchors {
            let family: Vec<Option<IpAddr>> = sources
                .iter()
                .copied()
                .filter(|s| s.is_none_or(|s| s.is_ipv4() == a.ip.is_ipv4()))
                .collect();
            let family = if family.is_empty() {
                vec![None]
            } else {
                family
            };
            for source in family {
                list.push(Task {
                    address: format!("anchor {a}"),
                    target: SocketAddr::new(a.ip, a.port.unwrap_or(0)),
                    source,
                    check: anchor_check(a.port, source),
                    next: now,
                    flap: Default::default(),
                    inflight: None,
                    report: None,
                    id: 0,
                    probing: on,
                    anchor: true,
                });
            }
        }
    }

    /// A check's result came: the share of failing checks is counted again soon.
    pub(super) fn result_came(&mut self) {
        self.isolation.dirty = true;
    }

    /// After checks' results (at most every [`RECOUNT`]): starts probing the anchors when
    /// most checks fail, stops when they no longer do (and this edge is not isolated).
    pub(super) fn watch_isolation(&mut self) {
        let now = Instant::now();
        if !self.isolation.dirty
            || self
                .isolation
                .counted
                .is_some_and(|t| now.saturating_duration_since(t) < RECOUNT)
        {
            return;
        }
        self.isolation.counted = Some(now);
        self.isolation.dirty = false;
        if !self.list.iter().any(|t| t.anchor) {
            return;
        }
        let tried: Vec<bool> = self
            .list
            .iter()
            .filter(|t| !t.anchor && t.probing)
            .filter_map(|t| t.report.as_ref().map(|r| r.last_ok))
            .collect();
        let failing = tried.iter().filter(|ok| !**ok).count();
        let suspect = !tried.is_empty() && failing * 100 >= SUSPECT_PERCENT * tried.len();
        if suspect == self.isolation.suspect || (!suspect && self.isolation.isolated) {
            return;
        }
        self.isolation.suspect = suspect;
        if suspect {
            info!(
                failing,
                checks = tried.len(),
                "fleet: most checks fail: probing the anchors"
            );
        }
        self.set_anchors(suspect);
    }

    /// Starts (now) or stops probing the anchors.
    fn set_anchors(&mut self, on: bool) {
        let now = Instant::now();
        self.isolation.results.clear();
        self.isolation.unusable.clear();
        for i in 0..self.list.len() {
            let t = &mut self.list[i];
            if !t.anchor || t.probing == on {
                continue;
            }
            t.probing = on;
            if on {
                t.next = now;
                self.timers.schedule(now, i);
            }
        }
    }

    /// An anchor's result: every anchor failing makes this edge isolated, one answering
    /// clears it.
    pub(super) fn anchor_result(&mut self, i: usize, outcome: verdict::Outcome) {
        let Some(s) = self.out.shared.clone() else {
            return;
        };
        // A result that comes after the anchors were stopped (no longer suspect) is late.
        if !self.isolation.suspect && !self.isolation.isolated {
            return;
        }
        let ok = outcome.is_ok();
        self.isolation.results.insert(i, ok);
        self.isolation.unusable.remove(&i);
        // Anchors that cannot be probed from here are not counted.
        let anchors = self.list.iter().filter(|t| t.anchor).count() - self.isolation.unusable.len();
        let target = self.list[i].target;
        if ok && self.isolation.isolated {
            self.isolation.isolated = false;
            info!(edge = %s.edge(), anchor = %target, "fleet: an anchor answers: this edge is no longer isolated, its verdicts count again");
            s.set_isolated(false);
            // Probing the anchors goes on while most checks still fail.
            if !self.isolation.suspect {
                self.set_anchors(false);
            }
        } else if !ok
            && !self.isolation.isolated
            && self.isolation.results.len() == anchors
            && self.isolation.results.values().all(|ok| !ok)
        {
            self.isolation.isolated = true;
            let why = outcome.err().unwrap_or_default();
            warn!(edge = %s.edge(), anchors, "fleet: most checks and every anchor fail ({target}: {why}): this edge is isolated, its verdicts no longer count");
            s.set_isolated(true);
        }
    }
}

impl Prober {
    /// An anchor that could not be probed from here (`why`: no ICMP socket, sending not
    /// permitted): not a failure (this edge's network is not judged by it); logged once
    /// per round of anchors.
    pub(super) fn anchor_unusable(&mut self, i: usize, why: &str) {
        self.isolation.results.remove(&i);
        if self.isolation.unusable.insert(i) {
            let t = &self.list[i];
            warn!(anchor = %t.target.ip(), source = ?t.source, "fleet: anchor cannot be probed from here ({why}): not counted as failing");
        }
        let at = self.list[i].wakeup();
        self.timers.schedule(at, i);
    }

    /// At start-up and reload: warns when ICMP anchors are configured but echo requests
    /// cannot be sent (those anchors will never count as failing, nor answering).
    pub(super) fn check_anchors(&mut self) {
        let Some(icmp) = self.icmp.as_mut() else {
            if let Some(t) = self
                .list
                .iter()
                .find(|t| t.anchor && t.check.protocol == Protocol::Ping)
            {
                warn!(anchor = %t.target.ip(), "fleet: ICMP anchors are configured but ICMP is unavailable: they cannot tell this edge's isolation");
            }
            return;
        };
        for t in self
            .list
            .iter()
            .filter(|t| t.anchor && t.check.protocol == Protocol::Ping)
        {
            if !icmp.usable(t.source, t.target.is_ipv6()) {
                warn!(anchor = %t.target.ip(), source = ?t.source, "fleet: ICMP anchor configured but echo requests cannot be sent from here: it cannot tell this edge's isolation");
            }
        }
    }
}

/// Whether a check that could not start failed for a local reason (no ICMP socket, not
/// permitted to send) rather than the network's: an anchor failing so says nothing about
/// this edge's isolation.
pub(super) fn local_error(why: &str) -> bool {
    why.starts_with("no ICMP socket")
        || why.contains("Operation not permitted")
        || why.contains("Permission denied")
}

/// The template an anchor is probed with: a TCP connect (or one ICMP echo, lost =
/// failed) within [`ANCHOR_INTERVAL`], every [`ANCHOR_INTERVAL`].
fn anchor_check(port: Option<u16>, source: Option<IpAddr>) -> HealthCheck {
    HealthCheck {
        name: "anchor".into(),
        protocol: if port.is_some() {
            Protocol::Tcp
        } else {
            Protocol::Ping
        },
        port: port.unwrap_or(0),
        interval: ANCHOR_INTERVAL,
        timeout: ANCHOR_INTERVAL,
        down_after: 1,
        up_after: 1,
        method: String::new(),
        path: String::new(),
        host: None,
        expect: Vec::new(),
        body_contains: None,
        tls_verify: false,
        sni: None,
        packets: 1,
        max_loss: 100.0,
        max_rtt: ANCHOR_INTERVAL,
        sources: source.into_iter().collect(),
        failure_rate: 100,
        half_open: false,
        at: crate::config::Origin::new(&std::sync::Arc::from("[fleet] anchors"), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_that_cannot_be_sent_is_no_failing_anchor() {
        assert!(local_error("no ICMP socket for this family"));
        assert!(local_error("send: Operation not permitted (os error 1)"));
        assert!(local_error("connect: Permission denied (os error 13)"));
        assert!(!local_error("connect: Connection refused (os error 111)"));
        assert!(!local_error("send: Network is unreachable (os error 101)"));
        assert!(!local_error("timed out"));
    }
}
