//! The registry of open connections. Every accepted socket is in it until its last user lets
//! go, so shutdown can reach sockets whose threads are blocked in `read()`: `shutdown(SHUT_RD)`
//! turns the blocked read into end-of-file, which a thread notices like any client leaving.
//! Its size is the number of open connections `/stats` reports.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use slab::Slab;

use super::{lock, wait_while};

/// An accepted socket, shared by its connection thread, a WebSocket writer and the registry.
#[derive(Debug)]
pub(crate) struct Socket {
    pub stream: TcpStream,
    /// The thread is (about to be) reading a request: shutdown may cut its reading side. Off
    /// while subscribed, since a subscriber's thread says goodbye itself (close 1001, the last
    /// chunk, `[]`).
    reading: AtomicBool,
}

impl Socket {
    /// Marks whether the thread reads requests now. Paired with `Stop`: a thread sets this,
    /// then checks the stop flag; shutdown sets the flag, then looks at this. Sequential
    /// consistency makes sure at least one of them sees the other.
    pub fn set_reading(&self, on: bool) {
        self.reading.store(on, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Live {
    socks: Mutex<Slab<Arc<Socket>>>,
    emptied: Condvar,
}

/// An accepted connection; dropping it takes it out of the registry, and the socket closes
/// once no thread uses it any more.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub sock: Arc<Socket>,
    live: Arc<Live>,
    key: usize,
}

impl Live {
    pub fn track(self: &Arc<Self>, stream: TcpStream) -> Tracked {
        let sock = Arc::new(Socket {
            stream,
            reading: AtomicBool::new(true),
        });
        let key = lock(&self.socks).insert(Arc::clone(&sock));
        Tracked {
            sock,
            live: Arc::clone(self),
            key,
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        lock(&self.socks).len()
    }

    /// Ends the reading side of every connection that is reading a request.
    pub fn shutdown_readers(&self) {
        for (_, sock) in lock(&self.socks).iter() {
            if sock.reading.load(Ordering::SeqCst) {
                let _ = sock.stream.shutdown(Shutdown::Read);
            }
        }
    }

    /// Ends both sides of every connection: blocked reads and writes return.
    pub fn shutdown_all(&self) {
        for (_, sock) in lock(&self.socks).iter() {
            let _ = sock.stream.shutdown(Shutdown::Both);
        }
    }

    /// Waits until no connection is open, or `until`; returns whether none is.
    pub fn wait_empty(&self, until: Instant) -> bool {
        let socks = wait_while(&self.emptied, lock(&self.socks), Some(until), |s| {
            !s.is_empty()
        });
        socks.is_empty()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut socks = lock(&self.live.socks);
        socks.try_remove(self.key);
        if socks.is_empty() {
            self.live.emptied.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    #[test]
    fn shutting_readers_down_wakes_a_blocked_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let live = Arc::new(Live::default());
        let conn = live.track(server);
        assert_eq!(live.len(), 1);
        let sock = Arc::clone(&conn.sock);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            (&sock.stream).read(&mut buf).map_err(|e| e.kind())
        });
        std::thread::sleep(Duration::from_millis(50));
        live.shutdown_readers();
        assert_eq!(reader.join().unwrap(), Ok(0));
        drop(conn);
        assert!(live.wait_empty(Instant::now()));
        drop(client);
    }
}
