//! How many threads this process may start before the kernel's per-process limit on memory
//! mappings (`vm.max_map_count`, 65530 by default) is reached.
//!
//! Every thread costs four mappings: its stack and guard page (glibc), and the alternate signal
//! stack and its guard page that Rust's standard library maps in each new thread to report stack
//! overflows. At the limit, `pthread_create` may still get its stack mapped while the new
//! thread's own signal-stack `mmap`/`mprotect` fails. The standard library then panics inside
//! the thread's start routine, which cannot unwind: the whole process aborts. So the server
//! refuses a thread (`503`) while a margin of mappings is still free, rather than letting the
//! kernel refuse it. The other thread limits (`kernel.pid_max`, `kernel.threads-max`,
//! `RLIMIT_NPROC`) make `clone()` fail cleanly and need no such guard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Mappings one thread adds: stack + guard page, signal stack + guard page.
pub(crate) const MAPS_PER_THREAD: usize = 4;
/// Mappings kept free for everything else that maps memory: malloc arenas growing, cached
/// stacks of exited threads, the standard library.
pub(crate) const MARGIN: usize = 1024;

#[derive(Debug)]
pub(crate) struct Budget {
    /// Threads that may be started through the budget; `usize::MAX` when the limit is unknown.
    max: usize,
    live: AtomicUsize,
}

/// A started thread's place in the budget, given back on drop (when the thread's work ends).
#[derive(Debug)]
pub(crate) struct Token {
    budget: Arc<Budget>,
}

impl Budget {
    /// The budget left by `max_map_count` with `maps_in_use` mappings already there.
    pub fn new(max_map_count: Option<usize>, maps_in_use: usize) -> Budget {
        let max = max_map_count.map_or(usize::MAX, |limit| {
            limit.saturating_sub(maps_in_use + MARGIN) / MAPS_PER_THREAD
        });
        Budget {
            max,
            live: AtomicUsize::new(0),
        }
    }

    /// This process's budget, from `/proc`.
    pub fn from_proc() -> Budget {
        let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let in_use = std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count());
        Budget::new(limit, in_use)
    }

    /// Threads that may be started, `None` when unlimited.
    pub fn max(&self) -> Option<usize> {
        (self.max != usize::MAX).then_some(self.max)
    }

    /// A place for one more thread, if there is one.
    pub fn acquire(self: &Arc<Self>) -> Option<Token> {
        let mut live = self.live.load(Ordering::Relaxed);
        loop {
            if live >= self.max {
                return None;
            }
            match self.live.compare_exchange_weak(
                live,
                live + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Token {
                        budget: Arc::clone(self),
                    })
                }
                Err(now) => live = now,
            }
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.budget.live.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_and_given_back() {
        let b = Arc::new(Budget::new(Some(1024 + 100 + 2 * MAPS_PER_THREAD), 100));
        assert_eq!(b.max(), Some(2));
        let first = b.acquire().unwrap();
        let _second = b.acquire().unwrap();
        assert!(b.acquire().is_none());
        drop(first);
        assert!(b.acquire().is_some());
        assert_eq!(Budget::new(None, 100).max(), None);
        assert_eq!(Budget::new(Some(10), 100).max(), Some(0));
    }

    #[test]
    fn this_process_has_a_budget() {
        // Linux always has vm.max_map_count; the default (65530) leaves thousands of threads.
        assert!(Budget::from_proc().max().is_some_and(|n| n > 1000));
    }
}
