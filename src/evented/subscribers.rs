//! Who listens to broadcasts, by transport, and the resumable sweeps that deliver to them in
//! bounded batches. A sweep walks its list from the end: removing the entry under the cursor
//! (a subscriber that failed) swaps in one that was already visited, so nobody is skipped.
//! A connection may be visited twice when the list changes under a sweep; delivery is keyed by
//! the last sequence number it received, so a second visit sends nothing.

use crate::app::hub::{Kind, KINDS, KIND_COUNT};

/// What a visit should deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Events the connection has not received yet.
    Events,
    /// A keep-alive: an SSE comment or a WebSocket ping.
    Heartbeat,
}

#[derive(Debug, Default, Clone, Copy)]
struct Sweep {
    /// Entries `[0, cursor)` remain to be visited.
    cursor: usize,
    /// Something was published after this sweep began: walk the list once more.
    again: bool,
}

#[derive(Debug, Default)]
pub struct Subscribers {
    /// Slab keys by kind; `u32` keeps the lists at 4 bytes per subscriber.
    lists: [Vec<u32>; KIND_COUNT],
    events: [Sweep; KIND_COUNT],
    heartbeat: [Sweep; KIND_COUNT],
}

impl Subscribers {
    /// Adds `key`; returns its index in the list, which the connection keeps for removal.
    pub fn add(&mut self, kind: Kind, key: usize) -> u32 {
        let list = &mut self.lists[kind as usize];
        list.push(key as u32);
        (list.len() - 1) as u32
    }

    /// Removes the entry at `index`; returns the key that moved into `index`, whose stored
    /// index the caller must update.
    pub fn remove(&mut self, kind: Kind, index: u32) -> Option<usize> {
        let list = &mut self.lists[kind as usize];
        let index = index as usize;
        if index >= list.len() {
            return None;
        }
        list.swap_remove(index);
        list.get(index).map(|&k| k as usize)
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.lists[kind as usize].len()
    }

    pub fn total(&self) -> usize {
        self.lists.iter().map(Vec::len).sum()
    }

    /// A new event: every subscriber of every kind must be visited.
    pub fn start_events(&mut self) {
        for (sweep, list) in self.events.iter_mut().zip(&self.lists) {
            if sweep.cursor == 0 {
                sweep.cursor = list.len();
            } else {
                sweep.again = true;
            }
        }
    }

    /// A heartbeat is due for the kinds that have one.
    pub fn start_heartbeat(&mut self) {
        for kind in KINDS.into_iter().filter(|k| k.heartbeat().is_some()) {
            self.heartbeat[kind as usize].cursor = self.lists[kind as usize].len();
        }
    }

    /// Whether any sweep has work left.
    pub fn sweeping(&self) -> bool {
        self.events
            .iter()
            .chain(&self.heartbeat)
            .any(|s| s.cursor > 0 || s.again)
    }

    /// The next connection to visit, if a sweep has one.
    pub fn next_visit(&mut self) -> Option<(Kind, usize, Visit)> {
        for kind in KINDS {
            let list = &self.lists[kind as usize];
            for (sweeps, visit) in [
                (&mut self.events, Visit::Events),
                (&mut self.heartbeat, Visit::Heartbeat),
            ] {
                let sweep = &mut sweeps[kind as usize];
                sweep.cursor = sweep.cursor.min(list.len());
                if sweep.cursor == 0 && sweep.again {
                    sweep.again = false;
                    sweep.cursor = list.len();
                }
                if sweep.cursor > 0 {
                    sweep.cursor -= 1;
                    return Some((kind, list[sweep.cursor] as usize, visit));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_visits_everyone_even_when_the_visited_leave() {
        let mut s = Subscribers::default();
        for key in 0..10 {
            s.add(Kind::Sse, key);
        }
        s.start_events();
        let mut seen = Vec::new();
        while let Some((kind, key, visit)) = s.next_visit() {
            assert_eq!((kind, visit), (Kind::Sse, Visit::Events));
            seen.push(key);
            if key % 3 == 0 {
                // The visited entry sits at the cursor; remove it as a failed subscriber would.
                let index = s.lists[0].iter().position(|&k| k as usize == key).unwrap() as u32;
                s.remove(kind, index);
            }
        }
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(s.count(Kind::Sse), 6);
    }

    #[test]
    fn publishing_mid_sweep_walks_the_list_again() {
        let mut s = Subscribers::default();
        s.add(Kind::Ws, 1);
        s.add(Kind::Ws, 2);
        s.start_events();
        assert!(s.next_visit().is_some());
        s.start_events();
        let rest: Vec<_> = std::iter::from_fn(|| s.next_visit()).map(|v| v.1).collect();
        assert_eq!(rest, vec![1, 2, 1]);
        assert!(!s.sweeping());
    }

    #[test]
    fn heartbeat_skips_streams_and_polls() {
        let mut s = Subscribers::default();
        s.add(Kind::Stream, 1);
        s.add(Kind::Poll, 2);
        s.add(Kind::Sse, 3);
        s.start_heartbeat();
        let visits: Vec<_> = std::iter::from_fn(|| s.next_visit()).collect();
        assert_eq!(visits, vec![(Kind::Sse, 3, Visit::Heartbeat)]);
    }
}
