//! Accepting, in bounded batches, and surviving the end of descriptors without spinning.

use std::io;

use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::app::config::ACCEPT_RETRY_MS;
use crate::app::session::Session;
use crate::sys;

use super::conn::Conn;
use super::Server;

/// Connections accepted per loop turn, so a connection storm cannot freeze the others.
const ACCEPT_BATCH: usize = 256;

impl Server {
    pub(super) fn accept_batch(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = &self.listener else {
                self.accept_pending = false;
                return;
            };
            match listener.accept() {
                Ok((sock, _)) => {
                    self.fd_starved = false;
                    self.accepted += 1;
                    self.add_conn(sock);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // Out of descriptors (or memory): the pending connections stay in the
                    // kernel's backlog. Try again shortly, or as soon as a connection closes,
                    // instead of spinning on a listener that stays readable.
                    if !self.fd_starved && sys::is_fd_exhaustion(&e) {
                        eprintln!(
                            "accept: {e}; {} connections open, accepting again when descriptors free up",
                            self.conns.len()
                        );
                    }
                    self.fd_starved = true;
                    self.accept_pending = false;
                    self.accept_retry_at = self.now + ACCEPT_RETRY_MS;
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut sock: TcpStream) {
        // Events are small and latency is what is measured: do not wait to coalesce them.
        let _ = sock.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if self
            .poll
            .registry()
            .register(&mut sock, Token(key), Interest::READABLE)
            .is_err()
        {
            self.rejected += 1;
            return;
        }
        let session = Session::new(&self.cfg, self.now);
        self.timers.set(key, 0, session.deadline(), self.now);
        entry.insert(Conn::new(sock, session));
        // A client usually sends its request right behind the handshake: read it now rather than
        // one loop turn (and one broadcast batch) later.
        self.read(key);
    }
}
