//! Broadcasting to threads. The hub is not thread-safe, so it lives under one mutex together
//! with the registry of subscribers. Publishing is: lock, number and encode the event once
//! (`Hub::publish_*`), put a reference to the shared encoding into every subscriber's mailbox,
//! wake its thread. A subscriber that joins (with a replay of retained events) does so under the
//! same lock, so between replay and live it neither misses nor repeats an event.
//!
//! A mailbox is a small queue behind its own mutex and condition variable; the thread that owns
//! the connection sleeps on it. It is bounded like the evented server's write queue: a
//! subscriber whose queued bytes pass `--max-write-queue` is cut off (its socket is shut down,
//! which also frees a writer stuck on a client that stopped reading).

use std::collections::VecDeque;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use slab::Slab;

pub(crate) use crate::app::hub::Kind;
use crate::app::hub::{self, Event, Hub, Transport};
use crate::sys;

use super::live::Socket;
use super::{lock, wait_while};

/// No slot in the registry.
const UNREGISTERED: usize = usize::MAX;

/// Something for a subscriber's thread to write.
#[derive(Debug)]
pub(crate) enum Item {
    /// A broadcast event, shared by every subscriber: a reference, not a copy.
    Event(Arc<Event>),
    /// The kind's heartbeat (SSE comment or WebSocket ping).
    Heartbeat,
    /// Bytes made for this connection: a response head, a WebSocket echo, pong or close.
    Bytes(Vec<u8>),
}

/// Why a subscription ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The server is shutting down: write what is queued, then the route's last words.
    Shutdown,
    /// The connection is finishing (a WebSocket close handshake or idle timeout): write what is
    /// queued, which ends with the close frame, then close the writing side.
    Finish,
    /// Cut off (too slow, or the client is gone): write nothing more.
    Cut,
}

#[derive(Debug, Default)]
struct Mailbox {
    items: VecDeque<Item>,
    /// Bytes the items stand for, checked against the bound.
    bytes: usize,
    end: Option<End>,
}

/// One subscribed connection, as the publishing side sees it.
#[derive(Debug)]
pub(crate) struct Subscriber {
    kind: Kind,
    /// How events are framed for this subscriber (an HTTP/1.0 stream takes unchunked lines).
    transport: Transport,
    sock: Arc<Socket>,
    mailbox: Mutex<Mailbox>,
    /// Items or an end arrived (the consumer waits on this).
    ready: Condvar,
    /// The consumer took items (a WebSocket reader waits on this before queueing more echoes).
    room: Condvar,
    /// Slot in the broadcaster's registry, `UNREGISTERED` when not in it.
    key: AtomicUsize,
}

/// What a consumer took from its mailbox.
#[derive(Debug)]
pub(crate) struct Taken {
    pub items: VecDeque<Item>,
    pub end: Option<End>,
}

impl Subscriber {
    /// A subscriber whose first bytes are `first` (its response head).
    pub fn new(kind: Kind, sock: Arc<Socket>, first: Vec<u8>) -> Arc<Subscriber> {
        Subscriber::framed(kind, kind.transport(), sock, first)
    }

    /// `new`, with events framed as `transport` instead of the kind's usual framing.
    pub fn framed(
        kind: Kind,
        transport: Transport,
        sock: Arc<Socket>,
        first: Vec<u8>,
    ) -> Arc<Subscriber> {
        let mut mailbox = Mailbox::default();
        if !first.is_empty() {
            mailbox.bytes = first.len();
            mailbox.items.push_back(Item::Bytes(first));
        }
        Arc::new(Subscriber {
            kind,
            transport,
            sock,
            mailbox: Mutex::new(mailbox),
            ready: Condvar::new(),
            room: Condvar::new(),
            key: AtomicUsize::new(UNREGISTERED),
        })
    }

    pub fn socket(&self) -> &Arc<Socket> {
        &self.sock
    }

    fn size(&self, item: &Item) -> usize {
        match item {
            Item::Event(e) => e.bytes(self.transport).len(),
            Item::Heartbeat => self.kind.heartbeat().map_or(0, <[u8]>::len),
            Item::Bytes(b) => b.len(),
        }
    }

    /// The publishing side queues an item. Returns `false` when the mailbox went past `bound`:
    /// the subscriber is now cut off, and the caller drops it from the registry.
    fn offer(&self, item: Item, bound: Option<usize>) -> bool {
        let size = self.size(&item);
        let mut mb = lock(&self.mailbox);
        if mb.end.is_some() {
            return true;
        }
        mb.bytes += size;
        mb.items.push_back(item);
        if bound.is_some_and(|bound| mb.bytes > bound) {
            mb.end = Some(End::Cut);
            mb.items = VecDeque::new();
            mb.bytes = 0;
            drop(mb);
            self.ready.notify_all();
            self.room.notify_all();
            return false;
        }
        drop(mb);
        self.ready.notify_one();
        true
    }

    /// Waits until there is something to write or the subscription ends (or `until` passes),
    /// then takes everything queued. After `Cut`, nothing is handed out.
    pub fn take(&self, until: Option<Instant>) -> Taken {
        let mut mb = wait_while(&self.ready, lock(&self.mailbox), until, |mb| {
            mb.items.is_empty() && mb.end.is_none()
        });
        let items = std::mem::take(&mut mb.items);
        mb.bytes = 0;
        let end = mb.end;
        drop(mb);
        if !items.is_empty() {
            self.room.notify_all();
        }
        Taken { items, end }
    }

    /// A WebSocket reader queues bytes of its own (echo, pong). Blocks while more than
    /// `high_water` bytes wait, so a client that sends faster than it reads is slowed down
    /// instead of buffered for. Returns `false` once the subscription has ended.
    pub fn push_own(&self, bytes: Vec<u8>, high_water: usize) -> bool {
        let mut mb = wait_while(&self.room, lock(&self.mailbox), None, |mb| {
            mb.end.is_none() && mb.bytes > high_water
        });
        if mb.end.is_some() {
            return false;
        }
        mb.bytes += bytes.len();
        mb.items.push_back(Item::Bytes(bytes));
        drop(mb);
        self.ready.notify_one();
        true
    }

    /// Queues the last bytes (a close frame) and ends with `Finish`, unless already ended.
    pub fn finish(&self, last: Vec<u8>) {
        let mut mb = lock(&self.mailbox);
        if mb.end.is_some() {
            return;
        }
        mb.bytes += last.len();
        mb.items.push_back(Item::Bytes(last));
        mb.end = Some(End::Finish);
        drop(mb);
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// Ends with `end` unless already ended; `Cut` drops what is queued.
    pub fn end(&self, end: End) {
        let mut mb = lock(&self.mailbox);
        if mb.end.is_some() {
            return;
        }
        mb.end = Some(end);
        if end == End::Cut {
            mb.items = VecDeque::new();
            mb.bytes = 0;
        }
        drop(mb);
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// How the subscription ended, if it has.
    pub fn ended(&self) -> Option<End> {
        lock(&self.mailbox).end
    }
}

/// The hub and its subscribers.
#[derive(Debug)]
pub(crate) struct Broadcaster {
    inner: Mutex<Inner>,
    /// Subscribers by `Kind`, for `/stats` without taking the lock.
    counts: [AtomicU64; 4],
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

/// A registered subscriber; dropping it unsubscribes.
pub(crate) struct Subscription<'a> {
    bcast: &'a Broadcaster,
    sub: Arc<Subscriber>,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.bcast.unsubscribe(&self.sub);
    }
}

/// How a long poll starts.
pub(crate) enum PollStart<'a> {
    /// Events newer than `after` are retained: the answer's body.
    Ready(Vec<u8>),
    /// None yet: the request is held until the subscription's mailbox gets one.
    Held(Subscription<'a>),
}

impl Broadcaster {
    pub fn new(retain: usize, max_queue: usize) -> Broadcaster {
        Broadcaster {
            inner: Mutex::new(Inner {
                hub: Hub::new(retain),
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

    /// Registers `sub`; for SSE with `Last-Event-ID`, the retained events after it are queued
    /// first. When the server is shutting down, `sub` ends at once with `End::Shutdown`.
    pub fn subscribe(&self, sub: &Arc<Subscriber>, replay_after: Option<u64>) -> Subscription<'_> {
        let mut inner = lock(&self.inner);
        if let Some(after) = replay_after {
            for event in inner.hub.since(after) {
                // Replay is not held to the bound, as in the evented server: the consumer
                // takes it at once.
                sub.offer(Item::Event(Arc::clone(event)), None);
            }
        }
        self.register(&mut inner, sub);
        Subscription {
            bcast: self,
            sub: Arc::clone(sub),
        }
    }

    /// Answers a long poll at once when events after `after` are retained; otherwise holds it
    /// (see `Hub::start_poll`).
    pub fn start_poll(&self, sub: &Arc<Subscriber>, after: Option<u64>) -> PollStart<'_> {
        let mut inner = lock(&self.inner);
        if let hub::PollStart::Answer(body) = inner.hub.start_poll(after) {
            return PollStart::Ready(body);
        }
        self.register(&mut inner, sub);
        PollStart::Held(Subscription {
            bcast: self,
            sub: Arc::clone(sub),
        })
    }

    fn register(&self, inner: &mut Inner, sub: &Arc<Subscriber>) {
        if inner.closed {
            sub.end(End::Shutdown);
            return;
        }
        let key = inner.subs.insert(Arc::clone(sub));
        sub.key.store(key, Ordering::Relaxed);
        self.counts[sub.kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes `sub` off the registry (no-op when it is not on it).
    pub fn unsubscribe(&self, sub: &Subscriber) {
        let mut inner = lock(&self.inner);
        self.remove(&mut inner, sub);
    }

    fn remove(&self, inner: &mut Inner, sub: &Subscriber) {
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

    /// Server shutdown: every subscriber ends with `End::Shutdown`, and nobody joins after.
    pub fn shutdown(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        for (_, sub) in std::mem::take(&mut inner.subs) {
            sub.key.store(UNREGISTERED, Ordering::Relaxed);
            self.counts[sub.kind as usize].fetch_sub(1, Ordering::Relaxed);
            sub.end(End::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::live::Live;
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
        let b = Broadcaster::new(16, 1 << 20);
        for _ in 0..5 {
            b.publish_tick();
        }
        let (sock, _client) = socket();
        let sub = Subscriber::new(Kind::Sse, sock, b"head".to_vec());
        let subscription = b.subscribe(&sub, Some(2));
        assert_eq!(b.count(Kind::Sse), 1);
        let (seq, subscribers) = b.publish_message("hi");
        assert_eq!((seq, subscribers), (6, 1));
        let taken = sub.take(Some(Instant::now()));
        assert!(matches!(&taken.items[0], Item::Bytes(h) if h == b"head"));
        assert_eq!(seqs(&taken), vec![3, 4, 5, 6]);
        drop(subscription);
        assert_eq!(b.count(Kind::Sse), 0);
        b.publish_tick();
        assert!(sub.take(Some(Instant::now())).items.is_empty());
    }

    #[test]
    fn a_subscriber_past_the_bound_is_cut_off() {
        let b = Broadcaster::new(16, 200);
        let (sock, _client) = socket();
        let sub = Subscriber::new(Kind::Stream, sock, Vec::new());
        let _subscription = b.subscribe(&sub, None);
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
    fn polls_are_answered_at_once_or_held() {
        let b = Broadcaster::new(16, 1 << 20);
        let (sock, _client) = socket();
        b.publish_tick();
        let sub = Subscriber::new(Kind::Poll, Arc::clone(&sock), Vec::new());
        assert!(
            matches!(b.start_poll(&sub, Some(0)), PollStart::Ready(body) if body.starts_with(b"[{"))
        );
        let PollStart::Held(held) = b.start_poll(&sub, None) else {
            panic!("nothing newer than the last event: held");
        };
        assert_eq!(b.count(Kind::Poll), 1);
        let until = Instant::now() + Duration::from_millis(20);
        assert!(sub.take(Some(until)).items.is_empty());
        b.publish_tick();
        assert_eq!(seqs(&sub.take(None)), vec![2]);
        drop(held);
        assert_eq!(b.count(Kind::Poll), 0);
    }

    #[test]
    fn heartbeats_and_shutdown() {
        let b = Broadcaster::new(16, 1 << 20);
        let (sock, _client) = socket();
        let sse = Subscriber::new(Kind::Sse, Arc::clone(&sock), Vec::new());
        let stream = Subscriber::new(Kind::Stream, sock, Vec::new());
        let _a = b.subscribe(&sse, None);
        let _b = b.subscribe(&stream, None);
        b.heartbeat(Duration::ZERO);
        assert!(matches!(sse.take(None).items[0], Item::Heartbeat));
        assert!(stream.take(Some(Instant::now())).items.is_empty());
        b.shutdown();
        assert_eq!(stream.take(None).end, Some(End::Shutdown));
        assert_eq!(b.count(Kind::Sse) + b.count(Kind::Stream), 0);
        let late = Subscriber::new(Kind::Ws, Arc::clone(sse.socket()), Vec::new());
        let _c = b.subscribe(&late, None);
        assert_eq!(late.ended(), Some(End::Shutdown));
    }

    #[test]
    fn a_reader_is_held_back_until_the_writer_takes() {
        let (sock, _client) = socket();
        let sub = Subscriber::new(Kind::Ws, sock, Vec::new());
        assert!(sub.push_own(vec![0; 100], 50));
        let pusher = {
            let sub = Arc::clone(&sub);
            std::thread::spawn(move || sub.push_own(vec![1; 10], 50))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(sub.take(None).items.len(), 1);
        assert!(pusher.join().unwrap());
        sub.finish(vec![2]);
        assert!(!sub.push_own(vec![3], 50));
        let taken = sub.take(None);
        assert_eq!(taken.items.len(), 2);
        assert_eq!(taken.end, Some(End::Finish));
    }
}
