//! Reading, writing and closing, and carrying out what a session asks for. A session is only
//! ever called through `drive`, which hands it the time and the configuration, keeps the
//! connection's deadline in the timer heap in step, and performs the actions it returns.

use std::io::{self, Read};
use std::net::Shutdown;

use mio::{Interest, Token};

use crate::app::hub::{Hub, Kind};
use crate::app::session::{Action, Ctx, Session};
use crate::sys;
use crate::workers::wire::Msg;

use super::Server;

/// Reads per connection per loop turn: one, so that a sender with more waiting goes on in the
/// next turn, after every other ready connection has had its read. With 16 reads (1 MiB) a
/// turn, a few hundred ping floods made turns last long enough for a newcomer's SYN to be
/// dropped (`c10k run hostile --scale 16000`: probe p99 over 1 s; with one read, 5.3 ms).
const READS_PER_TURN: usize = 1;
pub(super) const READ_CHUNK: usize = 64 * 1024;

impl Server {
    /// Calls `key`'s session, performs its actions, and writes what they queued.
    pub(super) fn step(&mut self, key: usize, f: impl FnOnce(&mut Session, &mut Ctx, &Hub)) {
        self.drive(key, f);
        self.flush(key);
    }

    /// Calls `key`'s session and performs its actions. Some of them are answered by calling the
    /// session again, whose actions come next: a loop, not recursion, so a client that pipelines
    /// a thousand requests answered at once costs no stack.
    fn drive(&mut self, key: usize, f: impl FnOnce(&mut Session, &mut Ctx, &Hub)) {
        let mut actions = std::mem::take(&mut self.actions);
        self.call(key, &mut actions, f);
        let mut next = Vec::new();
        while !actions.is_empty() {
            for action in actions.drain(..) {
                self.perform(key, action, &mut next);
            }
            std::mem::swap(&mut actions, &mut next);
        }
        self.actions = actions;
    }

    /// Calls `key`'s session with the time and the configuration; its actions go to `actions`,
    /// and its deadline into the timer heap.
    fn call(
        &mut self,
        key: usize,
        actions: &mut Vec<Action>,
        f: impl FnOnce(&mut Session, &mut Ctx, &Hub),
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let before = conn.session.deadline();
        let mut cx = Ctx {
            cfg: &self.cfg,
            now: self.now,
            actions,
        };
        f(&mut conn.session, &mut cx, &self.hub);
        self.timers
            .set(key, before, conn.session.deadline(), self.now);
    }

    /// Carries out one action; what the session says in answer goes to `next`.
    fn perform(&mut self, key: usize, action: Action, next: &mut Vec<Action>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match action {
            Action::Write(piece) => conn.out.push(piece),
            Action::Subscribe { kind, after } => {
                conn.sub_index = self.subs.add(kind, key);
                let from = self.hub.resume_point(after);
                self.call(key, next, |s, cx, hub| {
                    s.subscribed(cx, from, hub.since(from))
                });
            }
            Action::Unsubscribe(kind) => self.unsubscribe(key, kind),
            Action::Publish(text) => {
                if let Some(up) = &mut self.upstream {
                    let text = text.into_bytes();
                    return up.ask(key, |req| Msg::Publish { req, text });
                }
                let subscribers = self.subs.total() as u64;
                let seq = self.hub.publish_message(&text, sys::now_ns()).seq;
                self.broadcast_started();
                self.call(key, next, |s, cx, _| s.published(cx, seq, subscribers));
            }
            Action::Stats => {
                if let Some(up) = &mut self.upstream {
                    return up.ask(key, |req| Msg::StatsRequest { req });
                }
                let json = self.stats().to_json();
                self.call(key, next, |s, cx, _| s.stats(cx, &json));
            }
            // Reading stops by itself: `read` asks the session first.
            Action::PauseReading => {}
            // Edge-triggered readiness will not report input that is already waiting.
            Action::ResumeReading => self.resume.push(key),
            Action::ShutWrite => {
                if conn.sock.shutdown(Shutdown::Write).is_err() {
                    self.close(key);
                }
            }
            Action::Close => {
                // What the session handed out before closing still goes, as far as it will.
                let _ = conn.out.write_to(&mut conn.sock);
                self.close(key);
            }
        }
    }

    pub(super) fn read(&mut self, key: usize) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if !conn.session.wants_input() {
                return;
            }
            match conn.sock.read(&mut self.scratch) {
                Ok(0) => return self.step(key, |s, cx, _| s.on_eof(cx)),
                Ok(n) => {
                    let scratch = std::mem::take(&mut self.scratch);
                    self.step(key, |s, cx, _| s.on_input(cx, &scratch[..n]));
                    self.scratch = scratch;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(key),
            }
        }
        // More may be waiting; edge-triggered readiness will not say so again.
        self.resume.push(key);
    }

    /// Writes what is queued; tells the session when it drained or backed up.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.out.write_to(&mut conn.sock) {
            Ok(true) => {
                if conn.want_write {
                    conn.want_write = false;
                    let _ = self.poll.registry().reregister(
                        &mut conn.sock,
                        Token(key),
                        Interest::READABLE,
                    );
                }
                if conn.session.is_writing() {
                    self.drive(key, |s, cx, _| s.on_drained(cx));
                }
            }
            Ok(false) => {
                if !conn.want_write {
                    conn.want_write = true;
                    let _ = self.poll.registry().reregister(
                        &mut conn.sock,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                }
                let queued = conn.out.len();
                self.drive(key, |s, cx, _| s.on_write_queue(cx, queued));
            }
            Err(_) => self.close(key),
        }
    }

    pub(super) fn close(&mut self, key: usize) {
        if let Some(kind) = self.conns.get(key).and_then(|c| c.session.subscription()) {
            self.unsubscribe(key, kind);
        }
        if let Some(up) = &mut self.upstream {
            up.forget(key);
        }
        // Closing the socket removes it from the epoll set (nothing else holds its file), so a
        // separate EPOLL_CTL_DEL would only add a system call to every close.
        if self.conns.try_remove(key).is_some() && self.fd_starved {
            self.accept_pending = true;
        }
    }

    fn unsubscribe(&mut self, key: usize, kind: Kind) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let index = std::mem::replace(&mut conn.sub_index, u32::MAX);
        if let Some(moved) = self.subs.remove(kind, index) {
            if let Some(other) = self.conns.get_mut(moved) {
                other.sub_index = index;
            }
        }
    }
}
