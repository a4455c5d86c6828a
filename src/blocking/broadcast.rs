//! Broadcasting to threads. The hub is not thread-safe, so it lives under one mutex together
//! with the registry of subscribers. Publishing is: lock, number and encode the event once
//! (`Hub::publish_*`), put a reference to the shared encoding into every subscriber's mailbox,
//! wake its thread. A subscriber joins (its response head first, then a replay of retained
//! events) under the same lock, so between replay and live it neither misses nor repeats an
//! event. A subscriber whose mailbox passes `--max-write-queue` is cut off: its socket is shut
//! down, which also frees a writer stuck on a client that stopped reading.

use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::app::hub::{Event, Hub, Kind, KIND_COUNT};
use crate::sys;

use super::lock;
use super::mailbox::{End, Item, Subscriber, UNREGISTERED};

/// The hub and its subscribers.
#[derive(Debug)]
pub(crate) struct Broadcaster {
    inner: Mutex<Inner>,
    /// Subscribers by `Kind`, for `/stats` without taking the lock.
    counts: [AtomicU64; KIND_COUNT],
    /// The newest sequence number.
    published: AtomicU64,
    max_queue: usize,
}

#[derive(Debug)]
struct Inner {
    hub: Hub,
    subs: Slab<Arc<Subscriber>>,
    /// Shutting down: nobody subscribes any more.
    closed: bool,
    /// When the last event (or heartbeat) went out.
    last_broadcast: Instant,
}

impl Broadcaster {
    pub fn new(hub: Hub, max_queue: usize) -> Broadcaster {
        Broadcaster {
            inner: Mutex::new(Inner {
                hub,
                subs: Slab::new(),
                closed: false,
                last_broadcast: Instant::now(),
            }),
            counts: Default::default(),
            published: AtomicU64::new(0),
            max_queue,
        }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Registers `sub` for the events after `after` (see `Hub::resume_point`). Under the lock,
    /// `start` is called first with where the subscriber starts (it writes the response head)
    /// and the retained events after that which it answers itself: a poll's, at once, as a short
    /// poll must be. A stream's go into its mailbox instead, in order with what follows. When
    /// the server is shutting down, `sub` is not registered and ends at once with
    /// `End::Shutdown`.
    pub fn subscribe(
        &self,
        sub: &Arc<Subscriber>,
        after: Option<u64>,
        start: impl FnOnce(u64, &mut dyn Iterator<Item = &Arc<Event>>),
    ) {
        let mut inner = lock(&self.inner);
        let from = inner.hub.resume_point(after);
        let replay = inner.hub.since(from);
        if sub.kind == Kind::Poll {
            // Moved into the call, so that its borrow of the hub ends with it.
            start(from, &mut { replay });
        } else {
            start(from, &mut std::iter::empty());
            for event in replay {
                // Replay is not held to the bound, as in the evented server: the consumer takes
                // it at once.
                sub.offer(Item::Event(Arc::clone(event)), None);
            }
        }
        if inner.closed {
            // As in `shutdown`: a WebSocket's reader sees the stop flag itself.
            if sub.kind != Kind::Ws {
                sub.end(End::Shutdown);
            }
            return;
        }
        let key = inner.subs.insert(Arc::clone(sub));
        sub.key.store(key, Ordering::Relaxed);
        self.counts[sub.kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes `sub` off the registry (no-op when it is not on it).
    pub fn unsubscribe(&self, sub: &Subscriber) {
        let mut inner = lock(&self.inner);
        let key = sub.key.swap(UNREGISTERED, Ordering::Relaxed);
        if key != UNREGISTERED && inner.subs.try_remove(key).is_some() {
            self.counts[sub.kind as usize].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Publishes a `message`; returns its sequence number and how many were subscribed.
    pub fn publish_message(&self, text: &str) -> (u64, u64) {
        self.publish(|hub| hub.publish_message(text, sys::now_ns()))
    }

    /// Publishes a `tick`.
    pub fn publish_tick(&self) {
        self.publish(|hub| hub.publish_tick(sys::now_ns()));
    }

    fn publish(&self, make: impl FnOnce(&mut Hub) -> Arc<Event>) -> (u64, u64) {
        let mut inner = lock(&self.inner);
        let subscribers = inner.subs.len() as u64;
        let event = make(&mut inner.hub);
        self.published.store(event.seq, Ordering::Relaxed);
        inner.last_broadcast = Instant::now();
        self.deliver(&mut inner, |_| Some(Item::Event(Arc::clone(&event))));
        (event.seq, subscribers)
    }

    /// Sends heartbeats when `every` has passed without a broadcast; returns when the next one
    /// is due.
    pub fn heartbeat(&self, every: Duration) -> Instant {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        if now >= inner.last_broadcast + every {
            inner.last_broadcast = now;
            self.deliver(&mut inner, |kind| kind.heartbeat().map(|_| Item::Heartbeat));
        }
        inner.last_broadcast + every
    }

    /// Offers an item to every subscriber; those past the bound are cut off.
    fn deliver(&self, inner: &mut Inner, item: impl Fn(Kind) -> Option<Item>) {
        let mut cut = Vec::new();
        for (key, sub) in inner.subs.iter() {
            if let Some(item) = item(sub.kind) {
                if !sub.offer(item, Some(self.max_queue)) {
                    cut.push(key);
                }
            }
        }
        for key in cut {
            if let Some(sub) = inner.subs.try_remove(key) {
                sub.key.store(UNREGISTERED, Ordering::Relaxed);
                self.counts[sub.kind as usize].fetch_sub(1, Ordering::Relaxed);
                // Frees its thread even when blocked writing to a client that stopped reading.
                let _ = sub.sock.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Server shutdown: nobody joins any more, and every subscriber leaves the registry. Each
    /// one's thread is told through its mailbox (`End::Shutdown`), except a WebSocket's: its
    /// reader owns the session and is woken through its socket (`Live::shutdown_readers`),
    /// while its writer goes on writing what that session says.
    pub fn shutdown(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        for (_, sub) in std::mem::take(&mut inner.subs) {
            sub.key.store(UNREGISTERED, Ordering::Relaxed);
            self.counts[sub.kind as usize].fetch_sub(1, Ordering::Relaxed);
            if sub.kind != Kind::Ws {
                sub.end(End::Shutdown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::outq::Piece;
    use crate::blocking::live::{Live, Socket};
    use crate::blocking::mailbox::Taken;
    use std::net::{TcpListener, TcpStream};

    fn socket() -> (Arc<Socket>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let live = Arc::new(Live::default());
        let tracked = live.track(server);
        (Arc::clone(&tracked.sock), client)
    }

    fn seqs(taken: &Taken) -> Vec<u64> {
        taken
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn replay_then_live_without_gap_or_repeat() {
        let b = Broadcaster::new(Hub::new(16, usize::MAX), 1 << 20);
        for _ in 0..5 {
            b.publish_tick();
        }
        let (sock, _client) = socket();
        let sub = Subscriber::new(Kind::Sse, sock);
        let mut started = None;
        b.subscribe(&sub, Some(2), |from, _| started = Some(from));
        assert_eq!(started, Some(2));
        assert_eq!(b.count(Kind::Sse), 1);
        let (seq, subscribers) = b.publish_message("hi");
        assert_eq!((seq, subscribers), (6, 1));
        let taken = sub.take(Some(Instant::now()));
        assert_eq!(seqs(&taken), vec![3, 4, 5, 6]);
        b.unsubscribe(&sub);
        assert_eq!(b.count(Kind::Sse), 0);
        b.publish_tick();
        assert!(sub.take(Some(Instant::now())).items.is_empty());
    }

    #[test]
    fn a_subscriber_past_the_bound_is_cut_off() {
        let b = Broadcaster::new(Hub::new(16, usize::MAX), 200);
        let (sock, _client) = socket();
        let sub = Subscriber::new(Kind::Stream, sock);
        b.subscribe(&sub, None, |_, _| {});
        let mut published = 0;
        while sub.ended().is_none() {
            b.publish_message("a message of some length, to fill the bound");
            published += 1;
            assert!(published < 100);
        }
        assert_eq!(sub.ended(), Some(End::Cut));
        assert_eq!(b.count(Kind::Stream), 0);
        let taken = sub.take(None);
        assert!(taken.items.is_empty());
        assert_eq!(taken.end, Some(End::Cut));
    }

    #[test]
    fn heartbeats_and_shutdown() {
        let b = Broadcaster::new(Hub::new(16, usize::MAX), 1 << 20);
        let (sock, _client) = socket();
        let sse = Subscriber::new(Kind::Sse, Arc::clone(&sock));
        let stream = Subscriber::new(Kind::Stream, Arc::clone(&sock));
        let ws = Subscriber::new(Kind::Ws, Arc::clone(&sock));
        for sub in [&sse, &stream, &ws] {
            b.subscribe(sub, None, |_, _| {});
        }
        b.heartbeat(Duration::ZERO);
        assert!(matches!(sse.take(None).items[0], Item::Heartbeat));
        assert!(stream.take(Some(Instant::now())).items.is_empty());
        b.shutdown();
        assert_eq!(stream.take(None).end, Some(End::Shutdown));
        // A WebSocket's writer goes on: its reader says goodbye through the session.
        assert_eq!(ws.ended(), None);
        assert_eq!(
            b.count(Kind::Sse) + b.count(Kind::Stream) + b.count(Kind::Ws),
            0
        );
        let late = Subscriber::new(Kind::Poll, sock);
        b.subscribe(&late, None, |_, _| {});
        assert_eq!(late.ended(), Some(End::Shutdown));
    }

    #[test]
    fn a_reader_is_held_back_until_the_writer_takes() {
        let (sock, _client) = socket();
        let sub = Subscriber::new(Kind::Ws, sock);
        assert!(sub.push_own(Piece::Owned(vec![0; 100]), 50));
        let pusher = {
            let sub = Arc::clone(&sub);
            std::thread::spawn(move || sub.push_own(Piece::Owned(vec![1; 10]), 50))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(sub.take(None).items.len(), 1);
        assert!(pusher.join().unwrap());
        sub.end(End::Finish);
        assert!(!sub.push_own(Piece::Static(b"x"), 50));
        let taken = sub.take(None);
        assert_eq!(taken.items.len(), 1);
        assert_eq!(taken.end, Some(End::Finish));
    }
}
