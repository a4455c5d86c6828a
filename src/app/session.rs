//! One server connection's whole life as a sans-IO state machine, the way h11 and wsproto do it:
//! what happened goes in (bytes read, end of input, a deadline reached, the write queue drained
//! or backed up, a broadcast, a heartbeat, shutdown, the answer to something it asked for), and
//! what to do comes out as [`Action`]s (bytes to write, subscribe, publish, pause reading, shut
//! the write side, close). No sockets, threads or clocks: the time is an argument, in
//! milliseconds on the caller's monotonic clock, and the session says when it next needs to be
//! woken (`deadline`).
//!
//! Every lifecycle rule of the contract lives here once — keep-alive, pipelining, the header and
//! idle timeouts, `413` before any `100 Continue`, the streamed echo, request bodies, long polls,
//! the WebSocket upgrade and every message answer, the goodbyes on shutdown, lingering close —
//! and both I/O models drive it. Things the session asks for (a subscription, a publish, the
//! stats) are answered by the model calling back (`subscribed`, `published`, `stats`); input
//! that arrives meanwhile waits in the session, which picks it up again by itself.
//!
//! An idle session is small: a tag, two sequence and time fields and a null pointer. Buffers
//! (a partial head, a body decoder, a half-read WebSocket frame) are allocated while in use and
//! given back after.

use std::sync::Arc;

use crate::app::config::{ServerConfig, LINGER_MS};
use crate::app::hub::{self, Encoding, Event, Kind};
use crate::app::outq::Piece;
use crate::app::reply::{self, WsStep};
use crate::app::route::{self, Route, Start};
use crate::proto::http::{self, BodyDecoder, RequestHead};
use crate::proto::ws;

/// What the I/O model must do, in the order given.
#[derive(Debug)]
pub enum Action {
    /// Queue these bytes for writing.
    Write(Piece),
    /// Put the connection on the broadcast list of `kind`, then call `subscribed` with where it
    /// starts (`Hub::resume_point(after)`) and the retained events after that — or `refused`
    /// when the model cannot serve it.
    Subscribe {
        kind: Kind,
        after: Option<u64>,
    },
    /// Take the connection off the broadcast list of this kind.
    Unsubscribe(Kind),
    /// Publish a `message` event carrying this text, then call `published`.
    Publish(String),
    /// Assemble the `/stats` document, then call `stats`.
    Stats,
    /// Stop reading from the socket until `ResumeReading`.
    PauseReading,
    ResumeReading,
    /// Everything queued is written: send FIN. The session lingers for the peer's.
    ShutWrite,
    /// Close the connection now; bytes handed out before go as far as the socket takes them
    /// without waiting. The session is done.
    Close,
}

/// What every call gets: the configuration, the time, and where the actions go.
pub struct Ctx<'a> {
    pub cfg: &'a ServerConfig,
    /// Milliseconds on the caller's monotonic clock.
    pub now: u64,
    pub actions: &'a mut Vec<Action>,
}

impl Ctx<'_> {
    fn act(&mut self, action: Action) {
        self.actions.push(action);
    }

    fn after(&self, ms: u64) -> u64 {
        // 0 means "no deadline", so a deadline is never 0.
        (self.now + ms).max(1)
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading a request body.
    Body(Box<Body>),
    /// `Publish` or `Stats` was asked for; waiting for the answer.
    Answering,
    /// `Subscribe` was asked for; the response head goes out once subscribed.
    Subscribing(Box<Subscribing>),
    Sse,
    Stream,
    /// A held long poll.
    Poll,
    /// An open WebSocket; the decoder exists while a frame or fragmented message is partial.
    Ws(Option<Box<ws::Decoder>>),
    /// The last bytes are queued: once they are written, shut the write side.
    Closing,
    /// The write side is shut: waiting for the peer's FIN (or the linger time).
    Lingering,
    Closed,
}

#[derive(Debug)]
struct Body {
    route: Route,
    decoder: BodyDecoder,
    /// The body so far, for a route that needs all of it (`/publish`).
    collected: Vec<u8>,
}

#[derive(Debug)]
struct Subscribing {
    kind: Kind,
    head: Vec<u8>,
    /// A poll that waits for an event; a short poll is answered at once.
    wait: bool,
}

/// One bit each.
mod flag {
    /// The request being answered keeps the connection open.
    pub const KEEP_ALIVE: u8 = 1;
    /// The stream is chunked (not an HTTP/1.0 client's close-delimited one).
    pub const CHUNKED: u8 = 1 << 1;
    /// Bytes of a request head have arrived: the header timeout runs, not the idle one.
    pub const STARTED: u8 = 1 << 2;
    /// Bytes were handed out that the model has not reported written (`on_drained`).
    pub const WRITING: u8 = 1 << 3;
    /// Reading is paused.
    pub const PAUSED: u8 = 1 << 4;
    /// The peer sent FIN.
    pub const PEER_EOF: u8 = 1 << 5;
    /// The server is shutting down: no request after the current one.
    pub const STOPPING: u8 = 1 << 6;
    /// The request being answered is a HEAD: the answer is the head GET would get.
    pub const HEAD: u8 = 1 << 7;
}

/// One server connection. See the module documentation.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// Input that could not be used yet: a partial head, or requests pipelined behind a held
    /// poll or a pending answer. Boxed, so that an idle session spends 8 bytes on it, not 24.
    #[allow(clippy::box_collection)]
    pending: Option<Box<Vec<u8>>>,
    /// When to call `on_deadline`; 0 for never.
    deadline: u64,
    /// The newest event sequence this subscriber has been given (a poll: is after).
    delivered: u64,
    flags: u8,
}

impl Session {
    /// A session for a connection accepted at `now`: its first request head must be in within
    /// the header timeout.
    pub fn new(cfg: &ServerConfig, now: u64) -> Session {
        Session {
            phase: Phase::Head,
            pending: None,
            deadline: (now + cfg.header_timeout_ms).max(1),
            delivered: 0,
            flags: 0,
        }
    }

    /// When the session next needs `on_deadline`; 0 for never.
    pub fn deadline(&self) -> u64 {
        self.deadline
    }

    /// The newest event sequence given to this subscriber: the model delivers what is after it.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The broadcast list the connection is on, if any.
    pub fn subscription(&self) -> Option<Kind> {
        match self.phase {
            Phase::Sse => Some(Kind::Sse),
            Phase::Stream => Some(Kind::Stream),
            Phase::Ws(_) => Some(Kind::Ws),
            Phase::Poll => Some(Kind::Poll),
            _ => None,
        }
    }

    /// Whether the model owes an `on_drained` call once its write queue is empty.
    pub fn is_writing(&self) -> bool {
        self.has(flag::WRITING)
    }

    /// Whether the session wants the socket read: not paused, not past the peer's FIN, not
    /// closed. (A subscriber reads only to notice its client leave.)
    pub fn wants_input(&self) -> bool {
        !self.has(flag::PAUSED | flag::PEER_EOF) && !matches!(self.phase, Phase::Closed)
    }

    /// Bytes of input the session holds, waiting to be used.
    pub fn buffered(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.len())
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn set(&mut self, f: u8, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }

    // ---- input -----------------------------------------------------------------------------

    /// Bytes arrived from the peer.
    pub fn on_input(&mut self, cx: &mut Ctx, data: &[u8]) {
        match self.pending.take() {
            // The common case: parse straight from the caller's buffer, keep only a remainder.
            None => {
                let used = self.consume(cx, data);
                self.keep(cx, &data[used..]);
            }
            Some(mut buf) => {
                buf.extend_from_slice(data);
                self.pending = Some(buf);
                self.process_pending(cx);
            }
        }
    }

    /// Picks up input that waited (behind a held poll or an answer being prepared).
    fn process_pending(&mut self, cx: &mut Ctx) {
        if let Some(buf) = self.pending.take() {
            let used = self.consume(cx, &buf);
            self.keep(cx, &buf[used..]);
        }
    }

    fn keep(&mut self, cx: &mut Ctx, rest: &[u8]) {
        if rest.is_empty() || matches!(self.phase, Phase::Closed) {
            return;
        }
        let waiting = matches!(
            self.phase,
            Phase::Poll | Phase::Answering | Phase::Subscribing(_)
        );
        if waiting && rest.len() >= http::MAX_HEAD_BYTES && !self.has(flag::PAUSED) {
            // Pipelined input behind a held poll: leave the rest in the kernel for now. (A
            // partial head is bounded by the parser's 431.)
            self.set(flag::PAUSED, true);
            cx.act(Action::PauseReading);
        }
        self.pending = Some(Box::new(rest.to_vec()));
    }

    /// Feeds `data` to the current phase; returns how much was used. What is not used waits
    /// for more input or for the phase to change.
    fn consume(&mut self, cx: &mut Ctx, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            let step = match self.phase {
                Phase::Head => self.read_head(cx, rest),
                Phase::Body(_) => self.read_body(cx, rest),
                Phase::Ws(_) => self.read_ws(cx, rest),
                // Clients of these have nothing (more) to say; reading only notices them leave.
                Phase::Sse | Phase::Stream | Phase::Closing | Phase::Lingering | Phase::Closed => {
                    rest.len()
                }
                // A pipelined request waits its turn.
                Phase::Poll | Phase::Answering | Phase::Subscribing(_) => 0,
            };
            if step == 0 {
                break;
            }
            used += step;
        }
        used
    }

    /// The peer sent FIN.
    pub fn on_eof(&mut self, cx: &mut Ctx) {
        self.set(flag::PEER_EOF, true);
        match self.phase {
            // A client that half-closed after its requests still gets the answers.
            Phase::Head if self.has(flag::WRITING) => self.closing(cx),
            Phase::Closing | Phase::Answering => {}
            _ => self.close(cx),
        }
    }

    // ---- requests --------------------------------------------------------------------------

    fn read_head(&mut self, cx: &mut Ctx, data: &[u8]) -> usize {
        match http::parse_request_head(data) {
            Ok(None) => {
                if !self.has(flag::STARTED) {
                    self.set(flag::STARTED, true);
                    self.deadline = cx.after(cx.cfg.header_timeout_ms);
                }
                0
            }
            Ok(Some((head, n))) => {
                self.dispatch(cx, &head);
                n
            }
            Err(e) => {
                self.fail(cx, e.status());
                data.len()
            }
        }
    }

    fn dispatch(&mut self, cx: &mut Ctx, head: &RequestHead) {
        let route = route::route(head);
        self.set(flag::HEAD, head.method == "HEAD");
        let keep_alive = head.keep_alive && !self.has(flag::STOPPING | flag::PEER_EOF);
        let mut early = Vec::new();
        let start = route::start(head, &route, cx.cfg.max_echo_body, &mut early);
        if start == Start::TooLarge {
            return self.fail(cx, 413);
        }
        self.write(cx, early);
        match start {
            Start::Body { framing, max } => {
                self.set(flag::KEEP_ALIVE, keep_alive);
                self.phase = Phase::Body(Box::new(Body {
                    route,
                    decoder: BodyDecoder::new(framing, max),
                    collected: Vec::new(),
                }));
                self.deadline = cx.after(cx.cfg.idle_timeout_ms);
            }
            _ => self.answer(cx, route, keep_alive, Vec::new()),
        }
    }

    fn read_body(&mut self, cx: &mut Ctx, data: &[u8]) -> usize {
        let Phase::Body(body) = &mut self.phase else {
            return 0;
        };
        let echo = match body.route {
            Route::Echo { chunked } => Some(chunked),
            _ => None,
        };
        let mut decoded = Vec::new();
        let sink = if body.route == Route::Publish {
            &mut body.collected
        } else {
            &mut decoded
        };
        let used = match body.decoder.decode(data, sink) {
            Ok(n) => n,
            // An echo already sent its head: the status can no longer change.
            Err(_) if echo.is_some() => {
                self.close(cx);
                return data.len();
            }
            Err(e) => {
                self.fail(cx, e.status());
                return data.len();
            }
        };
        let done = body.decoder.is_done();
        if let (Some(chunked), false) = (echo, decoded.is_empty()) {
            let mut framed = Vec::with_capacity(decoded.len() + 16);
            reply::echo_data(&mut framed, &decoded, chunked);
            self.write(cx, framed);
        }
        if done {
            if let Phase::Body(body) = std::mem::replace(&mut self.phase, Phase::Head) {
                let Body {
                    route, collected, ..
                } = *body;
                let keep_alive = self.has(flag::KEEP_ALIVE);
                self.answer(cx, route, keep_alive, collected);
            }
        } else {
            self.deadline = cx.after(cx.cfg.idle_timeout_ms);
        }
        used
    }

    /// Answers a complete request.
    fn answer(&mut self, cx: &mut Ctx, route: Route, mut keep_alive: bool, body: Vec<u8>) {
        let mut out = Vec::new();
        self.set(flag::KEEP_ALIVE, keep_alive);
        let head_only = self.has(flag::HEAD);
        match route {
            // A HEAD gets a streaming route's head, and the connection goes on.
            Route::Sse { .. } if head_only => reply::sse_head(&mut out, keep_alive),
            Route::Stream { chunked } if head_only => {
                reply::stream_head(&mut out, chunked);
                keep_alive &= chunked;
            }
            Route::Poll { .. } if head_only => reply::poll_head(&mut out, keep_alive),
            Route::Probe => reply::probe(&mut out, keep_alive),
            Route::Error { status, headers } => reply::error(&mut out, status, headers, keep_alive),
            Route::Echo { chunked } => {
                let keep_alive = reply::echo_end(&mut out, keep_alive, chunked);
                self.write(cx, out);
                return self.request_done(cx, keep_alive);
            }
            Route::Stats => return self.ask(cx, Action::Stats),
            Route::Publish => match String::from_utf8(body) {
                Ok(text) => return self.ask(cx, Action::Publish(text)),
                Err(_) => reply::error(&mut out, 400, &[], keep_alive),
            },
            Route::Sse { last_event_id } => {
                reply::sse_head(&mut out, false);
                return self.subscribe(cx, Kind::Sse, last_event_id, out, true);
            }
            Route::Stream { chunked } => {
                self.set(flag::CHUNKED, chunked);
                reply::stream_head(&mut out, chunked);
                return self.subscribe(cx, Kind::Stream, None, out, true);
            }
            Route::WebSocket { accept } => {
                reply::ws_accept(&mut out, &accept);
                return self.subscribe(cx, Kind::Ws, None, out, true);
            }
            Route::Poll { after, wait } => return self.subscribe(cx, Kind::Poll, after, out, wait),
        }
        if head_only {
            reply::strip_body(&mut out);
        }
        self.write(cx, out);
        self.request_done(cx, keep_alive);
    }

    fn ask(&mut self, cx: &mut Ctx, action: Action) {
        // The deadline stays as it is (it is ignored while answering): a model's timer keeps
        // its entry instead of making a new one when the next deadline is set.
        self.phase = Phase::Answering;
        cx.act(action);
    }

    /// The model published the message: `seq`, and how many subscribers it reached.
    pub fn published(&mut self, cx: &mut Ctx, seq: u64, subscribers: u64) {
        if matches!(self.phase, Phase::Answering) {
            let keep_alive = self.keep_alive();
            let mut out = Vec::new();
            reply::published(&mut out, seq, subscribers, keep_alive);
            self.finish_answer(cx, out, keep_alive);
        }
    }

    /// The model assembled the `/stats` document.
    pub fn stats(&mut self, cx: &mut Ctx, json: &[u8]) {
        if matches!(self.phase, Phase::Answering) {
            let keep_alive = self.keep_alive();
            let mut out = Vec::new();
            reply::stats(&mut out, json, keep_alive);
            if self.has(flag::HEAD) {
                reply::strip_body(&mut out);
            }
            self.finish_answer(cx, out, keep_alive);
        }
    }

    fn finish_answer(&mut self, cx: &mut Ctx, out: Vec<u8>, keep_alive: bool) {
        self.write(cx, out);
        self.request_done(cx, keep_alive);
        self.process_pending(cx);
    }

    /// Whether the request being answered keeps the connection, as things stand now.
    fn keep_alive(&self) -> bool {
        self.has(flag::KEEP_ALIVE) && !self.has(flag::STOPPING | flag::PEER_EOF)
    }

    /// After a complete answer: wait for the next request, or close.
    fn request_done(&mut self, cx: &mut Ctx, keep_alive: bool) {
        if keep_alive && !self.has(flag::STOPPING | flag::PEER_EOF) {
            self.phase = Phase::Head;
            self.set(flag::STARTED, false);
            self.deadline = cx.after(cx.cfg.idle_timeout_ms);
        } else {
            self.closing(cx);
        }
    }

    /// Answers `status` and closes: the input can no longer be trusted to be in step.
    fn fail(&mut self, cx: &mut Ctx, status: u16) {
        self.leave_list(cx);
        let mut out = Vec::new();
        reply::error(&mut out, status, &[], false);
        self.write(cx, out);
        self.closing(cx);
    }

    // ---- subscribers -----------------------------------------------------------------------

    fn subscribe(
        &mut self,
        cx: &mut Ctx,
        kind: Kind,
        after: Option<u64>,
        head: Vec<u8>,
        wait: bool,
    ) {
        // The deadline stays, as in `ask`.
        self.phase = Phase::Subscribing(Box::new(Subscribing { kind, head, wait }));
        cx.act(Action::Subscribe { kind, after });
    }

    /// The model put the connection on its list; it starts after event `from`, and `replay`
    /// holds the retained events after that (the model may also deliver them later).
    pub fn subscribed<'a>(
        &mut self,
        cx: &mut Ctx,
        from: u64,
        replay: impl IntoIterator<Item = &'a Arc<Event>>,
    ) {
        let Phase::Subscribing(s) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return;
        };
        let Subscribing { kind, head, wait } = *s;
        self.write(cx, head);
        self.delivered = from;
        let (phase, deadline) = match kind {
            Kind::Sse => (Phase::Sse, 0),
            Kind::Stream => (Phase::Stream, 0),
            Kind::Ws => (Phase::Ws(None), cx.after(cx.cfg.idle_timeout_ms)),
            Kind::Poll => (Phase::Poll, cx.after(cx.cfg.poll_timeout_ms)),
        };
        self.phase = phase;
        self.deadline = deadline;
        self.on_events(cx, replay);
        if !wait && matches!(self.phase, Phase::Poll) {
            return self.end_poll(cx, b"[]");
        }
        // Frames may have come with the upgrade request.
        self.process_pending(cx);
    }

    /// The model could not serve the subscription (no thread to write with): `503`.
    pub fn refused(&mut self, cx: &mut Ctx) {
        if matches!(self.phase, Phase::Subscribing(_)) {
            self.phase = Phase::Head;
            self.fail(cx, 503);
        }
    }

    /// Broadcast events; those this subscriber already has are skipped.
    pub fn on_events<'a>(
        &mut self,
        cx: &mut Ctx,
        events: impl IntoIterator<Item = &'a Arc<Event>>,
    ) {
        let encoding = match self.phase {
            Phase::Sse => Encoding::Sse,
            Phase::Stream => Encoding::stream(self.has(flag::CHUNKED)),
            Phase::Ws(_) => Encoding::Ws,
            Phase::Poll => return self.answer_poll(cx, events),
            _ => return,
        };
        for event in events {
            if event.seq > self.delivered {
                if encoding == Encoding::Sse && event.seq > self.delivered + 1 {
                    // A replay from further back than the history goes: say what is missing.
                    let gap = format!(
                        ": events {} to {} are no longer retained\n\n",
                        self.delivered + 1,
                        event.seq - 1
                    );
                    self.write(cx, gap.into_bytes());
                }
                self.delivered = event.seq;
                self.set(flag::WRITING, true);
                cx.act(Action::Write(Piece::Shared(Arc::clone(event), encoding)));
            }
        }
    }

    /// A long poll is answered by the first events after its point, all of them at once.
    fn answer_poll<'a>(&mut self, cx: &mut Ctx, events: impl IntoIterator<Item = &'a Arc<Event>>) {
        let after = self.delivered;
        let mut newer = events.into_iter().filter(|e| e.seq > after).peekable();
        if newer.peek().is_none() {
            return;
        }
        let body = hub::poll_body(newer);
        self.end_poll(cx, &body);
    }

    fn end_poll(&mut self, cx: &mut Ctx, body: &[u8]) {
        self.leave_list(cx);
        let keep_alive = self.keep_alive();
        let mut out = Vec::new();
        reply::poll(&mut out, body, keep_alive);
        self.finish_answer(cx, out, keep_alive);
    }

    /// A heartbeat interval passed without a broadcast.
    pub fn on_heartbeat(&mut self, cx: &mut Ctx) {
        if let Some(bytes) = self.subscription().and_then(Kind::heartbeat) {
            self.set(flag::WRITING, true);
            cx.act(Action::Write(Piece::Static(bytes)));
        }
    }

    fn leave_list(&mut self, cx: &mut Ctx) {
        if let Some(kind) = self.subscription() {
            cx.act(Action::Unsubscribe(kind));
        }
    }

    // ---- WebSocket -------------------------------------------------------------------------

    fn read_ws(&mut self, cx: &mut Ctx, data: &[u8]) -> usize {
        let Phase::Ws(slot) = &mut self.phase else {
            return 0;
        };
        let decoder = slot.get_or_insert_with(|| {
            Box::new(ws::Decoder::new(ws::Role::Server, cx.cfg.max_message))
        });
        // Every answer to this batch of input goes into one buffer.
        let mut answers = Vec::new();
        let mut used = 0;
        let mut closing = false;
        while used < data.len() {
            match reply::ws_step(decoder, &data[used..], &mut answers) {
                WsStep::Partial(n) => {
                    used += n;
                    break;
                }
                WsStep::Answered(n) => used += n,
                WsStep::Closing => {
                    closing = true;
                    break;
                }
            }
        }
        if decoder.is_idle() {
            *slot = None;
        }
        self.write(cx, answers);
        if closing {
            self.leave_list(cx);
            self.closing(cx);
            return data.len();
        }
        self.deadline = cx.after(cx.cfg.idle_timeout_ms);
        used
    }

    fn ws_goodbye(&mut self, cx: &mut Ctx, reason: &str) {
        self.leave_list(cx);
        let mut out = Vec::new();
        ws::encode_close(&mut out, ws::close_code::GOING_AWAY, reason, None);
        self.write(cx, out);
        self.closing(cx);
    }

    // ---- time ------------------------------------------------------------------------------

    /// The deadline passed (the model calls this once `now >= deadline()`).
    pub fn on_deadline(&mut self, cx: &mut Ctx) {
        if self.deadline == 0 || cx.now < self.deadline {
            return;
        }
        self.deadline = 0;
        match &self.phase {
            // A silent new connection, or an idle keep-alive one.
            Phase::Head if !self.has(flag::STARTED) => self.close(cx),
            // An echo's head is out: its status can no longer become 408.
            Phase::Body(body) if matches!(body.route, Route::Echo { .. }) => self.close(cx),
            Phase::Head | Phase::Body(_) => self.fail(cx, 408),
            // Anything newer would have answered it already.
            Phase::Poll => self.end_poll(cx, b"[]"),
            Phase::Ws(_) => self.ws_goodbye(cx, "idle timeout"),
            Phase::Closing | Phase::Lingering => self.close(cx),
            Phase::Answering | Phase::Subscribing(_) | Phase::Sse | Phase::Stream => {}
            Phase::Closed => {}
        }
    }

    // ---- writing and closing ---------------------------------------------------------------

    fn write(&mut self, cx: &mut Ctx, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.set(flag::WRITING, true);
            cx.act(Action::Write(Piece::Owned(bytes)));
        }
    }

    /// The model's write queue backed up: `queued` bytes wait. Past the high-water mark reading
    /// pauses (a client that sends faster than it reads is slowed, not buffered for); past the
    /// bound a subscriber is cut off (a client that stopped reading does not grow memory).
    pub fn on_write_queue(&mut self, cx: &mut Ctx, queued: usize) {
        if queued > cx.cfg.max_write_queue && self.subscription().is_some() {
            self.close(cx);
        } else if queued > cx.cfg.echo_high_water() && !self.has(flag::PAUSED) {
            self.set(flag::PAUSED, true);
            cx.act(Action::PauseReading);
        }
    }

    /// Everything the session handed out is written.
    pub fn on_drained(&mut self, cx: &mut Ctx) {
        self.set(flag::WRITING, false);
        match self.phase {
            Phase::Closing if self.has(flag::PEER_EOF) => self.close(cx),
            Phase::Closing => {
                // Our FIN goes out; the peer reads the answer, then closes its side. Closing
                // with its input unread would send an RST that can destroy the answer.
                self.phase = Phase::Lingering;
                self.deadline = cx.after(LINGER_MS);
                cx.act(Action::ShutWrite);
            }
            Phase::Closed | Phase::Lingering => {}
            _ => {
                if self.has(flag::PAUSED) && self.buffered() < http::MAX_HEAD_BYTES {
                    self.set(flag::PAUSED, false);
                    cx.act(Action::ResumeReading);
                }
            }
        }
    }

    /// The last bytes are handed out: write them, then shut the write side and linger.
    fn closing(&mut self, cx: &mut Ctx) {
        self.pending = None;
        self.phase = Phase::Closing;
        self.deadline = cx.after(LINGER_MS);
        if !self.has(flag::WRITING) {
            self.on_drained(cx);
        }
    }

    /// Closes at once.
    fn close(&mut self, cx: &mut Ctx) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.leave_list(cx);
        self.phase = Phase::Closed;
        self.pending = None;
        self.deadline = 0;
        cx.act(Action::Close);
    }

    /// The server is stopping: every connection says goodbye the way its route ends (close
    /// 1001, the last chunk, `[]`), a request being answered is answered, then it closes.
    pub fn on_shutdown(&mut self, cx: &mut Ctx) {
        self.set(flag::STOPPING, true);
        match self.phase {
            Phase::Ws(_) => self.ws_goodbye(cx, "server shutting down"),
            Phase::Stream => {
                self.leave_list(cx);
                if self.has(flag::CHUNKED) {
                    self.set(flag::WRITING, true);
                    cx.act(Action::Write(Piece::Static(http::LAST_CHUNK)));
                }
                self.closing(cx);
            }
            Phase::Sse => {
                self.leave_list(cx);
                self.closing(cx);
            }
            Phase::Poll => self.end_poll(cx, b"[]"),
            Phase::Head if self.has(flag::WRITING) => self.closing(cx),
            Phase::Head | Phase::Body(_) => self.close(cx),
            Phase::Answering | Phase::Subscribing(_) => {}
            Phase::Closing | Phase::Lingering | Phase::Closed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The session driven by scripts of bytes and clock steps, against a fake model that
    //! answers what the session asks for from a real hub and writes everything at once (unless
    //! told to hold). Each case compares the exact transcript: the bytes written, with the other
    //! actions shown in angle brackets where they happened.

    use super::*;
    use crate::app::hub::Hub;
    use crate::proto::ws::OpCode;
    use proptest::prelude::*;

    const HEADER_MS: u64 = 100;
    const IDLE_MS: u64 = 1_000;
    const POLL_MS: u64 = 500;
    const SENT_NS: u64 = 7;

    fn config() -> ServerConfig {
        ServerConfig {
            header_timeout_ms: HEADER_MS,
            idle_timeout_ms: IDLE_MS,
            poll_timeout_ms: POLL_MS,
            max_write_queue: 1000,
            max_echo_body: 100,
            ..ServerConfig::default()
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        In(Vec<u8>),
        Eof,
        /// Let this many milliseconds pass, then fire the deadline if it is due.
        Wait(u64),
        /// Publish a tick and deliver what the session has not had.
        Tick,
        Heartbeat,
        Shutdown,
        /// The write queue holds this many bytes.
        Backlog(usize),
        /// The socket stops taking bytes (no `on_drained` until `Drain`).
        Hold,
        Drain,
        /// The model cannot serve the subscription it is asked for.
        Refuse,
        /// The session's deadline is this many milliseconds from now (0: none).
        Deadline(u64),
    }
    use Step::*;

    fn input(s: &str) -> Step {
        In(s.as_bytes().to_vec())
    }

    struct Fake {
        cfg: ServerConfig,
        hub: Hub,
        now: u64,
        session: Session,
        transcript: Vec<u8>,
        holding: bool,
        refuse: bool,
    }

    impl Fake {
        fn new() -> Fake {
            let cfg = config();
            Fake {
                session: Session::new(&cfg, 0),
                cfg,
                hub: Hub::new(8, usize::MAX),
                now: 0,
                transcript: Vec::new(),
                holding: false,
                refuse: false,
            }
        }

        fn call(&mut self, f: impl FnOnce(&mut Session, &mut Ctx, &Hub)) {
            let mut actions = Vec::new();
            let mut cx = Ctx {
                cfg: &self.cfg,
                now: self.now,
                actions: &mut actions,
            };
            f(&mut self.session, &mut cx, &self.hub);
            for action in actions {
                self.perform(action);
            }
        }

        fn perform(&mut self, action: Action) {
            let note = |t: &mut Vec<u8>, s: &str| t.extend_from_slice(format!("<{s}>").as_bytes());
            match action {
                Action::Write(piece) => self.transcript.extend_from_slice(piece.bytes()),
                Action::Subscribe { kind, after } => {
                    note(
                        &mut self.transcript,
                        &format!("subscribe {kind:?} {after:?}"),
                    );
                    if self.refuse {
                        return self.call(|s, cx, _| s.refused(cx));
                    }
                    let from = self.hub.resume_point(after);
                    self.call(|s, cx, hub| s.subscribed(cx, from, hub.since(from)));
                }
                Action::Unsubscribe(kind) => {
                    note(&mut self.transcript, &format!("unsubscribe {kind:?}"))
                }
                Action::Publish(text) => {
                    note(&mut self.transcript, &format!("publish {text:?}"));
                    let seq = self.hub.publish_message(&text, SENT_NS).seq;
                    self.call(|s, cx, _| s.published(cx, seq, 3));
                }
                Action::Stats => self.call(|s, cx, _| s.stats(cx, b"{}")),
                Action::PauseReading => note(&mut self.transcript, "pause"),
                Action::ResumeReading => note(&mut self.transcript, "resume"),
                Action::ShutWrite => note(&mut self.transcript, "shut-write"),
                Action::Close => note(&mut self.transcript, "close"),
            }
        }

        fn run(&mut self, step: Step) {
            match step {
                In(bytes) => self.call(|s, cx, _| s.on_input(cx, &bytes)),
                Eof => self.call(|s, cx, _| s.on_eof(cx)),
                Wait(ms) => {
                    self.now += ms;
                    let due = self.session.deadline();
                    if due != 0 && self.now >= due {
                        self.call(|s, cx, _| s.on_deadline(cx));
                    }
                }
                Tick => {
                    self.hub.publish_tick(SENT_NS);
                    let from = self.session.delivered();
                    self.call(|s, cx, hub| s.on_events(cx, hub.since(from)));
                }
                Heartbeat => self.call(|s, cx, _| s.on_heartbeat(cx)),
                Shutdown => self.call(|s, cx, _| s.on_shutdown(cx)),
                Backlog(n) => self.call(|s, cx, _| s.on_write_queue(cx, n)),
                Hold => self.holding = true,
                Drain => self.holding = false,
                Refuse => self.refuse = true,
                Deadline(ms) => {
                    let want = if ms == 0 { 0 } else { self.now + ms };
                    assert_eq!(self.session.deadline(), want, "deadline at {}", self.now);
                }
            }
            // A socket that takes everything at once.
            while !self.holding && self.session.is_writing() {
                self.call(|s, cx, _| s.on_drained(cx));
            }
        }
    }

    fn transcript(script: &[Step]) -> Vec<u8> {
        let mut fake = Fake::new();
        for step in script {
            fake.run(step.clone());
        }
        fake.transcript
    }

    fn check(name: &str, script: &[Step], want: &[u8]) {
        let got = transcript(script);
        assert!(
            got == want,
            "{name}\n got: {}\nwant: {}",
            String::from_utf8_lossy(&got).escape_debug(),
            String::from_utf8_lossy(want).escape_debug()
        );
    }

    fn response(status: &str, ctype: &str, body: &str, keep_alive: bool, extra: &str) -> String {
        let close = if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{close}{extra}\r\n{body}",
            body.len()
        )
    }

    fn ok(keep_alive: bool) -> String {
        response("200 OK", "text/plain", "ok\n", keep_alive, "")
    }

    fn error(status: &str, keep_alive: bool, extra: &str) -> String {
        let reason = status.split_once(' ').map_or("", |(_, r)| r);
        response(
            status,
            "text/plain",
            &format!("{reason}\n"),
            keep_alive,
            extra,
        )
    }

    fn tick_json(seq: u64) -> String {
        format!("{{\"seq\":{seq},\"event\":\"tick\",\"sent_ns\":{SENT_NS}}}")
    }

    fn poll_answer(body: &str, keep_alive: bool) -> String {
        response(
            "200 OK",
            "application/json",
            body,
            keep_alive,
            "Cache-Control: no-cache\r\n",
        )
    }

    const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n";
    const WS_UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    const WS_ACCEPT: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

    fn masked(op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        ws::encode_frame(&mut f, op, payload, Some([1, 2, 3, 4]));
        f
    }

    fn frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        ws::encode_frame(&mut f, op, payload, None);
        f
    }

    fn close_frame(code: u16, reason: &str) -> Vec<u8> {
        let mut f = Vec::new();
        ws::encode_close(&mut f, code, reason, None);
        f
    }

    #[test]
    fn http_requests() {
        let cases: Vec<(&str, Vec<Step>, String)> = vec![
            (
                "a probe keeps an HTTP/1.1 connection, with the idle timeout",
                vec![input(GET), Deadline(IDLE_MS)],
                ok(true),
            ),
            (
                "HTTP/1.0 closes after the answer, lingering for the FIN",
                vec![input("GET / HTTP/1.0\r\n\r\n"), Deadline(LINGER_MS), Eof],
                format!("{}<shut-write><close>", ok(false)),
            ),
            (
                "HTTP/1.0 with keep-alive stays",
                vec![input("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")],
                response("200 OK", "text/plain", "ok\n", true, ""),
            ),
            (
                "Connection: close closes",
                vec![input(
                    "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                )],
                format!("{}<shut-write>", ok(false)),
            ),
            (
                "pipelined requests are answered in order",
                vec![input(&format!(
                    "{GET}GET /nope HTTP/1.1\r\nHost: a\r\n\r\n{GET}"
                ))],
                format!(
                    "{}{}{}",
                    ok(true),
                    error("404 Not Found", true, ""),
                    ok(true)
                ),
            ),
            (
                "a known path with the wrong method is 405 with Allow",
                vec![input(
                    "POST /sse HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                )],
                error("405 Method Not Allowed", true, "Allow: GET, HEAD\r\n"),
            ),
            (
                "a malformed head is 400, and what follows is ignored",
                vec![input("GET / HTTP/1.1\r\nHost a\r\n\r\n"), input(GET)],
                format!("{}<shut-write>", error("400 Bad Request", false, "")),
            ),
            (
                "HTTP/2.0 is 505",
                vec![input("GET / HTTP/2.0\r\nHost: a\r\n\r\n")],
                format!(
                    "{}<shut-write>",
                    error("505 HTTP Version Not Supported", false, "")
                ),
            ),
            (
                "a head over 16 KiB is 431",
                vec![input(&format!(
                    "GET / HTTP/1.1\r\nX: {}\r\n",
                    "a".repeat(17 * 1024)
                ))],
                format!(
                    "{}<shut-write>",
                    error("431 Request Header Fields Too Large", false, "")
                ),
            ),
            (
                "a client that half-closes after its requests still gets the answers",
                vec![Hold, input(GET), Eof, Drain],
                format!("{}<close>", ok(true)),
            ),
            (
                "end of input on an idle connection closes",
                vec![input(GET), Eof],
                format!("{}<close>", ok(true)),
            ),
            (
                "HEAD is GET's head: its length, no content",
                vec![input("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"), input(GET)],
                format!("{}{}", ok(true).trim_end_matches("ok\n"), ok(true)),
            ),
            (
                "HEAD /sse is the head alone, and the connection goes on",
                vec![input(&format!("HEAD /sse HTTP/1.1\r\nHost: a\r\n\r\n{GET}"))],
                format!("{}{}", SSE_HEAD.replace("Connection: close\r\n", ""), ok(true)),
            ),
            (
                "HEAD /poll is not held",
                vec![input("HEAD /poll HTTP/1.1\r\nHost: a\r\n\r\n"), Deadline(IDLE_MS)],
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache\r\n\r\n".into(),
            ),
            (
                "HEAD /ws is not an upgrade",
                vec![input(&WS_UPGRADE.replacen("GET", "HEAD", 1))],
                error("426 Upgrade Required", true, "Upgrade: websocket\r\nConnection: Upgrade\r\n")
                    .replace("Upgrade Required\n", ""),
            ),
            (
                "HEAD /stats: the document's head",
                vec![input("HEAD /stats HTTP/1.1\r\nHost: a\r\n\r\n")],
                response("200 OK", "application/json", "{}", true, "Cache-Control: no-cache\r\n")
                    .replace("{}", ""),
            ),
            (
                "stats are asked for and answered",
                vec![input("GET /stats HTTP/1.1\r\nHost: a\r\n\r\n")],
                response(
                    "200 OK",
                    "application/json",
                    "{}",
                    true,
                    "Cache-Control: no-cache\r\n",
                ),
            ),
        ];
        for (name, script, want) in cases {
            check(name, &script, want.as_bytes());
        }
    }

    #[test]
    fn timeouts() {
        let cases: Vec<(&str, Vec<Step>, String)> = vec![
            (
                "a silent new connection is closed without an answer",
                vec![Deadline(HEADER_MS), Wait(HEADER_MS - 1), Wait(1)],
                "<close>".into(),
            ),
            (
                "the header timeout runs from the first byte: 408",
                vec![
                    Wait(60),
                    input("GET / HT"),
                    Deadline(HEADER_MS),
                    Wait(HEADER_MS - 1),
                    Wait(1),
                ],
                format!("{}<shut-write>", error("408 Request Timeout", false, "")),
            ),
            (
                "an idle keep-alive connection is closed without an answer",
                vec![input(GET), Wait(IDLE_MS)],
                format!("{}<close>", ok(true)),
            ),
            (
                "a body that stops arriving is 408",
                vec![
                    input("POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe"),
                    Deadline(IDLE_MS),
                    Wait(IDLE_MS),
                ],
                format!("{}<shut-write>", error("408 Request Timeout", false, "")),
            ),
            (
                "an echo that stops arriving is cut: its 200 is out already",
                vec![
                    input("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe"),
                    Wait(IDLE_MS),
                ],
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n<close>".into(),
            ),
            (
                "lingering ends at the linger time",
                vec![input("GET / HTTP/1.0\r\n\r\n"), Wait(LINGER_MS)],
                format!("{}<shut-write><close>", ok(false)),
            ),
        ];
        for (name, script, want) in cases {
            check(name, &script, want.as_bytes());
        }
    }

    #[test]
    fn bodies() {
        let echo_head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        let published = |seq: u64| {
            response(
                "200 OK",
                "application/json",
                &format!("{{\"seq\":{seq},\"subscribers\":3}}"),
                true,
                "",
            )
        };
        let cases: Vec<(&str, Vec<Step>, String)> = vec![
            (
                "413 before any 100 Continue",
                vec![input("POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\nExpect: 100-continue\r\n\r\n")],
                format!("{}<shut-write>", error("413 Content Too Large", false, "")),
            ),
            (
                "100 Continue, then the body is published",
                vec![
                    input("POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"),
                    input("hello"),
                ],
                format!("HTTP/1.1 100 Continue\r\n\r\n<publish \"hello\">{}", published(1)),
            ),
            (
                "a chunked body with extensions and trailers",
                vec![input("POST /publish HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")],
                format!("<publish \"hello\">{}", published(1)),
            ),
            (
                "a request pipelined behind a publish waits for its answer",
                vec![input(&format!("POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi{GET}"))],
                format!("<publish \"hi\">{}{}", published(1), ok(true)),
            ),
            (
                "a publish body that is not UTF-8 is 400",
                vec![In(b"POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n\xff\xfe".to_vec())],
                error("400 Bad Request", true, ""),
            ),
            (
                "the echo answers while the body still arrives, then ends with the last chunk",
                vec![
                    input("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
                    input("2\r\nde\r\n0\r\n\r\n"),
                    input(GET),
                ],
                format!("{echo_head}3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n{}", ok(true)),
            ),
            (
                "an HTTP/1.0 echo is delimited by the close",
                vec![input("POST /echo HTTP/1.0\r\nContent-Length: 3\r\n\r\nxyz")],
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\nxyz<shut-write>".into(),
            ),
            (
                "an echo past its limit is cut once its head is out",
                vec![input("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n")],
                format!("{echo_head}<close>"),
            ),
            (
                "reading pauses past the high-water mark and resumes when drained",
                vec![Hold, input("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab"), Backlog(600), Drain],
                format!("{echo_head}2\r\nab\r\n<pause><resume>"),
            ),
        ];
        for (name, script, want) in cases {
            check(name, &script, want.as_bytes());
        }
    }

    #[test]
    fn subscribers() {
        let stream_head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\n\r\n";
        let sse_event = |seq: u64| format!("id: {seq}\nevent: tick\ndata: {}\n\n", tick_json(seq));
        let line = |seq: u64| format!("{}\n", tick_json(seq));
        let chunk = |seq: u64| format!("{:x}\r\n{}\r\n", line(seq).len(), line(seq));
        let cases: Vec<(&str, Vec<Step>, String)> = vec![
            (
                "SSE: the head, events as they come, heartbeats; no deadline",
                vec![input("GET /sse HTTP/1.1\r\nHost: a\r\n\r\n"), Deadline(0), Tick, Heartbeat],
                format!("<subscribe Sse None>{SSE_HEAD}{}: hb\n\n", sse_event(1)),
            ),
            (
                "SSE: Last-Event-ID replays what came after it, then goes live",
                vec![Tick, Tick, Tick, input("GET /sse HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 1\r\n\r\n"), Tick],
                format!("<subscribe Sse Some(1)>{SSE_HEAD}{}{}{}", sse_event(2), sse_event(3), sse_event(4)),
            ),
            (
                "SSE: a replay from before the history says what is gone, then gives what is left",
                vec![Tick, Tick, Tick, Tick, Tick, Tick, Tick, Tick, Tick, Tick, input("GET /sse HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 0\r\n\r\n")],
                format!("<subscribe Sse Some(0)>{SSE_HEAD}: events 1 to 2 are no longer retained\n\n{}", (3..=10).map(sse_event).collect::<String>()),
            ),
            (
                "SSE on shutdown: off the list, FIN",
                vec![input("GET /sse HTTP/1.1\r\nHost: a\r\n\r\n"), Shutdown, Eof],
                format!("<subscribe Sse None>{SSE_HEAD}<unsubscribe Sse><shut-write><close>"),
            ),
            (
                "a subscriber whose queue passes the bound is cut off",
                vec![input("GET /sse HTTP/1.1\r\nHost: a\r\n\r\n"), Backlog(1001)],
                format!("<subscribe Sse None>{SSE_HEAD}<unsubscribe Sse><close>"),
            ),
            (
                "the chunked stream: one chunk per event, the last chunk on shutdown",
                vec![input("GET /stream HTTP/1.1\r\nHost: a\r\n\r\n"), Tick, Heartbeat, Shutdown],
                format!("<subscribe Stream None>{stream_head}{}<unsubscribe Stream>0\r\n\r\n<shut-write>", chunk(1)),
            ),
            (
                "an HTTP/1.0 stream: plain lines, nothing to end it but the close",
                vec![input("GET /stream HTTP/1.0\r\n\r\n"), Tick, Shutdown],
                format!("<subscribe Stream None>HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n{}<unsubscribe Stream><shut-write>", line(1)),
            ),
            (
                "a long poll is held, then answered by the next event; a pipelined request waits",
                vec![input(&format!("GET /poll HTTP/1.1\r\nHost: a\r\n\r\n{GET}")), Deadline(POLL_MS), Tick],
                format!("<subscribe Poll None><unsubscribe Poll>{}{}", poll_answer(&format!("[{}]", tick_json(1)), true), ok(true)),
            ),
            (
                "a long poll with retained events after its point is answered at once",
                vec![Tick, Tick, input("GET /poll?after=0 HTTP/1.1\r\nHost: a\r\n\r\n")],
                format!("<subscribe Poll Some(0)><unsubscribe Poll>{}", poll_answer(&format!("[{},{}]", tick_json(1), tick_json(2)), true)),
            ),
            (
                "a long poll times out with []",
                vec![input("GET /poll HTTP/1.1\r\nHost: a\r\n\r\n"), Wait(POLL_MS)],
                format!("<subscribe Poll None><unsubscribe Poll>{}", poll_answer("[]", true)),
            ),
            (
                "a held poll on shutdown gets [] and the connection closes",
                vec![input("GET /poll HTTP/1.1\r\nHost: a\r\n\r\n"), Shutdown],
                format!("<subscribe Poll None><unsubscribe Poll>{}<shut-write>", poll_answer("[]", false)),
            ),
            (
                "a client that leaves a held poll is closed",
                vec![input("GET /poll HTTP/1.1\r\nHost: a\r\n\r\n"), Eof],
                "<subscribe Poll None><unsubscribe Poll><close>".into(),
            ),
            (
                "an idle connection on shutdown closes; a busy one finishes its answer",
                vec![input(GET), Shutdown],
                format!("{}<close>", ok(true)),
            ),
        ];
        for (name, script, want) in cases {
            check(name, &script, want.as_bytes());
        }
    }

    #[test]
    fn websockets() {
        let up = || input(WS_UPGRADE);
        let sub = b"<subscribe Ws None>".as_slice();
        let accept = WS_ACCEPT.as_bytes();
        let unsub = b"<unsubscribe Ws>".as_slice();
        let tick = frame(OpCode::Text, tick_json(1).as_bytes());
        let binary = frame(OpCode::Binary, b"\x00\x01");
        let pong = frame(OpCode::Pong, b"p");
        let eager = frame(OpCode::Text, b"eager");
        let normal = close_frame(1000, "");
        let unmasked = close_frame(1002, "client frame not masked");
        let idle = close_frame(1001, "idle timeout");
        let stopping = close_frame(1001, "server shutting down");
        let refused = error("503 Service Unavailable", false, "");
        let v8 = error(
            "426 Upgrade Required",
            true,
            "Sec-WebSocket-Version: 13\r\n",
        );
        let cases: Vec<(&str, Vec<Step>, Vec<u8>)> = vec![
            (
                "the upgrade, then events as text frames and pings as heartbeats",
                vec![up(), Deadline(IDLE_MS), Tick, Heartbeat],
                [sub, accept, &tick, hub::WS_PING].concat(),
            ),
            (
                "frames in the same input as the upgrade are answered after it",
                vec![In(
                    [WS_UPGRADE.as_bytes(), &masked(OpCode::Text, b"eager")].concat()
                )],
                [sub, accept, &eager].concat(),
            ),
            (
                "messages are echoed, pings answered, and a close is echoed and ends it",
                vec![
                    up(),
                    In([
                        masked(OpCode::Binary, b"\x00\x01"),
                        masked(OpCode::Ping, b"p"),
                    ]
                    .concat()),
                    In(masked(OpCode::Close, &[0x03, 0xe8])),
                    Eof,
                ],
                [
                    sub,
                    accept,
                    &binary,
                    &pong,
                    &normal,
                    unsub,
                    b"<shut-write><close>",
                ]
                .concat(),
            ),
            (
                "an unmasked frame is a protocol error: 1002",
                vec![up(), In(frame(OpCode::Text, b"x"))],
                [sub, accept, &unmasked, unsub, b"<shut-write>"].concat(),
            ),
            (
                "a connection silent past the idle timeout gets 1001",
                vec![up(), Wait(IDLE_MS)],
                [sub, accept, unsub, &idle, b"<shut-write>"].concat(),
            ),
            (
                "shutdown says 1001",
                vec![up(), Shutdown],
                [sub, accept, unsub, &stopping, b"<shut-write>"].concat(),
            ),
            (
                "an upgrade the model cannot serve is 503",
                vec![Refuse, up()],
                [sub, refused.as_bytes(), b"<shut-write>"].concat(),
            ),
            (
                "an upgrade with version 8 is 426 naming 13",
                vec![input(&WS_UPGRADE.replace("Version: 13", "Version: 8"))],
                v8.into_bytes(),
            ),
        ];
        for (name, script, want) in cases {
            check(name, &script, &want);
        }
    }

    #[test]
    fn an_idle_session_is_small() {
        assert!(
            std::mem::size_of::<Session>() <= 48,
            "{}",
            std::mem::size_of::<Session>()
        );
        let mut fake = Fake::new();
        fake.run(input("GET /sse HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(fake.session.pending.is_none());
        fake.run(input(WS_UPGRADE));
        let mut fake = Fake::new();
        fake.run(input(WS_UPGRADE));
        fake.run(In(masked(OpCode::Text, b"partial")[..4].to_vec()));
        assert!(matches!(fake.session.phase, Phase::Ws(Some(_))));
        fake.run(In(masked(OpCode::Text, b"partial")[4..].to_vec()));
        assert!(
            matches!(fake.session.phase, Phase::Ws(None)),
            "the decoder is given back"
        );
    }

    /// Everything a client may send in one go, but an echo (whose chunks follow the reads).
    fn conversation() -> Vec<u8> {
        [
            GET.as_bytes(),
            b"POST /publish HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            b"GET /poll?after=0 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            WS_UPGRADE.as_bytes(),
            &masked(OpCode::Text, "héllo".as_bytes()),
            &masked(OpCode::Ping, b"!"),
            &masked(OpCode::Close, &[0x03, 0xe8, b'o', b'k']),
        ]
        .concat()
    }

    proptest! {
        #[test]
        fn any_split_of_the_input_gives_the_same_transcript(
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)
        ) {
            let input = conversation();
            let whole = transcript(&[In(input.clone())]);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len())).collect();
            at.sort_unstable();
            at.dedup();
            let mut script = Vec::new();
            let mut last = 0;
            for cut in at.into_iter().chain([input.len()]) {
                script.push(In(input[last..cut].to_vec()));
                last = cut;
            }
            prop_assert_eq!(transcript(&script), whole);
        }
    }
}
