//! `include`: files of more `[[access-domain]]` tables (paths, or `dir/*.toml` patterns),
//! read and validated on one thread per CPU, their access domains and errors kept in file
//! order. A file of the common shape is read by [`super::reader`], one access domain at a
//! time; any other by the `toml` crate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use toml::Spanned;

use super::access_domain::validate_all;
use super::{reader, AccessDomain, AdSet, Ctx, Scope};
use crate::config::error::{ConfigError, Lines, Origin};
use crate::config::spec::IncludeSpec;
use crate::config::validate;

/// Largest included file: the `toml` crate's working memory is about 25x the file (files
/// [`super::reader`] gives up on go there), so large models come as many files of moderate
/// size.
pub const MAX_INCLUDE_BYTES: u64 = 64 << 20;

/// Validates the files `patterns` name, in order, appending their access domains to `ads`
/// (one segment per file). A file whose text and whose scope (zones, lines, pools) are
/// those of the last load's is not validated again: its access domains are shared with
/// that load's model ([`CACHE`]). Returns how many files there were and how many of them
/// were shared.
pub(super) fn load(
    patterns: &[Spanned<String>],
    ctx: &mut Ctx<'_>,
    scope: &Scope<'_>,
    ads: &mut AdSet,
) -> IncludeStats {
    let mut files = Vec::new();
    for pat in patterns {
        for path in expand(pat, ctx) {
            files.push((ctx.at(pat), path));
        }
    }
    let sig = ScopeSig::of(scope);
    let done = include_files(&files, (ctx.base, ctx.overlay), scope, &sig);
    let mut stats = IncludeStats {
        files: files.len(),
        ..IncludeStats::default()
    };
    let mut next_cache = HashMap::with_capacity(done.len());
    // The lines and pools the files shared name, as the last load found them.
    let mut last_used: HashMap<PathBuf, Arc<[u32]>> = {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let last = cache.as_ref().and_then(|c| c.get(&**ctx.file));
        let shared = |(p, c): (&PathBuf, &Cached)| (p.clone(), c.used.clone());
        last.map(|m| m.iter().map(shared).collect())
            .unwrap_or_default()
    };
    for ((_, path), inc) in files.iter().zip(done) {
        let Included {
            ads: more,
            mut errs,
            text,
            stamp,
            reused,
            unread,
        } = inc;
        stats.reused += reused as usize;
        stats.unread += unread as usize;
        if let (Some(text), true) = (text, errs.is_empty()) {
            let used = match last_used.remove(path) {
                Some(u) if reused => u,
                _ => used(&more),
            };
            let digest = (text, sig.mark(&used));
            let kept = Cached {
                digest,
                stamp,
                ads: more.clone(),
                used,
            };
            next_cache.insert(path.clone(), kept);
        }
        ads.push(more);
        ctx.errs.append(&mut errs);
    }
    // What this load read replaces what the last load of the same main file did: the
    // cache holds one model's included files per main file (a server has one), and
    // those are shared with that model. A load with errors is refused: it never serves,
    // and the files of the model serving stay (the next reload, in that model's scope,
    // shares them).
    if ctx.errs.is_empty() {
        let main: Arc<str> = ctx.file.clone();
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get_or_insert_with(HashMap::new)
            .insert(main, next_cache);
    }
    stats
}

/// How the included files of a load were read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncludeStats {
    /// Included files.
    pub files: usize,
    /// Files unchanged since the last load (same text, same zones, lines and pools), whose
    /// access domains were shared rather than validated again.
    pub reused: usize,
    /// Of those, the files not even read: their `stat` vouched for their text.
    pub unread: usize,
}

/// One included file as the last load validated it (without errors).
struct Cached {
    /// Digest of its text, and the scope it was validated in.
    digest: (u64, ScopeMark),
    /// The file's identity and times when it was read, if they can vouch for its text
    /// at the next load ([`Stamp::of`]).
    stamp: Option<Stamp>,
    ads: Arc<[AccessDomain]>,
    /// The lines and pools its access domains name ([`used`]).
    used: Arc<[u32]>,
}

/// What `stat` says of a file: a file whose stamp is unchanged since a read that came
/// well after its last change has the text that read found, and is not read again (a
/// million access domains are ~100 files and 0.3-0.5 s of reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    /// Changes on every write, rename and `touch`, and cannot be set back by anyone.
    ctime: (i64, i64),
}

/// Now, in Unix nanoseconds (for [`Stamp::of`]).
pub(super) fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// How long after a file's last change (nanoseconds) a read must come for its stamp to
/// vouch for the text: a write within the same timestamp tick as the read leaves the
/// stamp as it was (the "racy clean" case of git's index). Two seconds cover file systems
/// with coarse times.
const RACY_NANOS: i128 = 2_000_000_000;

impl Stamp {
    /// The stamp of `m`, read at `now` (Unix nanoseconds): `None` when the file changed
    /// too shortly before the read for a later change to be sure to show.
    pub(super) fn of(m: &std::fs::Metadata, now: i128) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let s = Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        };
        let nanos = |(sec, ns): (i64, i64)| sec as i128 * 1_000_000_000 + ns as i128;
        (nanos(s.mtime).max(nanos(s.ctime)) + RACY_NANOS < now).then_some(s)
    }

    /// The stamp of `m` as a cache key, whatever its age.
    fn now(m: &std::fs::Metadata) -> Self {
        Self::of(m, i128::MAX).expect("any stamp is older than i128::MAX")
    }
}

/// The included files of the last load of each main file, by main file and path.
type Cache = HashMap<Arc<str>, HashMap<PathBuf, Cached>>;
static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The access domains the last load of `main` validated from `path`, if its text digest
/// is `text` again and what they were validated against still holds in `sig`.
fn cached(main: &str, path: &Path, text: u64, sig: &ScopeSig) -> Option<Arc<[AccessDomain]>> {
    let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let c = cache.as_ref()?.get(main)?.get(path)?;
    (c.digest.0 == text && sig.covers(&c.digest.1, &c.used)).then(|| c.ads.clone())
}

/// The last load's entry for `path` (included from `main`) if the file still has `stamp`
/// and what it was validated against still holds in `sig`: its text digest and access
/// domains, unread.
fn cached_by_stamp(
    main: &str,
    path: &Path,
    stamp: Stamp,
    sig: &ScopeSig,
) -> Option<(u64, Arc<[AccessDomain]>)> {
    let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let c = cache.as_ref()?.get(main)?.get(path)?;
    (c.stamp == Some(stamp) && sig.covers(&c.digest.1, &c.used))
        .then(|| (c.digest.0, c.ads.clone()))
}

/// A fixed-seed hasher: digests are compared across loads.
fn hasher() -> impl std::hash::Hasher {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6774_6d64_696e_636c).build_hasher()
}

/// What included files are validated against, as digests: the zone names (`base`), and
/// each line's index and name and each pool's index, name and type. An access domain
/// names lines and pools by index, so one is still valid while the lines and pools it
/// names keep their indices (and types), whatever happened to the others (added after
/// them, or removed: the last one takes the place of one removed).
struct ScopeSig {
    base: u64,
    lines: Vec<u64>,
    pools: Vec<u64>,
}

/// The scope a cached file was validated in: [`ScopeSig`]'s base, and the digest of the
/// lines and the pools it names ([`Cached::used`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScopeMark {
    base: u64,
    named: u64,
}

/// In [`used`]'s list, the bit that marks a line's index (else a pool's).
const LINE: u32 = 1 << 31;

impl ScopeSig {
    fn of(scope: &Scope<'_>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = hasher();
        for z in scope.zones {
            z.name.hash(&mut h);
        }
        let item = |x: (usize, &str, u8)| {
            let mut h = hasher();
            x.hash(&mut h);
            h.finish()
        };
        let mut lines: Vec<(&str, usize)> = scope
            .names
            .lines
            .iter()
            .map(|(n, &i)| (n.as_str(), i))
            .collect();
        lines.sort_unstable_by_key(|&(_, i)| i);
        Self {
            base: h.finish(),
            lines: lines.into_iter().map(|(n, i)| item((i, n, 0))).collect(),
            pools: (scope.pools.iter().enumerate())
                .map(|(i, p)| item((i, &p.name, p.kind as u8)))
                .collect(),
        }
    }

    /// The scope of a file that names the lines and pools `used`.
    fn mark(&self, used: &[u32]) -> ScopeMark {
        ScopeMark {
            base: self.base,
            named: self.named(used).unwrap_or(0),
        }
    }

    /// The digest of the lines and pools at `used` (`None`: one is past the end).
    fn named(&self, used: &[u32]) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = hasher();
        for &u in used {
            let item = match u & LINE {
                0 => self.pools.get(u as usize)?,
                _ => self.lines.get((u & !LINE) as usize)?,
            };
            item.hash(&mut h);
        }
        Some(h.finish())
    }

    /// Whether what was validated in `m`, naming the lines and pools `used`, is valid in
    /// this scope: the same zones, and what it names where it was.
    fn covers(&self, m: &ScopeMark, used: &[u32]) -> bool {
        m.base == self.base && self.named(used) == Some(m.named)
    }
}

/// The lines (marked [`LINE`]) and pools the access domains of a file name (their pools,
/// their lines and those lines' pools, their fallback pool), in order, each once.
fn used(ads: &[AccessDomain]) -> Arc<[u32]> {
    let mut used: Vec<u32> = Vec::new();
    for ad in ads {
        used.extend(ad.pools.iter().map(|&(p, _)| p));
        for (l, pools) in ad.lines.iter() {
            used.push(LINE | l);
            used.extend(pools.iter().copied());
        }
        if let super::Fallback::Pool(p) = ad.fallback {
            used.push(p as u32);
        }
    }
    used.sort_unstable();
    used.dedup();
    used.into()
}

fn text_digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = hasher();
    text.hash(&mut h);
    h.finish()
}

/// Expands an `include` entry (a path, or a pattern with `*` in the last component only,
/// relative to the config file's folder) into its sorted file list.
fn expand(pat: &Spanned<String>, ctx: &mut Ctx<'_>) -> Vec<PathBuf> {
    let p = ctx.base.join(pat.get_ref());
    let file_name = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
    if !file_name.contains('*') {
        if pat.get_ref().contains('*') {
            let why = "'*' may only appear in the last path component";
            ctx.err(pat, "include", why);
            return Vec::new();
        }
        return vec![p];
    }
    let dir = p.parent().unwrap_or(Path::new("."));
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            ctx.err(
                pat,
                "include",
                format!("cannot list {}: {e}", dir.display()),
            );
            return Vec::new();
        }
    };
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard(file_name, n))
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    if files.is_empty() {
        let why = format!("'{}' matches no file", pat.get_ref());
        ctx.err(pat, "include", why);
    }
    files
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn wildcard(pat: &str, name: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// One included file's access domains and errors, the digest of its text (when it could
/// be read), and whether the last load's access domains were taken.
struct Included {
    ads: Arc<[AccessDomain]>,
    errs: Vec<ConfigError>,
    text: Option<u64>,
    /// The file's stamp, when it may vouch for the text at the next load.
    stamp: Option<Stamp>,
    reused: bool,
    /// Taken by its stamp, without reading it.
    unread: bool,
}

/// Reads and validates the included files on one thread per CPU, each file's parse tree
/// dropped as soon as it is validated (so memory holds a few trees, never all of them);
/// returns each file's access domains and errors, in file order.
fn include_files(
    files: &[(Origin, PathBuf)],
    (base, overlay): (&Path, &crate::config::Overlay),
    scope: &Scope<'_>,
    sig: &ScopeSig,
) -> Vec<Included> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Included>>> = Mutex::new((0..files.len()).map(|_| None).collect());
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                // Below the shards: a reload parses while they serve on the same CPUs.
                crate::sys::lower_thread_priority();
                // The text and its line starts, reused from file to file: megabytes
                // allocated afresh per file would be faulted in (and zeroed) each time.
                let mut text = String::new();
                let mut lines = Lines::new("");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((from, path)) = files.get(i) else {
                        break;
                    };
                    let buf = (&mut text, &mut lines);
                    let at = (from.clone(), path.as_path(), base, overlay);
                    let inc = include_file(at, (scope, sig), buf);
                    done.lock().expect("include results")[i] = Some(inc);
                }
            });
        }
    });
    done.into_inner()
        .expect("include results")
        .into_iter()
        .flatten()
        .collect()
}

/// Reads one included file of access domains (into `text`, its line starts into `lines`)
/// and validates it, unless the last load validated the same text in the same scope.
fn include_file(
    (from, path, base, overlay): (Origin, &Path, &Path, &crate::config::Overlay),
    (scope, sig): (&Scope<'_>, &ScopeSig),
    (text, lines): (&mut String, &mut Lines),
) -> Included {
    use std::io::Read;
    let file: Arc<str> = path.display().to_string().into();
    crate::config::reads::note(path);
    text.clear();
    let now = now_nanos();
    let mut stamp = None;
    let read = std::fs::metadata(path).and_then(|m| {
        // A text about to be written (an API change) is held to the bound the file will
        // be read against at the next reload and start.
        let len = overlay.get(path).map_or(m.len(), |t| t.len() as u64);
        if len > MAX_INCLUDE_BYTES {
            Err(std::io::Error::other(format!(
                "{len} bytes, more than {MAX_INCLUDE_BYTES}: split it into several files"
            )))
        } else if let Some(t) = overlay.get(path) {
            text.push_str(t);
            Ok(None)
        } else if let Some(hit) = cached_by_stamp(&from.file, path, Stamp::now(&m), sig) {
            // Not read: the stamp vouches for the text the last load validated.
            stamp = Some(Stamp::now(&m));
            Ok(Some(hit))
        } else {
            let mut f = std::fs::File::open(path)?;
            // Stamped before the read: a change during it shows in the next stamp.
            stamp = Stamp::of(&f.metadata()?, now);
            f.read_to_string(text)?;
            Ok(None)
        }
    });
    let mut errs = Vec::new();
    let hit = match read {
        Ok(hit) => hit,
        Err(e) => {
            errs.push(ConfigError::new(from, "include", format!("{}: {e}", file)));
            let ads = Arc::from(Vec::new());
            return Included {
                ads,
                errs,
                text: None,
                stamp: None,
                reused: false,
                unread: false,
            };
        }
    };
    if let Some((digest, ads)) = hit {
        return Included {
            ads,
            errs,
            text: Some(digest),
            stamp,
            reused: true,
            unread: true,
        };
    }
    let digest = text_digest(text);
    if let Some(ads) = cached(&from.file, path, digest, sig) {
        return Included {
            ads,
            errs,
            text: Some(digest),
            stamp,
            reused: true,
            unread: false,
        };
    }
    lines.reset(text);
    let mut ctx = Ctx {
        file: &file,
        lines,
        base,
        overlay,
        errs: &mut errs,
    };
    let ads = read_validated(text, &mut ctx, scope, Parser::Reader).into();
    Included {
        ads,
        errs,
        text: Some(digest),
        stamp,
        reused: false,
        unread: false,
    }
}

/// Which parser reads an included file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Parser {
    /// [`super::reader`], or the `toml` crate when the reader gives the file up.
    Reader,
    /// The `toml` crate only (what the reader is tested against).
    #[cfg(test)]
    Toml,
}

/// The access domains of an included file's `text`, validated in `ctx`.
pub(super) fn read_validated(
    text: &str,
    ctx: &mut Ctx<'_>,
    scope: &Scope<'_>,
    parser: Parser,
) -> Vec<AccessDomain> {
    if parser == Parser::Reader {
        let errs = ctx.errs.len();
        // Sized for every table header (one allocation; a comment may hold one more).
        let mut ads = Vec::with_capacity(text.matches("[[access-domain]]").count());
        let mut shapes = super::access_domain::LineShapes::default();
        let read = reader::read(text, |spec| {
            ads.extend(spec.validate(ctx, scope, &mut shapes))
        });
        if read.is_ok() {
            return ads;
        }
        // What was validated before the reader gave up is read again below.
        ctx.errs.truncate(errs);
    }
    let spec: IncludeSpec = match validate::parse(text, ctx.file, ctx.lines) {
        Ok(s) => s,
        Err(e) => {
            ctx.errs.push(e);
            return Vec::new();
        }
    };
    validate_all(&spec.access_domain, ctx, scope)
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn include_patterns() {
        assert!(wildcard("*.toml", "a.toml"));
        assert!(wildcard("*.toml", ".toml"));
        assert!(!wildcard("*.toml", "a.toml.bak"));
        assert!(wildcard("ads-*-v*.toml", "ads-eu-v2.toml"));
        assert!(!wildcard("ads-*-v*.toml", "ads-eu.toml"));
        assert!(wildcard("*", "anything"));
        assert!(!wildcard("a*a", "a"), "prefix and suffix may not overlap");
        assert!(wildcard("a*a", "aa"));
    }
}
