//! A subscriber's mailbox: what the publishing side (or a WebSocket's reader) hands to the
//! thread that writes to the connection. A small queue behind its own mutex and condition
//! variables; the writing thread sleeps on it. It is bounded like the evented server's write
//! queue: past `--max-write-queue` bytes the subscriber is cut off.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::app::hub::{Event, Kind};
use crate::app::outq::Piece;

use super::live::Socket;
use super::{lock, wait_while};

/// No slot in the broadcaster's registry.
pub(crate) const UNREGISTERED: usize = usize::MAX;

/// Something for a subscriber's thread to write.
#[derive(Debug)]
pub(crate) enum Item {
    /// A broadcast event, shared by every subscriber: a reference, not a copy.
    Event(Arc<Event>),
    /// The kind's heartbeat (SSE comment or WebSocket ping).
    Heartbeat,
    /// Bytes the connection's session handed out (a WebSocket's answers, its close frame).
    Piece(Piece),
}

/// Why a subscription ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The server is shutting down: the thread asks its session for the goodbye.
    Shutdown,
    /// The connection is finishing: write what is queued (it ends with the close frame), then
    /// shut the writing side.
    Finish,
    /// Cut off (too slow, or the client is gone): write nothing more.
    Cut,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Bytes the items stand for, checked against the bound.
    bytes: usize,
    end: Option<End>,
}

/// One subscribed connection, as the publishing side sees it.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub kind: Kind,
    pub sock: Arc<Socket>,
    queue: Mutex<Queue>,
    /// Items or an end arrived (the consumer waits on this).
    ready: Condvar,
    /// The consumer took items (a WebSocket reader waits on this before queueing more).
    room: Condvar,
    /// Slot in the broadcaster's registry, `UNREGISTERED` when not in it.
    pub key: AtomicUsize,
}

/// What a consumer took from its mailbox.
#[derive(Debug)]
pub(crate) struct Taken {
    pub items: VecDeque<Item>,
    pub end: Option<End>,
}

impl Subscriber {
    pub fn new(kind: Kind, sock: Arc<Socket>) -> Arc<Subscriber> {
        Arc::new(Subscriber {
            kind,
            sock,
            queue: Mutex::default(),
            ready: Condvar::new(),
            room: Condvar::new(),
            key: AtomicUsize::new(UNREGISTERED),
        })
    }

    fn size(&self, item: &Item) -> usize {
        match item {
            // An HTTP/1.0 stream's lines are a few bytes shorter than chunks: near enough.
            Item::Event(e) => e.bytes(self.kind.encoding()).len(),
            Item::Heartbeat => self.kind.heartbeat().map_or(0, <[u8]>::len),
            Item::Piece(p) => p.bytes().len(),
        }
    }

    /// The publishing side queues an item. Returns `false` when the mailbox went past `bound`:
    /// the subscriber is now cut off, and the caller drops it from the registry.
    pub fn offer(&self, item: Item, bound: Option<usize>) -> bool {
        let size = self.size(&item);
        let mut q = lock(&self.queue);
        if q.end.is_some() {
            return true;
        }
        q.bytes += size;
        q.items.push_back(item);
        if bound.is_some_and(|bound| q.bytes > bound) {
            q.end = Some(End::Cut);
            q.items = VecDeque::new();
            q.bytes = 0;
            drop(q);
            self.ready.notify_all();
            self.room.notify_all();
            return false;
        }
        drop(q);
        self.ready.notify_one();
        true
    }

    /// Waits until there is something to write or the subscription ends (or `until` passes),
    /// then takes everything queued. After `Cut`, nothing is handed out.
    pub fn take(&self, until: Option<Instant>) -> Taken {
        let mut q = wait_while(&self.ready, lock(&self.queue), until, |q| {
            q.items.is_empty() && q.end.is_none()
        });
        let items = std::mem::take(&mut q.items);
        q.bytes = 0;
        let end = q.end;
        drop(q);
        if !items.is_empty() {
            self.room.notify_all();
        }
        Taken { items, end }
    }

    /// A WebSocket reader queues bytes of its session's. Blocks while more than `high_water`
    /// bytes wait, so a client that sends faster than it reads is slowed down instead of
    /// buffered for. Returns `false` once the subscription has ended.
    pub fn push_own(&self, piece: Piece, high_water: usize) -> bool {
        let mut q = wait_while(&self.room, lock(&self.queue), None, |q| {
            q.end.is_none() && q.bytes > high_water
        });
        if q.end.is_some() {
            return false;
        }
        q.bytes += piece.bytes().len();
        q.items.push_back(Item::Piece(piece));
        drop(q);
        self.ready.notify_one();
        true
    }

    /// Ends with `end` unless already ended; `Cut` drops what is queued.
    pub fn end(&self, end: End) {
        let mut q = lock(&self.queue);
        if q.end.is_some() {
            return;
        }
        q.end = Some(end);
        if end == End::Cut {
            q.items = VecDeque::new();
            q.bytes = 0;
        }
        drop(q);
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// How the subscription ended, if it has.
    pub fn ended(&self) -> Option<End> {
        lock(&self.queue).end
    }
}
