//! `[[line]]`: where queries come from. Prefixes given inline or in files (and networks of
//! MaxMind-format databases, [`super::geo`]), each prefix in one line only; parents
//! resolved by name, every line ending at the implicit `default`.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use toml::Spanned;

use super::{geo, index_names, Ctx, Line, Names, DEFAULT_LINE};
use crate::config::error::Origin;
use crate::config::spec::{LineSpec, Spec};

/// Which line holds each prefix: (network, length, IPv6) -> the line's name.
pub(super) type Owners = HashMap<(u128, u8, bool), String>;

/// The line names: `default` at 0, the configured lines after it.
pub(super) fn index(specs: &[LineSpec], ctx: &mut Ctx<'_>) -> HashMap<String, usize> {
    let mut m = index_names("line", specs.iter().map(|l| &l.name), ctx);
    for l in specs {
        if l.name.get_ref() == DEFAULT_LINE {
            ctx.err(
                &l.name,
                "line.name",
                "'default' is the implicit catch-all line: it has no prefixes",
            );
        }
    }
    for v in m.values_mut() {
        *v += 1;
    }
    m.insert(DEFAULT_LINE.to_string(), 0);
    m
}

/// Every line: `default`, the configured ones with their prefixes, then the networks of
/// the databases; a parent cycle is an error.
pub(super) fn load(s: &Spec, ctx: &mut Ctx<'_>, names: &Names) -> Vec<Line> {
    let mut lines = vec![Line {
        name: DEFAULT_LINE.into(),
        parent: None,
        v4: Vec::new(),
        v6: Vec::new(),
        at: Origin::new(ctx.file, 1),
    }];
    let mut owners = Owners::new();
    for l in &s.line {
        lines.push(l.validate(ctx, names, &mut owners));
    }
    geo::assign(s, ctx, &mut lines, &mut owners);
    parent_cycles(&lines, ctx);
    lines
}

impl LineSpec {
    fn validate(&self, ctx: &mut Ctx<'_>, names: &Names, owners: &mut Owners) -> Line {
        let mut line = Line {
            name: self.name.get_ref().clone(),
            parent: Some(0),
            v4: Vec::new(),
            v6: Vec::new(),
            at: ctx.at(&self.name),
        };
        if let Some(p) = &self.parent {
            match names.lines.get(p.get_ref()) {
                Some(&i) => line.parent = Some(i),
                None => ctx.err(p, "line.parent", format!("unknown line '{}'", p.get_ref())),
            }
        }
        for p in &self.prefixes {
            match p.get_ref().parse::<ipnet::IpNet>() {
                Ok(n) => line.add(n, ctx.at(p), owners, ctx),
                Err(_) => ctx.err(
                    p,
                    "line.prefixes",
                    format!("'{}' is not a CIDR prefix", p.get_ref()),
                ),
            }
        }
        if let Some(f) = &self.file {
            prefix_file(f, ctx, &mut line, owners);
        }
        line
    }
}

impl Line {
    /// Adds `net` (written at `at`) unless a line holds it already.
    fn add(&mut self, net: ipnet::IpNet, at: Origin, owners: &mut Owners, ctx: &mut Ctx<'_>) {
        let net = net.trunc();
        let key = match net {
            ipnet::IpNet::V4(n) => (u32::from(n.network()) as u128, n.prefix_len(), false),
            ipnet::IpNet::V6(n) => (u128::from(n.network()), n.prefix_len(), true),
        };
        if let Some(other) = owners.insert(key, self.name.clone()) {
            ctx.push(
                at,
                "line.prefixes",
                format!("{net} is in line '{other}' already: a prefix belongs to one line"),
            );
            return;
        }
        match net {
            ipnet::IpNet::V4(n) => self.v4.push((u32::from(n.network()), n.prefix_len())),
            ipnet::IpNet::V6(n) => self.v6.push((u128::from(n.network()), n.prefix_len())),
        }
    }
}

/// `file`: one prefix a line, `#` comments; mistakes at their line of that file.
fn prefix_file(f: &Spanned<String>, ctx: &mut Ctx<'_>, line: &mut Line, owners: &mut Owners) {
    let path = ctx.path(f.get_ref());
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            let why = format!("cannot read {}: {e}", path.display());
            ctx.err(f, "line.file", why);
            return;
        }
    };
    let pfile: Arc<str> = path.display().to_string().into();
    for (i, raw) in text.lines().enumerate() {
        let t = raw.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let at = Origin::new(&pfile, i as u32 + 1);
        match t.parse::<ipnet::IpNet>() {
            Ok(n) => line.add(n, at, owners, ctx),
            Err(_) => ctx.push(at, "prefix", format!("'{t}' is not a CIDR prefix")),
        }
    }
}

/// A line may not be its own ancestor.
fn parent_cycles(lines: &[Line], ctx: &mut Ctx<'_>) {
    for (i, l) in lines.iter().enumerate() {
        let mut cur = l.parent;
        let mut steps = 0;
        while let Some(p) = cur {
            if p == i || steps > lines.len() {
                ctx.push(
                    l.at.clone(),
                    "line.parent",
                    format!("line '{}' is its own ancestor (a parent cycle)", l.name),
                );
                break;
            }
            cur = lines[p].parent;
            steps += 1;
        }
    }
}
