//! Panics on the configuration path are contained: a bug in the loader or the compiler
//! rejects that configuration (a reload keeps the old snapshot serving, `check` exits 1)
//! instead of taking down a process that serves queries. Anywhere else a panic still ends
//! the process at once, as `panic = "abort"` did: a shard that died silently would be worse.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::config::{ConfigError, ConfigErrors, Origin};

thread_local! {
    /// Set while this thread runs a contained step.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Installs the process's panic hook: the default report, then abort unless the panic
/// happened inside [`contained`]. Called once, first thing in `main`.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CONTAINED.with(Cell::get) {
            tracing::error!(panic = %info, "internal error contained");
            return;
        }
        default(info);
        std::process::abort();
    }));
}

/// Runs one configuration step (load, compile) of `source`; a panic inside it becomes a
/// configuration error that says it is a bug.
pub(super) fn contained<T>(
    source: &str,
    step: impl FnOnce() -> Result<T, ConfigErrors>,
) -> Result<T, ConfigErrors> {
    let was = CONTAINED.with(|c| c.replace(true));
    let r = catch_unwind(AssertUnwindSafe(step));
    CONTAINED.with(|c| c.set(was));
    r.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(ConfigErrors(vec![ConfigError::new(
            Origin::new(&source.into(), 1),
            "internal",
            format!("gtmd failed on this configuration ({what}): a bug, please report it"),
        )]))
    })
}
