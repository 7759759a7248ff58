//! An epoch's blob: every file of a configuration that travels with it, in one byte
//! string with a SHA-256 digest.
//!
//! Format (binary-safe, no escaping): a first line `gtmd-bundle 1 MAIN\n` naming the main
//! file, then for each file a line `LENGTH PATH\n` followed by LENGTH bytes and `\n`.
//! Paths are relative to the main file's folder, `/`-separated, with no `..`, `.` or empty
//! component, so unpacking cannot write outside its folder.
//!
//! What travels: the files a load of the configuration read in the main file's folder or
//! below (the main file, included access-domain files, zone files and their `$INCLUDE`s,
//! line prefix files, cookie secrets, ...). Files named by an absolute path (MaxMind
//! databases, TLS keys, token files) are edge-local: each edge reads its own.

use std::path::{Component, Path, PathBuf};

/// The first line's tag.
const MAGIC: &str = "gtmd-bundle 1 ";
/// The largest bundle an edge takes (the engine stores it chunked; an edge holds it in
/// memory while it unpacks it).
pub const MAX_BUNDLE: u64 = 1 << 30;

/// A configuration's files, ready to travel.
#[derive(Debug, Default)]
pub struct Bundle {
    /// The main file's path in the bundle.
    pub main: String,
    /// Every file, by its path in the bundle.
    pub files: Vec<(String, Vec<u8>)>,
}

/// `p` relative to `base`, as a bundle path, when it lies in `base` or below.
pub fn inside(base: &Path, p: &Path) -> Option<String> {
    let rel = p.strip_prefix(base).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    let s = parts.join("/");
    (!s.is_empty() && valid_path(&s)).then_some(s)
}

/// A bundle path: relative, `/`-separated, no empty, `.` or `..` part, no newline.
fn valid_path(s: &str) -> bool {
    !s.contains('\n')
        && !s.starts_with('/')
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Bundle {
    /// The bundle as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let len: usize = self.files.iter().map(|(p, d)| p.len() + d.len() + 24).sum();
        let mut out = Vec::with_capacity(len + self.main.len() + 16);
        out.extend_from_slice(MAGIC.as_bytes());
        out.extend_from_slice(self.main.as_bytes());
        out.push(b'\n');
        for (p, d) in &self.files {
            out.extend_from_slice(format!("{} {p}\n", d.len()).as_bytes());
            out.extend_from_slice(d);
            out.push(b'\n');
        }
        out
    }

    /// Reads bytes [`Bundle::encode`] wrote; any other input is an error, not a panic.
    pub fn decode(mut b: &[u8]) -> Result<Self, String> {
        let line = |b: &mut &[u8]| -> Result<String, String> {
            let n = b
                .iter()
                .position(|&c| c == b'\n')
                .ok_or("truncated: a line without its end")?;
            let l = std::str::from_utf8(&b[..n]).map_err(|_| "a header line is not UTF-8")?;
            let l = l.to_string();
            *b = &b[n + 1..];
            Ok(l)
        };
        let first = line(&mut b)?;
        let main = first
            .strip_prefix(MAGIC)
            .ok_or("not a gtmd bundle (version 1)")?
            .to_string();
        if !valid_path(&main) {
            return Err(format!("bad main path {main:?}"));
        }
        let mut files = Vec::new();
        while !b.is_empty() {
            let head = line(&mut b)?;
            let (len, path) = head.split_once(' ').ok_or("a file line without a path")?;
            let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
            if !valid_path(path) {
                return Err(format!("bad path {path:?}"));
            }
            if len >= b.len() || b[len] != b'\n' {
                return Err(format!("truncated in {path}"));
            }
            files.push((path.to_string(), b[..len].to_vec()));
            b = &b[len + 1..];
        }
        if !files.iter().any(|(p, _)| *p == main) {
            return Err(format!("the main file {main} is not in it"));
        }
        Ok(Self { main, files })
    }

    /// Writes every file under `dir` (created); returns the main file's path there.
    /// Files are written for their owner only (0600, folders 0700): a bundle may carry a
    /// token file, which gtmd refuses when others may read it.
    pub fn unpack(&self, dir: &Path) -> std::io::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mkdir = |d: &Path| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
        };
        mkdir(dir)?;
        let mut dirs = std::collections::BTreeSet::from([dir.to_path_buf()]);
        for (p, d) in &self.files {
            let to = dir.join(p);
            if let Some(parent) = to.parent() {
                mkdir(parent)?;
                let mut d = parent;
                while d.starts_with(dir) && dirs.insert(d.to_path_buf()) {
                    d = d.parent().unwrap_or(dir);
                }
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&to)?;
            f.write_all(d)?;
            f.sync_all()?;
        }
        // The folders' entries too (deepest first), so the files are found after a crash.
        for d in dirs.iter().rev() {
            std::fs::File::open(d)?.sync_all()?;
        }
        Ok(dir.join(&self.main))
    }
}

/// `sha256:HEX` of `b`.
pub fn digest(b: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let hex: String = d.as_ref().iter().map(|x| format!("{x:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let b = Bundle {
            main: "gtmd.toml".into(),
            files: vec![
                ("gtmd.toml".into(), b"version = 1\n".to_vec()),
                ("zones/a.zone".into(), b"\n\nbinary\0\n".to_vec()),
            ],
        };
        let e = b.encode();
        let d = Bundle::decode(&e).unwrap();
        assert_eq!(d.main, b.main);
        assert_eq!(d.files, b.files);
        assert!(Bundle::decode(&e[..e.len() - 2]).is_err());
        assert!(Bundle::decode(b"gtmd-bundle 1 ../x\n").is_err());
        assert!(Bundle::decode(b"gtmd-bundle 1 a\n3 ../b\nabc\n").is_err());
        assert!(Bundle::decode(b"gtmd-bundle 1 a\n99999999999999999999 a\n").is_err());
        assert!(Bundle::decode(b"nonsense").is_err());
        assert_eq!(
            inside(Path::new("/etc/gtmd"), Path::new("/etc/gtmd/./z/a")),
            Some("z/a".into())
        );
        assert_eq!(inside(Path::new("/etc/gtmd"), Path::new("/var/x")), None);
        assert_eq!(inside(Path::new(""), Path::new("../x")), None);
        assert_eq!(inside(Path::new(""), Path::new("/x")), None);
        assert_eq!(inside(Path::new(""), Path::new("a/b")), Some("a/b".into()));
        assert!(digest(b"").starts_with("sha256:e3b0c442"));
    }
}
