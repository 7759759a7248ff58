//! Fleet membership as this edge sees it, and who probes what (issue 14, probe sharding).
//!
//! The `fleet` thread keeps the table of members from their heartbeats in the engine
//! (`control/fleet/members.rs`) and hands a [`View`] to [`super::shared::Shared`]; the
//! prober asks the view, per check, whether this edge is one of its probers.
//!
//! **Rendezvous hashing (HRW).** A check (one address and health-check template) has a
//! stable 64-bit id ([`check_id`]: FNV-1a of the address's and template's names), every
//! edge one too ([`edge_id`]). The probers of a check are, in every vantage group, the `K`
//! live members with the highest [`score`] of (check, edge). Every edge computes the same
//! list from the same live members; a member joining takes from each other member only
//! the checks where it now ranks in the top K, and a member leaving hands on only the
//! checks it held, to the next in rank. The hashes are fixed here (not `std`'s, which may
//! change between Rust versions), so edges of different builds agree.
//!
//! **Same configuration.** Only members whose heartbeat reports the epoch this edge
//! serves, with the same apply outcome (`ok`, or the same refused epoch), share its checks:
//! a member on another epoch (a rollout under way, a refused epoch, a member on its own
//! file while this edge follows the engine) may not have a check at all, so it is given
//! none, and this edge probes its share among the members on its own epoch (alone: all
//! of it). Edges on their own files (epoch 0) are taken to serve the same checks.
//!
//! **Live.** A member is live once 2 of its heartbeats arrived (under one boot id), and
//! while its last one arrived less than [`STALE`] ago, by this edge's monotonic clock.
//! An *isolated* member (its own checks and its anchors failing) is live but probes
//! nothing and its verdicts do not count.

use std::time::{Duration, Instant};

/// How often an edge writes its heartbeat.
pub const BEAT: Duration = Duration::from_secs(2);
/// A member whose last heartbeat arrived this long ago is no longer live (3 beats).
pub const STALE: Duration = Duration::from_secs(6);
/// Heartbeats a member needs before it is live (a join waits for them).
pub const JOIN_BEATS: u32 = 2;

/// One member as this edge knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// Its edge name.
    pub edge: String,
    /// Its vantage group.
    pub group: String,
    /// Its boot id (a random number drawn at its start).
    pub boot: u64,
    /// How long it has been running (ms, by its own clock, at its last heartbeat).
    pub up_ms: u64,
    /// gtmd's version there.
    pub version: String,
    /// The epoch it serves (0: its own file).
    pub epoch: u64,
    /// `ok`, or `refused epoch N` (its last epoch did not load).
    pub apply: String,
    /// It says it is isolated: its votes do not count and it probes nothing.
    pub isolated: bool,
    /// Heartbeats received under this boot id, in a row.
    pub beats: u32,
    /// When the last heartbeat arrived (this edge's clock).
    #[serde(skip)]
    pub received: Instant,
}

impl Member {
    /// Live at `now`: joined ([`JOIN_BEATS`]) and heard from within [`STALE`].
    pub fn live(&self, now: Instant) -> bool {
        self.beats >= JOIN_BEATS && self.live_or_joining(now)
    }

    /// Heard from within [`STALE`] (joined or not yet).
    pub fn live_or_joining(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.received) < STALE
    }
}

/// The membership an edge's prober works from.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Whether this edge is itself a live member: else (no engine, not joined yet) it
    /// probes every check itself, as a single node does.
    pub joined: bool,
    /// The live members that probe (not isolated), by group: (group, [(edge id, edge)]).
    probers: Vec<(String, Vec<(u64, String)>)>,
    /// Probers per check and group (`probes-per-group`).
    k: usize,
    /// Every member known (live or not), for the API.
    pub members: Vec<Member>,
    /// Most live members say they are isolated: isolation is ignored (see
    /// [`View::isolation_ignored`]).
    ignore_isolation: bool,
}

impl View {
    /// The view from the members table at `now`; `me` is this edge's name, `k` its
    /// `probes-per-group`.
    pub fn new(me: &str, k: usize, members: Vec<Member>, now: Instant) -> Self {
        let mine = members.iter().find(|m| m.edge == me && m.live(now));
        let joined = mine.is_some();
        let live = members.iter().filter(|m| m.live(now)).count();
        let isolated = members.iter().filter(|m| m.live(now) && m.isolated).count();
        let ignore_isolation = isolated * 2 > live;
        // Only members that serve what this edge serves (same epoch, same apply outcome)
        // are given checks: one on another configuration may not have the check at all.
        let same = |m: &Member| mine.is_some_and(|x| x.epoch == m.epoch && x.apply == m.apply);
        let mut probers: Vec<(String, Vec<(u64, String)>)> = Vec::new();
        for m in members
            .iter()
            .filter(|m| m.live(now) && (!m.isolated || ignore_isolation) && same(m))
        {
            let entry = (edge_id(&m.edge), m.edge.clone());
            match probers.iter_mut().find(|(g, _)| *g == m.group) {
                Some((_, l)) => l.push(entry),
                None => probers.push((m.group.clone(), vec![entry])),
            }
        }
        probers.sort();
        for (_, l) in &mut probers {
            l.sort();
        }
        Self {
            joined,
            probers,
            k: k.max(1),
            members,
            ignore_isolation,
        }
    }

    /// Whether isolation is ignored: when most live members say they are isolated, the
    /// likelier cause is shared (the anchors behind the same upstream as the targets,
    /// anchors unreachable from every edge), not each edge's own network; then the
    /// isolated members keep their checks and every verdict counts, as without anchors.
    pub fn isolation_ignored(&self) -> bool {
        self.ignore_isolation
    }

    /// What decides who probes: the live probing members by group (and K). Two views
    /// with the same key assign every check alike.
    pub fn key(&self) -> (bool, bool, usize, Vec<(String, Vec<String>)>) {
        let groups = self
            .probers
            .iter()
            .map(|(g, l)| (g.clone(), l.iter().map(|(_, e)| e.clone()).collect()))
            .collect();
        (self.joined, self.ignore_isolation, self.k, groups)
    }

    /// The probers of check `id`: per group, the K live members ranking highest.
    pub fn probers(&self, id: u64) -> Vec<&str> {
        let mut out = Vec::new();
        for (_, list) in &self.probers {
            let mut ranked: Vec<(u64, &str)> = list
                .iter()
                .map(|(e, name)| (score(id, *e), name.as_str()))
                .collect();
            // Highest score first; equal scores (never seen) by name.
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            out.extend(ranked.into_iter().take(self.k).map(|(_, n)| n));
        }
        out
    }

    /// Whether edge `me` probes check `id`: always when it has not joined (it is on its
    /// own), never when it is isolated (it is not among the probers then).
    pub fn probes(&self, me: &str, id: u64) -> bool {
        if !self.joined {
            return true;
        }
        // Without sorting: `me` probes when fewer than K of its group rank above it.
        let mine = edge_id(me);
        let Some((_, list)) = self
            .probers
            .iter()
            .find(|(_, l)| l.iter().any(|(e, n)| *e == mine && n == me))
        else {
            return false;
        };
        let my = score(id, mine);
        let above = list
            .iter()
            .filter(|(e, n)| {
                let s = score(id, *e);
                s > my || (s == my && n.as_str() < me)
            })
            .count();
        above < self.k
    }

    /// How many vantages vote on a check: K per group (fewer in a group of fewer live
    /// members); 1 when this edge is on its own.
    pub fn expected(&self) -> usize {
        if !self.joined {
            return 1;
        }
        self.probers.iter().map(|(_, l)| l.len().min(self.k)).sum()
    }

    /// Whether `edge` is a known member that says it is isolated.
    pub fn isolated(&self, edge: &str) -> bool {
        self.members.iter().any(|m| m.edge == edge && m.isolated)
    }
}

/// FNV-1a, 64 bits.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A check's id: its address's and template's names hashed.
pub fn check_id(address: &str, template: &str) -> u64 {
    fnv(&[address.as_bytes(), template.as_bytes()])
}

/// An edge's id: its name hashed.
pub fn edge_id(edge: &str) -> u64 {
    fnv(&[b"edge", edge.as_bytes()])
}

/// The HRW score of (check, edge): the two ids mixed (splitmix64's finaliser, so that
/// every bit of each moves the rank).
pub fn score(check: u64, edge: u64) -> u64 {
    let mut z = check ^ edge.rotate_left(32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(edge: &str, group: &str, beats: u32) -> Member {
        Member {
            edge: edge.into(),
            group: group.into(),
            boot: 1,
            up_ms: 0,
            version: String::new(),
            epoch: 0,
            apply: "ok".into(),
            isolated: false,
            beats,
            received: Instant::now(),
        }
    }

    fn fleet(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| member(&format!("e{i}"), "default", 2))
            .collect()
    }

    #[test]
    fn on_its_own_an_edge_probes_everything() {
        let now = Instant::now();
        let v = View::new("e1", 2, Vec::new(), now);
        assert!(v.probes("e1", check_id("a", "web")));
        assert_eq!(v.expected(), 1);
        // Heard once: not joined yet.
        let v = View::new("e1", 2, vec![member("e1", "default", 1)], now);
        assert!(!v.joined && v.probes("e1", 7));
        let v = View::new("e1", 2, vec![member("e1", "default", 2)], now);
        assert!(v.joined && v.probes("e1", 7) && v.expected() == 1);
        // Stale.
        let m = member("e1", "default", 2);
        let later = m.received + STALE;
        let v = View::new("e1", 2, vec![m], later);
        assert!(!v.joined);
    }

    #[test]
    fn k_probers_per_group_and_a_leave_moves_only_its_checks() {
        let now = Instant::now();
        let mut all = fleet(5);
        all.push(member("b1", "b", 2));
        all.push(member("b2", "b", 2));
        let v = View::new("e0", 3, all.clone(), now);
        assert_eq!(v.expected(), 5);
        let ids: Vec<u64> = (0..2000)
            .map(|i| check_id(&format!("a{i}"), "web"))
            .collect();
        let before: Vec<Vec<&str>> = ids.iter().map(|&c| v.probers(c)).collect();
        for p in &before {
            assert_eq!(p.len(), 5);
            assert_eq!(p.iter().filter(|e| e.starts_with('b')).count(), 2);
        }
        // e3 leaves: checks it did not probe keep their probers exactly.
        all.retain(|m| m.edge != "e3");
        let w = View::new("e0", 3, all, now);
        let mut moved = 0;
        for (i, &c) in ids.iter().enumerate() {
            let after = w.probers(c);
            if before[i].contains(&"e3") {
                moved += 1;
                let kept: Vec<_> = before[i].iter().filter(|e| **e != "e3").collect();
                assert!(kept.iter().all(|e| after.contains(e)));
            } else {
                assert_eq!(after, before[i]);
            }
        }
        for &c in &ids {
            for e in ["e0", "e1", "e2", "b1", "b2"] {
                assert_eq!(v.probes(e, c), v.probers(c).contains(&e));
            }
        }
        // e3 held about 3/5 of them.
        assert!((1000..1400).contains(&moved), "{moved}");
    }

    #[test]
    fn members_on_another_epoch_are_given_no_checks() {
        let now = Instant::now();
        let mut all = fleet(4);
        all[0].epoch = 7;
        all[1].epoch = 7;
        all[2].epoch = 6;
        all[3].epoch = 7;
        all[3].apply = "refused epoch 8".into();
        // e0 and e1 share epoch 7: every check is theirs; e2 (epoch 6) and e3 (refused 8)
        // are given none by e0.
        let v = View::new("e0", 3, all.clone(), now);
        assert_eq!(v.expected(), 2);
        for c in 0..200 {
            let mut p = v.probers(c);
            p.sort_unstable();
            assert_eq!(p, ["e0", "e1"]);
            assert!(v.probes("e0", c));
        }
        // e2 alone on its epoch probes everything it has.
        let w = View::new("e2", 1, all, now);
        assert!(w.joined && w.expected() == 1 && (0..200).all(|c| w.probes("e2", c)));
    }

    #[test]
    fn isolated_members_probe_nothing() {
        let now = Instant::now();
        let mut all = fleet(3);
        all[1].isolated = true;
        let v = View::new("e1", 2, all, now);
        assert!(v.joined && v.isolated("e1") && v.expected() == 2);
        assert!((0..100).all(|c| !v.probes("e1", c) && v.probers(c).len() == 2));
        assert!(!v.isolation_ignored());
    }

    #[test]
    fn isolation_is_ignored_when_most_members_are_isolated() {
        let now = Instant::now();
        let mut all = fleet(3);
        all[1].isolated = true;
        all[2].isolated = true;
        let v = View::new("e1", 2, all, now);
        assert!(v.isolation_ignored() && v.expected() == 2);
        assert!((0..100).all(|c| v.probers(c).len() == 2));
        assert!((0..100).any(|c| v.probes("e1", c)));
    }

    /// The spread of the assignment over 200 edges (printed; PERF.md quotes it):
    /// `cargo test --lib members::tests::spread_over_200_edges -- --nocapture`.
    #[test]
    fn spread_over_200_edges() {
        let now = Instant::now();
        let groups = ["a", "b", "c"];
        let all: Vec<Member> = (0..200)
            .map(|i| member(&format!("edge-{i:03}"), groups[i % 3], 2))
            .collect();
        let v = View::new("edge-000", 3, all.clone(), now);
        let checks = 10_000;
        let t0 = Instant::now();
        let mut load = std::collections::HashMap::<&str, usize>::new();
        for i in 0..checks {
            for e in v.probers(check_id(&format!("addr-{i}"), "web")) {
                *load.entry(e).or_default() += 1;
            }
        }
        let took = t0.elapsed();
        let t1 = Instant::now();
        let mine = (0..checks)
            .filter(|i| v.probes("edge-000", check_id(&format!("addr-{i}"), "web")))
            .count();
        let took_mine = t1.elapsed();
        let mut per: Vec<usize> = load.values().copied().collect();
        per.sort_unstable();
        let total: usize = per.iter().sum();
        assert_eq!(total, checks * 9);
        let mean = total as f64 / 200.0;
        let (min, max) = (per[0], per[per.len() - 1]);
        eprintln!(
            "members: 200 edges in 3 groups, K=3, {checks} checks: {total} probes per interval \
             (9 per check), per edge min {min} / median {} / max {max} (mean {mean:.0}); \
             assignment of all checks computed in {took:?}; one edge's own share ({mine} \
             checks) in {took_mine:?}",
            per[per.len() / 2]
        );
        assert_eq!(mine, load["edge-000"]);
        assert_eq!(per.len(), 200);
        assert!(min as f64 > mean * 0.6 && (max as f64) < mean * 1.5);
        // One edge leaves: the checks that move are those it held.
        let held = load.get("edge-100").copied().unwrap_or(0);
        let rest: Vec<Member> = all.into_iter().filter(|m| m.edge != "edge-100").collect();
        let w = View::new("edge-000", 3, rest, now);
        let moved = (0..checks)
            .filter(|i| {
                let c = check_id(&format!("addr-{i}"), "web");
                v.probers(c) != w.probers(c)
            })
            .count();
        eprintln!("members: edge-100 left: {moved} checks changed probers (it held {held})");
        assert_eq!(moved, held);
    }
}
