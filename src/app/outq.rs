//! A connection's bounded write queue. Broadcast events sit in it as references to the hub's
//! shared encodings; replies and frames made for this connection alone are owned bytes. The
//! queue hands out `IoSlice`s for one `writev` and knows how much it holds, so a subscriber that
//! stops reading is noticed at the bound instead of growing memory.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use super::hub::{Event, Transport};

/// At most this many buffers go into one `writev` call.
const MAX_IOV: usize = 64;
/// Small owned pieces are appended to the previous owned buffer up to this size, so a burst of
/// tiny replies does not become a long list of tiny buffers.
const COALESCE_LIMIT: usize = 4096;

#[derive(Debug)]
enum Piece {
    Owned(Vec<u8>),
    Shared(Arc<Event>, Transport),
    Static(&'static [u8]),
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Owned(v) => v,
            Piece::Shared(e, t) => e.bytes(*t),
            Piece::Static(s) => s,
        }
    }
}

/// The bytes still to be written to one connection.
#[derive(Debug, Default)]
pub struct OutQueue {
    pieces: VecDeque<Piece>,
    /// Bytes of the front piece already written.
    head_written: usize,
    len: usize,
}

/// The queue went past its bound: the connection is too slow and must be cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl OutQueue {
    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues bytes made for this connection.
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if let Some(Piece::Owned(last)) = self.pieces.back_mut() {
            if last.len() + bytes.len() <= COALESCE_LIMIT {
                last.extend_from_slice(&bytes);
                return;
            }
        }
        self.pieces.push_back(Piece::Owned(bytes));
    }

    /// Queues constant bytes (heartbeats, last chunks) without allocating.
    pub fn push_static(&mut self, bytes: &'static [u8]) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        self.pieces.push_back(Piece::Static(bytes));
    }

    /// Queues a shared event encoding: a reference, not a copy.
    pub fn push_event(&mut self, event: &Arc<Event>, transport: Transport) {
        self.len += event.bytes(transport).len();
        self.pieces
            .push_back(Piece::Shared(Arc::clone(event), transport));
    }

    /// `Err(Overflow)` when more than `bound` bytes are queued.
    pub fn check_bound(&self, bound: usize) -> Result<(), Overflow> {
        if self.len > bound {
            Err(Overflow)
        } else {
            Ok(())
        }
    }

    /// Writes as much as `w` takes without blocking (or, on a blocking socket, until all is
    /// written). Returns `Ok(true)` once the queue is empty, `Ok(false)` on `WouldBlock`.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (i, piece) in self.pieces.iter().take(MAX_IOV).enumerate() {
                let bytes = piece.bytes();
                slices[i] = IoSlice::new(if i == 0 {
                    &bytes[self.head_written..]
                } else {
                    bytes
                });
                count += 1;
            }
            match w.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Give the buffer list's memory back: an idle connection should own nothing.
        self.pieces = VecDeque::new();
        Ok(true)
    }

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

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.pieces = VecDeque::new();
        self.head_written = 0;
        self.len = 0;
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
        let mut hub = Hub::new(4);
        let e = hub.publish_message("payload", 1);
        let mut q = OutQueue::default();
        q.push_owned(b"head ".to_vec());
        q.push_event(&e, Transport::Json);
        q.push_static(b" tail");
        q.push_owned(b"!".to_vec());
        let mut expected = b"head ".to_vec();
        expected.extend_from_slice(e.bytes(Transport::Json));
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
    fn bound_is_reported() {
        let mut q = OutQueue::default();
        q.push_owned(vec![0; 100]);
        assert_eq!(q.check_bound(100), Ok(()));
        q.push_static(b"x");
        assert_eq!(q.check_bound(100), Err(Overflow));
        q.clear();
        assert!(q.is_empty());
    }
}
