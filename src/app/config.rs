//! The knobs every bound and timer of the servers hangs on, with the contract's defaults.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;

/// Largest `POST /publish` body (the contract's 64 KiB).
pub const MAX_PUBLISH_BYTES: u64 = 64 * 1024;
/// After the last bytes are written and our FIN is sent, how long to wait for the peer's FIN:
/// closing with unread input would send an RST that can destroy the answer before it is read.
pub const LINGER_MS: u64 = 2_000;
/// How long shutdown waits for connections to say goodbye before cutting them off.
pub const SHUTDOWN_GRACE_MS: u64 = 3_000;
/// Events retained for replay at the least: the contract promises the last 1024.
pub const MIN_RETAIN: usize = 1024;
/// Retry accepting this soon after running out of descriptors (or another accept error).
pub const ACCEPT_RETRY_MS: u64 = 100;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Listen backlog passed to `listen(2)` (the kernel caps it at `net.core.somaxconn`).
    pub backlog: i32,
    /// Period of the `tick` event; 0 turns ticks off.
    pub tick_ms: u64,
    /// An SSE comment and a WebSocket ping go out after this long without a broadcast.
    pub heartbeat_ms: u64,
    /// How long `/poll` holds a request before answering `[]`.
    pub poll_timeout_ms: u64,
    /// A request head must be complete this long after its first byte (or after accept).
    pub header_timeout_ms: u64,
    /// A keep-alive or WebSocket connection that sends nothing for this long is closed.
    pub idle_timeout_ms: u64,
    /// Bytes a connection may have queued for writing before it is cut off as too slow.
    pub max_write_queue: usize,
    /// Largest WebSocket message accepted (close 1009 past it).
    pub max_message: usize,
    /// Largest `POST /echo` body.
    pub max_echo_body: u64,
    /// Events kept for `Last-Event-ID` replay and `/poll?after=`.
    pub retain: usize,
    /// What the kept events may cost in all, in bytes (with every encoding made): large events
    /// are kept fewer.
    pub retain_bytes: usize,
    /// Connections served per step of a broadcast before the loop looks at other work.
    pub fanout_batch: usize,
    /// Set `SO_REUSEPORT` so several server processes can share one port.
    pub reuse_port: bool,
    /// Blocking model: one thread per connection, or a fixed pool.
    pub threads: Threads,
    /// Blocking model: connections accepted and waiting for a pool worker; past it the accept
    /// thread stops and the kernel's backlog holds the rest.
    pub accept_queue: usize,
    /// Blocking model: stack size of connection threads; `None` is the std default.
    pub stack_size: Option<usize>,
}

/// The I/O model that serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// One thread, one epoll loop (mio).
    Evented,
    /// std::net with one OS thread per connection, or a fixed pool of them.
    Blocking,
    /// The floor for fan-out measurements: prebuilt bytes written in a tight loop, nothing else.
    #[value(hide = true)]
    Floor,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Evented => "evented",
            Model::Blocking => "blocking",
            Model::Floor => "floor",
        }
    }
}

/// How the blocking model assigns threads to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// A new thread for every accepted connection.
    Unbounded,
    /// A fixed pool of this many workers (1 is the sequential server).
    Pool(usize),
}

impl ServerConfig {
    /// Echoed bytes a connection may have waiting before reading from it pauses: backpressure
    /// instead of buffering, and below half the write-queue bound, so echoes never get a client
    /// that reads cut off as too slow.
    pub fn echo_high_water(&self) -> usize {
        (256 * 1024).min(self.max_write_queue / 2)
    }
}

impl ServerConfig {
    /// Every default of the server, defined here once: the command line's defaults are these.
    pub const DEFAULT: ServerConfig = ServerConfig {
        listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080)),
        backlog: 1024,
        tick_ms: 1000,
        heartbeat_ms: 15_000,
        poll_timeout_ms: 30_000,
        header_timeout_ms: 10_000,
        idle_timeout_ms: 60_000,
        max_write_queue: 1 << 20,
        max_message: 1 << 20,
        max_echo_body: 16 << 20,
        retain: MIN_RETAIN,
        retain_bytes: 16 << 20,
        fanout_batch: 64,
        reuse_port: false,
        threads: Threads::Pool(32),
        accept_queue: 128,
        stack_size: None,
    };
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::DEFAULT
    }
}

/// `--threads`: a number, or `unbounded`.
impl FromStr for Threads {
    type Err = String;

    fn from_str(s: &str) -> Result<Threads, String> {
        if s == "unbounded" {
            return Ok(Threads::Unbounded);
        }
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Threads::Pool(n)),
            _ => Err(format!(
                "expected a positive number or `unbounded`, got `{s}`"
            )),
        }
    }
}

impl fmt::Display for Threads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threads::Unbounded => f.write_str("unbounded"),
            Threads::Pool(n) => write!(f, "{n}"),
        }
    }
}
