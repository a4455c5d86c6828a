//! The event loop: one `mio::Poll` per process drives the connections, the probes, the pipes from
//! worker processes and the stop signal. It sleeps until the next thing is due (a connection to
//! open, a deadline, a probe, the end of a second, the close) and never longer, so it neither
//! spins nor oversleeps.
//!
//! Time is counted in microseconds since the run's common start (`epoch`), which every process
//! of a run derives from the same wall-clock instant, so their seconds line up.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll, Token};

use super::conns::Conns;
use super::merge::{Merger, ParentWindow};
use super::net;
use super::probe::{self, Probe};
use super::procs::ChildLink;
use super::report::Second;
use super::sampler::Sampler;

const SECOND_US: u64 = 1_000_000;
/// Tokens from here on are worker pipes (one per worker).
const CHILD_BASE: usize = 1 << 30;
const STOP: Token = Token(CHILD_BASE - 1);
/// After the close, how long the parent waits for workers' last records before it stops them.
const GRACE_US: u64 = 5_000_000;
/// After their last records, how long workers may take to close their connections and exit.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(60);

/// What only the parent has: the probe and the server sampler.
pub struct ParentParts {
    pub probe: Option<Probe>,
    pub sampler: Option<Sampler>,
    /// This machine's `ListenDrops` at the start, when the server is on this machine.
    pub listen_drops_base: Option<u64>,
}

/// Which process this loop runs in.
pub enum Role {
    /// The parent: probes, samples, merges (its own connections, or its workers').
    Parent {
        parts: Box<ParentParts>,
        children: Vec<ChildLink>,
    },
    /// A worker: holds connections and reports each second on stdout.
    Worker,
}

/// When a run closes its connections, µs since the start.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The close planned when the ramp keeps its pace: the ramp's planned end plus the hold.
    pub planned_close_us: u64,
    /// How long the connections are held once the ramp is over.
    pub hold_us: u64,
    /// The latest close: the ramp's limit plus the hold (a worker closes then by itself, or
    /// sooner when its parent says so).
    pub latest_close_us: u64,
}

/// What a parent's run leaves.
pub struct Outcome {
    pub merger: Merger,
    /// When the ramp was over, µs since the start.
    pub ramp_done_us: u64,
    /// When the connections were closed, µs since the start.
    pub closed_at_us: u64,
    /// From the close until every connection was closed (every worker process exited), µs.
    pub teardown_us: u64,
}

pub struct Engine {
    poll: Poll,
    epoch: Instant,
    schedule: Schedule,
    /// The latest close, or the moment a stop was asked for.
    close_at_us: u64,
    conns: Option<Conns>,
    role: Role,
    merger: Merger,
    stop: Option<Receiver>,
    next_window: u64,
    closed: bool,
    grace_until_us: u64,
    teardown_us: u64,
    scratch: Vec<u8>,
}

/// A pipe that turns readable when SIGINT or SIGTERM arrives.
pub fn stop_on_signals() -> io::Result<Receiver> {
    let rx = crate::sys::signal_pipe()?;
    rx.set_nonblocking(true)?;
    Ok(Receiver::from(OwnedFd::from(rx)))
}

/// Standard input as a pipe that turns readable at end of file: a worker's parent closes it to
/// stop the worker early, and it closes by itself when the parent dies.
pub fn stop_on_stdin_eof() -> io::Result<Receiver> {
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    let rx = Receiver::from(fd);
    rx.set_nonblocking(true)?;
    Ok(rx)
}

impl Engine {
    /// A loop for a run that starts at `start_ns` (wall clock) and closes its connections as
    /// `schedule` says.
    pub fn new(
        start_ns: u64,
        schedule: Schedule,
        conns: Option<Conns>,
        mut role: Role,
        mut stop: Option<Receiver>,
    ) -> io::Result<Engine> {
        let poll = Poll::new()?;
        if let Some(stop) = &mut stop {
            poll.registry().register(stop, STOP, Interest::READABLE)?;
        }
        let sources = match &mut role {
            Role::Parent { children, .. } => {
                for (i, child) in children.iter_mut().enumerate() {
                    poll.registry().register(
                        &mut child.stdout,
                        Token(CHILD_BASE + i),
                        Interest::READABLE,
                    )?;
                }
                children.len() + usize::from(conns.is_some())
            }
            Role::Worker => 0,
        };
        let wait = Duration::from_nanos(start_ns.saturating_sub(crate::sys::now_ns()));
        Ok(Engine {
            poll,
            epoch: Instant::now() + wait,
            schedule,
            close_at_us: schedule.latest_close_us,
            conns,
            role,
            merger: Merger::new(sources, start_ns),
            stop,
            next_window: 0,
            closed: false,
            grace_until_us: 0,
            teardown_us: 0,
            scratch: vec![0; 64 * 1024],
        })
    }

    fn now_us(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_micros() as u64
    }

    /// Runs a parent to the end; `on_second` gets each merged second.
    pub fn run(mut self, on_second: &mut dyn FnMut(&Second)) -> Result<Outcome, String> {
        self.run_loop(on_second)
            .map_err(|e| format!("the event loop failed: {e}"))?;
        Ok(Outcome {
            ramp_done_us: self
                .merger
                .ramp_done_us()
                .map_or(self.close_at_us, |at| at.min(self.close_at_us)),
            merger: self.merger,
            closed_at_us: self.close_at_us,
            teardown_us: self.teardown_us,
        })
    }

    /// Runs a worker to the end.
    pub fn run_worker(mut self) -> Result<(), String> {
        self.run_loop(&mut |_| {})
            .map_err(|e| format!("worker event loop failed: {e}"))
    }

    fn run_loop(&mut self, on_second: &mut dyn FnMut(&Second)) -> io::Result<()> {
        let wait = self.epoch.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let mut events = Events::with_capacity(1024);
        let busy_poll_us = self.conns.as_ref().map_or(0, Conns::busy_poll_us);
        let mut last_ready_us = 0;
        loop {
            let now = self.now_us();
            if !self.closed {
                self.due_work(now);
            }
            if self.closed && self.finished(now) {
                break;
            }
            self.merger.emit_ready(now, false, on_second);
            let before = self.now_us();
            let timeout = if before.saturating_sub(last_ready_us) < busy_poll_us {
                Duration::ZERO
            } else {
                // mio rounds a timeout up to whole milliseconds, so the loop never wakes early.
                Duration::from_micros(self.next_wakeup().saturating_sub(before).min(SECOND_US))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let now = self.now_us();
            if !events.is_empty() {
                last_ready_us = now;
            }
            for event in events.iter() {
                match event.token() {
                    STOP => self.on_stop_readable(now),
                    Token(t) if t >= CHILD_BASE => self.on_child(t - CHILD_BASE),
                    Token(t) if t >= probe::TOKEN_BASE => {
                        if let Role::Parent { parts, .. } = &mut self.role {
                            if let Some(p) = &mut parts.probe {
                                p.on_event(event.token());
                            }
                        }
                    }
                    Token(key) => {
                        if let Some(conns) = &mut self.conns {
                            conns.on_event(key, event, now);
                        }
                    }
                }
            }
            if let Some(conns) = &mut self.conns {
                conns.run_resume(now);
                conns.note_ramp_done(now);
            }
        }
        self.wind_up(on_second);
        Ok(())
    }

    /// Opens due connections, fires probes, expires deadlines, ends seconds, closes at the end.
    fn due_work(&mut self, now: u64) {
        let registry = self.poll.registry();
        if let Some(conns) = &mut self.conns {
            conns.open_due(now, registry);
            conns.expire(now);
        }
        if let Role::Parent { parts, .. } = &mut self.role {
            if let Some(p) = &mut parts.probe {
                p.tick(now, registry);
            }
        }
        let close_at = self.close_at();
        loop {
            let end = (self.next_window + 1) * SECOND_US;
            if now < end || end >= close_at {
                break;
            }
            self.end_window(end, false);
            if let Some(conns) = &mut self.conns {
                conns.keepalive(now);
            }
        }
        if now >= close_at {
            self.close(now);
        }
    }

    /// When the connections close: the hold after the ramp is over, as planned if the ramp kept
    /// its pace and later if it had to wait for the server; at the latest (or at a stop)
    /// `close_at_us`.
    fn close_at(&self) -> u64 {
        let Schedule {
            planned_close_us,
            hold_us,
            ..
        } = self.schedule;
        let after_ramp = self
            .merger
            .ramp_done_us()
            .map_or(u64::MAX, |done| planned_close_us.max(done + hold_us));
        self.close_at_us.min(after_ramp)
    }

    /// Ends the current window at `end_us` (µs since the start).
    fn end_window(&mut self, end_us: u64, last: bool) {
        let idx = self.next_window;
        self.next_window += 1;
        let record = self.conns.as_mut().map(|c| c.take_window(idx, last));
        match &mut self.role {
            Role::Worker => {
                if let Some(record) = record {
                    let line = serde_json::to_string(&record).unwrap_or_default();
                    let mut out = io::stdout().lock();
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        // The parent is gone: nobody wants the rest of this run.
                        self.close_at_us = self.close_at_us.min(end_us);
                    }
                }
            }
            Role::Parent { parts, .. } => {
                if let Some(record) = record {
                    self.merger.source_record(0, record);
                }
                let mut window = ParentWindow {
                    end_us,
                    server: parts.sampler.as_ref().and_then(Sampler::sample),
                    listen_drops: parts
                        .listen_drops_base
                        .and_then(|base| Some(net::listen_drops()?.saturating_sub(base))),
                    ..ParentWindow::default()
                };
                if let Some(p) = &mut parts.probe {
                    window.probes_sent = p.sent;
                    window.probes_answered = p.answered;
                    window.probe_timeouts = p.timeouts;
                    window.probe_errors = p.errors;
                    window.first_timeout_sent_us = p.first_timeout_sent_us;
                    window.probe_hist = p.take_window();
                }
                self.merger.parent_window(idx, window, last);
            }
        }
    }

    /// The end of the run: the last window, then every connection closed.
    fn close(&mut self, now: u64) {
        self.close_at_us = now;
        if let Role::Parent { parts, .. } = &mut self.role {
            if let Some(p) = &mut parts.probe {
                p.stop();
            }
        }
        self.end_window(now, true);
        self.closed = true;
        self.grace_until_us = now + GRACE_US;
        if let Some(conns) = &mut self.conns {
            conns.close_all(now);
        }
        if let Role::Parent { children, .. } = &mut self.role {
            // Workers close at the same moment by themselves; after an early stop this tells
            // them to.
            for child in children.iter_mut() {
                child.stdin = None;
            }
        }
    }

    /// After the close: whether there is nothing left to wait for.
    fn finished(&self, now: u64) -> bool {
        match &self.role {
            Role::Worker => true,
            Role::Parent { children, .. } => {
                children.iter().all(|c| c.done || c.reported_last()) || now >= self.grace_until_us
            }
        }
    }

    fn next_wakeup(&self) -> u64 {
        if self.closed {
            return self.grace_until_us;
        }
        let mut next = ((self.next_window + 1) * SECOND_US).min(self.close_at());
        if let Some(conns) = &self.conns {
            if let Some(at) = conns.next_wakeup() {
                next = next.min(at);
            }
        }
        if let Role::Parent { parts, .. } = &self.role {
            if let Some(p) = &parts.probe {
                next = next.min(p.next_wakeup());
            }
            if let Some(at) = self.merger.next_wakeup() {
                next = next.min(at);
            }
        }
        next
    }

    fn on_stop_readable(&mut self, now: u64) {
        let Some(stop) = &mut self.stop else {
            return;
        };
        let mut buf = [0u8; 64];
        let stop_now = loop {
            match stop.read(&mut buf) {
                // End of file (a worker's parent closed stdin) or a signal byte: stop.
                Ok(_) => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break e.kind() != io::ErrorKind::WouldBlock,
            }
        };
        if stop_now {
            if let Some(mut stop) = self.stop.take() {
                let _ = self.poll.registry().deregister(&mut stop);
            }
            if !self.closed {
                self.close_at_us = self.close_at_us.min(now);
            }
        }
    }

    fn on_child(&mut self, i: usize) {
        let Role::Parent { children, .. } = &mut self.role else {
            return;
        };
        let offset = usize::from(self.conns.is_some());
        let Some(child) = children.get_mut(i) else {
            return;
        };
        let (records, ended) = child.read_records(&mut self.scratch);
        for record in records {
            self.merger.source_record(offset + i, record);
        }
        if ended {
            let _ = self.poll.registry().deregister(&mut child.stdout);
            child.finish(i);
            self.merger.source_gone(offset + i);
        }
    }

    /// Stops workers that did not report in time, emits every remaining second, and waits for
    /// the workers to close their connections and exit.
    fn wind_up(&mut self, on_second: &mut dyn FnMut(&Second)) {
        let now = self.now_us();
        let Role::Parent { children, .. } = &mut self.role else {
            return;
        };
        let offset = usize::from(self.conns.is_some());
        for (i, child) in children.iter_mut().enumerate() {
            if !child.done && !child.reported_last() {
                eprintln!(
                    "c10k load: worker {i} did not report its last second in time; stopping it"
                );
                child.kill();
                self.merger.source_gone(offset + i);
            }
        }
        self.merger.emit_ready(now, true, on_second);
        let deadline = Instant::now() + TEARDOWN_LIMIT;
        for (i, child) in children.iter_mut().enumerate() {
            if !child.done {
                child.reap_by(i, deadline);
            }
        }
        self.teardown_us = self.now_us().saturating_sub(self.close_at_us);
    }
}
