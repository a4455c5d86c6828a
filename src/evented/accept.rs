//! Accepting, in bounded batches, and surviving the end of descriptors without spinning: a loop
//! out of descriptors stops listening (so that, with `--workers`, another worker takes the
//! connection) and tries again shortly or as soon as one of its connections closes.

use std::io;
use std::os::fd::AsRawFd;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};

use crate::app::config::ACCEPT_RETRY_MS;
use crate::app::session::Session;
use crate::sys;

use super::conn::Conn;
use super::{Server, LISTENER};

/// The listening socket and whether the loop is listening to it.
pub(super) struct Listening {
    pub sock: TcpListener,
    /// Shared with other workers: registered with `EPOLLEXCLUSIVE`, so a connection wakes one.
    exclusive: bool,
    armed: bool,
}

impl Listening {
    pub fn new(sock: TcpListener, exclusive: bool) -> Listening {
        Listening {
            sock,
            exclusive,
            armed: false,
        }
    }

    pub fn arm(&mut self, poll: &Poll) -> io::Result<()> {
        if !self.armed {
            if self.exclusive {
                let token = LISTENER.0 as u64;
                sys::epoll_add_exclusive(poll.as_raw_fd(), self.sock.as_raw_fd(), token)?;
            } else {
                poll.registry()
                    .register(&mut self.sock, LISTENER, Interest::READABLE)?;
            }
            self.armed = true;
        }
        Ok(())
    }

    pub fn disarm(&mut self, poll: &Poll) {
        if self.armed {
            self.armed = false;
            let _ = if self.exclusive {
                sys::epoll_delete(poll.as_raw_fd(), self.sock.as_raw_fd())
            } else {
                poll.registry().deregister(&mut self.sock)
            };
        }
    }
}

/// Connections accepted per loop turn, so a connection storm cannot freeze the others.
const ACCEPT_BATCH: usize = 256;

impl Server {
    pub(super) fn accept_batch(&mut self) {
        let Some(listening) = &mut self.listener else {
            self.accept_pending = false;
            return;
        };
        if let Err(e) = listening.arm(&self.poll) {
            eprintln!("cannot listen for connections: {e}; trying again shortly");
            self.accept_pending = false;
            self.accept_retry_at = self.now + ACCEPT_RETRY_MS;
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            let Some(listening) = &mut self.listener else {
                return;
            };
            match listening.sock.accept() {
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
                    // kernel's backlog. Stop listening, so a listener that stays readable
                    // neither spins this loop nor, when shared, keeps its connections from a
                    // worker that could take them; try again shortly, or as soon as a
                    // connection closes.
                    listening.disarm(&self.poll);
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
