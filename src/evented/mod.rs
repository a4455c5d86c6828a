//! The evented server: one thread, one `mio::Poll`, every connection a small state machine in a
//! slab. It waits for readiness of all sockets at once, so an idle connection costs a slab entry
//! and nothing else, and a long-lived subscriber never holds anything another client needs.

mod conn;
mod subscribers;

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::app::config::{ServerConfig, ACCEPT_RETRY_MS, LINGER_MS, SHUTDOWN_GRACE_MS};
use crate::app::hub::{Hub, PollStart, Transport};
use crate::app::reply;
use crate::app::route::{self, Route, Start};
use crate::app::stats::Stats;
use crate::proto::http::{self, BodyDecoder, RequestHead};
use crate::proto::ws;
use crate::sys;
use crate::timers::Deadlines;

use conn::{BodyState, Conn, Phase};
use subscribers::{Kind, Subscribers, Visit, KINDS};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// Connections accepted per loop turn, so a connection storm cannot freeze the others.
const ACCEPT_BATCH: usize = 256;
/// Reads per connection per loop turn, so one fast sender cannot freeze the others.
const READS_PER_TURN: usize = 16;
const READ_CHUNK: usize = 64 * 1024;

/// Serves `cfg` until SIGINT or SIGTERM. `ready` is called with the bound address once the
/// listener accepts connections.
pub fn serve(cfg: ServerConfig, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let std_listener = sys::listen(cfg.listen, cfg.backlog, cfg.reuse_port)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let mut listener = TcpListener::from_std(std_listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;

    // The signal handler writes a byte to this pipe; the loop sees it like any socket.
    let (signal_rx, signal_tx) = std::os::unix::net::UnixStream::pair()?;
    signal_rx.set_nonblocking(true)?;
    signal_tx.set_nonblocking(true)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, signal_tx.try_clone()?)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, signal_tx)?;
    let mut signal_rx = UnixStream::from_std(signal_rx);
    poll.registry()
        .register(&mut signal_rx, SIGNALS, Interest::READABLE)?;

    let mut server = Server {
        poll,
        listener: Some(listener),
        signals: signal_rx,
        conns: Slab::new(),
        hub: Hub::new(cfg.retain),
        subs: Subscribers::default(),
        timers: Deadlines::default(),
        scratch: vec![0; READ_CHUNK],
        epoch: Instant::now(),
        now: 0,
        accepted: 0,
        rejected: 0,
        next_tick: cfg.tick_ms,
        last_broadcast: 0,
        accept_pending: true,
        accept_retry_at: 0,
        fd_starved: false,
        shutdown_at: None,
        resume: Vec::new(),
        cfg,
    };
    ready(addr);
    server.run()
}

struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: UnixStream,
    conns: Slab<Conn>,
    hub: Hub,
    subs: Subscribers,
    timers: Deadlines,
    cfg: ServerConfig,
    /// The one read buffer every connection reads into; leftovers move to the connection.
    scratch: Vec<u8>,
    epoch: Instant,
    /// Milliseconds since `epoch`, read once per loop turn.
    now: u64,
    accepted: u64,
    rejected: u64,
    next_tick: u64,
    last_broadcast: u64,
    /// The listener may have more connections waiting (edge-triggered: we must come back).
    accept_pending: bool,
    accept_retry_at: u64,
    fd_starved: bool,
    shutdown_at: Option<u64>,
    /// Connections whose reading was paused and should pick up again this turn.
    resume: Vec<usize>,
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = self.epoch.elapsed().as_millis() as u64;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_pending = true,
                    SIGNALS => self.begin_shutdown(),
                    Token(key) => {
                        if event.is_writable() || event.is_error() {
                            self.flush(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key);
                        }
                    }
                }
            }
            self.run_timers();
            if self.accept_pending {
                self.accept_batch();
            }
            self.fanout_step();
            for key in std::mem::take(&mut self.resume) {
                self.read(key);
            }
            if let Some(deadline) = self.shutdown_at {
                if self.conns.is_empty() || self.now >= deadline {
                    return Ok(());
                }
            }
        }
    }

    /// Sleep until the next timer, or not at all while batched work remains.
    fn poll_timeout(&self) -> Option<Duration> {
        if (self.accept_pending && self.listener.is_some())
            || self.subs.sweeping()
            || !self.resume.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let mut next = [
            self.timers.next(),
            self.shutdown_at,
            (self.accept_retry_at > 0).then_some(self.accept_retry_at),
            (self.cfg.tick_ms > 0).then_some(self.next_tick),
            (self.cfg.heartbeat_ms > 0).then_some(self.last_broadcast + self.cfg.heartbeat_ms),
        ]
        .into_iter()
        .flatten()
        .min()?;
        let now = self.epoch.elapsed().as_millis() as u64;
        next = next.saturating_sub(now);
        Some(Duration::from_millis(next))
    }

    // ---- accepting -------------------------------------------------------------------------

    fn accept_batch(&mut self) {
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
        entry.insert(Conn::new(sock));
        self.set_deadline(key, self.now + self.cfg.header_timeout_ms);
        // A client usually sends its request right behind the handshake: read it now rather than
        // one loop turn (and one broadcast batch) later.
        self.read(key);
    }

    // ---- reading ---------------------------------------------------------------------------

    fn read(&mut self, key: usize) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.read_paused {
                return;
            }
            match conn.sock.read(&mut self.scratch) {
                Ok(0) => return self.on_eof(key),
                Ok(n) => self.on_input(key, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(key),
            }
        }
        // More may be waiting; edge-triggered readiness will not say so again.
        self.resume.push(key);
    }

    /// `n` new bytes are in `scratch`: use them together with whatever was left over.
    fn on_input(&mut self, key: usize, n: usize) {
        let scratch = std::mem::take(&mut self.scratch);
        let mut pending = match self.conns.get_mut(key) {
            Some(conn) => std::mem::take(&mut conn.inbuf),
            None => Vec::new(),
        };
        if pending.is_empty() {
            // The common case: parse straight from the shared buffer, copy only a remainder.
            let used = self.consume(key, &scratch[..n]);
            self.keep_leftover(key, scratch[used..n].to_vec());
        } else {
            pending.extend_from_slice(&scratch[..n]);
            self.consume_buffered(key, pending);
        }
        self.scratch = scratch;
    }

    /// Processes what is already buffered (after a poll is answered, input may be waiting).
    fn process_buffered(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            let buf = std::mem::take(&mut conn.inbuf);
            if !buf.is_empty() {
                self.consume_buffered(key, buf);
            }
        }
    }

    fn consume_buffered(&mut self, key: usize, mut buf: Vec<u8>) {
        let used = self.consume(key, &buf);
        buf.drain(..used);
        self.keep_leftover(key, buf);
    }

    fn keep_leftover(&mut self, key: usize, buf: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if buf.is_empty() {
            // An idle connection owns no buffer.
            conn.inbuf = Vec::new();
            return;
        }
        if buf.len() >= http::MAX_HEAD_BYTES {
            // Pipelined input behind a held poll: leave the rest in the kernel until it is read.
            conn.read_paused = true;
        }
        conn.inbuf = buf;
    }

    /// Feeds `data` to the connection's current phase; returns how much was used. What is not
    /// used waits for more input or for the phase to change.
    fn consume(&mut self, key: usize, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            let Some(conn) = self.conns.get_mut(key) else {
                return data.len();
            };
            let rest = &data[used..];
            let step = match conn.phase {
                Phase::Head { .. } => self.consume_head(key, rest),
                Phase::Body(_) => self.consume_body(key, rest),
                Phase::Ws(_) => self.consume_ws(key, rest),
                // Clients of these routes have nothing to say; reading only notices them leave.
                Phase::Sse | Phase::Stream { .. } | Phase::Closing { .. } => rest.len(),
                // A pipelined request waits until the poll is answered.
                Phase::Poll { .. } => 0,
            };
            if step == 0 {
                break;
            }
            used += step;
        }
        used
    }

    fn on_eof(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            // The client half-closed after its requests: finish writing the answers, then close.
            Phase::Head { .. } | Phase::Closing { .. } if !conn.out.is_empty() => {
                self.unsubscribe(key);
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.phase = Phase::Closing { write_shut: true };
                    conn.read_paused = true;
                    self.set_deadline(key, self.now + LINGER_MS);
                }
            }
            _ => self.close(key),
        }
    }

    // ---- HTTP requests ---------------------------------------------------------------------

    fn consume_head(&mut self, key: usize, data: &[u8]) -> usize {
        match http::parse_request_head(data) {
            Ok(None) => {
                if let Some(conn) = self.conns.get_mut(key) {
                    if let Phase::Head { started: false } = conn.phase {
                        conn.phase = Phase::Head { started: true };
                        self.set_deadline(key, self.now + self.cfg.header_timeout_ms);
                    }
                }
                0
            }
            Ok(Some((head, n))) => {
                self.dispatch(key, head);
                n
            }
            Err(e) => {
                self.fail(key, e.status());
                data.len()
            }
        }
    }

    fn dispatch(&mut self, key: usize, head: RequestHead) {
        let route = route::route(&head);
        let keep_alive = head.keep_alive;
        let mut early = Vec::new();
        let start = route::start(&head, &route, self.cfg.max_echo_body, &mut early);
        if start == Start::TooLarge {
            return self.fail(key, 413);
        }
        self.queue(key, early);
        let Start::Body { framing, max } = start else {
            return self.act(key, route, keep_alive, Vec::new());
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.phase = Phase::Body(Box::new(BodyState {
            route,
            decoder: BodyDecoder::new(framing, max),
            body: Vec::new(),
            keep_alive,
        }));
        self.set_deadline(key, self.now + self.cfg.idle_timeout_ms);
        self.flush(key);
    }

    fn consume_body(&mut self, key: usize, data: &[u8]) -> usize {
        let Some(conn) = self.conns.get_mut(key) else {
            return data.len();
        };
        let Phase::Body(state) = &mut conn.phase else {
            return 0;
        };
        let mut decoded = Vec::new();
        let sink = if state.route == Route::Publish {
            &mut state.body
        } else {
            &mut decoded
        };
        let used = match state.decoder.decode(data, sink) {
            Ok(n) => n,
            Err(e) => {
                // An echo already sent its head: the status can no longer change.
                if matches!(state.route, Route::Echo { .. }) {
                    self.close(key);
                } else {
                    self.fail(key, e.status());
                }
                return data.len();
            }
        };
        if let (Route::Echo { chunked }, false) = (&state.route, decoded.is_empty()) {
            let mut framed = Vec::with_capacity(decoded.len() + 16);
            reply::echo_data(&mut framed, &decoded, *chunked);
            conn.out.push_owned(framed);
            if conn.out.len() > self.cfg.echo_high_water() {
                conn.read_paused = true;
            }
        }
        if state.decoder.is_done() {
            let Phase::Body(state) =
                std::mem::replace(&mut conn.phase, Phase::Head { started: false })
            else {
                return used;
            };
            let BodyState {
                route,
                body,
                keep_alive,
                ..
            } = *state;
            self.act(key, route, keep_alive, body);
        } else {
            self.set_deadline(key, self.now + self.cfg.idle_timeout_ms);
            self.flush(key);
        }
        used
    }

    /// Answers a complete request.
    fn act(&mut self, key: usize, route: Route, mut keep_alive: bool, body: Vec<u8>) {
        let mut out = Vec::new();
        match route {
            Route::Probe => reply::probe(&mut out, keep_alive),
            Route::Error { status, headers } => reply::error(&mut out, status, headers, keep_alive),
            Route::Stats => reply::stats(&mut out, &self.stats().to_json(), keep_alive),
            Route::Echo { chunked } => keep_alive = reply::echo_end(&mut out, keep_alive, chunked),
            Route::Publish => match std::str::from_utf8(&body) {
                Ok(text) => {
                    let subscribers = self.subs.total() as u64;
                    let event = self.hub.publish_message(text, sys::now_ns());
                    self.broadcast_started();
                    reply::published(&mut out, event.seq, subscribers, keep_alive);
                }
                Err(_) => reply::error(&mut out, 400, &[], keep_alive),
            },
            Route::Sse { last_event_id } => {
                reply::sse_head(&mut out);
                return self.subscribe(key, out, Phase::Sse, last_event_id);
            }
            Route::Stream { chunked } => {
                reply::stream_head(&mut out, chunked);
                return self.subscribe(key, out, Phase::Stream { chunked }, None);
            }
            Route::WebSocket { accept } => {
                reply::ws_accept(&mut out, &accept);
                self.subscribe(key, out, Phase::Ws(None), None);
                return self.set_deadline(key, self.now + self.cfg.idle_timeout_ms);
            }
            Route::Poll { after } => match self.hub.start_poll(after) {
                PollStart::Answer(body) => reply::poll(&mut out, &body, keep_alive),
                PollStart::Wait(after) => {
                    self.subscribe(key, out, Phase::Poll { keep_alive }, Some(after));
                    return self.set_deadline(key, self.now + self.cfg.poll_timeout_ms);
                }
            },
        }
        self.queue(key, out);
        self.request_done(key, keep_alive);
    }

    /// After a complete answer: wait for the next request, or close.
    fn request_done(&mut self, key: usize, keep_alive: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if keep_alive {
            conn.phase = Phase::Head { started: false };
            self.set_deadline(key, self.now + self.cfg.idle_timeout_ms);
        } else {
            conn.phase = Phase::Closing { write_shut: false };
            self.set_deadline(key, self.now + LINGER_MS);
        }
        self.flush(key);
    }

    /// Answers `status` and closes: the input can no longer be trusted to be in step.
    fn fail(&mut self, key: usize, status: u16) {
        self.unsubscribe(key);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.inbuf = Vec::new();
        }
        self.push_reply(key, |out| reply::error(out, status, &[], false));
        self.request_done(key, false);
    }

    /// Queues bytes for `key` (written by the next flush).
    fn queue(&mut self, key: usize, bytes: Vec<u8>) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.out.push_owned(bytes);
        }
    }

    /// Queues what `write` produces for `key`.
    fn push_reply(&mut self, key: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let mut out = Vec::new();
        write(&mut out);
        self.queue(key, out);
    }

    // ---- WebSocket -------------------------------------------------------------------------

    fn consume_ws(&mut self, key: usize, data: &[u8]) -> usize {
        let max_message = self.cfg.max_message;
        let Some(conn) = self.conns.get_mut(key) else {
            return data.len();
        };
        let Conn { phase, out, .. } = conn;
        let Phase::Ws(slot) = phase else {
            return 0;
        };
        let decoder =
            slot.get_or_insert_with(|| Box::new(ws::Decoder::new(ws::Role::Server, max_message)));
        // Every answer to this batch of input goes into one buffer.
        let mut answers = Vec::new();
        let mut used = 0;
        let mut closing = false;
        while used < data.len() && !closing {
            let (n, answered) = reply::ws_step(decoder, &data[used..], &mut answers);
            used += n;
            let Some(closes) = answered else {
                break;
            };
            closing = closes;
        }
        out.push_owned(answers);
        if decoder.is_idle() {
            *slot = None;
        }
        if closing {
            self.unsubscribe(key);
            self.request_done(key, false);
            return data.len();
        }
        if out.len() > self.cfg.echo_high_water() {
            conn.read_paused = true;
        }
        self.set_deadline(key, self.now + self.cfg.idle_timeout_ms);
        self.flush(key);
        used
    }

    // ---- broadcasting ----------------------------------------------------------------------

    /// Puts a connection on a broadcast list, after queueing `head` and any replay.
    fn subscribe(&mut self, key: usize, head: Vec<u8>, phase: Phase, after: Option<u64>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.out.push_owned(head);
        conn.phase = phase;
        conn.deadline = 0;
        let last = self.hub.last_seq();
        let kind = conn.subscription().unwrap_or(Kind::Sse);
        conn.delivered = match (kind, after) {
            (Kind::Poll, Some(after)) => after,
            (Kind::Sse, Some(after)) => {
                for event in self.hub.since(after) {
                    conn.out.push_event(event, Transport::Sse);
                }
                last
            }
            _ => last,
        };
        conn.sub_index = self.subs.add(kind, key);
        self.flush(key);
    }

    fn unsubscribe(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(kind) = conn.subscription() else {
            return;
        };
        let index = std::mem::replace(&mut conn.sub_index, u32::MAX);
        if let Some(moved) = self.subs.remove(kind, index) {
            if let Some(other) = self.conns.get_mut(moved) {
                other.sub_index = index;
            }
        }
    }

    fn broadcast_started(&mut self) {
        self.subs.start_events();
        self.last_broadcast = self.now;
    }

    /// Delivers to at most one batch of subscribers, then lets the loop serve everyone else.
    fn fanout_step(&mut self) {
        for _ in 0..self.cfg.fanout_batch.max(1) {
            let Some((kind, key, visit)) = self.subs.next_visit() else {
                return;
            };
            self.deliver(kind, key, visit);
        }
    }

    fn deliver(&mut self, kind: Kind, key: usize, visit: Visit) {
        let last = self.hub.last_seq();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match visit {
            Visit::Heartbeat => match kind.heartbeat() {
                Some(bytes) => conn.out.push_static(bytes),
                None => return,
            },
            Visit::Events => {
                if conn.delivered >= last {
                    return;
                }
                if self.hub.has_dropped_after(conn.delivered) {
                    // So far behind that the ring no longer has what it missed.
                    return self.close(key);
                }
                let transport = match (kind, &conn.phase) {
                    (Kind::Poll, _) => return self.answer_poll(key),
                    (Kind::Stream, Phase::Stream { chunked }) => Transport::stream(*chunked),
                    (kind, _) => kind.transport(),
                };
                for event in self.hub.since(conn.delivered) {
                    conn.out.push_event(event, transport);
                }
                conn.delivered = last;
            }
        }
        if conn.out.check_bound(self.cfg.max_write_queue).is_err() {
            // A subscriber that stopped reading is cut off rather than buffered for.
            return self.close(key);
        }
        self.flush(key);
    }

    fn answer_poll(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Phase::Poll { keep_alive } = conn.phase else {
            return;
        };
        let body = self.hub.poll_body(conn.delivered);
        self.unsubscribe(key);
        self.push_reply(key, |out| reply::poll(out, &body, keep_alive));
        self.request_done(key, keep_alive);
        self.process_buffered(key);
    }

    // ---- writing and closing ---------------------------------------------------------------

    fn flush(&mut self, key: usize) {
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
                match conn.phase {
                    Phase::Closing { write_shut: false } => {
                        conn.phase = Phase::Closing { write_shut: true };
                        // Our FIN goes out; the peer reads the answer, then closes its side.
                        if conn.sock.shutdown(Shutdown::Write).is_err() {
                            self.close(key);
                        }
                    }
                    Phase::Closing { write_shut: true } if conn.read_paused => {
                        // The peer closed first and everything is written.
                        self.close(key);
                    }
                    _ => {
                        if conn.read_paused {
                            conn.read_paused = false;
                            self.resume.push(key);
                        }
                    }
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
            }
            Err(_) => self.close(key),
        }
    }

    fn close(&mut self, key: usize) {
        self.unsubscribe(key);
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.sock);
            if self.fd_starved {
                self.accept_pending = true;
            }
        }
    }

    // ---- time ------------------------------------------------------------------------------

    fn set_deadline(&mut self, key: usize, at: u64) {
        if let Some(conn) = self.conns.get_mut(key) {
            self.timers.set(key, conn.deadline, at);
            conn.deadline = at;
        }
    }

    fn run_timers(&mut self) {
        while let Some(key) = self
            .timers
            .next_expired(self.now, |k| self.conns.get(k).map(|c| c.deadline))
        {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.deadline = 0;
            match conn.phase {
                // A silent new connection, or an idle keep-alive one.
                Phase::Head { started: false } | Phase::Closing { .. } => self.close(key),
                Phase::Head { started: true } | Phase::Body(_) => self.fail(key, 408),
                // Timed out: answered with whatever is newer, which is usually nothing (`[]`).
                Phase::Poll { .. } => self.answer_poll(key),
                Phase::Ws(_) => {
                    self.unsubscribe(key);
                    self.push_reply(key, |out| {
                        ws::encode_close(out, ws::close_code::GOING_AWAY, "idle timeout", None)
                    });
                    self.request_done(key, false);
                }
                Phase::Sse | Phase::Stream { .. } => {}
            }
        }
        let live = self.conns.iter().map(|(k, c)| (k, c.deadline));
        self.timers.compact(self.conns.len(), live);
        if self.cfg.tick_ms > 0 && self.now >= self.next_tick && self.shutdown_at.is_none() {
            self.hub.publish_tick(sys::now_ns());
            self.broadcast_started();
            self.next_tick = (self.next_tick + self.cfg.tick_ms).max(self.now + 1);
        }
        if self.cfg.heartbeat_ms > 0 && self.now >= self.last_broadcast + self.cfg.heartbeat_ms {
            self.subs.start_heartbeat();
            self.last_broadcast = self.now;
        }
        if self.accept_retry_at > 0 && self.now >= self.accept_retry_at {
            self.accept_retry_at = 0;
            self.accept_pending = true;
        }
    }

    // ---- stats and shutdown ----------------------------------------------------------------

    fn stats(&self) -> Stats {
        Stats::new(
            "evented",
            self.conns.len() as u64,
            KINDS.map(|k| self.subs.count(k) as u64),
            self.accepted,
            self.rejected,
            self.hub.last_seq(),
            sys::read_proc(None).unwrap_or_default(),
        )
    }

    /// SIGINT/SIGTERM: stop accepting, end every stream properly, give them a moment to flush.
    fn begin_shutdown(&mut self) {
        let mut sink = [0u8; 64];
        while matches!(self.signals.read(&mut sink), Ok(n) if n > 0) {}
        if self.shutdown_at.is_some() {
            return;
        }
        self.shutdown_at = Some(self.now + SHUTDOWN_GRACE_MS);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            match conn.phase {
                Phase::Ws(_) => {
                    self.unsubscribe(key);
                    self.push_reply(key, |out| {
                        ws::encode_close(
                            out,
                            ws::close_code::GOING_AWAY,
                            "server shutting down",
                            None,
                        )
                    });
                    self.request_done(key, false);
                }
                Phase::Stream { chunked } => {
                    self.unsubscribe(key);
                    if chunked {
                        self.push_reply(key, |out| out.extend_from_slice(http::LAST_CHUNK));
                    }
                    self.request_done(key, false);
                }
                Phase::Sse => {
                    self.unsubscribe(key);
                    self.request_done(key, false);
                }
                Phase::Poll { .. } => {
                    self.unsubscribe(key);
                    self.push_reply(key, |out| reply::poll(out, b"[]", false));
                    self.request_done(key, false);
                }
                Phase::Head { .. } if conn.out.is_empty() => self.close(key),
                Phase::Head { .. } => self.request_done(key, false),
                Phase::Body(_) => self.close(key),
                Phase::Closing { .. } => {}
            }
        }
    }
}
