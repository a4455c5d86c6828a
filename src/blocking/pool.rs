//! The fixed worker pool: N threads fed through a bounded queue. The accept thread blocks on a
//! full queue, so past `N` busy workers and `--accept-queue` waiting connections the server
//! stops accepting and the kernel's listen backlog holds the rest — how Tomcat (`maxThreads`,
//! `acceptCount`), gunicorn's sync workers and Apache prefork behave.

use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};

use super::live::Tracked;
use super::{conn, lock, wait_while, Shared};

/// A bounded blocking queue that can be closed.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Queue<T> {
    /// A queue of `capacity` items (at least one).
    pub fn new(capacity: usize) -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds `item`, waiting while the queue is full; gives it back once the queue is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut state = wait_while(&self.not_full, lock(&self.state), None, |s| {
            !s.closed && s.items.len() >= self.capacity
        });
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        drop(state);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Takes the oldest item, waiting while the queue is empty; `None` once it is closed.
    pub fn pop(&self) -> Option<T> {
        let mut state = wait_while(&self.not_empty, lock(&self.state), None, |s| {
            !s.closed && s.items.is_empty()
        });
        if state.closed {
            return None;
        }
        let item = state.items.pop_front();
        drop(state);
        self.not_full.notify_one();
        item
    }

    /// Closes the queue, wakes everyone waiting, and returns what was still in it.
    pub fn close(&self) -> VecDeque<T> {
        let mut state = lock(&self.state);
        state.closed = true;
        let rest = std::mem::take(&mut state.items);
        drop(state);
        self.not_empty.notify_all();
        self.not_full.notify_all();
        rest
    }
}

/// Starts `n` workers that serve connections from `queue` until it is closed.
pub(crate) fn start_workers(
    shared: &Arc<Shared>,
    queue: &Arc<Queue<Tracked>>,
    n: usize,
) -> io::Result<()> {
    for i in 0..n {
        let worker_shared = Arc::clone(shared);
        let queue = Arc::clone(queue);
        shared
            .spawn(&format!("worker-{i}"), move || work(&worker_shared, &queue))
            .map_err(|e| io::Error::new(e.kind(), format!("starting worker {i} of {n}: {e}")))?;
    }
    Ok(())
}

fn work(shared: &Arc<Shared>, queue: &Queue<Tracked>) {
    while let Some(conn) = queue.pop() {
        // A bug in serving one connection must not shrink the pool for everyone after it.
        let served = panic::catch_unwind(AssertUnwindSafe(|| conn::run(shared, conn)));
        if served.is_err() {
            eprintln!("a worker caught a panic while serving a connection; it goes on");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_queue_blocks_the_pusher_until_a_pop() {
        let q = Arc::new(Queue::new(2));
        q.push(1).unwrap();
        q.push(2).unwrap();
        let pusher = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || q.push(3))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!pusher.is_finished());
        assert_eq!(q.pop(), Some(1));
        assert_eq!(pusher.join().unwrap(), Ok(()));
        assert_eq!(q.close(), VecDeque::from([2, 3]));
        assert_eq!(q.pop(), None);
        assert_eq!(q.push(4), Err(4));
    }

    #[test]
    fn closing_wakes_a_waiting_worker() {
        let q: Arc<Queue<u8>> = Arc::new(Queue::new(1));
        let worker = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || q.pop())
        };
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        assert_eq!(worker.join().unwrap(), None);
    }
}
