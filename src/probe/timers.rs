//! The prober's timer queue: when each check must next be looked at (its next start, or
//! the deadline of the check in flight), so a wake-up costs the checks that are due and
//! not a scan of every check (10,000 checks a second were 38% of a core scanning).
//!
//! A binary heap of `(when, task)`, with lazy deletion: a task is queued again whenever
//! its wake-up moves, and an entry that no longer matches its task is skipped by the
//! caller when it comes up (the prober checks `due` and the deadline anyway). A hashed
//! wheel would save the `log n`, but needs a tick: checks here are timed to the
//! microsecond by their template (timeouts of a few milliseconds), and 14 levels of heap
//! for 10,000 checks cost far less than the checks themselves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Wake-ups of tasks, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    /// Task `task` wants to be looked at `at` (earlier entries of it become stale).
    pub(super) fn schedule(&mut self, at: Instant, task: usize) {
        self.heap.push(Reverse((at, task)));
    }

    /// The next task whose time has come by `now`, removed from the queue.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<usize> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }

    /// The earliest wake-up queued.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Forgets every wake-up (the task list is rebuilt).
    pub(super) fn clear(&mut self) {
        self.heap.clear();
    }

    /// Entries queued, stale ones included.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Random schedules and re-schedules against a plain list scanned for the minimum,
    /// as the prober did: the same tasks come up at the same times, in time order.
    #[test]
    fn pops_in_time_order_like_a_scan() {
        let base = Instant::now();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut timers = Timers::default();
        // The reference: each task's current wake-up.
        let mut wake: Vec<Instant> = (0..50)
            .map(|_| base + Duration::from_micros(rnd(10_000)))
            .collect();
        for (i, &w) in wake.iter().enumerate() {
            timers.schedule(w, i);
        }
        let mut now = base;
        for _ in 0..2000 {
            now += Duration::from_micros(rnd(400));
            let mut got = Vec::new();
            while let Some(t) = timers.pop_due(now) {
                if wake[t] <= now && !got.contains(&t) {
                    got.push(t);
                }
            }
            let mut want: Vec<usize> = (0..wake.len()).filter(|&i| wake[i] <= now).collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "due at {:?}", now - base);
            // Each due task moves on; some others move too (stale entries stay queued).
            for &t in &want {
                wake[t] = now + Duration::from_micros(1 + rnd(5000));
                timers.schedule(wake[t], t);
            }
            let t = rnd(50) as usize;
            wake[t] = now + Duration::from_micros(1 + rnd(5000));
            timers.schedule(wake[t], t);
            let earliest = wake.iter().min().copied();
            assert!(
                timers.next() <= earliest,
                "never later than the earliest wake-up"
            );
            assert!(
                timers.len() <= 3 * wake.len(),
                "stale entries are popped as they come"
            );
        }
    }
}
