//! `serve --model evented --workers N`: N worker processes, each the evented server's one
//! thread and one loop, serving one address and one event stream.
//!
//! The supervisor binds the listening socket (one shared by all, or with `--reuse-port` one
//! per worker), starts the workers, and then owns what must be one for the whole server: the
//! event sequence and its retained history, the tick clock, the answers to `POST /publish` (the
//! subscribers of every worker) and to `GET /stats` (every worker's counts). An event is encoded
//! once and the same frame goes to every worker; each worker turns it into its subscribers'
//! wire encodings as it does for its own events. A worker that dies is reported and started
//! again with the retained history; a worker that keeps dying stops the server.

pub mod channel;
mod spawn;
pub mod wire;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};

use crate::app::config::{ServerConfig, SHUTDOWN_GRACE_MS};
use crate::app::hub::{Event, Hub};
use crate::app::stats::Stats;
use crate::sys;

use channel::Channel;
use wire::Msg;

const SIGNALS: Token = Token(usize::MAX - 2);
/// How long an answer waits for every worker (a stopped or stuck one must not hold a publish
/// forever): past it, the answer counts the workers that replied.
const ANSWER_TIMEOUT_MS: u64 = 1_000;
/// A worker this far behind the event stream is stuck; it is restarted rather than buffered for.
const MAX_BEHIND_BYTES: usize = 256 << 20;
/// More deaths than this within `DEATH_WINDOW_MS` and the server stops instead of restarting.
const MAX_DEATHS: usize = 5;
const DEATH_WINDOW_MS: u64 = 60_000;
/// After the workers' own shutdown grace, how long before the stragglers are killed.
const STOP_MARGIN_MS: u64 = 2_000;

/// Serves `cfg` with `count` workers until SIGINT or SIGTERM. `worker_args` is the command line
/// a worker is started with (this program's `serve` arguments; each worker adds its own
/// `--worker`). `ready` gets the address once every worker accepts.
pub fn serve(
    cfg: ServerConfig,
    count: usize,
    worker_args: Vec<OsString>,
    ready: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    let first = sys::listen(cfg.listen, cfg.backlog, cfg.reuse_port)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    if cfg.reuse_port {
        for _ in 1..count {
            listeners.push(sys::listen(addr, cfg.backlog, true)?);
        }
    }
    let poll = Poll::new()?;
    let signals = sys::signal_pipe()?;
    signals.set_nonblocking(true)?;
    let mut signals = UnixStream::from_std(signals);
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let mut sup = Supervisor {
        poll,
        signals,
        hub: Hub::new(cfg.retain, cfg.retain_bytes),
        next_tick: cfg.tick_ms,
        cfg,
        listeners,
        worker_args,
        workers: (0..count).map(|_| None).collect(),
        epoch: Instant::now(),
        now: 0,
        publishes: Vec::new(),
        queries: Vec::new(),
        next_query: 0,
        scratch: vec![0; 64 * 1024],
        deaths: VecDeque::new(),
        stop_at: None,
        ready: Some(Box::new(move || ready(addr))),
    };
    for index in 0..count {
        if let Err(e) = sup.start(index) {
            sup.kill_all();
            return Err(e);
        }
    }
    sup.run()
}

struct Worker {
    child: Child,
    chan: Channel,
    /// Sent `Ready`: it accepts.
    ready: bool,
}

/// A publish waiting for every worker to take its event.
struct Publish {
    origin: usize,
    req: u64,
    seq: u64,
    waiting: Vec<usize>,
    subscribers: u64,
    deadline: u64,
}

/// A `/stats` request waiting for every worker's document.
struct Query {
    id: u64,
    origin: usize,
    req: u64,
    waiting: Vec<usize>,
    reports: Vec<Stats>,
    deadline: u64,
}

struct Supervisor<'a> {
    poll: Poll,
    signals: UnixStream,
    cfg: ServerConfig,
    hub: Hub,
    /// One shared socket, or one per worker. Kept open here: a restarted worker gets the same
    /// socket, and connections that arrive meanwhile wait in its backlog.
    listeners: Vec<TcpListener>,
    worker_args: Vec<OsString>,
    /// By index (and by token); `None` once stopped.
    workers: Vec<Option<Worker>>,
    epoch: Instant,
    now: u64,
    next_tick: u64,
    publishes: Vec<Publish>,
    queries: Vec<Query>,
    next_query: u64,
    scratch: Vec<u8>,
    /// When workers died lately, for the restart limit.
    deaths: VecDeque<u64>,
    stop_at: Option<u64>,
    ready: Option<Box<dyn FnOnce() + 'a>>,
}

impl Supervisor<'_> {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.kill_all();
                return Err(e);
            }
            self.now = self.epoch.elapsed().as_millis() as u64;
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.begin_stop(),
                    Token(index) => self.on_worker_ready(index)?,
                }
            }
            self.tick();
            self.expire();
            if let Some(stop_at) = self.stop_at {
                if self.workers.iter().all(Option::is_none) {
                    return Ok(());
                }
                if self.now >= stop_at {
                    self.kill_all();
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let next = [
            (self.cfg.tick_ms > 0 && self.stop_at.is_none()).then_some(self.next_tick),
            self.publishes.iter().map(|p| p.deadline).min(),
            self.queries.iter().map(|q| q.deadline).min(),
            self.stop_at,
        ]
        .into_iter()
        .flatten()
        .min()?;
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    /// Starts worker `index` and queues the retained history for it, then `Start`.
    fn start(&mut self, index: usize) -> io::Result<()> {
        let listener = &self.listeners[index.min(self.listeners.len() - 1)];
        let (child, sock) = spawn::spawn(index as u32, listener, &self.worker_args)?;
        let mut chan = Channel::new(UnixStream::from_std(sock));
        self.poll.registry().register(
            &mut chan.sock,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        for event in self.hub.since(0) {
            chan.send(&Msg::Event(Arc::clone(event)));
        }
        chan.send(&Msg::Start);
        let _ = chan.flush();
        self.workers[index] = Some(Worker {
            child,
            chan,
            ready: false,
        });
        Ok(())
    }

    fn on_worker_ready(&mut self, index: usize) -> io::Result<()> {
        let Some(worker) = self.workers.get_mut(index).and_then(Option::as_mut) else {
            return Ok(());
        };
        let open = worker
            .chan
            .flush()
            .and_then(|()| worker.chan.fill(&mut self.scratch));
        if !matches!(open, Ok(true)) {
            return self.lost(index, "exited");
        }
        loop {
            let Some(worker) = self.workers.get_mut(index).and_then(Option::as_mut) else {
                return Ok(());
            };
            match worker.chan.next_msg() {
                Ok(Some(msg)) => self.handle(index, msg),
                Ok(None) => break,
                Err(_) => return self.lost(index, "sent a bad frame"),
            }
        }
        self.flush_all()
    }

    fn handle(&mut self, index: usize, msg: Msg) {
        match msg {
            Msg::Ready => {
                if let Some(w) = self.workers[index].as_mut() {
                    w.ready = true;
                }
                let all = self.workers.iter().flatten().all(|w| w.ready);
                if all {
                    if let Some(ready) = self.ready.take() {
                        ready();
                    }
                }
            }
            Msg::Publish { req, text } => {
                let text = String::from_utf8_lossy(&text);
                let event = self.hub.publish_message(&text, sys::now_ns());
                let waiting = self.broadcast(&event);
                self.publishes.push(Publish {
                    origin: index,
                    req,
                    seq: event.seq,
                    waiting,
                    subscribers: 0,
                    deadline: self.now + ANSWER_TIMEOUT_MS,
                });
                self.settle();
            }
            Msg::Ack { seq, subscribers } => {
                if let Some(p) = self.publishes.iter_mut().find(|p| p.seq == seq) {
                    if let Some(i) = p.waiting.iter().position(|&w| w == index) {
                        p.waiting.swap_remove(i);
                        p.subscribers += subscribers;
                    }
                }
                self.settle();
            }
            Msg::StatsRequest { req } => {
                self.next_query += 1;
                let id = self.next_query;
                let mut waiting = Vec::new();
                for (i, w) in self.workers.iter_mut().enumerate() {
                    if let Some(w) = w {
                        w.chan.send(&Msg::StatsQuery { id });
                        waiting.push(i);
                    }
                }
                self.queries.push(Query {
                    id,
                    origin: index,
                    req,
                    waiting,
                    reports: Vec::new(),
                    deadline: self.now + ANSWER_TIMEOUT_MS,
                });
            }
            Msg::StatsReport { id, json } => {
                if let Some(q) = self.queries.iter_mut().find(|q| q.id == id) {
                    if let Some(i) = q.waiting.iter().position(|&w| w == index) {
                        q.waiting.swap_remove(i);
                        if let Ok(stats) = serde_json::from_slice::<Stats>(&json) {
                            q.reports.push(stats);
                        }
                    }
                }
                self.settle();
            }
            other => {
                eprintln!("worker {index} sent what only the supervisor sends: {other:?}");
            }
        }
    }

    /// Sends `event` to every worker, one encoding for all; returns who got it.
    fn broadcast(&mut self, event: &Arc<Event>) -> Vec<usize> {
        let mut frame = Vec::with_capacity(event.line().len() + 32);
        Msg::Event(Arc::clone(event)).encode(&mut frame);
        let mut sent = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            if let Some(w) = w {
                w.chan.send_encoded(&frame);
                sent.push(i);
            }
        }
        sent
    }

    /// Answers every publish and query that has heard from all its workers.
    fn settle(&mut self) {
        let done: Vec<Publish> = self
            .publishes
            .extract_if(.., |p| p.waiting.is_empty())
            .collect();
        for p in done {
            self.answer_publish(p);
        }
        let done: Vec<Query> = self
            .queries
            .extract_if(.., |q| q.waiting.is_empty())
            .collect();
        for q in done {
            self.answer_query(q);
        }
    }

    fn answer_publish(&mut self, p: Publish) {
        if let Some(w) = self.workers[p.origin].as_mut() {
            w.chan.send(&Msg::Published {
                req: p.req,
                seq: p.seq,
                subscribers: p.subscribers,
            });
        }
    }

    fn answer_query(&mut self, mut q: Query) {
        q.reports.sort_by_key(|s| s.worker);
        let process = sys::read_proc(None).unwrap_or_default();
        let mut stats = Stats::total(q.reports, self.hub.last_seq(), process);
        stats.worker = Some(q.origin as u32);
        if let Some(w) = self.workers[q.origin].as_mut() {
            w.chan.send(&Msg::StatsAnswer {
                req: q.req,
                json: stats.to_json(),
            });
        }
    }

    /// Answers what waited too long with what came in.
    fn expire(&mut self) {
        let now = self.now;
        for p in &mut self.publishes {
            if now >= p.deadline {
                p.waiting.clear();
            }
        }
        for q in &mut self.queries {
            if now >= q.deadline {
                q.waiting.clear();
            }
        }
        self.settle();
        let _ = self.flush_all();
    }

    fn tick(&mut self) {
        if self.cfg.tick_ms == 0 || self.now < self.next_tick || self.stop_at.is_some() {
            return;
        }
        let event = self.hub.publish_tick(sys::now_ns());
        self.broadcast(&event);
        self.next_tick = (self.next_tick + self.cfg.tick_ms).max(self.now + 1);
        let _ = self.flush_all();
    }

    /// Writes what every worker has queued; restarts one that fell too far behind.
    fn flush_all(&mut self) -> io::Result<()> {
        for index in 0..self.workers.len() {
            let Some(w) = self.workers[index].as_mut() else {
                continue;
            };
            if w.chan.flush().is_err() {
                self.lost(index, "exited")?;
            } else if w.chan.queued() > MAX_BEHIND_BYTES {
                self.lost(index, "fell too far behind the event stream")?;
            }
        }
        Ok(())
    }

    /// Worker `index` is gone or useless: reap it, answer without it, and start it again, or
    /// stop the server if workers keep dying.
    fn lost(&mut self, index: usize, why: &str) -> io::Result<()> {
        let Some(mut w) = self.workers[index].take() else {
            return Ok(());
        };
        let _ = self.poll.registry().deregister(&mut w.chan.sock);
        drop(w.chan);
        let pid = w.child.id();
        let status = reap(&mut w.child)?;
        self.publishes.retain(|p| p.origin != index);
        self.queries.retain(|q| q.origin != index);
        for p in &mut self.publishes {
            p.waiting.retain(|&i| i != index);
        }
        for q in &mut self.queries {
            q.waiting.retain(|&i| i != index);
        }
        self.settle();
        if self.stop_at.is_some() {
            return Ok(());
        }
        eprintln!("worker {index} (pid {pid}) {why} ({status}); starting it again");
        self.deaths.push_back(self.now);
        while self
            .deaths
            .front()
            .is_some_and(|&t| t + DEATH_WINDOW_MS < self.now)
        {
            self.deaths.pop_front();
        }
        if self.deaths.len() > MAX_DEATHS {
            self.kill_all();
            return Err(io::Error::other(format!(
                "workers died {} times within {} s; stopping",
                self.deaths.len(),
                DEATH_WINDOW_MS / 1000
            )));
        }
        self.start(index)
    }

    /// SIGINT/SIGTERM: every worker gets SIGTERM and says its goodbyes; the stragglers are
    /// killed after the grace.
    fn begin_stop(&mut self) {
        let mut sink = [0u8; 64];
        while matches!(self.signals.read(&mut sink), Ok(n) if n > 0) {}
        if self.stop_at.is_some() {
            return;
        }
        self.stop_at = Some(self.now + SHUTDOWN_GRACE_MS + STOP_MARGIN_MS);
        for w in self.workers.iter().flatten() {
            signal(&w.child, libc::SIGTERM);
        }
    }

    fn kill_all(&mut self) {
        for w in self.workers.iter_mut() {
            if let Some(mut w) = w.take() {
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
    }
}

/// Waits for a worker whose control socket closed: it is exiting, and gets a moment to; one that
/// lingers without its line to the supervisor is killed.
fn reap(child: &mut Child) -> io::Result<std::process::ExitStatus> {
    for _ in 0..20 {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait()
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(pid, sig) };
    }
}
