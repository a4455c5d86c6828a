//! The evented server: one thread, one `mio::Poll`, every connection a session in a slab. It
//! waits for readiness of all sockets at once, so an idle connection costs a slab entry and
//! nothing else, and a long-lived subscriber never holds anything another client needs.
//!
//! The loop's rules, one turn at a time: wait for readiness (or the next deadline); read what
//! is readable and feed it to the sessions (`io`); fire due deadlines, ticks and heartbeats
//! (`time`); accept a bounded batch (`accept`); deliver a bounded batch of a broadcast
//! (`fanout`); pick up connections that still had input. Readiness is edge-triggered, so
//! whatever is cut short by a bound is put back on a list and done next turn.

mod accept;
mod conn;
mod fanout;
mod io;
mod subscribers;
mod time;
mod upstream;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::app::config::{ServerConfig, SHUTDOWN_GRACE_MS};
use crate::app::hub::{Hub, KINDS};
use crate::app::session::Action;
use crate::app::stats::Stats;
use crate::sys;
use crate::timers::Deadlines;

use accept::Listening;
use conn::Conn;
use subscribers::Subscribers;
use upstream::Upstream;

pub use upstream::WorkerSpec;

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const UPSTREAM: Token = Token(usize::MAX - 3);

/// Serves `cfg` until SIGINT or SIGTERM. `ready` is called with the bound address once the
/// listener accepts connections.
pub fn serve(cfg: ServerConfig, ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let listener = sys::listen(cfg.listen, cfg.backlog, cfg.reuse_port)?;
    let addr = listener.local_addr()?;
    let mut server = Server::new(cfg, listener, false, None)?;
    ready(addr);
    server.run()
}

/// Serves as worker `spec.index` of `serve --workers N`: the supervisor's listening socket and
/// event stream, until SIGTERM or the supervisor goes away.
pub fn serve_worker(mut cfg: ServerConfig, spec: WorkerSpec) -> std::io::Result<()> {
    // The supervisor keeps the one clock; its ticks arrive with the other events.
    cfg.tick_ms = 0;
    let (listener, upstream, history) = upstream::connect(&spec)?;
    let exclusive = !cfg.reuse_port;
    let mut server = Server::new(cfg, listener, exclusive, Some(upstream))?;
    for event in history {
        server.hub.insert(event);
    }
    server.upstream_started();
    server.run()
}

impl Server {
    fn new(
        cfg: ServerConfig,
        listener: std::net::TcpListener,
        exclusive: bool,
        upstream: Option<Upstream>,
    ) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = Listening::new(TcpListener::from_std(listener), exclusive);
        let poll = Poll::new()?;
        listener.arm(&poll)?;
        let signals = sys::signal_pipe()?;
        signals.set_nonblocking(true)?;
        let mut signals = UnixStream::from_std(signals);
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let mut upstream = upstream;
        if let Some(up) = &mut upstream {
            up.register(&poll)?;
        }
        Ok(Server {
            poll,
            listener: Some(listener),
            signals,
            conns: Slab::new(),
            hub: Hub::new(cfg.retain, cfg.retain_bytes),
            subs: Subscribers::default(),
            timers: Deadlines::default(),
            actions: Vec::new(),
            scratch: vec![0; io::READ_CHUNK],
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
            upstream,
            cfg,
        })
    }
}

struct Server {
    poll: Poll,
    listener: Option<Listening>,
    signals: UnixStream,
    conns: Slab<Conn>,
    hub: Hub,
    subs: Subscribers,
    timers: Deadlines,
    cfg: ServerConfig,
    /// Where sessions put their actions; reused from call to call.
    actions: Vec<Action>,
    /// The one read buffer every connection reads into; sessions keep only leftovers.
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
    /// Connections that may have more input and should be read again this turn.
    resume: Vec<usize>,
    /// With `--workers`: the line to the supervisor, which numbers the events and answers for
    /// the whole server.
    upstream: Option<Upstream>,
}

impl Server {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = self.clock();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_pending = true,
                    SIGNALS => self.begin_shutdown(),
                    UPSTREAM => self.upstream_event(),
                    // A TCP socket reports an error only once the connection is dead (a reset,
                    // a timeout): nothing more can be read from it or said to it.
                    Token(key) if event.is_error() => self.close(key),
                    Token(key) => {
                        if event.is_writable() {
                            self.flush(key);
                        }
                        if event.is_readable() || event.is_read_closed() {
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

    fn clock(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Sleep until the next timer, or not at all while batched work remains.
    fn poll_timeout(&self) -> Option<Duration> {
        if (self.accept_pending && self.listener.is_some())
            || self.subs.sweeping()
            || !self.resume.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next(),
            self.shutdown_at,
            (self.accept_retry_at > 0).then_some(self.accept_retry_at),
            (self.cfg.tick_ms > 0).then_some(self.next_tick),
            (self.cfg.heartbeat_ms > 0).then_some(self.last_broadcast + self.cfg.heartbeat_ms),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(Duration::from_millis(next.saturating_sub(self.clock())))
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats::new(
            "evented",
            self.conns.len() as u64,
            KINDS.map(|k| self.subs.count(k) as u64),
            self.accepted,
            self.rejected,
            self.hub.last_seq(),
            sys::read_proc(None).unwrap_or_default(),
        );
        stats.worker = self.upstream.as_ref().map(|up| up.index);
        stats
    }

    /// SIGINT/SIGTERM: stop accepting, let every session say goodbye, give them a moment.
    fn begin_shutdown(&mut self) {
        let mut sink = [0u8; 64];
        while matches!(self.signals.read(&mut sink), Ok(n) if n > 0) {}
        if self.shutdown_at.is_some() {
            return;
        }
        self.shutdown_at = Some(self.now + SHUTDOWN_GRACE_MS);
        if let Some(mut listening) = self.listener.take() {
            listening.disarm(&self.poll);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.step(key, |s, cx, _| s.on_shutdown(cx));
        }
    }
}
