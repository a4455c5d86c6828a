//! Per-connection deadlines for an event loop: the server's and the load generator's. Each
//! connection keeps its one current deadline (0 for none) and the heap holds at least one entry
//! at or before it. Only a deadline that moves earlier needs a new entry; pushing one back — an
//! idle timeout renewed by every read — costs nothing: when the earlier entry comes due, the
//! connection's current deadline is read and re-armed. The heap is rebuilt when stale entries
//! pile up, so it stays within a small multiple of the number of connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Deadlines {
    /// `key`'s deadline changes from `old` to `new` (0: none), at `now`. A later deadline
    /// reuses the entry of the earlier one — unless that one has passed, when its entry may
    /// already be gone (`next_expired` handed it out): then the new deadline gets its own (a
    /// duplicate of an entry not yet popped is only a stale entry).
    pub fn set(&mut self, key: usize, old: u64, new: u64, now: u64) {
        if new != 0 && (old == 0 || new < old || old <= now) {
            self.heap.push(Reverse((new, key)));
        }
    }

    /// The earliest candidate wake-up, if any.
    pub fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The next connection whose deadline has passed by `now`. `deadline_of` reads a
    /// connection's current deadline (`None` once it is gone). The caller clears or moves the
    /// deadline of the connection it is handed.
    pub fn next_expired(
        &mut self,
        now: u64,
        mut deadline_of: impl FnMut(usize) -> Option<u64>,
    ) -> Option<usize> {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            match deadline_of(key) {
                None | Some(0) => {}
                Some(d) if d <= now => return Some(key),
                // Pushed back since this entry was made: come back then.
                Some(d) => self.heap.push(Reverse((d, key))),
            }
        }
        None
    }

    /// Rebuilds the heap from the live deadlines once stale entries outnumber them well.
    pub fn compact(&mut self, live: usize, deadlines: impl Iterator<Item = (usize, u64)>) {
        if self.heap.len() > 2 * live + 1024 {
            self.heap = deadlines
                .filter(|&(_, at)| at != 0)
                .map(|(key, at)| Reverse((at, key)))
                .collect();
        }
    }

    /// Forgets every deadline.
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fire_in_order_and_follow_their_connection() {
        let mut current = [0u64; 4];
        let mut d = Deadlines::default();
        let set = |d: &mut Deadlines, current: &mut [u64; 4], key: usize, at: u64| {
            d.set(key, current[key], at, 0);
            current[key] = at;
        };
        set(&mut d, &mut current, 1, 30);
        set(&mut d, &mut current, 2, 10);
        set(&mut d, &mut current, 3, 20);
        // Pushed back: no new entry, the one at 20 re-arms at 50.
        set(&mut d, &mut current, 3, 50);
        // Brought forward: a new entry.
        set(&mut d, &mut current, 1, 5);
        assert_eq!(d.next(), Some(5));
        let expired = |d: &mut Deadlines, current: &[u64; 4], now| {
            let mut keys = Vec::new();
            while let Some(k) = d.next_expired(now, |k| current.get(k).copied()) {
                keys.push(k);
            }
            keys
        };
        assert_eq!(expired(&mut d, &current, 4), Vec::<usize>::new());
        let fired = expired(&mut d, &current, 25);
        assert_eq!(fired, vec![1, 2]);
        for k in fired {
            current[k] = 0;
        }
        assert_eq!(expired(&mut d, &current, 49), Vec::<usize>::new());
        assert_eq!(expired(&mut d, &current, 50), vec![3]);
        // Handed out, then moved later (a timeout that starts the linger): it fires again.
        d.set(3, current[3], 70, 50);
        current[3] = 70;
        assert_eq!(expired(&mut d, &current, 69), Vec::<usize>::new());
        assert_eq!(expired(&mut d, &current, 70), vec![3]);
        current[3] = 0;
        // Only stale entries are left (key 1's first one, at 30, was popped above): none fire.
        assert_eq!(expired(&mut d, &current, 1000), Vec::<usize>::new());
        d.compact(0, std::iter::empty());
        assert_eq!(d.next(), None);
    }
}
