//! A WebSocket's writer thread. The connection's own thread reads frames and asks the session
//! what to answer; this one writes, in order, what the mailbox gets: the session's bytes (the
//! 101, echoes, pongs, the close frame) and the hub's events and pings. Two threads per open
//! WebSocket is what this model costs.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpStream};

use crate::app::hub::Kind;
use crate::app::outq::OutQueue;

use super::mailbox::{End, Item, Subscriber};

/// Writes what the mailbox gets until the subscription ends.
pub(crate) fn write_frames(sub: &Subscriber) {
    let stream = &sub.sock.stream;
    loop {
        let taken = sub.take(None);
        if write_items(stream, taken.items).is_err() {
            // The reader is blocked in read(): wake it, it ends the connection.
            sub.end(End::Cut);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        match taken.end {
            None => {}
            Some(End::Cut) => return,
            // (A WebSocket's mailbox never gets `Shutdown`: its reader says goodbye.)
            Some(End::Finish | End::Shutdown) => {
                // Our FIN after the close frame; the reader waits for the client's.
                let _ = stream.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

/// Writes mailbox items with one `writev` per batch: events as references to the hub's shared
/// encodings, no copies.
fn write_items(stream: &TcpStream, items: VecDeque<Item>) -> io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let mut q = OutQueue::default();
    for item in items {
        match item {
            Item::Event(e) => q.push_event(&e, Kind::Ws.encoding()),
            Item::Heartbeat => {
                if let Some(ping) = Kind::Ws.heartbeat() {
                    q.push_static(ping);
                }
            }
            Item::Piece(piece) => q.push(piece),
        }
    }
    let mut w = stream;
    match q.write_to(&mut w) {
        Ok(true) => Ok(()),
        // `WouldBlock` on a blocking socket is the write timeout.
        Ok(false) => Err(io::ErrorKind::TimedOut.into()),
        Err(e) => Err(e),
    }
}
