//! `[[pool]]`: addresses of one kind answered together, with the condition under which the
//! pool counts as healthy and the policy that picks its answers, validated into [`Pool`]s.

use super::MAX_ANSWERS;
use super::{AddrValue, Address, AddressPolicy, Condition, Ctx, Names, Pool, PoolKind};
use crate::config::spec::PoolSpec;

impl PoolSpec {
    pub(super) fn validate(&self, ctx: &mut Ctx<'_>, names: &Names, known: &[Address]) -> Pool {
        let kinds = [
            ("ipv4", PoolKind::Ipv4),
            ("ipv6", PoolKind::Ipv6),
            ("domain", PoolKind::Domain),
        ];
        let kind = ctx
            .keyword(&self.kind, "pool.type", &kinds)
            .unwrap_or(PoolKind::Ipv4);
        let addresses = self.members(ctx, names, known, kind);
        let condition = self.condition(ctx);
        let policies = [
            ("round-robin", AddressPolicy::RoundRobin),
            ("weighted", AddressPolicy::Weighted),
            ("sequential", AddressPolicy::Sequential),
        ];
        let policy = self
            .policy
            .as_ref()
            .and_then(|x| ctx.keyword(x, "pool.policy", &policies))
            .unwrap_or(AddressPolicy::RoundRobin);
        let mut answers = self.answers(ctx, policy, addresses.len());
        if kind == PoolKind::Domain {
            answers = 1; // one CNAME per name (RFC 2181 10.1)
        }
        Pool {
            name: self.name.get_ref().clone(),
            kind,
            addresses,
            enabled: self.enabled.unwrap_or(true),
            condition,
            policy,
            answers,
            remarks: self.remarks.clone().unwrap_or_default(),
            at: ctx.at(&self.name),
        }
    }

    /// `addresses`: known addresses of the pool's kind, each once.
    fn members(
        &self,
        ctx: &mut Ctx<'_>,
        names: &Names,
        known: &[Address],
        kind: PoolKind,
    ) -> Vec<usize> {
        let field = "pool.addresses";
        if self.addresses.get_ref().is_empty() {
            let why = format!("pool '{}' is empty", self.name.get_ref());
            ctx.err(&self.addresses, field, why);
        }
        let mut addresses = Vec::new();
        for a in self.addresses.get_ref() {
            let Some(&i) = names.addresses.get(a.get_ref()) else {
                ctx.err(a, field, format!("unknown address '{}'", a.get_ref()));
                continue;
            };
            let fits = matches!(
                (&known[i].value, kind),
                (AddrValue::V4(_), PoolKind::Ipv4)
                    | (AddrValue::V6(_), PoolKind::Ipv6)
                    | (AddrValue::Name(_), PoolKind::Domain)
            );
            if !fits {
                let why = format!(
                    "address '{}' does not fit a pool of type {}",
                    a.get_ref(),
                    self.kind.get_ref()
                );
                ctx.err(a, field, why);
            }
            if addresses.contains(&i) {
                ctx.err(
                    a,
                    field,
                    format!("address '{}' is listed twice", a.get_ref()),
                );
            }
            addresses.push(i);
        }
        addresses
    }

    /// `health`: when the pool counts as healthy (default: any address up).
    fn condition(&self, ctx: &mut Ctx<'_>) -> Condition {
        let Some(h) = &self.health else {
            return Condition::Any;
        };
        ctx.check(h, "pool.health", parse_condition(h.get_ref()), || {
            format!(
                "'{}' is not \"any\", \"all\", \"at least N\" or \"at least N%\"",
                h.get_ref()
            )
        })
        .unwrap_or(Condition::Any)
    }

    /// `answers`: how many addresses an answer carries, at most the pool's size and
    /// [`MAX_ANSWERS`] (default: all for round-robin, else one).
    fn answers(&self, ctx: &mut Ctx<'_>, policy: AddressPolicy, size: usize) -> usize {
        let default = match policy {
            AddressPolicy::RoundRobin => size.max(1),
            _ => 1,
        };
        let Some(n) = &self.answers else {
            return default;
        };
        let v = *n.get_ref();
        let value = (v >= 1 && (v as usize) <= size.clamp(1, MAX_ANSWERS)).then_some(v as usize);
        ctx.check(n, "pool.answers", value, || {
            format!(
                "{v} is outside 1..={} (the pool's size, at most {MAX_ANSWERS})",
                size.min(MAX_ANSWERS)
            )
        })
        .unwrap_or(default)
    }
}

fn parse_condition(s: &str) -> Option<Condition> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "any" => return Some(Condition::Any),
        "all" => return Some(Condition::All),
        _ => {}
    }
    let rest = s.strip_prefix("at least")?.trim();
    if let Some(p) = rest.strip_suffix('%') {
        let v: u32 = p.trim().parse().ok()?;
        (1..=100)
            .contains(&v)
            .then_some(Condition::AtLeastPercent(v))
    } else {
        let v: u32 = rest.parse().ok()?;
        (v >= 1).then_some(Condition::AtLeast(v))
    }
}
