//! State transitions counted per address and per pool, by name (so counts carry over a
//! reload, and a name that leaves and comes back keeps its count): what the control API's
//! `/metrics` exposes as `gtmd_address_transitions_total` and
//! `gtmd_pool_transitions_total`. Kept by the [`super::Writer`], which sees every change.

use std::collections::HashMap;

use super::Change;

/// Transitions so far, by name.
#[derive(Debug, Default, Clone)]
pub struct Transitions {
    /// Address name -> times it went up or down.
    pub addresses: HashMap<String, u64>,
    /// Pool name -> times its health condition started or stopped holding.
    pub pools: HashMap<String, u64>,
}

impl Transitions {
    /// Counts the address and pool changes of `changes`.
    pub(super) fn count(&mut self, changes: &[Change]) {
        for c in changes {
            let (map, name) = match c {
                Change::Address { name, .. } => (&mut self.addresses, name),
                Change::Pool { name, .. } => (&mut self.pools, name),
                Change::Active { .. } | Change::ActiveMore { .. } => continue,
            };
            match map.get_mut(name) {
                Some(n) => *n += 1,
                None => {
                    map.insert(name.clone(), 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_name() {
        let mut t = Transitions::default();
        let addr = |up| Change::Address {
            name: "a".into(),
            up,
        };
        t.count(&[addr(false), Change::ActiveMore { count: 3 }]);
        t.count(&[
            addr(true),
            Change::Pool {
                name: "p".into(),
                up: false,
            },
        ]);
        assert_eq!(t.addresses["a"], 2);
        assert_eq!(t.pools["p"], 1);
    }
}
