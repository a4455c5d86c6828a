//! The probe: every `--probe-ms`, a fresh TCP connection and `GET /`, timed from the start of the
//! connect to the end of the response. It answers the question a user of a loaded server asks:
//! does a newcomer still get served, and how fast? Probes run in the parent process only, on the
//! same event loop as everything else, a few in flight at most (each is abandoned after
//! `--probe-timeout-ms`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::proto::http::{self, BodyDecoder};

use super::endpoint::Request;
use super::net;
use super::record;

/// Tokens from here on belong to probes.
pub const TOKEN_BASE: usize = 1 << 29;
const MAX_RESPONSE: u64 = 64 * 1024;

struct Conn {
    sock: TcpStream,
    id: u64,
    started: Instant,
    connected: bool,
    request: Vec<u8>,
    head: Vec<u8>,
    /// Status and body decoder once the head is in.
    body: Option<(u16, BodyDecoder)>,
}

/// Probes in flight and their counters.
pub struct Probe {
    target: SocketAddr,
    /// The request every probe sends.
    request: Box<[u8]>,
    /// The status that counts as an answer.
    expected: u16,
    interval_us: u64,
    timeout_us: u64,
    next_at_us: u64,
    conns: Slab<Conn>,
    /// `(deadline µs, key, id)`, in deadline order: every probe gets the same timeout.
    deadlines: VecDeque<(u64, usize, u64)>,
    next_id: u64,
    pub sent: u64,
    pub answered: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// When (µs since the start) the first probe that timed out was sent.
    pub first_timeout_sent_us: Option<u64>,
    window: Histogram<u64>,
    scratch: Vec<u8>,
}

enum Outcome {
    Pending,
    Answered,
    Failed,
}

impl Probe {
    /// Probes of `target` with `request` (written once here: `GET PATH`, its `Host` and extra
    /// fields, `Connection: close`), answered when the status is `expected`.
    pub fn new(
        target: SocketAddr,
        request: &Request,
        expected: u16,
        interval_ms: u64,
        timeout_ms: u64,
    ) -> Probe {
        let mut bytes = Vec::new();
        request.write_get(&request.path, "Connection: close\r\n", &mut bytes);
        Probe {
            target,
            request: bytes.into(),
            expected,
            interval_us: interval_ms.max(1) * 1000,
            timeout_us: timeout_ms.max(1) * 1000,
            // The first probe goes out one interval in, after the first client, not racing it.
            next_at_us: interval_ms.max(1) * 1000,
            conns: Slab::new(),
            deadlines: VecDeque::new(),
            next_id: 0,
            sent: 0,
            answered: 0,
            timeouts: 0,
            errors: 0,
            first_timeout_sent_us: None,
            window: record::new_hist(),
            scratch: vec![0; 16 * 1024],
        }
    }

    /// When the loop must next look at probes.
    pub fn next_wakeup(&self) -> u64 {
        let deadline = self.deadlines.front().map_or(u64::MAX, |d| d.0);
        self.next_at_us.min(deadline)
    }

    /// Starts the probe that is due, if any, and expires overdue ones.
    pub fn tick(&mut self, now_us: u64, registry: &Registry) {
        if now_us >= self.next_at_us {
            self.start(now_us, registry);
            // Keep the cadence; after a stall, start again from now rather than in a burst.
            self.next_at_us += self.interval_us;
            if self.next_at_us <= now_us {
                self.next_at_us = now_us + self.interval_us;
            }
        }
        while let Some(&(at, key, id)) = self.deadlines.front() {
            if at > now_us {
                break;
            }
            self.deadlines.pop_front();
            if self.conns.get(key).is_some_and(|c| c.id == id) {
                self.conns.remove(key);
                self.timeouts += 1;
                self.first_timeout_sent_us
                    .get_or_insert(at.saturating_sub(self.timeout_us));
            }
        }
    }

    fn start(&mut self, now_us: u64, registry: &Registry) {
        self.sent += 1;
        let started = Instant::now();
        let socket = match net::start_connect(self.target, None) {
            Ok(s) => s,
            Err(_) => {
                self.errors += 1;
                return;
            }
        };
        let mut sock = TcpStream::from_std(socket.into());
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if registry
            .register(
                &mut sock,
                Token(TOKEN_BASE + key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.errors += 1;
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        entry.insert(Conn {
            sock,
            id,
            started,
            connected: false,
            request: self.request.to_vec(),
            head: Vec::new(),
            body: None,
        });
        self.deadlines
            .push_back((now_us + self.timeout_us, key, id));
    }

    /// Readiness for the probe with token `token`.
    pub fn on_event(&mut self, token: Token) {
        let key = token.0 - TOKEN_BASE;
        let outcome = match self.conns.get_mut(key) {
            Some(conn) => drive(conn, self.expected, &mut self.scratch),
            None => return,
        };
        match outcome {
            Outcome::Pending => {}
            Outcome::Answered => {
                let conn = self.conns.remove(key);
                let us = conn.started.elapsed().as_micros() as u64;
                self.window.saturating_record(us);
                self.answered += 1;
            }
            Outcome::Failed => {
                self.conns.remove(key);
                self.errors += 1;
            }
        }
    }

    /// Latency buckets of the probes answered since the last call.
    pub fn take_window(&mut self) -> Vec<(u64, u64)> {
        let b = record::buckets(&self.window);
        self.window.reset();
        b
    }

    /// Abandons the probes in flight: the run is over. They are taken off `sent`, so that at the
    /// end every probe sent was answered, timed out or failed.
    pub fn stop(&mut self) {
        self.sent -= self.conns.len() as u64;
        self.conns.clear();
        self.deadlines.clear();
        self.next_at_us = u64::MAX;
    }
}

/// Connects, writes the request, reads the answer.
fn drive(conn: &mut Conn, expected: u16, scratch: &mut [u8]) -> Outcome {
    if !conn.connected {
        match conn.sock.take_error() {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return Outcome::Failed,
        }
        match conn.sock.peer_addr() {
            Ok(_) => conn.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Outcome::Pending,
            Err(_) => return Outcome::Failed,
        }
    }
    while !conn.request.is_empty() {
        match conn.sock.write(&conn.request) {
            Ok(n) => {
                conn.request.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Outcome::Failed,
        }
    }
    loop {
        let n = match conn.sock.read(scratch) {
            Ok(0) => return Outcome::Failed,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Outcome::Failed,
        };
        let body_bytes = match &conn.body {
            Some(_) => scratch[..n].to_vec(),
            None => {
                conn.head.extend_from_slice(&scratch[..n]);
                match http::parse_response_head(&conn.head) {
                    Ok(None) => continue,
                    Ok(Some((head, used))) => {
                        conn.body = Some((head.status, BodyDecoder::new(head.body, MAX_RESPONSE)));
                        let rest = conn.head.split_off(used);
                        conn.head = Vec::new();
                        rest
                    }
                    Err(_) => return Outcome::Failed,
                }
            }
        };
        let Some((status, body)) = &mut conn.body else {
            return Outcome::Failed;
        };
        if body.decode(&body_bytes, &mut Vec::new()).is_err() {
            return Outcome::Failed;
        }
        if body.is_done() {
            return if *status == expected {
                Outcome::Answered
            } else {
                Outcome::Failed
            };
        }
    }
}
