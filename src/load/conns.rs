//! The connections one process holds: opened at an even pace, driven through their sessions,
//! timed out, kept alive, closed at the end, and counted once a second into a
//! [`WorkerRecord`].
//!
//! Each connection is a slab entry: its socket, its [`Session`] and the bytes it still has to
//! send (almost always none). Reading uses one shared buffer. Deadlines live in a heap with at
//! most one entry per connection: a deadline only ever moves later, so an entry that comes due
//! early is pushed back to the connection's current deadline instead of being duplicated.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use serde::{Deserialize, Serialize};
use slab::Slab;
use socket2::SockRef;

use crate::sys;
use crate::timers::Deadlines;

use super::client::{Delivered, Fail, Io, Rng, Session};
use super::endpoint::{Request, Timestamp};
use super::net::{self, Cause};
use super::record::{self, Counts, WorkerRecord};
use super::Kind;

/// Connections opened per loop turn at most, so a steep ramp cannot starve the rest.
const OPEN_BATCH: u64 = 256;
/// Reads per connection per readiness, so one busy connection cannot starve the rest.
const READS_PER_TURN: usize = 16;
const READ_CHUNK: usize = 64 * 1024;
/// A WebSocket that has sent nothing for this long sends a ping: the server closes connections
/// that stay silent past its idle timeout (60 s by default).
const WS_KEEPALIVE_US: u64 = 20_000_000;
/// Distinct seqs tracked per window (more are counted as events but not for delivery).
const MAX_WINDOW_SEQS: usize = 4096;
/// Distinct "other" failure reasons printed to stderr, so a surprise is visible but bounded.
const MAX_LOGGED_REASONS: usize = 8;

/// What one process does: which connections, how fast, against what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnPlan {
    pub kind: Kind,
    pub target: SocketAddr,
    /// Connections this process opens.
    pub count: u64,
    /// Connections per second this process opens.
    pub rate: f64,
    /// Index of this process's first connection among all of the run's; picks source addresses.
    pub first_index: u64,
    /// Loopback source addresses to spread connections over, round robin by connection index;
    /// empty to let the kernel pick.
    pub sources: Vec<Ipv4Addr>,
    /// Connect and response-head timeout.
    pub timeout_ms: u64,
    /// What each connection asks for, and where its events' send time is.
    pub request: Request,
    pub timestamp: Timestamp,
    /// WebSockets send this message periodically (`--ws-send`), and time its echo.
    #[serde(default)]
    pub ws_send: Option<WsSend>,
    /// Time allowed for each long-poll answer.
    pub poll_timeout_ms: u64,
    /// Connections of this process waiting for their response head at most: the ramp waits
    /// while this many are pending, so that it never overruns the server's accept queue.
    pub max_connecting: u64,
    /// The ramp stops opening connections this long after the start (µs), however many are
    /// left: a server that accepts far slower than asked cannot stretch a run without end.
    pub ramp_limit_us: u64,
    /// Poll without sleeping for this long after the last readiness (`--busy-poll-us`).
    #[serde(default)]
    pub busy_poll_us: u64,
}

/// `--ws-send TEXT --ws-send-every MS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsSend {
    pub text: String,
    pub every_ms: u64,
}

struct Conn {
    sock: TcpStream,
    session: Session,
    connected: bool,
    /// Bytes still to send.
    out: Vec<u8>,
    /// µs since the start; 0 for none.
    deadline: u64,
    last_send: u64,
    /// When the last event arrived (µs since the start; 0: none yet).
    last_event: u64,
    /// Counted in `counts.open` (rather than `connecting`): what `fail` must take back.
    counted_open: bool,
}

/// The connections of one process, and what they counted.
pub struct Conns {
    plan: ConnPlan,
    slab: Slab<Conn>,
    /// Connections attempted so far (the next one's index within this process).
    opened: u64,
    /// When every connection of the ramp had been attempted and none was still connecting (µs
    /// since the start), or the ramp stopped at its limit.
    ramp_done_us: Option<u64>,
    deadlines: Deadlines,
    counts: Counts,
    events: u64,
    hist: Histogram<u64>,
    seqs: BTreeMap<u64, (u64, u64)>,
    timeline: Vec<(u64, u64)>,
    scratch: Vec<u8>,
    delivered: Vec<Delivered>,
    echoes: Vec<u64>,
    echo_hist: Histogram<u64>,
    /// Time between a connection's successive reads that brought events.
    gap_hist: Histogram<u64>,
    resume: Vec<usize>,
    rng: Rng,
    logged: Vec<String>,
    /// Causes whose first failure has been reported, and those waiting for the next record.
    causes_seen: Vec<Cause>,
    first_failures: Vec<(String, String)>,
}

impl Conns {
    /// How long (µs) to go on polling without sleeping after the last readiness.
    pub fn busy_poll_us(&self) -> u64 {
        self.plan.busy_poll_us
    }

    pub fn new(plan: ConnPlan) -> Conns {
        Conns {
            plan,
            slab: Slab::new(),
            opened: 0,
            ramp_done_us: None,
            deadlines: Deadlines::default(),
            counts: Counts::default(),
            events: 0,
            hist: record::new_hist(),
            seqs: BTreeMap::new(),
            timeline: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            delivered: Vec::new(),
            echoes: Vec::new(),
            echo_hist: record::new_hist(),
            gap_hist: record::new_hist(),
            resume: Vec::new(),
            rng: Rng::new(),
            logged: Vec::new(),
            causes_seen: Vec::new(),
            first_failures: Vec::new(),
        }
    }

    /// When connection number `i` of this process is due, µs since the start.
    fn due_us(&self, i: u64) -> u64 {
        if self.plan.rate.is_finite() && self.plan.rate > 0.0 {
            (i as f64 * 1e6 / self.plan.rate) as u64
        } else {
            0
        }
    }

    /// The earliest moment the loop must come back for these connections (µs since the start);
    /// `Some(0)` when work is pending right now.
    pub fn next_wakeup(&self) -> Option<u64> {
        if !self.resume.is_empty() {
            return Some(0);
        }
        // While the ramp waits for pending connections, their answers wake the loop.
        let open = self
            .may_open()
            .then(|| self.due_us(self.opened).min(self.plan.ramp_limit_us));
        let deadline = self.deadlines.next();
        match (open, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the ramp may open its next connection once it is due: it has connections left,
    /// and fewer than `max_connecting` wait for an answer.
    fn may_open(&self) -> bool {
        self.opened < self.plan.count
            && self.ramp_done_us.is_none()
            && self.counts.connecting < self.plan.max_connecting
    }

    /// Opens the connections that are due, at most a batch per call, and never more than
    /// `max_connecting` pending at once: behind schedule, the ramp goes on at the pace the server
    /// answers.
    pub fn open_due(&mut self, now_us: u64, registry: &Registry) {
        if self.ramp_done_us.is_none()
            && self.opened < self.plan.count
            && now_us >= self.plan.ramp_limit_us
        {
            self.ramp_done_us = Some(now_us);
        }
        for _ in 0..OPEN_BATCH {
            if !self.may_open() || self.due_us(self.opened) > now_us {
                return;
            }
            self.open_one(now_us, registry);
        }
    }

    /// Notes the end of the ramp: every connection attempted, and every one answered or failed.
    pub fn note_ramp_done(&mut self, now_us: u64) {
        if self.ramp_done_us.is_none()
            && self.opened >= self.plan.count
            && self.counts.connecting == 0
        {
            self.ramp_done_us = Some(now_us);
        }
    }

    fn open_one(&mut self, now_us: u64, registry: &Registry) {
        let index = self.plan.first_index + self.opened;
        self.opened += 1;
        self.counts.attempted += 1;
        let source = match self.plan.sources.len() as u64 {
            0 => None,
            n => self.plan.sources.get((index % n) as usize).copied(),
        };
        let socket = match net::start_connect(self.plan.target, source) {
            Ok(s) => s,
            Err(e) => return self.count_failure(Fail::new(Cause::of(&e), e.to_string())),
        };
        // The run ends with a reset (see `close_all`); saying so now keeps a million
        // `setsockopt` calls out of the teardown.
        let _ = socket.set_linger(Some(Duration::ZERO));
        let mut sock = TcpStream::from_std(socket.into());
        let entry = self.slab.vacant_entry();
        let key = entry.key();
        if let Err(e) = registry.register(
            &mut sock,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.count_failure(Fail::new(Cause::of(&e), format!("epoll: {e}")));
        }
        let mut out = Vec::new();
        let session = Session::new(self.plan.kind, &self.plan.request, &mut self.rng, &mut out);
        entry.insert(Conn {
            sock,
            session,
            connected: false,
            out,
            deadline: 0,
            last_send: now_us,
            last_event: 0,
            counted_open: false,
        });
        self.counts.connecting += 1;
        self.set_deadline(key, now_us + self.plan.timeout_ms * 1000, now_us);
    }

    fn set_deadline(&mut self, key: usize, at: u64, now_us: u64) {
        if let Some(conn) = self.slab.get_mut(key) {
            self.deadlines.set(key, conn.deadline, at, now_us);
            conn.deadline = at;
        }
    }

    /// Fails the connections whose deadline passed.
    pub fn expire(&mut self, now_us: u64) {
        while let Some(key) = self
            .deadlines
            .next_expired(now_us, |k| self.slab.get(k).map(|c| c.deadline))
        {
            let Some(conn) = self.slab.get_mut(key) else {
                continue;
            };
            if let (Some(send), true) = (&self.plan.ws_send, conn.session.is_open_ws()) {
                // Not a timeout: the next message is due. Only when nothing waits to be sent: a
                // socket that is not draining gets no pile of messages.
                if conn.out.is_empty() {
                    let text = &send.text;
                    conn.session
                        .send_text(text, sys::now_ns(), &mut conn.out, &mut self.rng);
                }
                let next = now_us + send.every_ms.max(1) * 1000;
                self.set_deadline(key, next, now_us);
                self.flush(key, now_us);
                continue;
            }
            let why = if !conn.connected {
                "connect timed out"
            } else if conn.session.is_established() {
                "no answer to a long poll in time"
            } else {
                "no response head in time"
            };
            self.fail(key, Fail::new(Cause::TimedOut, why), now_us);
        }
        let live = self.slab.iter().map(|(k, c)| (k, c.deadline));
        self.deadlines.compact(self.slab.len(), live);
    }

    /// Readiness for connection `key`.
    pub fn on_event(&mut self, key: usize, event: &Event, now_us: u64) {
        if !self.slab.contains(key) {
            return;
        }
        if !self.check_connected(key, now_us) {
            return;
        }
        if event.is_writable() || event.is_error() {
            self.flush(key, now_us);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(key, now_us);
        }
    }

    /// Connections whose reading stopped at the per-turn limit read on.
    pub fn run_resume(&mut self, now_us: u64) {
        for key in std::mem::take(&mut self.resume) {
            self.read(key, now_us);
        }
    }

    /// Whether the connection is connected; completes the connect (sending the request) when
    /// it just finished, fails the connection when it failed.
    fn check_connected(&mut self, key: usize, now_us: u64) -> bool {
        let Some(conn) = self.slab.get_mut(key) else {
            return false;
        };
        if conn.connected {
            return true;
        }
        let result = match conn.sock.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => conn.sock.peer_addr().map(|_| ()),
        };
        match result {
            Ok(()) => {
                conn.connected = true;
                let at = now_us + self.plan.timeout_ms * 1000;
                self.set_deadline(key, at, now_us);
                self.flush(key, now_us);
                self.slab.contains(key)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => false,
            Err(e) => {
                self.fail(key, Fail::new(Cause::of(&e), e.to_string()), now_us);
                false
            }
        }
    }

    fn flush(&mut self, key: usize, now_us: u64) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        if !conn.connected {
            return;
        }
        while !conn.out.is_empty() {
            match conn.sock.write(&conn.out) {
                Ok(0) => {
                    return self.fail(key, Fail::new(Cause::Other, "write returned 0"), now_us)
                }
                Ok(n) => {
                    conn.out.drain(..n);
                    conn.last_send = now_us;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(key, Fail::new(Cause::of(&e), e.to_string()), now_us),
            }
        }
        // A connection's pending output is tiny and usually gone at once; give back the buffer.
        conn.out = Vec::new();
    }

    fn read(&mut self, key: usize, now_us: u64) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.slab.get_mut(key) else {
                return;
            };
            if !conn.connected {
                return;
            }
            let n = match conn.sock.read(&mut self.scratch) {
                Ok(0) => {
                    let fail = conn.session.on_eof();
                    return self.fail(key, fail, now_us);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(key, Fail::new(Cause::of(&e), e.to_string()), now_us),
            };
            let mut io = Io {
                out: &mut conn.out,
                events: &mut self.delivered,
                echoes: &mut self.echoes,
                rng: &mut self.rng,
                request: &self.plan.request,
                timestamp: &self.plan.timestamp,
            };
            let result = conn.session.on_data(&self.scratch[..n], &mut io);
            if !self.delivered.is_empty() {
                if let Some(conn) = self.slab.get_mut(key) {
                    if conn.last_event > 0 {
                        self.gap_hist
                            .saturating_record(now_us.saturating_sub(conn.last_event));
                    }
                    conn.last_event = now_us;
                }
            }
            self.take_delivered();
            match result {
                Err(fail) => {
                    // Send what the session queued (a WebSocket close answer) before closing.
                    self.flush(key, now_us);
                    return self.fail(key, fail, now_us);
                }
                Ok(step) => {
                    if step.established {
                        if let Some(conn) = self.slab.get_mut(key) {
                            conn.counted_open = true;
                        }
                        self.counts.established += 1;
                        self.counts.connecting -= 1;
                        self.counts.open += 1;
                        self.note_open(now_us);
                        let at = match (self.plan.kind, &self.plan.ws_send) {
                            (Kind::Poll, _) => now_us + self.plan.poll_timeout_ms * 1000,
                            // The first message at a random point of the period, so that the
                            // connections do not all send at once.
                            (Kind::Ws, Some(send)) => {
                                now_us + 1 + self.rng.next_u64() % (send.every_ms * 1000).max(1)
                            }
                            _ => 0,
                        };
                        self.set_deadline(key, at, now_us);
                    } else if step.polled {
                        self.set_deadline(key, now_us + self.plan.poll_timeout_ms * 1000, now_us);
                    }
                    self.flush(key, now_us);
                }
            }
        }
        // More may be waiting: edge-triggered readiness will not say so again.
        self.resume.push(key);
    }

    /// Records the events a session just produced.
    fn take_delivered(&mut self) {
        if self.delivered.is_empty() && self.echoes.is_empty() {
            return;
        }
        let now_ns = sys::now_ns();
        for sent_ns in self.echoes.drain(..) {
            self.echo_hist
                .saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
        }
        for d in self.delivered.drain(..) {
            self.events += 1;
            let Some(sent_ns) = d.sent_ns else { continue };
            self.hist
                .saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
            let Some(seq) = d.seq else { continue };
            if let Some(entry) = self.seqs.get_mut(&seq) {
                entry.1 += 1;
            } else if self.seqs.len() < MAX_WINDOW_SEQS {
                self.seqs.insert(seq, (sent_ns, 1));
            }
        }
    }

    fn fail(&mut self, key: usize, fail: Fail, now_us: u64) {
        let Some(conn) = self.slab.try_remove(key) else {
            return;
        };
        if conn.counted_open {
            self.counts.open -= 1;
            self.note_open(now_us);
        } else {
            self.counts.connecting -= 1;
        }
        self.count_failure(fail);
        // A connection that fails mid-run closes as any client would, with a FIN after what it
        // still had to send (a WebSocket's close answer); only the end of the run resets.
        let _ = SockRef::from(&conn.sock).set_linger(None);
        // Dropping the socket closes it, which also takes it out of epoll.
        drop(conn);
    }

    fn count_failure(&mut self, fail: Fail) {
        fail.cause.count(&mut self.counts.failed);
        if !self.causes_seen.contains(&fail.cause) {
            self.causes_seen.push(fail.cause);
            self.first_failures
                .push((fail.cause.name().to_string(), fail.why.clone()));
        }
        if fail.cause == Cause::Other
            && self.logged.len() < MAX_LOGGED_REASONS
            && !self.logged.contains(&fail.why)
        {
            eprintln!("c10k load: a connection failed: {}", fail.why);
            self.logged.push(fail.why);
        }
    }

    /// Notes the number of open connections in the timeline, at 10 ms resolution rounded up:
    /// a connection is never taken for open before it was (an event published just before it
    /// subscribed would look missed), only a little after.
    fn note_open(&mut self, now_us: u64) {
        let ms = now_us.div_ceil(10_000) * 10;
        match self.timeline.last_mut() {
            Some(last) if last.0 == ms => last.1 = self.counts.open,
            _ => self.timeline.push((ms, self.counts.open)),
        }
    }

    /// Pings WebSockets that have been silent for a while.
    pub fn keepalive(&mut self, now_us: u64) {
        let mut due = Vec::new();
        for (key, conn) in &mut self.slab {
            // Only when nothing is waiting to be sent: a socket that is not draining gets no pile
            // of pings.
            if conn.session.is_open_ws()
                && conn.out.is_empty()
                && now_us.saturating_sub(conn.last_send) >= WS_KEEPALIVE_US
            {
                conn.session.keepalive(&mut conn.out, &mut self.rng);
                due.push(key);
            }
        }
        for key in due {
            self.flush(key, now_us);
        }
    }

    /// The window that just ended, as a record; starts the next one.
    pub fn take_window(&mut self, idx: u64, last: bool) -> WorkerRecord {
        let rec = WorkerRecord {
            idx,
            last,
            counts: self.counts,
            events: self.events,
            hist: record::buckets(&self.hist),
            seqs: self
                .seqs
                .iter()
                .map(|(&seq, &(sent, n))| (seq, sent, n))
                .collect(),
            timeline: std::mem::take(&mut self.timeline),
            echo_hist: record::buckets(&self.echo_hist),
            gap_hist: record::buckets(&self.gap_hist),
            first_failures: std::mem::take(&mut self.first_failures),
            ramp_done_us: self.ramp_done_us,
        };
        self.events = 0;
        self.hist.reset();
        self.echo_hist.reset();
        self.gap_hist.reset();
        self.seqs.clear();
        rec
    }

    /// Closes every connection (the end of the run), with a reset rather than a FIN (each was
    /// opened with `SO_LINGER` 0): the end of a run is not what it measures, and a reset frees
    /// both ends at once — no FIN to answer, no `TIME_WAIT` left — in about two thirds of the
    /// time (notes/workers.md). Connections still connecting are abandoned; none of them counts
    /// as a failure.
    pub fn close_all(&mut self, now_us: u64) {
        self.slab.clear();
        self.deadlines.clear();
        self.resume.clear();
        self.ramp_done_us.get_or_insert(now_us);
    }
}
