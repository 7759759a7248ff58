//! Which files a load of the configuration read: `gtmd publish` records them to bundle
//! the files an epoch needs (`control::fleet`). Off (one relaxed load per file read)
//! unless a recording is under way; included files are read on several threads, so the
//! record is process-wide, and one recording runs at a time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ON: AtomicBool = AtomicBool::new(false);
static READ: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Notes that the configuration reads `path` (as it names it, joined to its folder).
pub(crate) fn note(path: &Path) {
    if ON.load(Ordering::Relaxed) {
        READ.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.to_path_buf());
    }
}

/// Runs `f` and returns what it returned with every file a configuration load in it
/// read, in the order first read, each once.
pub fn recording<T>(f: impl FnOnce() -> T) -> (T, Vec<PathBuf>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    READ.lock().unwrap_or_else(|e| e.into_inner()).clear();
    ON.store(true, Ordering::Relaxed);
    let out = f();
    ON.store(false, Ordering::Relaxed);
    let mut read = std::mem::take(&mut *READ.lock().unwrap_or_else(|e| e.into_inner()));
    let mut seen = std::collections::HashSet::new();
    read.retain(|p| seen.insert(p.clone()));
    (out, read)
}
