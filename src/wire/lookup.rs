//! The table lookups that take a parsed [`Query`]: inherent methods of [`Snapshot`] kept
//! beside the parser, so that `tables` knows names and types but not queries.

use crate::dns::rtype;
use crate::tables::{Located, Lookup, Snapshot};
use crate::wire::parse::Query;

impl Snapshot {
    /// Finds the answer for an IN-class query. Allocation-free: hashes the lowercased
    /// question name and, when it does not exist, its suffixes to find the closest encloser.
    #[inline]
    pub fn lookup(&self, q: &Query, tcp: bool) -> Lookup {
        match self.locate(q.name(), &q.label_offsets[..q.labels as usize]) {
            Located::Exact(n) => self.pick_node(n, q.qtype, tcp),
            Located::Below(e) => self.below(e, q.qtype, tcp),
            Located::Nowhere => Lookup::Refused,
        }
    }

    /// The CH TXT answer for `q`, if configured.
    pub fn chaos(&self, q: &Query) -> Option<u32> {
        if q.qtype != rtype::TXT && q.qtype != rtype::ANY {
            return None;
        }
        self.names
            .chaos
            .iter()
            .find(|(n, _)| &**n == q.name())
            .map(|&(_, a)| a)
    }
}
