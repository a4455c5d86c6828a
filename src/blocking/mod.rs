//! The blocking server: `std::net` and OS threads, no readiness API. Each connection is served
//! by one thread that parks in `read()`, `write()` or on a condition variable; the only question
//! is where the threads come from:
//!
//! - `--threads unbounded`: the accept thread starts a new thread for every connection (Apache's
//!   old per-child model, Java's classic `new Thread(socket)`).
//! - `--threads N`: a fixed pool of N workers fed by the accept thread through a bounded queue
//!   of `--accept-queue` connections (Tomcat's `maxThreads`/`acceptCount`, gunicorn's sync
//!   workers). When the queue is full the accept thread stops accepting and new connections
//!   wait in the kernel's listen backlog. `--threads 1` is the sequential server.
//!
//! Long-lived routes (SSE, the chunked stream, a held long poll, a WebSocket) keep their thread
//! for their whole life; a WebSocket takes a second one for writing. Everything else — each
//! connection's session, parsing, routing, framing, the hub — is the same sans-IO code the
//! evented server runs.
//!
//! Threads: the caller's thread waits for SIGINT/SIGTERM and runs the shutdown; `accept`
//! accepts; `ticker` publishes ticks and heartbeats; `reject` answers `503` when a connection
//! thread cannot be created (unbounded model only); then the connection threads.
//!
//! Running out is handled, never fatal. A thread the OS refuses (`EAGAIN` at `kernel.pid_max`,
//! `kernel.threads-max` or `RLIMIT_NPROC`, `ENOMEM` for its stack) is answered `503` and
//! counted as `rejected`; so is one past the mapping budget (`budget`), which stops short of
//! `vm.max_map_count`, where the standard library would abort the process while starting the
//! thread. Out of descriptors, the accept thread sleeps briefly and tries again while the
//! kernel's backlog holds the connections.

mod broadcast;
pub(crate) mod budget;
mod conn;
mod live;
mod mailbox;
mod pool;
mod reject;
mod ticker;
mod ws;

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::app::config::{ServerConfig, Threads, ACCEPT_RETRY_MS, SHUTDOWN_GRACE_MS};
use crate::app::hub::{Hub, KINDS};
use crate::app::stats::Stats;
use crate::sys;

use broadcast::Broadcaster;
use budget::Budget;
use live::{Live, Tracked};
use pool::Queue;
use reject::Rejecter;

/// After cutting them off, how long to wait for their threads to let go of the sockets.
const SHUTDOWN_CUT_MS: u64 = 500;
/// Refused threads are logged at most this often.
const SPAWN_LOG_EVERY: Duration = Duration::from_secs(5);
/// Stack of the server's own threads (accept, ticker, reject): they need little.
const SERVICE_STACK: usize = 256 * 1024;

/// Serves `cfg` until SIGINT or SIGTERM; `ready` gets the bound address once connections are
/// accepted.
pub fn serve(cfg: ServerConfig, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let listener = Arc::new(sys::listen(cfg.listen, cfg.backlog, cfg.reuse_port)?);
    let addr = listener.local_addr()?;

    // This thread blocks reading it until a signal arrives.
    let mut signal_rx = sys::signal_pipe()?;

    let shared = Arc::new(Shared::new(cfg));
    if let Some(max) = shared.budget.max() {
        eprintln!(
            "thread budget: {max} threads (vm.max_map_count, {} mappings per thread)",
            budget::MAPS_PER_THREAD
        );
    }
    let dispatch = match shared.cfg.threads {
        Threads::Pool(n) => {
            let queue = Arc::new(Queue::new(shared.cfg.accept_queue));
            pool::start_workers(&shared, &queue, n)?;
            Dispatch::Pool(queue)
        }
        Threads::Unbounded => Dispatch::Unbounded(Rejecter::start()?),
    };
    let queue = match &dispatch {
        Dispatch::Pool(queue) => Some(Arc::clone(queue)),
        Dispatch::Unbounded(_) => None,
    };
    ticker::start(&shared)?;
    let accept = {
        let shared = Arc::clone(&shared);
        let listener = Arc::clone(&listener);
        service_thread("accept", move || accept_loop(&shared, &listener, dispatch))?
    };

    ready(addr);
    wait_for_signal(&mut signal_rx);
    shutdown(&shared, &listener, addr, queue.as_deref());
    let _ = accept.join();
    Ok(())
}

/// What every thread of the server shares.
pub(crate) struct Shared {
    pub cfg: ServerConfig,
    pub bcast: Broadcaster,
    pub live: Arc<Live>,
    pub stop: Stop,
    /// The sessions' clock starts here.
    epoch: Instant,
    /// Threads that may still be started without running into `vm.max_map_count`.
    budget: Arc<Budget>,
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// Threads refused so far, and when that was last logged.
    refused_threads: AtomicU64,
    refusal_logged: Mutex<Option<Instant>>,
}

impl Shared {
    fn new(cfg: ServerConfig) -> Shared {
        Shared {
            bcast: Broadcaster::new(Hub::new(cfg.retain, cfg.retain_bytes), cfg.max_write_queue),
            live: Arc::new(Live::default()),
            stop: Stop::default(),
            epoch: Instant::now(),
            budget: Arc::new(Budget::from_proc()),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            refused_threads: AtomicU64::new(0),
            refusal_logged: Mutex::new(None),
            cfg,
        }
    }

    /// Milliseconds on the sessions' clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A time on the sessions' clock as an `Instant`.
    pub fn instant_of(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Starts a thread that serves connections (a connection thread, a pool worker or a
    /// WebSocket writer), with the configured stack size. An error is a thread refused: by the
    /// OS (`EAGAIN` at `pid_max`/`threads-max`/`RLIMIT_NPROC`, or no memory for the stack) or by
    /// the mapping budget (see `budget`); the caller answers the client `503` and counts it
    /// with `rejected()`.
    pub fn spawn<F>(&self, name: &str, f: F) -> io::Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let started = match self.budget.acquire() {
            Some(token) => {
                let mut builder = thread::Builder::new().name(name.to_string());
                if let Some(size) = self.cfg.stack_size {
                    builder = builder.stack_size(size);
                }
                builder.spawn(move || {
                    let _token = token;
                    f();
                })
            }
            None => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "thread budget of {} used up: more threads would pass vm.max_map_count",
                    self.budget.max().unwrap_or(usize::MAX)
                ),
            )),
        };
        if let Err(e) = &started {
            self.refused_threads.fetch_add(1, Ordering::Relaxed);
            // One line per episode (at most every few seconds), not one per connection.
            let mut last = lock(&self.refusal_logged);
            let due = match *last {
                Some(at) => at.elapsed() >= SPAWN_LOG_EVERY,
                None => true,
            };
            if due {
                *last = Some(Instant::now());
                let threads = sys::read_proc(None).map_or(0, |r| r.threads);
                let refused = self.refused_threads.load(Ordering::Relaxed);
                eprintln!(
                    "cannot create a thread ({e}) with {threads} running; answering 503 ({refused} refused so far)"
                );
            }
        }
        started
    }

    /// Counts a connection refused because no thread could serve it.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The `/stats` document.
    pub fn stats(&self) -> Stats {
        Stats::new(
            "blocking",
            self.live.len() as u64,
            KINDS.map(|k| self.bcast.count(k)),
            self.accepted.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.bcast.published(),
            sys::read_proc(None).unwrap_or_default(),
        )
    }
}

/// The shutdown flag, and a way to sleep that a shutdown interrupts.
#[derive(Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _guard = lock(&self.lock);
        self.wake.notify_all();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps until `until`; returns `true` (early) when the server is shutting down.
    pub fn sleep_until(&self, until: Instant) -> bool {
        let _guard = wait_while(&self.wake, lock(&self.lock), Some(until), |_| {
            !self.is_set()
        });
        self.is_set()
    }
}

/// Locks a mutex; a thread that panicked while holding it leaves data that is still usable
/// (counters and queues), so poisoning is not propagated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `cv` while `waiting` holds, until `until` at the latest (`None`: for as long as it
/// takes); poisoning is not propagated, as in `lock`.
pub(crate) fn wait_while<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    until: Option<Instant>,
    waiting: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    match until {
        None => cv
            .wait_while(guard, waiting)
            .unwrap_or_else(PoisonError::into_inner),
        Some(until) => {
            let timeout = until.saturating_duration_since(Instant::now());
            cv.wait_timeout_while(guard, timeout, waiting)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        }
    }
}

/// Milliseconds as a `Duration`, at least one (socket timeouts of zero mean "none").
pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms.max(1))
}

/// One of the server's own threads, with a small stack.
fn service_thread<F>(name: &str, f: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    thread::Builder::new()
        .name(name.to_string())
        .stack_size(SERVICE_STACK)
        .spawn(f)
}

/// Where an accepted connection goes.
enum Dispatch {
    /// Into the bounded queue of the worker pool.
    Pool(Arc<Queue<Tracked>>),
    /// Onto a new thread of its own; the rejecter answers it when none can be made.
    Unbounded(Rejecter),
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, dispatch: Dispatch) {
    let mut starved = false;
    loop {
        if shared.stop.is_set() {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                starved = false;
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let conn = shared.live.track(stream);
                match &dispatch {
                    // Blocks while the queue is full: the kernel's backlog holds the rest.
                    // An error means the server is shutting down; dropping closes the socket.
                    Dispatch::Pool(queue) => drop(queue.push(conn)),
                    Dispatch::Unbounded(rejecter) => spawn_conn(shared, conn, rejecter),
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(_) if shared.stop.is_set() => return,
            Err(e) => {
                // Out of descriptors (or memory, or a network error on a pending connection):
                // the connections stay in the kernel's backlog; try again shortly.
                if !starved {
                    let what = if sys::is_fd_exhaustion(&e) {
                        "out of file descriptors"
                    } else {
                        "error"
                    };
                    eprintln!(
                        "accept: {e} ({what}); {} connections open, retrying every {ACCEPT_RETRY_MS} ms",
                        shared.live.len()
                    );
                }
                starved = true;
                if shared
                    .stop
                    .sleep_until(Instant::now() + millis(ACCEPT_RETRY_MS))
                {
                    return;
                }
            }
        }
    }
}

/// Starts a connection thread, or hands the connection to the rejecter when the OS refuses.
fn spawn_conn(shared: &Arc<Shared>, conn: Tracked, rejecter: &Rejecter) {
    // The connection travels through a slot rather than inside the closure: when the thread
    // cannot be created, `spawn` drops the closure, and the socket must survive to be answered.
    let slot = Arc::new(Mutex::new(Some(conn)));
    let theirs = Arc::clone(&slot);
    let thread_shared = Arc::clone(shared);
    let started = shared.spawn("conn", move || {
        let conn = lock(&theirs).take();
        drop(theirs);
        if let Some(conn) = conn {
            conn::run(&thread_shared, conn);
        }
    });
    if started.is_err() {
        if let Some(conn) = lock(&slot).take() {
            rejecter.reject(shared, conn);
        }
    }
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal(signals: &mut UnixStream) {
    let mut byte = [0u8; 16];
    loop {
        match signals.read(&mut byte) {
            Ok(n) if n > 0 => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The write end lives in the signal handler's table, so this cannot end; if it
            // does, stopping cleanly beats spinning.
            _ => return,
        }
    }
}

/// Stops accepting, ends every stream the way the contract says, gives clients a moment to
/// read their last bytes, then cuts off whatever is left.
fn shutdown(
    shared: &Shared,
    listener: &TcpListener,
    addr: SocketAddr,
    queue: Option<&Queue<Tracked>>,
) {
    shared.stop.set();
    // On Linux, shutting down a listening socket makes a blocked accept() return at once.
    // Elsewhere, a connection to ourselves wakes it; it then sees the flag.
    if socket2::SockRef::from(listener)
        .shutdown(Shutdown::Read)
        .is_err()
    {
        let _ = TcpStream::connect_timeout(&addr, millis(100));
    }
    // Connections still waiting for a worker are closed unserved.
    if let Some(queue) = queue {
        drop(queue.close());
    }
    // Subscribers' threads ask their sessions for the goodbye: the stream's last chunk, `[]`
    // for held polls.
    shared.bcast.shutdown();
    // Threads blocked reading a request or WebSocket frames see end-of-file and the stop flag
    // (a WebSocket's goodbye is close 1001).
    shared.live.shutdown_readers();
    let open = shared.live.len();
    if !shared
        .live
        .wait_empty(Instant::now() + millis(SHUTDOWN_GRACE_MS))
    {
        eprintln!(
            "shutdown: {} of {open} connections still open after {SHUTDOWN_GRACE_MS} ms; cutting them off",
            shared.live.len()
        );
        shared.live.shutdown_all();
        shared
            .live
            .wait_empty(Instant::now() + millis(SHUTDOWN_CUT_MS));
    }
}
