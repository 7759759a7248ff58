//! Puts a reload's tables back on transparent huge pages. A reload compiles and publishes
//! on small pages where the kernel can collapse them afterwards (`compile::compile_with`,
//! [`crate::sys::can_collapse`]): fresh huge pages are slow to fault in on a host that
//! takes free memory back, but the shards answer a million cache-missing names 15-20%
//! cheaper from huge pages (PERF.md). Once the old snapshot is freed, [`request`] asks one
//! long-lived thread to collapse the process's resident memory
//! ([`crate::sys::collapse_resident`]).
//!
//! The thread runs at normal priority: while the kernel copies a block it holds the
//! process's memory map for writing, and a shard touching that block waits for it, so the
//! copy must not be preempted by the shards it holds up; instead it pauses after each
//! block it copies. A pass that finds huge pages off (a reload reading or compiling, also
//! one that is then refused) waits until they are back and starts again; one that finds
//! no huge page free tries again after 1, 10 and 60 s; a newer request replaces an older
//! one. Each finished pass is logged.

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::sys::{self, CollapseStop, Collapsed};

/// After each block the kernel copies: what keeps a pass from holding up the shards.
const PAUSE: Duration = Duration::from_millis(1);
/// How long a pass waits for huge pages to come back on before it gives up.
const THP_OFF_WAIT: Duration = Duration::from_secs(120);
/// Pauses before a pass that found no huge page free tries again.
const RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
];

/// The generation to collapse for, if one is asked for and not yet taken.
struct Queue {
    pending: Mutex<Option<u64>>,
    wake: Condvar,
}

fn queue() -> &'static Queue {
    static Q: OnceLock<Queue> = OnceLock::new();
    Q.get_or_init(|| Queue {
        pending: Mutex::new(None),
        wake: Condvar::new(),
    })
}

/// Asks for a pass for the configuration of `generation` (its tables built on small
/// pages, the one before freed). Starts the thread at the first call; does nothing where
/// [`sys::can_collapse`] says no (the reload then compiled on huge pages).
pub(super) fn request(generation: u64) {
    if !sys::can_collapse() {
        return;
    }
    static STARTED: OnceLock<bool> = OnceLock::new();
    let started = *STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("hugepages".into())
            .spawn(worker)
            .inspect_err(|e| {
                warn!(
                    "cannot start the huge pages thread ({e}): reloaded tables stay on small pages"
                )
            })
            .is_ok()
    });
    if started {
        let q = queue();
        *q.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(generation);
        q.wake.notify_one();
    }
}

/// Takes the next request, waiting for one.
fn next() -> u64 {
    let q = queue();
    let mut p = q.pending.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(g) = p.take() {
            return g;
        }
        p = q.wake.wait(p).unwrap_or_else(|e| e.into_inner());
    }
}

/// Whether a newer request waits.
fn superseded() -> bool {
    queue()
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some()
}

/// Whether huge pages are on for the process, waiting (bounded) until they are.
fn thp_on(wait: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if !sys::huge_pages_off() {
            return true;
        }
        if t0.elapsed() > wait {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn worker() {
    loop {
        let generation = next();
        let t0 = Instant::now();
        let mut total = Collapsed::default();
        // `None`: a newer request came; its pass is the one logged.
        let Some(outcome) = pass(&mut total) else {
            continue;
        };
        info!(
            generation,
            ms = t0.elapsed().as_millis() as u64,
            resident_blocks = total.blocks,
            huge_pages = total.huge,
            outcome,
            "reload: tables back on huge pages"
        );
    }
}

/// Collapses until done, waiting while huge pages are off and retrying when none is
/// free; adds what it did to `total` and says how it ended (`None`: superseded).
fn pass(total: &mut Collapsed) -> Option<&'static str> {
    let mut retries = RETRIES.iter();
    loop {
        if !thp_on(THP_OFF_WAIT) {
            return Some("huge pages stayed off");
        }
        if superseded() {
            return None;
        }
        let d = sys::collapse_resident(PAUSE);
        total.blocks += d.blocks;
        total.huge += d.huge;
        match d.stopped {
            None => return Some("done"),
            Some(CollapseStop::ThpOff) => {}
            Some(CollapseStop::NoMemory) => match retries.next() {
                Some(&pause) => std::thread::sleep(pause),
                None => return Some("no huge page free"),
            },
        }
    }
}
