//! Per-connection deadlines for the event loop. Each connection keeps its one current deadline;
//! the heap holds candidate wake-up times, at least one at or before each deadline. An entry that
//! comes due is checked against the connection's deadline (the loop re-arms or skips it), and the
//! heap is rebuilt when stale entries pile up, so it stays within a small multiple of the number
//! of connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Timers {
    /// Notes that `key`'s deadline became `at` (milliseconds on the loop's clock).
    pub fn schedule(&mut self, key: usize, at: u64) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest candidate wake-up, if any.
    pub fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops the next entry due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, usize)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Whether stale entries outnumber live connections enough to rebuild.
    pub fn needs_compaction(&self, live: usize) -> bool {
        self.heap.len() > 2 * live + 1024
    }

    /// Rebuilds the heap from the live deadlines.
    pub fn rebuild(&mut self, live: impl Iterator<Item = (usize, u64)>) {
        let entries: Vec<_> = live.map(|(key, at)| Reverse((at, key))).collect();
        self.heap = BinaryHeap::from(entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let mut t = Timers::default();
        t.schedule(1, 30);
        t.schedule(2, 10);
        t.schedule(3, 20);
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(25), Some((10, 2)));
        assert_eq!(t.pop_due(25), Some((20, 3)));
        assert_eq!(t.pop_due(25), None);
        t.rebuild([(7, 3)].into_iter());
        assert_eq!(t.heap.len(), 1);
        assert!(!t.needs_compaction(0));
    }
}
