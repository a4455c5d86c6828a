//! One connection's thread: the request loop with blocking reads and writes, run by a
//! connection thread (unbounded model) or a pool worker. It speaks through the same sans-IO
//! code as the evented server — `route::route`, `reply::*`, `http::parse_request_head`,
//! `BodyDecoder`, `ws::Decoder` — and follows the evented server's rules step by step, so both
//! answer byte for byte the same.
//!
//! Timeouts are socket timeouts: before each blocking `read()` the remaining time to the
//! current deadline (header, idle, body, linger) becomes the read timeout. Writes carry a write
//! timeout of `--idle-timeout-ms`, so a thread blocked on a client that stopped reading is freed.
//!
//! Long-lived routes keep the thread: it sleeps on its mailbox (see `broadcast`) and writes what
//! arrives. An SSE, stream or held-poll thread learns that its client left when a write fails
//! or, on each wake-up (an event, a heartbeat, or every `LIVENESS_MS` without either), from a
//! non-blocking read that finds end-of-file. A WebSocket gets a second thread that writes
//! (broadcasts, echoes, pongs, pings, the close frame) while this one reads frames, and so sees
//! its client leave at once.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use crate::app::config::LINGER_MS;
use crate::app::hub::Transport;
use crate::app::outq::OutQueue;
use crate::app::reply;
use crate::app::route::{self, Route, Start};
use crate::proto::http::{self, BodyDecoder, BodyFraming, RequestHead};
use crate::proto::ws;

use super::broadcast::{End, Item, Kind, PollStart, Subscriber};
use super::live::{Socket, Tracked};
use super::{millis, Shared};

/// Bytes read per `read()` call.
const READ_CHUNK: usize = 8 * 1024;
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
        shared: Arc::clone(shared),
        conn,
        inbuf: Vec::new(),
        out: Vec::new(),
    };
    c.serve();
}

struct Conn {
    shared: Arc<Shared>,
    conn: Tracked,
    /// Input read but not used yet (a partial head, pipelined requests, body bytes).
    inbuf: Vec<u8>,
    /// Bytes to write before the next blocking read or wait.
    out: Vec<u8>,
}

/// What follows a request.
enum Next {
    /// Wait for the next request.
    KeepAlive,
    /// Write what is pending, send FIN, linger for the client's FIN, close.
    Close,
    /// Close now (the client is gone, or the input can no longer be trusted).
    Drop,
}

/// What a blocking read brought.
enum Input {
    Data,
    /// End-of-file, reset, or another error.
    Closed,
    TimedOut,
}

impl Conn {
    fn sock(&self) -> &Arc<Socket> {
        &self.conn.sock
    }

    fn stream(&self) -> &TcpStream {
        &self.conn.sock.stream
    }

    /// The request loop.
    fn serve(&mut self) {
        let cfg = &self.shared.cfg;
        let (header_timeout, idle_timeout) = (cfg.header_timeout_ms, cfg.idle_timeout_ms);
        // A fresh connection's head must arrive within the header timeout; a head whose first
        // bytes came gets the header timeout from then; between requests the idle timeout runs.
        let mut started = false;
        let mut deadline = Instant::now() + millis(header_timeout);
        loop {
            let next = match http::parse_request_head(&self.inbuf) {
                Ok(Some((head, used))) => {
                    self.inbuf.drain(..used);
                    self.dispatch(head)
                }
                Ok(None) => {
                    if !started && !self.inbuf.is_empty() {
                        started = true;
                        deadline = Instant::now() + millis(header_timeout);
                    }
                    if self.inbuf.is_empty() {
                        // An idle connection owns no buffer.
                        self.inbuf = Vec::new();
                    }
                    self.sock().set_reading(true);
                    if self.shared.stop.is_set() {
                        return self.close_gracefully();
                    }
                    match self.read_more(deadline) {
                        Input::Data => continue,
                        Input::Closed => return,
                        Input::TimedOut if started => self.fail(408),
                        // A silent connection, or an idle keep-alive one.
                        Input::TimedOut => return,
                    }
                }
                Err(e) => self.fail(e.status()),
            };
            match next {
                Next::KeepAlive => {
                    started = false;
                    deadline = Instant::now() + millis(idle_timeout);
                }
                Next::Close => return self.close_gracefully(),
                Next::Drop => return,
            }
        }
    }

    /// Reads once (blocking until `deadline`) and appends to `inbuf`.
    fn read_more(&mut self, deadline: Instant) -> Input {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Input::TimedOut;
            }
            if self
                .stream()
                .set_read_timeout(Some(deadline - now))
                .is_err()
            {
                return Input::Closed;
            }
            match self.stream().read(&mut buf) {
                Ok(0) => return Input::Closed,
                Ok(n) => {
                    self.inbuf.extend_from_slice(&buf[..n]);
                    return Input::Data;
                }
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

    /// Writes what is pending.
    fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        self.stream().write_all(&out)
    }

    /// Writes what is pending, sends FIN, and reads (discarding) until the client's FIN or the
    /// linger time passes.
    fn close_gracefully(&mut self) {
        if self.flush().is_err() {
            return;
        }
        let _ = self.stream().shutdown(Shutdown::Write);
        self.linger();
    }

    fn linger(&mut self) {
        let deadline = Instant::now() + millis(LINGER_MS);
        self.inbuf = Vec::new();
        while let Input::Data = self.read_more(deadline) {
            self.inbuf.clear();
        }
    }

    /// Answers `status` and closes: the input can no longer be trusted to be in step.
    fn fail(&mut self, status: u16) -> Next {
        self.inbuf = Vec::new();
        reply::error(&mut self.out, status, &[], false);
        Next::Close
    }

    /// After a complete answer: write it, then keep the connection or close it.
    fn request_done(&mut self, keep_alive: bool) -> Next {
        if self.flush().is_err() {
            return Next::Drop;
        }
        if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    // ---- HTTP requests ---------------------------------------------------------------------

    fn dispatch(&mut self, head: RequestHead) -> Next {
        let route = route::route(&head);
        let keep_alive = head.keep_alive;
        let (framing, max) =
            match route::start(&head, &route, self.shared.cfg.max_echo_body, &mut self.out) {
                Start::TooLarge => return self.fail(413),
                Start::Answer => return self.act(route, keep_alive, Vec::new()),
                Start::Body { framing, max } => (framing, max),
            };
        match self.read_body(&route, framing, max) {
            Ok(body) => self.act(route, keep_alive, body),
            Err(next) => next,
        }
    }

    /// Reads a request body. `/echo` streams each decoded piece back as a chunk as it arrives;
    /// `/publish` collects it; other routes read and drop it.
    fn read_body(
        &mut self,
        route: &Route,
        framing: BodyFraming,
        max: u64,
    ) -> Result<Vec<u8>, Next> {
        let idle = millis(self.shared.cfg.idle_timeout_ms);
        let echo = match *route {
            Route::Echo { chunked } => Some(chunked),
            _ => None,
        };
        let mut decoder = BodyDecoder::new(framing, max);
        let mut body = Vec::new();
        let mut deadline = Instant::now() + idle;
        // `100 Continue` and the echo head go out before any of the body is looked at.
        if self.flush().is_err() {
            return Err(Next::Drop);
        }
        loop {
            if !self.inbuf.is_empty() {
                let mut decoded = Vec::new();
                let sink = if *route == Route::Publish {
                    &mut body
                } else {
                    &mut decoded
                };
                match decoder.decode(&self.inbuf, sink) {
                    Ok(used) => drop(self.inbuf.drain(..used)),
                    // An echo already sent its head: the status can no longer change.
                    Err(_) if echo.is_some() => return Err(Next::Drop),
                    Err(e) => return Err(self.fail(e.status())),
                }
                if let Some(chunked) = echo {
                    reply::echo_data(&mut self.out, &decoded, chunked);
                }
                if decoder.is_done() {
                    return Ok(body);
                }
                deadline = Instant::now() + idle;
            }
            if self.flush().is_err() {
                return Err(Next::Drop);
            }
            match self.read_more(deadline) {
                Input::Data => {}
                Input::Closed => return Err(Next::Drop),
                Input::TimedOut => return Err(self.fail(408)),
            }
        }
    }

    /// Answers a complete request.
    fn act(&mut self, route: Route, mut keep_alive: bool, body: Vec<u8>) -> Next {
        let shared = Arc::clone(&self.shared);
        match route {
            Route::Probe => reply::probe(&mut self.out, keep_alive),
            Route::Error { status, headers } => {
                reply::error(&mut self.out, status, headers, keep_alive)
            }
            Route::Stats => reply::stats(&mut self.out, &shared.stats().to_json(), keep_alive),
            Route::Echo { chunked } => {
                keep_alive = reply::echo_end(&mut self.out, keep_alive, chunked)
            }
            Route::Publish => match std::str::from_utf8(&body) {
                Ok(text) => {
                    let (seq, subscribers) = shared.bcast.publish_message(text);
                    reply::published(&mut self.out, seq, subscribers, keep_alive);
                }
                Err(_) => reply::error(&mut self.out, 400, &[], keep_alive),
            },
            Route::Sse { last_event_id } => {
                reply::sse_head(&mut self.out);
                return self.stream_events(Kind::Sse, Transport::Sse, last_event_id);
            }
            Route::Stream { chunked } => {
                reply::stream_head(&mut self.out, chunked);
                return self.stream_events(Kind::Stream, Transport::stream(chunked), None);
            }
            Route::WebSocket { accept } => return self.websocket(&accept),
            Route::Poll { after } => return self.poll(after, keep_alive),
        }
        self.request_done(keep_alive)
    }

    // ---- SSE and the chunked stream ----------------------------------------------------------

    /// Subscribes and writes events (and heartbeats) until the client leaves, is cut off, or the
    /// server shuts down. The response head (in `out`) goes out first, through the mailbox.
    fn stream_events(
        &mut self,
        kind: Kind,
        transport: Transport,
        replay_after: Option<u64>,
    ) -> Next {
        self.sock().set_reading(false);
        let shared = Arc::clone(&self.shared);
        let sub = Subscriber::framed(
            kind,
            transport,
            Arc::clone(self.sock()),
            std::mem::take(&mut self.out),
        );
        let subscription = shared.bcast.subscribe(&sub, replay_after);
        let end = loop {
            let taken = sub.take(Some(Instant::now() + millis(LIVENESS_MS)));
            if write_items(self.stream(), kind, transport, taken.items).is_err() {
                break None;
            }
            if taken.end.is_some() {
                break taken.end;
            }
            if peer_gone(self.stream(), true) {
                break None;
            }
        };
        drop(subscription);
        match end {
            Some(End::Shutdown) => {
                if transport == Transport::Chunk {
                    self.out.extend_from_slice(http::LAST_CHUNK);
                }
                Next::Close
            }
            _ => Next::Drop,
        }
    }

    // ---- long polling ------------------------------------------------------------------------

    fn poll(&mut self, after: Option<u64>, keep_alive: bool) -> Next {
        self.sock().set_reading(false);
        let shared = Arc::clone(&self.shared);
        let sub = Subscriber::new(Kind::Poll, Arc::clone(self.sock()), Vec::new());
        let held = match shared.bcast.start_poll(&sub, after) {
            PollStart::Ready(body) => {
                reply::poll(&mut self.out, &body, keep_alive);
                return self.request_done(keep_alive);
            }
            PollStart::Held(held) => held,
        };
        if self.flush().is_err() {
            return Next::Drop;
        }
        let until = Instant::now() + millis(shared.cfg.poll_timeout_ms);
        let mut taken = loop {
            let wake = until.min(Instant::now() + millis(LIVENESS_MS));
            let taken = sub.take(Some(wake));
            if !taken.items.is_empty() || taken.end.is_some() || Instant::now() >= until {
                break taken;
            }
            // A pipelined request stays where it is: only look.
            if peer_gone(self.stream(), false) {
                return Next::Drop;
            }
        };
        drop(held);
        // Events published between the wake-up and leaving the registry belong here too.
        let late = sub.take(Some(Instant::now()));
        taken.items.extend(late.items);
        let events: Vec<_> = taken
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        let body = crate::app::hub::poll_body(events.into_iter());
        match taken.end.or(late.end) {
            Some(End::Cut) => Next::Drop,
            Some(_) => {
                reply::poll(&mut self.out, &body, false);
                self.request_done(false)
            }
            None => {
                reply::poll(&mut self.out, &body, keep_alive);
                self.request_done(keep_alive)
            }
        }
    }

    // ---- WebSocket ---------------------------------------------------------------------------

    /// Upgrades, starts the writer thread, and reads frames until the connection ends.
    fn websocket(&mut self, accept: &str) -> Next {
        self.sock().set_reading(false);
        let shared = Arc::clone(&self.shared);
        let mut head = std::mem::take(&mut self.out);
        reply::ws_accept(&mut head, accept);
        let sub = Subscriber::new(Kind::Ws, Arc::clone(self.sock()), head);
        let writer = {
            let sub = Arc::clone(&sub);
            shared.spawn("ws-writer", move || write_ws(&sub))
        };
        let Ok(writer) = writer else {
            // No thread to write with: refuse the upgrade instead of half-serving it.
            shared.rejected();
            reply::error(&mut self.out, 503, &[], false);
            return Next::Close;
        };
        let subscription = shared.bcast.subscribe(&sub, None);
        self.read_ws(&sub);
        drop(subscription);
        // The writer may be blocked on a client that stopped reading: free it, then wait.
        let _ = self.stream().shutdown(Shutdown::Both);
        let _ = writer.join();
        Next::Drop
    }

    /// Reads frames: echoes messages, answers pings, completes the close handshake, and answers
    /// protocol errors with their close code. Everything to write goes through the mailbox.
    fn read_ws(&mut self, sub: &Subscriber) {
        let shared = Arc::clone(&self.shared);
        let idle = millis(shared.cfg.idle_timeout_ms);
        let max_message = shared.cfg.max_message;
        let mut deadline = Instant::now() + idle;
        // The reader waits while this many echoed bytes are not yet taken by the writer.
        let echo_high_water = shared.cfg.echo_high_water();
        // Exists only while a frame or fragmented message is partial.
        let mut decoder: Option<Box<ws::Decoder>> = None;
        loop {
            if !self.inbuf.is_empty() {
                let dec = decoder.get_or_insert_with(|| {
                    Box::new(ws::Decoder::new(ws::Role::Server, max_message))
                });
                let mut used = 0;
                let mut last = None;
                let mut ended = false;
                while used < self.inbuf.len() {
                    let mut frame = Vec::new();
                    let (n, answered) = reply::ws_step(dec, &self.inbuf[used..], &mut frame);
                    used += n;
                    let Some(closing) = answered else {
                        break;
                    };
                    if closing {
                        last = Some(frame);
                        break;
                    }
                    if !frame.is_empty() && !sub.push_own(frame, echo_high_water) {
                        ended = true;
                        break;
                    }
                }
                if let Some(frame) = last {
                    shared.bcast.unsubscribe(sub);
                    sub.finish(frame);
                    return self.linger();
                }
                if ended || sub.ended().is_some() {
                    // Shutdown (close 1001 is on its way) or cut off: only wait for the FIN.
                    return self.linger();
                }
                self.inbuf.drain(..used);
                if dec.is_idle() {
                    decoder = None;
                }
                deadline = Instant::now() + idle;
            }
            if self.inbuf.is_empty() {
                self.inbuf = Vec::new();
            }
            match self.read_more(deadline) {
                Input::Data => {}
                Input::Closed => {
                    shared.bcast.unsubscribe(sub);
                    sub.end(End::Cut);
                    return;
                }
                Input::TimedOut => {
                    shared.bcast.unsubscribe(sub);
                    let mut frame = Vec::new();
                    ws::encode_close(&mut frame, ws::close_code::GOING_AWAY, "idle timeout", None);
                    sub.finish(frame);
                    return self.linger();
                }
            }
        }
    }
}

/// The WebSocket writer thread: writes what the mailbox gets (broadcast frames, echoes, pongs,
/// pings) until the subscription ends; on shutdown its last frame is close 1001.
fn write_ws(sub: &Subscriber) {
    let stream = &sub.socket().stream;
    loop {
        let mut taken = sub.take(None);
        if taken.end == Some(End::Shutdown) {
            let mut frame = Vec::new();
            ws::encode_close(
                &mut frame,
                ws::close_code::GOING_AWAY,
                "server shutting down",
                None,
            );
            taken.items.push_back(Item::Bytes(frame));
        }
        if write_items(stream, Kind::Ws, Transport::Ws, taken.items).is_err() {
            // The reader is blocked in read(): wake it, it ends the connection.
            sub.end(End::Cut);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        match taken.end {
            None => {}
            Some(End::Cut) => return,
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
fn write_items(
    stream: &TcpStream,
    kind: Kind,
    transport: Transport,
    items: VecDeque<Item>,
) -> io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let mut q = OutQueue::default();
    for item in items {
        match item {
            Item::Event(e) => q.push_event(&e, transport),
            Item::Heartbeat => {
                if let Some(bytes) = kind.heartbeat() {
                    q.push_static(bytes);
                }
            }
            Item::Bytes(b) => q.push_owned(b),
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
    use std::net::TcpListener;

    #[test]
    fn departure_is_seen_without_blocking() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(!peer_gone(&server, true));
        client.write_all(b"chatter").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!peer_gone(&server, false));
        assert!(!peer_gone(&server, true));
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(peer_gone(&server, true));
    }
}
