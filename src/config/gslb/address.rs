//! `[[address]]`: what an access domain may answer (an IPv4 or IPv6 address, or a domain
//! name answered as a CNAME), with its weight, operator mode and health checks, validated
//! into [`Address`]es.

use std::net::{Ipv4Addr, Ipv6Addr};

use toml::Spanned;

use super::{AddrValue, Address, Ctx, Mode, Names};
use crate::config::name::parse_name;
use crate::config::spec::AddressSpec;

impl AddressSpec {
    pub(super) fn validate(&self, ctx: &mut Ctx<'_>, names: &Names) -> Address {
        let value = value(&self.value, ctx);
        let weight = ctx
            .int(&self.weight, "address.weight", 1..=100)
            .unwrap_or(1);
        let modes = [("auto", Mode::Auto), ("up", Mode::Up), ("down", Mode::Down)];
        let mode = self
            .mode
            .as_ref()
            .and_then(|m| ctx.keyword(m, "address.mode", &modes))
            .unwrap_or(Mode::Auto);
        let checks = self.checks(ctx, names);
        Address {
            name: self.name.get_ref().clone(),
            value,
            weight,
            enabled: self.enabled.unwrap_or(true),
            mode,
            checks,
            remarks: self.remarks.clone().unwrap_or_default(),
            at: ctx.at(&self.name),
        }
    }

    /// `health-check`: a template name or a list of them, each known.
    fn checks(&self, ctx: &mut Ctx<'_>, names: &Names) -> Vec<usize> {
        let Some(hc) = &self.health_check else {
            return Vec::new();
        };
        let field = "address.health-check";
        let listed: Vec<String> = match hc.get_ref() {
            toml::Value::String(s) => vec![s.clone()],
            toml::Value::Array(v) => v
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => {
                ctx.err(hc, field, "a template name or a list of them");
                Vec::new()
            }
        };
        let mut checks = Vec::new();
        for n in listed {
            match names.checks.get(&n) {
                Some(&i) => checks.push(i),
                None => ctx.err(hc, field, format!("unknown health check '{n}'")),
            }
        }
        checks
    }
}

/// `value`: an IP address, or an absolute domain name.
fn value(v: &Spanned<String>, ctx: &mut Ctx<'_>) -> AddrValue {
    let text = v.get_ref();
    if let Ok(v4) = text.parse::<Ipv4Addr>() {
        return AddrValue::V4(v4);
    }
    if let Ok(v6) = text.parse::<Ipv6Addr>() {
        return AddrValue::V6(v6);
    }
    let why = match parse_name(text, None) {
        Ok(n) if text.contains('.') => return AddrValue::Name(n),
        Ok(_) => format!(
            "'{text}' is not an IP address; a domain name must be absolute (end with a dot)"
        ),
        Err(e) => format!("'{text}' is neither an IP address nor a domain name: {e}"),
    };
    ctx.err(v, "address.value", why);
    AddrValue::Name(vec![0])
}
