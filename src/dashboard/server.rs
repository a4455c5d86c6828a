//! The dashboard's server: one thread, one `mio::Poll` loop in the evented model's design, that
//! serves the page and its event stream to browsers while an experiment runs. It lives in the
//! experiment's process, never in a server under test's, so it cannot disturb what is measured.
//!
//! The experiment publishes through a channel and a `Waker`; every message goes into the feed
//! once and onto every open stream. A browser that stops reading is cut off at a bound, and its
//! page resumes from its `Last-Event-ID` when it reconnects, so nothing is lost.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::feed::{self, Feed};
use crate::app::outq::OutQueue;
use crate::app::reply;
use crate::proto::http::{self, RequestHead};
use crate::proto::sse;
use crate::sys;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// The page, its script and its style, in one file.
const PAGE: &str = include_str!("page.html");
/// A dashboard has a few viewers; more than this are turned away.
const MAX_CLIENTS: usize = 64;
/// A browser that falls this far behind is cut off; it resumes when it reconnects.
const MAX_QUEUED: usize = 8 << 20;
/// The run's history kept for pages that open late.
const FEED_LIMIT: usize = 64 << 20;
/// A request head must arrive within this, and a kept-alive connection is closed after this idle.
const IDLE: Duration = Duration::from_secs(30);
/// A comment on every stream this often, so that a dead viewer is noticed.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often silent connections, heartbeats and a listener out of descriptors are looked at.
const SWEEP: Duration = Duration::from_secs(1);
/// How long the page's `EventSource` waits before reconnecting.
const RETRY_MS: u64 = 1000;

enum Msg {
    Publish { event: &'static str, data: String },
    Finish(Duration),
}

/// A running dashboard server. Dropping it stops it at once; `finish` lets the verdict show.
pub struct Dashboard {
    addr: SocketAddr,
    tx: Sender<Msg>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Dashboard {
    /// Binds `addr` (port 0 picks one) and serves from a thread of its own.
    pub fn start(addr: SocketAddr) -> io::Result<Dashboard> {
        let listener = sys::listen(addr, 128, false)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let (tx, rx) = mpsc::channel();
        let server = Server {
            poll,
            listener,
            rx,
            feed: Feed::new(FEED_LIMIT),
            clients: Slab::new(),
            ends_at: None,
            swept: Instant::now(),
        };
        let thread = thread::Builder::new()
            .name("dashboard".to_string())
            .spawn(move || server.run())?;
        Ok(Dashboard {
            addr,
            tx,
            waker,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `data` (one line of JSON) as an event named `event` to every page, now and later.
    pub fn publish(&self, event: &'static str, data: String) {
        if self.tx.send(Msg::Publish { event, data }).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Keeps serving for `linger` (so the last messages reach the pages), then stops.
    pub fn finish(mut self, linger: Duration) {
        self.stop(linger);
    }

    fn stop(&mut self, linger: Duration) {
        if self.tx.send(Msg::Finish(linger)).is_ok() {
            let _ = self.waker.wake();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    rx: Receiver<Msg>,
    feed: Feed,
    clients: Slab<Client>,
    ends_at: Option<Instant>,
    swept: Instant,
}

struct Client {
    sock: TcpStream,
    input: Vec<u8>,
    out: OutQueue,
    state: State,
    /// The last request, or the last heartbeat of a stream.
    since: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a request head.
    Head,
    /// Receiving the event stream.
    Streaming,
    /// Its last answer is being written; then it is closed.
    Closing,
}

impl Server {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            if self.ends_at.is_some_and(|t| now >= t) {
                return;
            }
            let timeout = self.ends_at.map_or(SWEEP, |t| (t - now).min(SWEEP));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("dashboard: {e}; it stops, the run goes on");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.take_messages(),
                    Token(i) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(i);
                        }
                        if event.is_writable() {
                            self.flush(i);
                        }
                    }
                }
            }
            if self.swept.elapsed() >= SWEEP {
                self.sweep();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, _)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        continue; // dropped: closed at once
                    }
                    let entry = self.clients.vacant_entry();
                    let token = Token(entry.key());
                    if self
                        .poll
                        .registry()
                        .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        entry.insert(Client {
                            sock,
                            input: Vec::new(),
                            out: OutQueue::default(),
                            state: State::Head,
                            since: Instant::now(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or out of descriptors: the sweep tries again within a second.
                Err(_) => return,
            }
        }
    }

    fn take_messages(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Publish { event, data }) => {
                    let bytes = self.feed.push(event, &data).to_vec();
                    let streaming: Vec<usize> = self
                        .clients
                        .iter()
                        .filter(|(_, c)| c.state == State::Streaming)
                        .map(|(i, _)| i)
                        .collect();
                    for i in streaming {
                        self.clients[i].out.push_owned(bytes.clone());
                        self.flush(i);
                    }
                }
                Ok(Msg::Finish(linger)) => self.ends_at = Some(Instant::now() + linger),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.ends_at.get_or_insert_with(Instant::now);
                    return;
                }
            }
        }
    }

    fn read(&mut self, i: usize) {
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match client.sock.read(&mut buf) {
                Ok(0) => return self.close(i),
                // A stream's viewer has nothing more to say; whatever it sends is dropped.
                Ok(n) if client.state == State::Head => client.input.extend_from_slice(&buf[..n]),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(i),
            }
            if client.input.len() > http::MAX_HEAD_BYTES {
                break;
            }
        }
        self.answer(i);
    }

    /// Answers every complete request head in the input.
    fn answer(&mut self, i: usize) {
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        while client.state == State::Head {
            let mut out = Vec::new();
            match http::parse_request_head(&client.input) {
                Ok(None) => break,
                Ok(Some((head, used))) => {
                    client.input.drain(..used);
                    client.since = Instant::now();
                    client.state = respond(&head, &self.feed, &mut out);
                }
                Err(e) => {
                    reply::error(&mut out, e.status(), &[], false);
                    client.state = State::Closing;
                }
            }
            client.out.push_owned(out);
        }
        if client.state != State::Head {
            client.input = Vec::new();
        }
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        match client.out.write_to(&mut client.sock) {
            Ok(true) if client.state == State::Closing => self.close(i),
            Ok(true) => {}
            Ok(false) if client.out.len() > MAX_QUEUED => self.close(i),
            Ok(false) => {}
            Err(_) => self.close(i),
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(mut client) = self.clients.try_remove(i) {
            let _ = self.poll.registry().deregister(&mut client.sock);
        }
    }

    /// Once a second: closes silent connections, sends heartbeats, retries the listener.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.swept = now;
        let mut idle = Vec::new();
        let mut beat = Vec::new();
        for (i, c) in &self.clients {
            let quiet = now.duration_since(c.since);
            match c.state {
                State::Head | State::Closing if quiet >= IDLE => idle.push(i),
                State::Streaming if quiet >= HEARTBEAT => beat.push(i),
                _ => {}
            }
        }
        for i in idle {
            self.close(i);
        }
        for i in beat {
            let client = &mut self.clients[i];
            client.since = now;
            client.out.push_static(b": heartbeat\n\n");
            self.flush(i);
        }
        if self.clients.len() < MAX_CLIENTS {
            self.accept();
        }
    }
}

/// The answer to one request, and the state it leaves the connection in.
fn respond(head: &RequestHead, feed: &Feed, out: &mut Vec<u8>) -> State {
    let get = head.method == "GET";
    if !get && head.method != "HEAD" {
        reply::error(out, 405, &[("Allow", "GET, HEAD")], false);
        return State::Closing;
    }
    let next = if head.keep_alive {
        State::Head
    } else {
        State::Closing
    };
    match head.path() {
        "/" | "/index.html" => {
            http::write_full_response(
                out,
                200,
                "text/html; charset=utf-8",
                PAGE.as_bytes(),
                head.keep_alive,
                &[("Cache-Control", "no-cache")],
            );
        }
        "/events" => {
            reply::sse_head(out, !get);
            if !get {
                return next;
            }
            sse::encode_retry(out, RETRY_MS);
            let last =
                feed::resume_from(head.header_str("last-event-id"), head.query_param("after"));
            out.extend_from_slice(&feed.replay(last));
            return State::Streaming;
        }
        _ => reply::error(out, 404, &[], head.keep_alive),
    }
    if !get {
        reply::strip_body(out);
    }
    next
}
