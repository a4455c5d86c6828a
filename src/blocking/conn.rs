//! One connection's thread, run by a connection thread (unbounded model) or a pool worker: the
//! straight-line design. It reads (blocking until the session's deadline), hands what it read
//! to the connection's session, writes what the session hands back (blocking), and asks the
//! session what comes next. Timeouts are socket timeouts: the time left to the session's
//! deadline becomes the read timeout; writes carry a write timeout of `--idle-timeout-ms`, so a
//! thread blocked on a client that stopped reading is freed.
//!
//! Long-lived routes keep the thread. An SSE, stream or held-poll thread sleeps on its mailbox
//! (see `mailbox`) and feeds what arrives to its session; it learns that its client left when a
//! write fails or, on each wake-up (an event, a heartbeat, or every `LIVENESS_MS` without
//! either), from a non-blocking read that finds end-of-file. A WebSocket gets a second thread
//! that writes (see `ws`) while this one reads frames, and so sees its client leave at once.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::app::hub::Kind;
use crate::app::outq::{OutQueue, Piece};
use crate::app::session::{Action, Ctx, Session};

use super::live::{Socket, Tracked};
use super::mailbox::{End, Item, Subscriber};
use super::{millis, ws, Shared};

/// Bytes read per `read()` call, into a buffer on the thread's stack. It stays live while the
/// session handles what was read, so each page of it is a page of touched stack on every
/// connection thread: one page keeps what a thread touches to its minimum.
const READ_CHUNK: usize = 4 * 1024;
/// Non-blocking reads per wake-up of a subscriber thread looking for its client's departure.
const LIVENESS_READS: usize = 16;
/// A subscriber thread with nothing to write wakes this often to see whether its client left
/// (a thread parked on its mailbox cannot see end-of-file arrive).
const LIVENESS_MS: u64 = 5_000;

/// Serves one connection until it closes.
pub(crate) fn run(shared: &Arc<Shared>, conn: Tracked) {
    let stream = &conn.sock.stream;
    // Events are small and latency is what is measured: do not wait to coalesce them.
    let _ = stream.set_nodelay(true);
    if stream
        .set_write_timeout(Some(millis(shared.cfg.idle_timeout_ms)))
        .is_err()
    {
        return;
    }
    let mut c = Conn {
        session: Session::new(&shared.cfg, shared.now_ms()),
        shared: Arc::clone(shared),
        conn,
        out: OutQueue::default(),
        sub: None,
        writer: None,
        actions: Vec::new(),
        said_goodbye: false,
        done: false,
    };
    c.serve();
    c.finish();
}

struct Conn {
    shared: Arc<Shared>,
    conn: Tracked,
    session: Session,
    /// What the session handed out, written before the thread blocks again.
    out: OutQueue,
    /// The mailbox of the current subscription.
    sub: Option<Arc<Subscriber>>,
    /// A WebSocket's writer thread: from the upgrade on, all writing goes through the mailbox.
    writer: Option<JoinHandle<()>>,
    actions: Vec<Action>,
    /// The session has been told the server is stopping.
    said_goodbye: bool,
    /// The session closed, or the socket failed.
    done: bool,
}

impl Conn {
    fn sock(&self) -> &Arc<Socket> {
        &self.conn.sock
    }

    fn stream(&self) -> &TcpStream {
        &self.conn.sock.stream
    }

    /// Write, then wait the way the session's state needs, until the session closes.
    fn serve(&mut self) {
        while !self.done {
            self.flush();
            if self.done {
                break;
            }
            match self.session.subscription() {
                Some(Kind::Ws) | None => self.wait_for_input(),
                Some(kind) => self.wait_for_broadcast(kind),
            }
        }
    }

    /// Calls the session and performs what it asks for. Some actions are answered by calling
    /// the session again, whose actions come next: a loop, not recursion, so pipelined requests
    /// answered at once cost no stack (a connection thread's may be small, `--stack-size`).
    fn call(&mut self, f: impl FnOnce(&mut Session, &mut Ctx)) {
        let mut actions = std::mem::take(&mut self.actions);
        self.ask(&mut actions, f);
        let mut next = Vec::new();
        while !actions.is_empty() {
            for action in actions.drain(..) {
                self.perform(action, &mut next);
            }
            std::mem::swap(&mut actions, &mut next);
        }
        self.actions = actions;
    }

    /// Calls the session with the time and the configuration; its actions go to `actions`.
    fn ask(&mut self, actions: &mut Vec<Action>, f: impl FnOnce(&mut Session, &mut Ctx)) {
        let mut cx = Ctx {
            cfg: &self.shared.cfg,
            now: self.shared.now_ms(),
            actions,
        };
        f(&mut self.session, &mut cx);
    }

    /// Carries out one action; what the session says in answer goes to `next`.
    fn perform(&mut self, action: Action, next: &mut Vec<Action>) {
        match action {
            Action::Write(piece) => self.write(piece),
            Action::Subscribe { kind, after } => self.subscribe(kind, after, next),
            Action::Unsubscribe(_) => {
                if let Some(sub) = &self.sub {
                    self.shared.bcast.unsubscribe(sub);
                }
            }
            Action::Publish(text) => {
                let (seq, subscribers) = self.shared.bcast.publish_message(&text);
                self.ask(next, |s, cx| s.published(cx, seq, subscribers));
            }
            Action::Stats => {
                let json = self.shared.stats().to_json();
                self.ask(next, |s, cx| s.stats(cx, &json));
            }
            // A thread reads only when it is about to use what it reads: that is backpressure.
            Action::PauseReading | Action::ResumeReading => {}
            Action::ShutWrite => match (&self.writer, &self.sub) {
                // The writer shuts its side once the close frame is out.
                (Some(_), Some(sub)) => sub.end(End::Finish),
                _ => {
                    if self.stream().shutdown(Shutdown::Write).is_err() {
                        self.done = true;
                    }
                }
            },
            Action::Close => self.done = true,
        }
    }

    fn write(&mut self, piece: Piece) {
        match (&self.writer, &self.sub) {
            (Some(_), Some(sub)) => {
                if !sub.push_own(piece, self.shared.cfg.echo_high_water()) {
                    self.done = true;
                }
            }
            _ => self.out.push(piece),
        }
    }

    /// Writes what the session handed out and tells it so.
    fn flush(&mut self) {
        if self.writer.is_none() && !self.out.is_empty() {
            let mut w = &self.conn.sock.stream;
            match self.out.write_to(&mut w) {
                Ok(true) => {}
                // `WouldBlock` on a blocking socket is the write timeout.
                Ok(false) | Err(_) => {
                    self.done = true;
                    return;
                }
            }
        }
        // A WebSocket's bytes are the writer's now: as far as this thread goes, they are out.
        if self.session.is_writing() {
            self.call(|s, cx| s.on_drained(cx));
        }
    }

    // ---- waiting ---------------------------------------------------------------------------

    /// Reads once, blocking until the session's deadline, and feeds what came.
    fn wait_for_input(&mut self) {
        if !self.session.wants_input() {
            // Nothing to wait for in this model (its writes are done before it reads).
            self.done = true;
            return;
        }
        self.sock().set_reading(true);
        if self.shared.stop.is_set() && !self.said_goodbye {
            return self.goodbye();
        }
        let mut buf = [0u8; READ_CHUNK];
        let deadline = self.session.deadline();
        match self.read_until(deadline, &mut buf) {
            Input::Data(n) => self.call(|s, cx| s.on_input(cx, &buf[..n])),
            // Shutdown ends the reading side of connections that read: say goodbye, not EOF.
            Input::Closed if self.shared.stop.is_set() && !self.said_goodbye => self.goodbye(),
            Input::Closed => self.call(|s, cx| s.on_eof(cx)),
            Input::TimedOut => self.call(|s, cx| s.on_deadline(cx)),
        }
    }

    fn goodbye(&mut self) {
        self.said_goodbye = true;
        self.call(|s, cx| s.on_shutdown(cx));
    }

    /// Reads once into `buf`, blocking until `deadline` (session time; 0: no deadline).
    fn read_until(&self, deadline: u64, buf: &mut [u8]) -> Input {
        loop {
            let timeout = if deadline == 0 {
                None
            } else {
                let now = self.shared.now_ms();
                if now >= deadline {
                    return Input::TimedOut;
                }
                Some(millis(deadline - now))
            };
            if self.stream().set_read_timeout(timeout).is_err() {
                return Input::Closed;
            }
            match self.stream().read(buf) {
                Ok(0) => return Input::Closed,
                Ok(n) => return Input::Data(n),
                // A read timeout is `WouldBlock` on Unix; the deadline check decides.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Input::Closed,
            }
        }
    }

    /// Sleeps on the mailbox until events, a heartbeat, the end, the session's deadline or the
    /// next liveness check, and feeds the session what came.
    fn wait_for_broadcast(&mut self, kind: Kind) {
        let Some(sub) = self.sub.clone() else {
            self.done = true;
            return;
        };
        let deadline = self.session.deadline();
        let mut wake = Instant::now() + millis(LIVENESS_MS);
        if deadline != 0 {
            wake = wake.min(self.shared.instant_of(deadline));
        }
        let taken = sub.take(Some(wake));
        // Events go to the session together: a poll is answered by all of them at once.
        let mut events = Vec::new();
        for item in taken.items {
            match item {
                Item::Event(e) => events.push(e),
                Item::Heartbeat => self.call(|s, cx| s.on_heartbeat(cx)),
                Item::Piece(piece) => self.write(piece),
            }
        }
        if !events.is_empty() {
            self.call(|s, cx| s.on_events(cx, &events));
        }
        match taken.end {
            Some(End::Shutdown) => return self.goodbye(),
            // Cut off: its socket is shut down already.
            Some(End::Cut) => {
                self.done = true;
                return;
            }
            Some(End::Finish) | None => {}
        }
        if self.session.subscription() != Some(kind) {
            return;
        }
        if deadline != 0 && self.shared.now_ms() >= deadline {
            self.call(|s, cx| s.on_deadline(cx));
        } else if peer_gone(self.stream(), kind != Kind::Poll) {
            self.call(|s, cx| s.on_eof(cx));
        }
    }

    // ---- subscribing -----------------------------------------------------------------------

    fn subscribe(&mut self, kind: Kind, after: Option<u64>, next: &mut Vec<Action>) {
        let shared = Arc::clone(&self.shared);
        let sub = Subscriber::new(kind, Arc::clone(self.sock()));
        if kind == Kind::Ws {
            let theirs = Arc::clone(&sub);
            match shared.spawn("ws-writer", move || ws::write_frames(&theirs)) {
                Ok(writer) => self.writer = Some(writer),
                Err(_) => {
                    // No thread to write with: refuse the upgrade instead of half-serving it.
                    shared.rejected();
                    return self.ask(next, |s, cx| s.refused(cx));
                }
            }
        }
        // A WebSocket's reader is woken by shutdown like a thread reading a request; the other
        // subscribers hear of it through their mailbox.
        self.sock().set_reading(kind == Kind::Ws);
        let mut actions = Vec::new();
        let session = &mut self.session;
        shared.bcast.subscribe(&sub, after, |from, replay| {
            let mut cx = Ctx {
                cfg: &shared.cfg,
                now: shared.now_ms(),
                actions: &mut actions,
            };
            session.subscribed(&mut cx, from, replay);
            if kind == Kind::Ws {
                // The 101 must reach the writer before any event: queue it under the lock.
                actions.retain(|a| match a {
                    Action::Write(piece) => !sub.offer(Item::Piece(piece.clone()), None),
                    _ => true,
                });
            }
        });
        self.sub = Some(sub);
        next.append(&mut actions);
    }

    /// The connection is over: leave the registry, stop the writer, let the socket go.
    fn finish(&mut self) {
        // What the session handed out before closing still goes, as far as it will.
        let mut w = &self.conn.sock.stream;
        let _ = self.out.write_to(&mut w);
        let Some(sub) = self.sub.take() else {
            return;
        };
        self.shared.bcast.unsubscribe(&sub);
        if let Some(writer) = self.writer.take() {
            // A finishing writer is writing the close frame: let it. Otherwise free it, even
            // when blocked on a client that stopped reading.
            if sub.ended() != Some(End::Finish) {
                sub.end(End::Cut);
                let _ = self.stream().shutdown(Shutdown::Both);
            }
            let _ = writer.join();
        }
    }
}

/// What a blocking read brought.
enum Input {
    Data(usize),
    /// End-of-file, reset, or another error.
    Closed,
    TimedOut,
}

/// Whether the client has closed or reset the connection, by reading without blocking. Input
/// from a client that has nothing to say on this route is read and dropped (`discard`), as the
/// evented server does; otherwise it is only peeked at and stays for later.
fn peer_gone(stream: &TcpStream, discard: bool) -> bool {
    let mut buf = [0u8; 512];
    let flags = libc::MSG_DONTWAIT | if discard { 0 } else { libc::MSG_PEEK };
    for _ in 0..LIVENESS_READS {
        // SAFETY: recv(2) writes at most `buf.len()` bytes into `buf`, which outlives the call;
        // the descriptor is open for as long as `stream` is borrowed.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        match n {
            0 => return true,
            n if n > 0 => {
                if !discard {
                    return false;
                }
            }
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return false,
                    io::ErrorKind::Interrupted => {}
                    _ => return true,
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Duration;

    #[test]
    fn departure_is_seen_without_blocking() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(!peer_gone(&server, true));
        client.write_all(b"chatter").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!peer_gone(&server, false));
        assert!(!peer_gone(&server, true));
        drop(client);
        std::thread::sleep(Duration::from_millis(20));
        assert!(peer_gone(&server, true));
    }
}
