//! One client connection of the event loop: its socket, where it is in the protocol, and the
//! little it owns. An idle connection holds no buffers: `inbuf` and the write queue are empty
//! with no capacity, and decoders exist only while a message is half-read.

use mio::net::TcpStream;

use crate::app::outq::OutQueue;
use crate::app::route::Route;
use crate::proto::{http::BodyDecoder, ws};

use super::subscribers::Kind;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Waiting for (the rest of) a request head. `started`: bytes of it have arrived, so the
    /// header timeout runs rather than the idle timeout.
    Head { started: bool },
    /// Reading a request body for `route`.
    Body(Box<BodyState>),
    /// Subscribed to broadcasts on `/sse`.
    Sse,
    /// Subscribed to broadcasts on `/stream`, chunked unless the client speaks HTTP/1.0.
    Stream { chunked: bool },
    /// A held long poll waiting for events after `after`.
    Poll { keep_alive: bool },
    /// An open WebSocket; the decoder exists while a frame or fragmented message is partial.
    Ws(Option<Box<ws::Decoder>>),
    /// The last bytes are queued: flush them, then close (lingering for the peer's FIN).
    Closing { write_shut: bool },
}

#[derive(Debug)]
pub struct BodyState {
    pub route: Route,
    pub decoder: BodyDecoder,
    /// The body so far, for routes that need all of it (`/publish`).
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

#[derive(Debug)]
pub struct Conn {
    pub sock: TcpStream,
    pub phase: Phase,
    /// Input that arrived but could not be used yet (a partial head, pipelined requests).
    pub inbuf: Vec<u8>,
    pub out: crate::app::outq::OutQueue,
    /// When the current timer fires, in loop milliseconds; 0 means none.
    pub deadline: u64,
    /// The newest event sequence this connection has been given (or, for a poll, is after).
    pub delivered: u64,
    /// Index in the subscriber list of `subscription()`'s kind.
    pub sub_index: u32,
    /// Write interest is registered (only while something is queued).
    pub want_write: bool,
    /// Reading is paused until the write queue drains (echo backpressure, pipelined input).
    pub read_paused: bool,
}

impl Conn {
    pub fn new(sock: TcpStream) -> Conn {
        Conn {
            sock,
            phase: Phase::Head { started: false },
            inbuf: Vec::new(),
            out: OutQueue::default(),
            deadline: 0,
            delivered: 0,
            sub_index: u32::MAX,
            want_write: false,
            read_paused: false,
        }
    }

    /// Which broadcast list the connection is on, if any.
    pub fn subscription(&self) -> Option<Kind> {
        match self.phase {
            Phase::Sse => Some(Kind::Sse),
            Phase::Stream { .. } => Some(Kind::Stream),
            Phase::Ws(_) => Some(Kind::Ws),
            Phase::Poll { .. } => Some(Kind::Poll),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_small() {
        // The slab stores this struct inline: it is most of what an idle connection costs.
        assert!(
            std::mem::size_of::<Conn>() <= 128,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
