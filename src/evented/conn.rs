//! One client connection of the event loop: its socket, its session and the bytes waiting to be
//! written. An idle connection holds no buffers: the session keeps none while idle and the empty
//! write queue is a null pointer.

use mio::net::TcpStream;

use crate::app::outq::OutQueue;
use crate::app::session::Session;

#[derive(Debug)]
pub struct Conn {
    pub sock: TcpStream,
    pub session: Session,
    pub out: OutQueue,
    /// Index in the subscriber list of the session's kind.
    pub sub_index: u32,
    /// Write interest is registered (only while something is queued).
    pub want_write: bool,
}

impl Conn {
    pub fn new(sock: TcpStream, session: Session) -> Conn {
        Conn {
            sock,
            session,
            out: OutQueue::default(),
            sub_index: u32::MAX,
            want_write: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_small() {
        // The slab stores this inline: it is most of what an idle connection costs.
        let size = std::mem::size_of::<slab::Slab<Conn>>();
        let entry = std::mem::size_of::<Conn>();
        assert!(entry <= 72, "{entry} bytes per connection (slab: {size})");
    }
}
