//! Per-domain series: which counter slot each access domain and line counts into. A name
//! gets a slot the first time a configuration with `[metrics] per-domain = true` has it and
//! keeps it for the life of the process, so the shards' counters (indexed by slot) stay
//! attributed to the right name across reloads, whichever snapshot a shard answered from.
//! At most `max-series` names get a slot each; later ones share the overflow slot, shown
//! as `_other`.

use std::collections::HashMap;

use tracing::warn;

use crate::config::gslb::type_name;
use crate::dns::name::display_name;
use crate::tables::{MetricSeries, Snapshot};

/// The label value of the overflow slot.
pub(super) const OTHER: &str = "_other";

/// Names by slot, and slots by name.
#[derive(Debug)]
pub(super) struct Series {
    /// Slots per kind (the shards' counter arrays have `cap + 1`: the last is overflow).
    cap: usize,
    ads: HashMap<(Box<[u8]>, u16), u32>,
    /// (presentation name, type) per access-domain slot.
    pub(super) ad_names: Vec<(String, &'static str)>,
    lines: HashMap<String, u32>,
    /// Line name per line slot.
    pub(super) line_names: Vec<String>,
    /// Whether the overflow was logged (once per process).
    warned: bool,
}

impl Series {
    /// An empty registry for counters of `cap` slots per kind.
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            ads: HashMap::new(),
            ad_names: Vec::new(),
            lines: HashMap::new(),
            line_names: Vec::new(),
            warned: false,
        }
    }

    /// Slots per kind; the overflow slot is this index.
    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    /// Whether any name was ever given a slot (the per-domain families are then shown).
    pub(super) fn used(&self) -> bool {
        !self.ads.is_empty()
    }

    /// Fills `snap.metric_series` (empty when `per_domain` is off: the shards then count
    /// nothing per domain), giving new names slots while there are any left.
    pub(super) fn assign(&mut self, snap: &mut Snapshot, per_domain: bool) {
        if !per_domain {
            snap.metric_series = MetricSeries::default();
            return;
        }
        let cap = self.cap as u32;
        let mut overflow = 0usize;
        let m = &snap.model;
        let ads: Vec<u32> = m
            .access_domains
            .iter()
            .map(|ad| {
                let key = (ad.name.clone(), ad.rtype);
                if let Some(&s) = self.ads.get(&key) {
                    return s;
                }
                if self.ad_names.len() >= self.cap {
                    overflow += 1;
                    return cap;
                }
                let s = self.ad_names.len() as u32;
                self.ad_names
                    .push((display_name(&ad.name), type_name(ad.rtype)));
                self.ads.insert(key, s);
                s
            })
            .collect();
        let lines: Vec<u32> = m
            .lines
            .iter()
            .map(|l| {
                if let Some(&s) = self.lines.get(&l.name) {
                    return s;
                }
                if self.line_names.len() >= self.cap {
                    overflow += 1;
                    return cap;
                }
                let s = self.line_names.len() as u32;
                self.line_names.push(l.name.clone());
                self.lines.insert(l.name.clone(), s);
                s
            })
            .collect();
        if overflow > 0 && !self.warned {
            self.warned = true;
            warn!(
                max_series = self.cap,
                names = overflow,
                "metrics: more access domains or lines than [metrics] max-series: the rest are \
                 counted together as _other"
            );
        }
        snap.metric_series = MetricSeries {
            ads: ads.into(),
            lines: lines.into(),
        };
    }
}
