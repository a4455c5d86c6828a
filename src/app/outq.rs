//! A connection's bounded write queue. Broadcast events sit in it as references to the hub's
//! shared encodings; replies and frames made for this connection alone are owned bytes. The
//! queue hands out `IoSlice`s for one `writev` and knows how much it holds, so a subscriber that
//! stops reading is noticed at the bound instead of growing memory.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use super::hub::{Encoding, Event};

/// At most this many buffers go into one `writev` call.
const MAX_IOV: usize = 64;
/// Small owned pieces are appended to the previous owned buffer up to this size, so a burst of
/// tiny replies does not become a long list of tiny buffers.
const COALESCE_LIMIT: usize = 4096;

/// A piece of output: bytes made for one connection, a broadcast event's shared encoding, or
/// constant bytes.
#[derive(Debug, Clone)]
pub enum Piece {
    Owned(Vec<u8>),
    Shared(Arc<Event>, Encoding),
    Static(&'static [u8]),
}

impl Piece {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Piece::Owned(v) => v,
            Piece::Shared(e, enc) => e.bytes(*enc),
            Piece::Static(s) => s,
        }
    }
}

/// The bytes still to be written to one connection. Empty, it owns nothing but a null pointer:
/// the list of pieces is allocated when something is queued and given back once it is written.
#[derive(Debug, Default)]
pub struct OutQueue {
    queued: Option<Box<Queued>>,
}

#[derive(Debug, Default)]
struct Queued {
    pieces: VecDeque<Piece>,
    /// Bytes of the front piece already written.
    head_written: usize,
    len: usize,
}

impl OutQueue {
    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.queued.as_ref().map_or(0, |q| q.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a piece. Small owned pieces join the previous owned one, so a burst of tiny replies
    /// does not become a long list of tiny buffers.
    pub fn push(&mut self, piece: Piece) {
        let size = piece.bytes().len();
        if size == 0 {
            return;
        }
        let q = self.queued.get_or_insert_with(Box::default);
        q.len += size;
        if let (Piece::Owned(bytes), Some(Piece::Owned(last))) = (&piece, q.pieces.back_mut()) {
            if last.len() + bytes.len() <= COALESCE_LIMIT {
                last.extend_from_slice(bytes);
                return;
            }
        }
        q.pieces.push_back(piece);
    }

    /// Queues bytes made for this connection.
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        self.push(Piece::Owned(bytes));
    }

    /// Queues constant bytes (heartbeats, last chunks) without allocating them.
    pub fn push_static(&mut self, bytes: &'static [u8]) {
        self.push(Piece::Static(bytes));
    }

    /// Queues a shared event encoding: a reference, not a copy.
    pub fn push_event(&mut self, event: &Arc<Event>, encoding: Encoding) {
        self.push(Piece::Shared(Arc::clone(event), encoding));
    }

    /// Writes as much as `w` takes without blocking (or, on a blocking socket, until all is
    /// written). Returns `Ok(true)` once the queue is empty, `Ok(false)` on `WouldBlock`.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        let Some(q) = self.queued.as_mut() else {
            return Ok(true);
        };
        while q.len > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (i, piece) in q.pieces.iter().take(MAX_IOV).enumerate() {
                let bytes = piece.bytes();
                slices[i] = IoSlice::new(if i == 0 {
                    &bytes[q.head_written..]
                } else {
                    bytes
                });
                count += 1;
            }
            // One piece, the usual case of a broadcast, is a plain write(): writev() costs the
            // kernel an iovec import on every call.
            let written = if count == 1 {
                w.write(&slices[0])
            } else {
                w.write_vectored(&slices[..count])
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => q.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // An idle connection should own nothing.
        self.queued = None;
        Ok(true)
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.queued = None;
    }
}

impl Queued {
    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.pieces.front() else {
                break;
            };
            let left = front.bytes().len() - self.head_written;
            if n >= left {
                n -= left;
                self.head_written = 0;
                self.pieces.pop_front();
            } else {
                self.head_written += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::hub::Hub;

    /// A writer that takes at most `step` bytes per call, then reports `WouldBlock` once.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        blocked: bool,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.blocked {
                self.blocked = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.blocked = true;
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_length() {
        let mut hub = Hub::new(4, usize::MAX);
        let e = hub.publish_message("payload", 1);
        let mut q = OutQueue::default();
        q.push_owned(b"head ".to_vec());
        q.push_event(&e, Encoding::Json);
        q.push_static(b" tail");
        q.push_owned(b"!".to_vec());
        let mut expected = b"head ".to_vec();
        expected.extend_from_slice(e.bytes(Encoding::Json));
        expected.extend_from_slice(b" tail!");
        assert_eq!(q.len(), expected.len());

        let mut w = Trickle {
            out: Vec::new(),
            step: 3,
            blocked: false,
        };
        let mut rounds = 0;
        while !q.write_to(&mut w).unwrap() {
            rounds += 1;
            assert!(rounds < 1000);
        }
        assert_eq!(w.out, expected);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn an_empty_queue_owns_nothing() {
        assert_eq!(
            std::mem::size_of::<OutQueue>(),
            std::mem::size_of::<usize>()
        );
        let mut q = OutQueue::default();
        q.push_owned(Vec::new());
        assert!(q.queued.is_none());
        q.push_owned(vec![0; 100]);
        q.push_static(b"x");
        assert_eq!(q.len(), 101);
        q.clear();
        assert!(q.is_empty() && q.queued.is_none());
    }
}
