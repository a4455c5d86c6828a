//! A worker's line to its supervisor (`serve --workers N`). The supervisor numbers every event
//! and keeps the one clock, so the worker takes its events from here instead of making them:
//! a publish goes up and comes back down to every worker as the same event, and a `/stats`
//! request goes up and comes back as the whole server's document. A session waiting for such an
//! answer just waits; the loop goes on.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::str::FromStr;
use std::sync::Arc;

use mio::net::UnixStream;
use mio::{Interest, Poll};

use crate::app::hub::Event;
use crate::workers::channel::Channel;
use crate::workers::wire::{Decoder, Msg};

use super::{Server, UPSTREAM};

/// What a worker is handed by its supervisor: its number and two inherited descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSpec {
    pub index: u32,
    pub listener_fd: RawFd,
    pub control_fd: RawFd,
}

impl FromStr for WorkerSpec {
    type Err = String;

    /// `INDEX:LISTENER_FD:CONTROL_FD`.
    fn from_str(s: &str) -> Result<WorkerSpec, String> {
        let bad = || format!("expected INDEX:LISTENER_FD:CONTROL_FD, got {s:?}");
        let mut parts = s.split(':').map(|p| p.parse::<u32>().map_err(|_| bad()));
        let (Some(index), Some(listener), Some(control), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let fd = |n: u32| RawFd::try_from(n).map_err(|_| bad());
        Ok(WorkerSpec {
            index: index?,
            listener_fd: fd(listener?)?,
            control_fd: fd(control?)?,
        })
    }
}

impl std::fmt::Display for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.index, self.listener_fd, self.control_fd)
    }
}

pub(crate) struct Upstream {
    chan: Channel,
    pub index: u32,
    next_req: u64,
    /// Requests waiting for the supervisor's answer, and the connection that asked.
    waiting: HashMap<u64, usize>,
}

/// Takes over the inherited descriptors and reads the retained history up to `Start`, before
/// anything is accepted: a client that resumes on this worker gets the same events as anywhere.
pub(super) fn connect(
    spec: &WorkerSpec,
) -> io::Result<(std::net::TcpListener, Upstream, Vec<Arc<Event>>)> {
    // SAFETY: the supervisor passed these descriptors for this process to own, and nothing
    // else in it refers to them.
    let (listener, mut control) = unsafe {
        (
            std::net::TcpListener::from_raw_fd(spec.listener_fd),
            StdUnixStream::from_raw_fd(spec.control_fd),
        )
    };
    let mut decoder = Decoder::default();
    let mut history = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    'handshake: loop {
        let n = control.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the supervisor went away before the worker started",
            ));
        }
        decoder.feed(&buf[..n]);
        while let Some(msg) = decoder.next_msg().map_err(io::Error::other)? {
            match msg {
                Msg::Event(event) => history.push(event),
                Msg::Start => break 'handshake,
                other => return Err(io::Error::other(format!("unexpected {other:?}"))),
            }
        }
    }
    control.set_nonblocking(true)?;
    // What followed `Start` in the same read stays in the decoder, read first.
    let chan = Channel::continuing(UnixStream::from_std(control), decoder);
    Ok((
        listener,
        Upstream {
            chan,
            index: spec.index,
            next_req: 0,
            waiting: HashMap::new(),
        },
        history,
    ))
}

impl Upstream {
    pub(super) fn register(&mut self, poll: &Poll) -> io::Result<()> {
        poll.registry().register(
            &mut self.chan.sock,
            UPSTREAM,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Sends the request `make(req)` on behalf of connection `key`.
    pub(super) fn ask(&mut self, key: usize, make: impl FnOnce(u64) -> Msg) {
        self.next_req += 1;
        self.waiting.insert(self.next_req, key);
        self.chan.send(&make(self.next_req));
        let _ = self.chan.flush();
    }

    /// Connection `key` closed: an answer still on its way is for nobody (its slot may be
    /// reused by a new connection).
    pub(super) fn forget(&mut self, key: usize) {
        if !self.waiting.is_empty() {
            self.waiting.retain(|_, k| *k != key);
        }
    }
}

impl Server {
    /// History in: tell the supervisor this worker accepts, and take what came after `Start`.
    pub(super) fn upstream_started(&mut self) {
        self.send_up(Msg::Ready);
        self.upstream_event();
    }

    /// The supervisor's socket is ready: write what waits, read and act on what came.
    pub(super) fn upstream_event(&mut self) {
        let Some(up) = &mut self.upstream else {
            return;
        };
        let open = up
            .chan
            .flush()
            .and_then(|()| up.chan.fill(&mut self.scratch));
        if !matches!(open, Ok(true)) {
            // The supervisor is gone (or broken): no events will come; finish like on SIGTERM.
            return self.lose_upstream();
        }
        loop {
            let Some(up) = &mut self.upstream else {
                return;
            };
            match up.chan.next_msg() {
                Ok(Some(msg)) => self.on_supervisor_msg(msg),
                Ok(None) => break,
                Err(e) => {
                    eprintln!("worker {}: {e}", up.index);
                    return self.lose_upstream();
                }
            }
        }
        if let Some(up) = &mut self.upstream {
            let _ = up.chan.flush();
        }
    }

    fn lose_upstream(&mut self) {
        if let Some(mut up) = self.upstream.take() {
            let _ = self.poll.registry().deregister(&mut up.chan.sock);
        }
        self.begin_shutdown();
    }

    fn on_supervisor_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Event(event) => {
                let (seq, is_message) = (event.seq, event.name() == "message");
                self.hub.insert(event);
                self.broadcast_started();
                if is_message {
                    let subscribers = self.subs.total() as u64;
                    self.send_up(Msg::Ack { seq, subscribers });
                }
            }
            Msg::Published {
                req,
                seq,
                subscribers,
            } => {
                if let Some(key) = self.answered(req) {
                    self.step(key, |s, cx, _| s.published(cx, seq, subscribers));
                }
            }
            Msg::StatsQuery { id } => {
                let json = self.stats().to_json();
                self.send_up(Msg::StatsReport { id, json });
            }
            Msg::StatsAnswer { req, json } => {
                if let Some(key) = self.answered(req) {
                    self.step(key, |s, cx, _| s.stats(cx, &json));
                }
            }
            other => {
                eprintln!("worker: unexpected message from the supervisor: {other:?}");
                self.lose_upstream();
            }
        }
    }

    fn answered(&mut self, req: u64) -> Option<usize> {
        self.upstream.as_mut()?.waiting.remove(&req)
    }

    fn send_up(&mut self, msg: Msg) {
        if let Some(up) = &mut self.upstream {
            up.chan.send(&msg);
        }
    }
}
