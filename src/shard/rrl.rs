//! Response rate limiting (RRL) over UDP, in the BIND/Knot model: every response is
//! classified after it is built (positive answers per name and type, empty answers and
//! NXDOMAIN per zone, referrals per cut, errors together), and each (source prefix, class,
//! name) flow may send `rate` responses a second; past that, every `slip`th response goes
//! out truncated (TC=1, no records: a real client retries over TCP) and the rest are
//! dropped. A valid server cookie or an exempt source is never limited; TCP never is.
//!
//! Each shard owns its table: a fixed array of buckets (`table-size`, Knot's 393,241 by
//! default) that a flow hashes to, written by that shard alone, so the hot path takes no
//! lock and touches no shared cache line. A flow that finds its bucket held by another
//! takes it over (the table is sized so that this is rare; a bucket taken from an active
//! flow starts half full, as Knot's slow start, so a flood cannot reset a limit by
//! colliding with it). Memory is `16 x table-size` octets per shard (6 MiB by default).

use std::hash::BuildHasher as _;
use std::sync::Arc;

use crate::config::Rrl as Conf;
use crate::dns::rcode;
use crate::tables::gslb::ClientAddr;
use crate::tables::Snapshot;
use crate::wire::parse::{Query, HAS_COOKIE};
use crate::wire::respond::{DYN, KEY_CHASE};
use crate::wire::Outcome;

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Pass,
    /// Limited: send nothing.
    Drop,
    /// Limited, and this one slips: send it truncated.
    Slip,
}

/// Response classes (Knot's, with referrals per cut as BIND's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    /// An answer with records, per name and type (and per access domain).
    Positive = 1,
    /// NODATA, per zone (one precompiled NODATA answer per zone).
    Empty = 2,
    /// NXDOMAIN, per zone.
    Nxdomain = 3,
    /// A referral, per zone cut.
    Referral = 4,
    /// REFUSED, FORMERR, SERVFAIL, NOTIMP, BADVERS, BADCOOKIE...: one bucket per source.
    Error = 5,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Empty => "nodata",
            Self::Nxdomain => "nxdomain",
            Self::Referral => "referral",
            Self::Error => "error",
        }
    }
}

/// One flow's token bucket: 16 octets.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// High bits of the flow's hash (0: never used).
    tag: u32,
    /// Last visit, milliseconds on the shard's coarse clock.
    stamp: u32,
    /// Responses it may still send, in thousandths.
    credit: u32,
    /// Limited responses since the last slip.
    slip: u16,
    /// The flow is being limited (logged once per episode).
    limited: bool,
}

/// Log lines about limited flows a shard may write per second; further flows entering
/// limitation are counted and summed up in the next line.
const LOG_PER_SEC: u32 = 10;

/// A shard's RRL state.
pub struct Table {
    conf: Arc<Conf>,
    buckets: Box<[Bucket]>,
    hasher: foldhash::fast::FixedState,
    /// Exempt sources as sorted, disjoint ranges of IPv6 addresses (IPv4 as ::ffff:a.b.c.d).
    exempt: Box<[(u128, u128)]>,
    v4_mask: u32,
    v6_mask: u128,
    log_second: u32,
    log_lines: u32,
    log_skipped: u64,
}

impl Table {
    /// An empty table for `conf`.
    pub fn new(conf: Arc<Conf>) -> Self {
        let mut seed = [0u8; 8];
        // A failed read leaves a weaker but still per-process seed (the address of the
        // table below is mixed in).
        let _ = crate::sys::fill_random(&mut seed);
        let buckets = vec![Bucket::default(); conf.table_size as usize].into_boxed_slice();
        let seed = u64::from_ne_bytes(seed) ^ (buckets.as_ptr() as u64);
        let mut t = Self {
            conf: conf.clone(),
            buckets,
            hasher: foldhash::fast::FixedState::with_seed(seed),
            exempt: Box::new([]),
            v4_mask: 0,
            v6_mask: 0,
            log_second: 0,
            log_lines: 0,
            log_skipped: 0,
        };
        t.adopt(conf);
        t
    }

    /// Takes the settings of a new snapshot; the buckets are kept unless the size changed.
    /// Returns false when a new table is needed.
    pub fn adopt(&mut self, conf: Arc<Conf>) -> bool {
        if conf.table_size as usize != self.buckets.len() {
            return false;
        }
        self.v4_mask = u32::MAX
            .checked_shl(32 - conf.ipv4_prefix as u32)
            .unwrap_or(0);
        self.v6_mask = u128::MAX
            .checked_shl(128 - conf.ipv6_prefix as u32)
            .unwrap_or(0);
        let mut r: Vec<(u128, u128)> = conf
            .exempt
            .iter()
            .map(|n| {
                let (lo, hi) = match n {
                    ipnet::IpNet::V4(n) => (
                        u32::from(n.network()) as u128 | 0xFFFF << 32,
                        u32::from(n.broadcast()) as u128 | 0xFFFF << 32,
                    ),
                    ipnet::IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
                };
                (lo, hi)
            })
            .collect();
        r.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(r.len());
        for (lo, hi) in r {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        self.exempt = merged.into_boxed_slice();
        self.conf = conf;
        true
    }

    /// The settings this table runs with.
    pub fn conf(&self) -> &Arc<Conf> {
        &self.conf
    }

    /// Judges the response `o` to `q` from `client`, built from `snap`.
    #[inline]
    pub fn check(
        &mut self,
        snap: &Snapshot,
        o: &Outcome,
        q: &Query,
        client: Option<ClientAddr>,
        shard: usize,
    ) -> Verdict {
        let Some(client) = client else {
            return Verdict::Pass;
        };
        if q.edns.is_some_and(|e| e.opts & HAS_COOKIE != 0) && q.cookie.valid {
            return Verdict::Pass;
        }
        let (prefix, as_v6) = match client {
            ClientAddr::V4(a) => (
                (a & self.v4_mask) as u128 | 1 << 64,
                a as u128 | 0xFFFF << 32,
            ),
            ClientAddr::V6(a) => (a & self.v6_mask, a),
        };
        if !self.exempt.is_empty() && self.exempt(as_v6) {
            return Verdict::Pass;
        }
        let (class, name) = classify(snap, o, q);
        let h = self.hasher.hash_one((prefix, class as u8, name));
        let now = crate::sys::coarse_millis();
        let verdict = self.take(h, now);
        if verdict != Verdict::Pass && self.entered(h) {
            self.log(now, client, class, q, shard);
        }
        verdict
    }

    fn exempt(&self, a: u128) -> bool {
        let i = self.exempt.partition_point(|r| r.0 <= a);
        i > 0 && a <= self.exempt[i - 1].1
    }

    #[inline]
    fn index(&self, h: u64) -> usize {
        // Lemire's range reduction: any table size, no division.
        (((h as u32) as u64 * self.buckets.len() as u64) >> 32) as usize
    }

    /// Takes one response from the flow's bucket.
    #[inline]
    fn take(&mut self, h: u64, now: u32) -> Verdict {
        let rate = self.conf.rate;
        let cap = rate * 1000;
        let tag = (h >> 32) as u32 | 1;
        let i = self.index(h);
        let b = &mut self.buckets[i];
        if b.tag != tag {
            // A new flow; one that takes the place of a flow active within the last two
            // seconds starts half full (slow start, as Knot after a collision).
            let idle = b.tag == 0 || now.wrapping_sub(b.stamp) > 2000;
            *b = Bucket {
                tag,
                stamp: now,
                credit: if idle { cap } else { cap / 2 },
                slip: 0,
                limited: false,
            };
        } else {
            // Refill for the time since the last visit (at most one second: a full bucket).
            let dt = now.wrapping_sub(b.stamp).min(1000);
            b.credit = (b.credit + dt * rate).min(cap);
            b.stamp = now;
            if b.credit == cap {
                // A full bucket: the flow kept under its rate for a while; a new
                // limitation is a new episode (and a new log line).
                b.limited = false;
            }
        }
        if b.credit >= 1000 {
            b.credit -= 1000;
            return Verdict::Pass;
        }
        let slip = self.conf.slip;
        b.slip = b.slip.wrapping_add(1);
        if slip != 0 && b.slip as u32 >= slip {
            b.slip = 0;
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// Marks the flow limited; true when it just entered limitation.
    fn entered(&mut self, h: u64) -> bool {
        let i = self.index(h);
        let b = &mut self.buckets[i];
        !std::mem::replace(&mut b.limited, true)
    }

    #[cold]
    #[inline(never)]
    fn log(&mut self, now: u32, client: ClientAddr, class: Class, q: &Query, shard: usize) {
        let second = now / 1000;
        if second != self.log_second {
            self.log_second = second;
            self.log_lines = 0;
        }
        if self.log_lines >= LOG_PER_SEC {
            self.log_skipped += 1;
            return;
        }
        self.log_lines += 1;
        let source = match client {
            ClientAddr::V4(a) => format!(
                "{}/{}",
                std::net::Ipv4Addr::from(a & self.v4_mask),
                self.conf.ipv4_prefix
            ),
            ClientAddr::V6(a) => format!(
                "{}/{}",
                std::net::Ipv6Addr::from(a & self.v6_mask),
                self.conf.ipv6_prefix
            ),
        };
        let skipped = std::mem::take(&mut self.log_skipped);
        tracing::warn!(
            shard,
            source = %source,
            class = class.name(),
            query = %crate::dns::name::display_name(q.name()),
            qtype = q.qtype,
            rate = self.conf.rate,
            slip = self.conf.slip,
            more_flows_not_logged = skipped,
            "rate limiting responses"
        );
    }
}

/// The class of a response and the name (or zone, or cut) that shares its bucket.
#[inline]
fn classify(snap: &Snapshot, o: &Outcome, q: &Query) -> (Class, u64) {
    if o.rcode != rcode::NOERROR && o.rcode != rcode::NXDOMAIN {
        return (Class::Error, 0);
    }
    let key = o.key;
    if key == KEY_CHASE {
        // Assembled per query: per name and type (rare by design).
        let name = foldhash::fast::FixedState::with_seed(0).hash_one(q.name());
        let class = if o.rcode == rcode::NXDOMAIN {
            Class::Nxdomain
        } else {
            Class::Positive
        };
        return (class, name ^ q.qtype as u64);
    }
    if key & DYN != 0 {
        return if key == crate::tables::NONE {
            (Class::Error, 0)
        } else {
            (Class::Positive, key as u64)
        };
    }
    // A precompiled answer: positive ones exist per name and type, NODATA and NXDOMAIN
    // per zone, referrals per cut.
    let a = &snap.names.answers[key as usize];
    let class = if a.rcode as u16 == rcode::NXDOMAIN {
        Class::Nxdomain
    } else if !a.aa {
        Class::Referral
    } else if a.counts[0] == 0 {
        Class::Empty
    } else {
        Class::Positive
    };
    (class, key as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(rate: u32, slip: u32) -> Arc<Conf> {
        Arc::new(Conf {
            rate,
            slip,
            table_size: 1021,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
        })
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let mut t = Table::new(conf(100, 0));
        let h = 0xDEAD_BEEF_1234_5678;
        let mut passed = 0;
        // 10 seconds of 1,000 responses a second, one every millisecond.
        for ms in 0..10_000u32 {
            if t.take(h, 5000 + ms) == Verdict::Pass {
                passed += 1;
            }
        }
        // The first second's full bucket, then 100 a second.
        assert!((1090..=1110).contains(&passed), "{passed}");
    }

    #[test]
    fn slip_every_nth() {
        let mut t = Table::new(conf(1, 3));
        let h = 42;
        assert_eq!(t.take(h, 100), Verdict::Pass);
        let v: Vec<Verdict> = (0..6).map(|_| t.take(h, 100)).collect();
        use Verdict::*;
        assert_eq!(v, [Drop, Drop, Slip, Drop, Drop, Slip]);
        let mut t = Table::new(conf(1, 1));
        t.take(h, 100);
        assert!((0..5).all(|_| t.take(h, 100) == Slip));
    }

    #[test]
    fn collisions_start_half_full() {
        let mut t = Table::new(conf(10, 0));
        let a = 7u64;
        let b = 7u64 | 1 << 40; // same index, another tag
        for _ in 0..10 {
            assert_eq!(t.take(a, 100), Verdict::Pass);
        }
        assert_eq!(t.take(a, 100), Verdict::Drop);
        let passed = (0..10).filter(|_| t.take(b, 100) == Verdict::Pass).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn exempt_ranges() {
        let t = Table::new(conf(1, 0));
        let v4 =
            |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()) as u128 | 0xFFFF << 32;
        assert!(t.exempt(v4("10.1.2.3")));
        assert!(!t.exempt(v4("11.0.0.0")));
        assert!(!t.exempt(v4("9.255.255.255")));
        assert!(t.exempt(u128::from(
            "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap()
        )));
        assert!(!t.exempt(u128::from(
            "2001:db9::1".parse::<std::net::Ipv6Addr>().unwrap()
        )));
    }
}
