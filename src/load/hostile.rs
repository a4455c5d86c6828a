//! `c10k hostile`: the misbehaving clients of `c10k run hostile`, in one process and one mio
//! loop. Each of `--connections` slots plays one [`Behaviour`] again and again: it connects,
//! misbehaves until the server ends the connection (or its own time is up), notes how it ended,
//! waits a second and starts over. Meanwhile one connection publishes large events, so that
//! subscribers who never read have something to fall behind on.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use socket2::SockRef;

use super::engine;
use super::net;

/// `c10k hostile` options (hidden: `c10k run hostile` drives it).
#[derive(Debug, Clone, clap::Args)]
pub struct HostileArgs {
    /// Address of the server to attack.
    #[arg(long)]
    pub target: SocketAddr,
    /// Misbehaving connections to keep going, spread evenly over the behaviours.
    #[arg(long, default_value_t = 2000)]
    pub connections: u64,
    /// New connections per second while the slots start.
    #[arg(long, default_value_t = 2000)]
    pub ramp_per_sec: u64,
    /// Seconds to keep going; the process also stops when its stdin closes.
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
    /// Large events published per second (0: none).
    #[arg(long, default_value_t = 5)]
    pub publish_per_sec: u64,
    /// Bytes of each published message.
    #[arg(long, default_value_t = 64_000)]
    pub publish_bytes: usize,
    /// Source addresses 127.0.0.2 upwards to spread the connections over (loopback targets).
    #[arg(long, default_value_t = 16)]
    pub source_addrs: u64,
    /// Which behaviours to play [default: all of them].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub behaviours: Vec<Behaviour>,
    /// Write the final report here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One way of misbehaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// A request head, one byte a second, never finished.
    Slowloris,
    /// Connects and sends nothing.
    Silent,
    /// Subscribes to `/sse` with a 4 KiB receive buffer and never reads; gives up after 15 s.
    NonReader,
    /// Upgrades to a WebSocket, then sends pings as fast as it can and never reads the pongs.
    PingFlood,
    /// `POST /publish` announcing 1,000 bytes and sending five.
    StalledBody,
    /// A 64 KiB header field.
    OversizedHead,
    /// 1 KiB of random bytes.
    RandomBytes,
    /// Subscribes to `/stream` or `/sse` and resets the connection once the answer starts.
    ResetMidResponse,
    /// `POST /echo` with a chunk size that is not hexadecimal.
    InvalidChunked,
}

impl Behaviour {
    pub const ALL: [Behaviour; 9] = [
        Behaviour::Slowloris,
        Behaviour::Silent,
        Behaviour::NonReader,
        Behaviour::PingFlood,
        Behaviour::StalledBody,
        Behaviour::OversizedHead,
        Behaviour::RandomBytes,
        Behaviour::ResetMidResponse,
        Behaviour::InvalidChunked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Slowloris => "slowloris",
            Behaviour::Silent => "silent",
            Behaviour::NonReader => "non-reader",
            Behaviour::PingFlood => "ping-flood",
            Behaviour::StalledBody => "stalled-body",
            Behaviour::OversizedHead => "oversized-head",
            Behaviour::RandomBytes => "random-bytes",
            Behaviour::ResetMidResponse => "reset-mid-response",
            Behaviour::InvalidChunked => "invalid-chunked",
        }
    }

    /// Whether it reads what the server sends (a non-reader never does; a ping flood stops
    /// after the upgrade).
    fn reads(self) -> bool {
        !matches!(self, Behaviour::NonReader)
    }

    /// How long it keeps a connection the server has not ended.
    fn own_limit(self) -> Option<Duration> {
        match self {
            // The server may drop it without the client ever seeing a FIN: the FIN waits behind
            // bytes the client never reads.
            Behaviour::NonReader => Some(Duration::from_secs(15)),
            _ => None,
        }
    }
}

/// How the connections of one behaviour went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub behaviour: String,
    pub slots: u64,
    /// Connections established.
    pub opened: u64,
    /// Connects that failed (refused, timed out, no address).
    pub connect_failed: u64,
    /// Open at the end.
    pub open: u64,
    /// Ended by the server with a FIN (after a response or not).
    pub closed_by_server: u64,
    /// Ended by the server with a reset, or a write that failed.
    pub reset_by_server: u64,
    /// Ended by the client itself (a reset after its own time limit, or mid-response).
    pub ended_by_client: u64,
    /// Status codes of the responses seen, e.g. `{"408": 12}`; `101` for an upgrade.
    pub statuses: BTreeMap<String, u64>,
    /// Median and longest life of the connections the server ended, in milliseconds.
    pub server_ended_life_p50_ms: Option<u64>,
    pub server_ended_life_max_ms: Option<u64>,
}

/// One second of the attack, as a line of JSON on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HostileSecond {
    pub t_s: f64,
    /// Hostile connections open (connected or connecting) now.
    pub open: u64,
    /// Cumulative: connections established.
    pub opened: u64,
    /// Cumulative: connections the server ended.
    pub ended_by_server: u64,
    /// Cumulative: publishes answered 200.
    pub published: u64,
}

/// What the attack did, written with `--json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostileReport {
    pub duration_s: f64,
    pub peak_open: u64,
    pub publishes_sent: u64,
    pub publishes_answered: u64,
    pub behaviours: Vec<Tally>,
}

const STOP: Token = Token(usize::MAX);
const RETRY: Duration = Duration::from_secs(1);
/// Slots are looked at this often: often enough that new connections go out in small groups,
/// not in bursts that would measure the burst rather than the behaviours.
const TICK: Duration = Duration::from_millis(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SMALL_RCVBUF: usize = 4096;
/// The most a connection writes in one go (a ping flood: per tick): a server that keeps reading
/// would otherwise keep this loop writing forever.
const FLOOD_BURST: usize = 32 * 1024;
const HOST: &str = "Host: hostile\r\n";

struct Conn {
    sock: TcpStream,
    opened: Instant,
    connected: bool,
    /// Bytes of the script written so far.
    sent: usize,
    /// The first bytes of the response, until the status line is in.
    head: Vec<u8>,
    /// A ping flood writes pings once this is set (the `101` has arrived).
    upgraded: bool,
    next_byte_at: Instant,
}

struct Slot {
    behaviour: Behaviour,
    conn: Option<Conn>,
    start_at: Instant,
}

struct Counts {
    tally: Tally,
    lives_ms: Vec<u64>,
}

enum End {
    Server { reset: bool },
    Client,
    ConnectFailed,
}

/// Runs the attack until `--duration-s` has passed or stdin closes.
pub fn run(args: &HostileArgs) -> Result<(), String> {
    crate::sys::raise_fd_limit()
        .map_err(|e| format!("could not raise the open file limit: {e}"))?;
    let stop = engine::stop_on_stdin_eof().map_err(|e| format!("could not watch stdin: {e}"))?;
    let report = Attack::new(args)?
        .run(stop)
        .map_err(|e| format!("the attack stopped: {e}"))?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

struct Attack<'a> {
    args: &'a HostileArgs,
    poll: Poll,
    slots: Vec<Slot>,
    counts: Vec<Counts>,
    sources: Vec<std::net::Ipv4Addr>,
    scripts: Scripts,
    scratch: Vec<u8>,
    peak_open: u64,
}

impl<'a> Attack<'a> {
    fn new(args: &'a HostileArgs) -> Result<Attack<'a>, String> {
        let poll = Poll::new().map_err(|e| format!("could not create the event loop: {e}"))?;
        let start = Instant::now();
        let rate = args.ramp_per_sec.max(1) as f64;
        let playing = if args.behaviours.is_empty() {
            &Behaviour::ALL[..]
        } else {
            &args.behaviours[..]
        };
        let slots = (0..args.connections)
            .map(|i| Slot {
                behaviour: playing[i as usize % playing.len()],
                conn: None,
                start_at: start + Duration::from_secs_f64(i as f64 / rate),
            })
            .collect::<Vec<_>>();
        let counts = Behaviour::ALL
            .iter()
            .map(|b| Counts {
                tally: Tally {
                    behaviour: b.name().to_string(),
                    slots: slots.iter().filter(|s| s.behaviour == *b).count() as u64,
                    ..Tally::default()
                },
                lives_ms: Vec::new(),
            })
            .collect();
        let loopback = matches!(args.target.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback());
        let sources = if loopback {
            net::loopback_sources(args.source_addrs)
        } else {
            Vec::new()
        };
        Ok(Attack {
            args,
            poll,
            slots,
            counts,
            sources,
            scripts: Scripts::new(),
            scratch: vec![0; 64 * 1024],
            peak_open: 0,
        })
    }

    fn run(mut self, mut stop: mio::unix::pipe::Receiver) -> io::Result<HostileReport> {
        self.poll
            .registry()
            .register(&mut stop, STOP, Interest::READABLE)?;
        let publisher = Publisher::start(self.args);
        let start = Instant::now();
        let end = start + Duration::from_secs(self.args.duration_s);
        let mut events = Events::with_capacity(1024);
        let mut next_second = start + Duration::from_secs(1);
        let mut next_tick = start;
        'run: while Instant::now() < end {
            self.poll.poll(&mut events, Some(TICK / 2))?;
            for event in &events {
                match event.token() {
                    STOP => break 'run,
                    Token(i) => self.on_event(i, event.is_writable()),
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                self.on_tick(now);
            }
            if now >= next_second {
                while next_second <= now {
                    next_second += Duration::from_secs(1);
                }
                let second = HostileSecond {
                    t_s: (now - start).as_secs_f64().round(),
                    open: self.open(),
                    opened: self.counts.iter().map(|c| c.tally.opened).sum(),
                    ended_by_server: self
                        .counts
                        .iter()
                        .map(|c| c.tally.closed_by_server + c.tally.reset_by_server)
                        .sum(),
                    published: publisher.answered(),
                };
                if let Ok(line) = serde_json::to_string(&second) {
                    let mut out = io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (publishes_sent, publishes_answered) = publisher.finish();
        let open = self.slots.iter().filter(|s| s.conn.is_some());
        let mut open_by = [0u64; Behaviour::ALL.len()];
        for slot in open {
            open_by[index(slot.behaviour)] += 1;
        }
        let behaviours = self
            .counts
            .into_iter()
            .zip(open_by)
            .map(|(mut c, open)| {
                c.lives_ms.sort_unstable();
                c.tally.open = open;
                c.tally.server_ended_life_p50_ms = c.lives_ms.get(c.lives_ms.len() / 2).copied();
                c.tally.server_ended_life_max_ms = c.lives_ms.last().copied();
                c.tally
            })
            .collect();
        Ok(HostileReport {
            duration_s: elapsed,
            peak_open: self.peak_open,
            publishes_sent,
            publishes_answered,
            behaviours,
        })
    }

    fn open(&self) -> u64 {
        self.slots.iter().filter(|s| s.conn.is_some()).count() as u64
    }

    /// Starts the slots that are due, sends the slowloris bytes, times out connects and ends
    /// connections whose own time is up.
    fn on_tick(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            match &mut slot.conn {
                None if now >= slot.start_at => self.connect(i, now),
                None => {}
                Some(c) if !c.connected && now - c.opened > CONNECT_TIMEOUT => {
                    self.end(i, End::ConnectFailed, now);
                }
                Some(c) if !c.connected => {}
                Some(c) => {
                    let behaviour = slot.behaviour;
                    if behaviour.own_limit().is_some_and(|l| now - c.opened >= l) {
                        self.end(i, End::Client, now);
                    } else if behaviour == Behaviour::Slowloris && now >= c.next_byte_at {
                        c.next_byte_at = now + Duration::from_secs(1);
                        self.write_script(i, now);
                    } else if behaviour == Behaviour::PingFlood && c.upgraded {
                        // A flood stops after FLOOD_BURST bytes each turn, before the socket
                        // is full, so it goes on here rather than on a writable event.
                        self.write_script(i, now);
                    }
                }
            }
        }
        self.peak_open = self.peak_open.max(self.open());
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let source = (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()]);
        let behaviour = self.slots[i].behaviour;
        let socket = match net::start_connect(self.args.target, source) {
            Ok(s) => s,
            Err(_) => {
                self.counts[index(behaviour)].tally.connect_failed += 1;
                self.slots[i].start_at = now + RETRY;
                return;
            }
        };
        if matches!(behaviour, Behaviour::NonReader | Behaviour::PingFlood) {
            let _ = socket.set_recv_buffer_size(SMALL_RCVBUF);
        }
        let mut sock = TcpStream::from_std(StdStream::from(socket));
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut sock, Token(i), interest)
            .is_err()
        {
            self.counts[index(behaviour)].tally.connect_failed += 1;
            self.slots[i].start_at = now + RETRY;
            return;
        }
        self.slots[i].conn = Some(Conn {
            sock,
            opened: now,
            connected: false,
            sent: 0,
            head: Vec::new(),
            upgraded: false,
            next_byte_at: now,
        });
    }

    fn on_event(&mut self, i: usize, writable: bool) {
        let now = Instant::now();
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        let behaviour = slot.behaviour;
        let Some(conn) = &mut slot.conn else { return };
        if !conn.connected {
            if !writable {
                // An error or a reset before the connection was up.
                if conn.sock.peer_addr().is_err() {
                    self.end(i, End::ConnectFailed, now);
                }
                return;
            }
            if conn.sock.take_error().ok().flatten().is_some() || conn.sock.peer_addr().is_err() {
                self.end(i, End::ConnectFailed, now);
                return;
            }
            conn.connected = true;
            conn.opened = now;
            self.counts[index(behaviour)].tally.opened += 1;
        }
        if behaviour.reads() && !self.read(i, now) {
            return;
        }
        if behaviour != Behaviour::Slowloris {
            self.write_script(i, now);
        }
    }

    /// Reads what has arrived; false once the connection is gone.
    fn read(&mut self, i: usize, now: Instant) -> bool {
        let slot = &mut self.slots[i];
        let behaviour = slot.behaviour;
        let Some(conn) = &mut slot.conn else {
            return false;
        };
        if conn.upgraded {
            // A ping flood reads nothing after the upgrade: the pongs pile up at the server.
            return true;
        }
        loop {
            match conn.sock.read(&mut self.scratch) {
                Ok(0) => {
                    self.end(i, End::Server { reset: false }, now);
                    return false;
                }
                Ok(n) => {
                    if conn.head.len() < 12 {
                        let take = n.min(12 - conn.head.len());
                        conn.head.extend_from_slice(&self.scratch[..take]);
                        if conn.head.len() >= 12 {
                            let status = String::from_utf8_lossy(&conn.head[9..12]).into_owned();
                            *self.counts[index(behaviour)]
                                .tally
                                .statuses
                                .entry(status.clone())
                                .or_default() += 1;
                            if behaviour == Behaviour::PingFlood && status == "101" {
                                conn.upgraded = true;
                                return true;
                            }
                        }
                    }
                    if behaviour == Behaviour::ResetMidResponse {
                        self.end(i, End::Client, now);
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.end(i, End::Server { reset: true }, now);
                    return false;
                }
            }
        }
    }

    /// Writes the next part of the behaviour's bytes: all that fits, or one byte for slowloris.
    fn write_script(&mut self, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        let behaviour = slot.behaviour;
        let Some(conn) = &mut slot.conn else { return };
        if !conn.connected {
            return;
        }
        let mut written = 0;
        while written < FLOOD_BURST {
            let bytes: &[u8] = match behaviour {
                // One byte per call; the head never ends, its last byte repeats.
                Behaviour::Slowloris => {
                    let at = conn.sent.min(SLOWLORIS.len() - 1);
                    &SLOWLORIS[at..at + 1]
                }
                Behaviour::PingFlood if conn.upgraded => {
                    &self.scripts.pings[conn.sent % self.scripts.pings.len()..]
                }
                _ => {
                    let script = self.scripts.script(i, behaviour);
                    if conn.sent >= script.len() {
                        return;
                    }
                    &script[conn.sent..]
                }
            };
            match conn.sock.write(bytes) {
                Ok(n) => {
                    conn.sent += n;
                    written += n;
                    if behaviour == Behaviour::Slowloris {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.end(i, End::Server { reset: true }, now);
                    return;
                }
            }
        }
    }
}

/// The bytes the behaviours send.
struct Scripts {
    pings: Vec<u8>,
    random: Vec<u8>,
    oversized: Vec<u8>,
}

impl Scripts {
    fn new() -> Scripts {
        let mut pings = Vec::new();
        for _ in 0..64 {
            // A masked ping with 125 bytes of payload: the longest a control frame may carry.
            pings.extend_from_slice(&[0x89, 0x80 | 125, 0, 0, 0, 0]);
            pings.extend_from_slice(&[b'p'; 125]);
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let random = (0..1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let mut oversized = format!("GET / HTTP/1.1\r\n{HOST}X-Big: ").into_bytes();
        oversized.resize(oversized.len() + 64 * 1024, b'a');
        oversized.extend_from_slice(b"\r\n\r\n");
        Scripts {
            pings,
            random,
            oversized,
        }
    }

    /// What a behaviour sends, all of it (a ping flood: until the upgrade).
    fn script(&self, i: usize, behaviour: Behaviour) -> &[u8] {
        match behaviour {
            Behaviour::Slowloris => SLOWLORIS,
            Behaviour::Silent => b"",
            Behaviour::NonReader => b"GET /sse HTTP/1.1\r\nHost: hostile\r\n\r\n",
            Behaviour::PingFlood => WS_UPGRADE,
            Behaviour::StalledBody => {
                b"POST /publish HTTP/1.1\r\nHost: hostile\r\nContent-Length: 1000\r\n\r\nhello"
            }
            Behaviour::OversizedHead => &self.oversized,
            Behaviour::RandomBytes => &self.random,
            Behaviour::ResetMidResponse if i.is_multiple_of(2) => {
                b"GET /stream HTTP/1.1\r\nHost: hostile\r\n\r\n"
            }
            Behaviour::ResetMidResponse => b"GET /sse HTTP/1.1\r\nHost: hostile\r\n\r\n",
            Behaviour::InvalidChunked => {
                b"POST /echo HTTP/1.1\r\nHost: hostile\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
            }
        }
    }
}

impl Attack<'_> {
    fn end(&mut self, i: usize, how: End, now: Instant) {
        let slot = &mut self.slots[i];
        let Some(mut conn) = slot.conn.take() else {
            return;
        };
        slot.start_at = now + RETRY;
        let _ = self.poll.registry().deregister(&mut conn.sock);
        let counts = &mut self.counts[index(slot.behaviour)];
        match how {
            End::Server { reset } => {
                if reset {
                    counts.tally.reset_by_server += 1;
                } else {
                    counts.tally.closed_by_server += 1;
                }
                if counts.lives_ms.len() < 1 << 20 {
                    counts.lives_ms.push((now - conn.opened).as_millis() as u64);
                }
            }
            End::Client => {
                counts.tally.ended_by_client += 1;
                // An abortive close: a reset, whatever is still unread.
                let _ = SockRef::from(&conn.sock).set_linger(Some(Duration::ZERO));
            }
            End::ConnectFailed => counts.tally.connect_failed += 1,
        }
    }
}

/// A behaviour's place in `Behaviour::ALL` (declaration order).
fn index(b: Behaviour) -> usize {
    b as usize
}

const SLOWLORIS: &[u8] = b"GET / HTTP/1.1\r\nHost: hostile\r\nX-Slow: aaaa";
const WS_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: hostile\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The one well-behaved connection of the attack, on a thread of its own so that a slow answer
/// never holds up the loop: it publishes the large events, one request at a time on a keep-alive
/// connection, reconnecting when that fails.
struct Publisher {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Publisher {
    fn start(args: &HostileArgs) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let thread = (args.publish_per_sec > 0).then(|| {
            let every = Duration::from_secs_f64(1.0 / args.publish_per_sec as f64);
            let body = "x".repeat(args.publish_bytes);
            let request = format!(
                "POST /publish HTTP/1.1\r\n{HOST}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes();
            let (target, stop, sent, answered) =
                (args.target, stop.clone(), sent.clone(), answered.clone());
            thread::spawn(move || {
                let mut sock = None;
                while !stop.load(Ordering::Relaxed) {
                    let next = Instant::now() + every;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if publish(&mut sock, target, &request) {
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        sock = None;
                    }
                    thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        });
        Publisher {
            stop,
            sent,
            answered,
            thread,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Stops the thread; returns (sent, answered).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.answered.load(Ordering::Relaxed),
        )
    }
}

/// One publish on `sock` (connected first if need be); true when it was answered `200`.
fn publish(sock: &mut Option<StdStream>, target: SocketAddr, request: &[u8]) -> bool {
    let timeout = Some(Duration::from_millis(500));
    if sock.is_none() {
        let Ok(s) = StdStream::connect_timeout(&target, Duration::from_millis(500)) else {
            return false;
        };
        if s.set_read_timeout(timeout).is_err() || s.set_write_timeout(timeout).is_err() {
            return false;
        }
        *sock = Some(s);
    }
    let Some(s) = sock else { return false };
    let mut answer = [0u8; 512];
    s.write_all(request).is_ok()
        && matches!(s.read(&mut answer), Ok(n) if n >= 12 && &answer[9..12] == b"200")
}
