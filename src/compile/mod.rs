//! Step 2 of `config -> compile -> tables -> shards`: turns a validated [`Config`] into one
//! immutable [`Snapshot`]. All DNS logic that does not depend on the individual query lives
//! here, off the hot path: closest-encloser structure (empty non-terminals), zone cuts and
//! glue, DS at cuts, DNAME, CNAME chains followed inside the zone with loops stopped,
//! additional-section addresses, RFC 8482 ANY, RFC 2308 negative answers, nested zones (the
//! most specific zone answers). `gtmd check` runs exactly this.

mod chain;
mod compact;
mod encode;
mod gslb;
mod patch;
mod reindex;
#[cfg(test)]
pub(crate) mod testing;
mod zone;

use foldhash::HashMap;
use std::sync::Arc;

use crate::config::{Config, ConfigError, ConfigErrors, Rdata};
use crate::dns::{rtype, CLASS_CH};
use crate::tables::{Answer, HealthState, Names, Node, Snapshot, ZoneInfo, NONE};
use encode::{Encoder, Section};

/// The name tables of the snapshot under construction (the GSLB tables are built beside
/// them, on another thread).
#[derive(Default)]
struct Out {
    index: crate::tables::NameIndex,
    nodes: Vec<Node>,
    types: Vec<(u16, u32)>,
    answers: Vec<Answer>,
    arena: Vec<u8>,
    fixups: Vec<u16>,
    zones: Vec<ZoneInfo>,
    chaos: Vec<(Box<[u8]>, u32)>,
    /// Each access domain's NODATA answer (its zone's), for [`crate::tables::gslb::AdTable::nodata`].
    ad_nodata: Vec<u32>,
    /// Per node: a name lies directly below it ([`Names::has_child`]).
    has_child: Vec<bool>,
}

impl Out {
    fn push(&mut self, e: Encoder, rcode: u8, aa: bool) -> u32 {
        let enc = e.finish();
        self.answers.push(Answer {
            rcode,
            aa,
            qlen: enc.qlen,
            counts: enc.counts,
            start: self.arena.len() as u32,
            len: enc.tail.len() as u32,
            fix_start: self.fixups.len() as u32,
            fix_len: enc.fixups.len() as u32,
            opt_len: enc.optional.0,
            opt_count: enc.optional.1,
            next: NONE,
            next_at: 0,
        });
        self.arena.extend_from_slice(&enc.tail);
        self.fixups.extend_from_slice(&enc.fixups);
        (self.answers.len() - 1) as u32
    }
}

/// Which CPU time a compile takes besides its own thread's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpus {
    /// A helper thread at normal priority: start-up and `gtmd check`, when no shard
    /// serves yet.
    All,
    /// A niced helper thread (as the include readers are), yielding to the shards: a
    /// reload.
    Spare,
}

/// Compiles `cfg` into snapshot generation `generation` before any shard serves
/// ([`Cpus::All`]).
pub fn compile(cfg: &Config, generation: u64) -> Result<Snapshot, ConfigErrors> {
    compile_with(cfg, generation, Cpus::All, None)
}

/// Compiles `cfg` into snapshot generation `generation`: the GSLB tables on a helper
/// thread, the zones on this one. With `prev` (the snapshot serving now), what the change
/// left alone is taken from it rather than compiled again: its name tables whole when the
/// zones and access-domain names are the same, and its GSLB rows of every access-domain
/// segment (included file) it shares (`gslb::compile`).
///
/// A reload ([`Cpus::Spare`]) compiles without transparent huge pages where the kernel
/// can put memory back on them afterwards ([`crate::sys::can_collapse`]): on a host that
/// takes free memory back (PERF.md measures on one), every fresh huge page is zeroed and
/// often compacted for, which made adding a name at a million access domains 6 times
/// slower. The control side then collapses the new tables onto huge pages once they
/// serve (`control::hugepages`): on small pages, a million cache-missing names cost
/// the shards 15-20% more CPU per query. Start-up compiles on huge pages.
pub fn compile_with(
    cfg: &Config,
    generation: u64,
    cpus: Cpus,
    prev: Option<&Snapshot>,
) -> Result<Snapshot, ConfigErrors> {
    match cpus {
        Cpus::Spare => {
            crate::sys::small_pages_if_collapsible(|| build(cfg, generation, cpus, prev))
        }
        Cpus::All => build(cfg, generation, cpus, prev),
    }
}

/// [`compile_with`]'s work.
fn build(
    cfg: &Config,
    generation: u64,
    cpus: Cpus,
    prev: Option<&Snapshot>,
) -> Result<Snapshot, ConfigErrors> {
    let digests = names_digest(cfg, prev.map(|p| (&*p.names, &p.model)));
    let kept = prev
        .map(|p| &p.names)
        .filter(|n| n.digest == digests.all && n.seg_digests == digests.segs)
        .cloned();
    let (gslb, names) = std::thread::scope(|sc| {
        let helper = std::thread::Builder::new()
            .name("gtmd-compile".into())
            .spawn_scoped(sc, || {
                if cpus == Cpus::Spare {
                    crate::sys::lower_thread_priority();
                }
                gslb::compile(&cfg.gslb, cfg.server.ecs, prev)
            });
        let patched = || prev.and_then(|p| patch::names(cfg, p, digests.zones));
        let names = match kept {
            Some(n) => Ok(n),
            None => match patched() {
                Some(n) => Ok(Arc::new(with_digests(n, digests))),
                None => compile_zones(cfg)
                    .map(|out| Arc::new(with_digests(out.into_names(cfg), digests))),
            },
        };
        let gslb = match helper {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            // No thread to be had: build them here.
            Err(_) => gslb::compile(&cfg.gslb, cfg.server.ecs, prev),
        };
        (gslb, names)
    });
    let (mut gslb_tables, model, reuse) = gslb;
    let names = names?;
    // Written only where it differs: a row kept from the last snapshot has its nodata
    // (and with the name tables kept, only the rows compiled in place can differ).
    let kept = prev.is_some_and(|p| Arc::ptr_eq(&p.names, &names));
    let rows: Vec<std::ops::Range<usize>> = match &reuse.in_place {
        Some(_) if kept => reuse.rows.clone(),
        _ => std::iter::once(0..names.ad_nodata.len()).collect(),
    };
    for i in rows.into_iter().flatten() {
        let nodata = names.ad_nodata[i];
        if gslb_tables.ads[i].nodata != nodata {
            gslb_tables.ads.make_mut(i).nodata = nodata;
        }
    }
    let (addrs, pools) = (model.addresses.len(), model.pools.len());
    let health = Arc::new(match (&reuse.in_place, prev) {
        (Some(_), Some(p)) if reuse.health_fresh => {
            let n = model.slots.len();
            HealthState::sharing(&p.health, addrs, pools, n, 0..n)
        }
        (Some(touched), Some(p)) => {
            let slots = touched.iter().flat_map(Clone::clone);
            HealthState::sharing(&p.health, addrs, pools, model.slots.len(), slots)
        }
        // Copied rows: those of the leading segments kept their slots, whose active
        // pools are shared by whole chunks (the pools' members being the same).
        (None, Some(p)) if !reuse.health_fresh && reuse.from == p.generation => {
            let lead = match reuse.slots.first() {
                Some(&(0, 0, len)) => len as usize,
                _ => 0,
            };
            HealthState::sharing_prefix(&p.health, addrs, pools, lead, model.slots.len())
        }
        _ => HealthState::new(addrs, pools, model.slots.len()),
    });
    Ok(Snapshot {
        generation,
        names,
        udp_payload: cfg.server.udp_payload,
        nsid: cfg.server.nsid.as_deref().map(Into::into),
        cookies: cfg.server.cookies.then(|| crate::wire::cookie::Secrets {
            current: cfg
                .server
                .cookie_secret
                .unwrap_or_else(crate::wire::cookie::process_secret),
            previous: cfg.server.cookie_secret_previous,
        }),
        require_cookie: cfg.server.require_cookie,
        rrl: cfg.rrl.clone().map(Arc::new),
        gslb: gslb_tables,
        health,
        model,
        reuse,
        metric_series: Default::default(),
    })
}

/// What name tables are compiled from, digested ([`names_digest`]).
struct Digests {
    /// Per access-domain segment.
    segs: Vec<u64>,
    /// The zones and CH TXT texts.
    zones: u64,
    /// Both.
    all: u64,
}

/// `n` with the digests of what it was made from.
fn with_digests(mut n: Names, d: Digests) -> Names {
    (n.seg_digests, n.zones_digest, n.digest) = (d.segs, d.zones, d.all);
    n
}

impl Out {
    /// The finished name tables (their digests are set by the caller).
    fn into_names(self, cfg: &Config) -> Names {
        let max_labels = self.index.iter().map(|(n, _)| labels(n)).max().unwrap_or(0);
        Names {
            index: self.index,
            nodes: self.nodes,
            types: self.types,
            answers: self.answers,
            arena: self.arena,
            fixups: self.fixups,
            zones: self.zones,
            root_zone: cfg.zones.iter().any(|z| z.name == [0]),
            max_labels: max_labels.min(127) as u8,
            chaos: self.chaos,
            ad_nodata: self.ad_nodata,
            digest: 0,
            seg_digests: Vec::new(),
            zones_digest: 0,
            has_child: self.has_child,
            garbage: 0,
            patched: false,
        }
    }
}

/// The digest of what the name tables are compiled from ([`Names::digest`]), and its
/// per-segment parts; the parts of segments `prev` shares are taken from it.
fn names_digest(cfg: &Config, prev: Option<(&Names, &crate::tables::Model)>) -> Digests {
    use std::hash::{BuildHasher, Hash, Hasher};
    let fixed = foldhash::fast::FixedState::with_seed(0x6774_6d64_6e61_6d65);
    let old: HashMap<(*const crate::config::gslb::AccessDomain, usize), u64> = prev
        .map(|(n, m)| {
            let segs = m.access_domains.segments();
            segs.iter()
                .zip(&n.seg_digests)
                .map(|(s, &d)| (s.key(), d))
                .collect()
        })
        .unwrap_or_default();
    let segs: Vec<u64> = cfg
        .gslb
        .access_domains
        .segments()
        .iter()
        .map(|seg| {
            if let Some(&d) = old.get(&seg.key()) {
                return d;
            }
            let mut h = fixed.build_hasher();
            for ad in seg.iter() {
                (&ad.name, ad.rtype, ad.zone, ad.enabled).hash(&mut h);
            }
            h.finish()
        })
        .collect();
    let mut h = fixed.build_hasher();
    for z in &cfg.zones {
        z.name.hash(&mut h);
        for r in &z.records {
            (&r.owner, r.rtype, r.ttl, &r.rdata).hash(&mut h);
        }
    }
    (&cfg.server.version_string, &cfg.server.identity).hash(&mut h);
    let zones = h.finish();
    segs.hash(&mut h);
    Digests {
        all: h.finish(),
        segs,
        zones,
    }
}

/// The zones' names, nodes and answers, and the CH TXT answers.
fn compile_zones(cfg: &Config) -> Result<Out, ConfigErrors> {
    let mut out = Out {
        ad_nodata: vec![NONE; cfg.gslb.access_domains.len()],
        ..Out::default()
    };
    let mut errs = Vec::new();
    // Parents before children: a parent's answer to DS at a child's apex (RFC 4035
    // 3.1.4.1) is known when the child's apex node is built.
    let mut order: Vec<usize> = (0..cfg.zones.len()).collect();
    order.sort_by_key(|&i| cfg.zones[i].name.len());
    let mut ds_at: HashMap<Vec<u8>, u32> = HashMap::default();
    out.zones = cfg
        .zones
        .iter()
        .map(|z| ZoneInfo {
            name: z.name.clone().into(),
            nxdomain: NONE,
            nodata: NONE,
        })
        .collect();
    for zi in order {
        let children: Vec<&[u8]> = cfg
            .zones
            .iter()
            .filter(|c| c.name.len() > cfg.zones[zi].name.len())
            .filter(|c| crate::dns::name::is_within(&c.name, &cfg.zones[zi].name))
            .map(|c| &c.name[..])
            .collect();
        zone::compile_zone(zi as u32, cfg, &children, &mut ds_at, &mut out, &mut errs);
    }
    compile_chaos(cfg, &mut out);
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errs))
    }
}

fn compile_chaos(cfg: &Config, out: &mut Out) {
    let entries: [(&[u8], &Option<String>); 4] = [
        (b"\x07version\x04bind\x00", &cfg.server.version_string),
        (b"\x07version\x06server\x00", &cfg.server.version_string),
        (b"\x02id\x06server\x00", &cfg.server.identity),
        (b"\x08hostname\x04bind\x00", &cfg.server.identity),
    ];
    for (name, text) in entries {
        if let Some(t) = text {
            let mut rd = vec![t.len() as u8];
            rd.extend_from_slice(t.as_bytes());
            let mut e = Encoder::new(name, true);
            e.rr(
                Section::Answer,
                name,
                rtype::TXT,
                CLASS_CH,
                0,
                &Rdata::Opaque(rd),
            );
            let a = out.push(e, 0, true);
            out.chaos.push((name.into(), a));
        }
    }
}

/// An error about an RRset too large for any DNS message.
fn too_large(at: &crate::config::Origin, name: &[u8], t: u16) -> ConfigError {
    ConfigError::new(
        at.clone(),
        "record",
        format!(
            "RRset {} type {t} does not fit in one DNS message",
            crate::dns::name::display_name(name)
        ),
    )
}

/// Number of labels of a wire name (root excluded), without allocating.
fn labels(name: &[u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < name.len() && name[i] != 0 {
        i += 1 + name[i] as usize;
        n += 1;
    }
    n
}
