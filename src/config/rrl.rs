//! `[rrl]`: response rate limiting (the BIND/Knot model), validated into an [`Rrl`], or
//! off without a rate.

use super::spec::RrlSpec;
use super::validate::Ctx;
use super::{Rrl, RRL_TABLE_SIZE};

impl RrlSpec {
    /// The limits, or `None` when no rate (or 0) is given.
    pub(super) fn validate(&self, ctx: &mut Ctx<'_>) -> Option<Rrl> {
        let rate = ctx.int(&self.rate, "rrl.rate", 0..=1_000_000).unwrap_or(0);
        let slip = ctx.int(&self.slip, "rrl.slip", 0..=100).unwrap_or(1);
        let table_size = ctx.int(&self.table_size, "rrl.table-size", 1..=1 << 26);
        let ipv4_prefix = ctx.int(&self.ipv4_prefix, "rrl.ipv4-prefix", 0..=32);
        let ipv6_prefix = ctx.int(&self.ipv6_prefix, "rrl.ipv6-prefix", 0..=128);
        let mut exempt = Vec::new();
        for e in self.exempt.iter().flatten() {
            let t = e.get_ref();
            let net = t.parse::<ipnet::IpNet>().ok().or_else(|| {
                let a = t.parse::<std::net::IpAddr>().ok()?;
                Some(ipnet::IpNet::from(a))
            });
            if let Some(n) = ctx.check(e, "rrl.exempt", net, || {
                format!("'{t}' is not an address or prefix (e.g. \"192.0.2.0/24\")")
            }) {
                exempt.push(n.trunc());
            }
        }
        // No rate, or 0: off (as Knot 3.2, whose module needs one, and BIND).
        (rate > 0).then_some(Rrl {
            rate,
            slip,
            table_size: table_size.unwrap_or(RRL_TABLE_SIZE),
            ipv4_prefix: ipv4_prefix.unwrap_or(24),
            ipv6_prefix: ipv6_prefix.unwrap_or(56),
            exempt,
        })
    }
}
