//! The load generator: holds many long-lived connections (SSE, chunked stream, WebSocket or long
//! poll) against a server and measures what they get, while probing the server with fresh
//! requests and sampling its process.
//!
//! One single-threaded mio loop per process, no async runtime. Past what one process may hold
//! (`RLIMIT_NOFILE`), the connections are split over worker processes (copies of this
//! executable) that report each second to the parent, which merges their records; only the
//! parent probes and samples the server. Past what one source address can carry (the ephemeral
//! port range), connections to a loopback target are spread over 127.0.0.0/8 source addresses.
//!
//! - `client.rs`: one connection's protocol, sans-IO
//! - `conns.rs`: the connections of one process (ramp, I/O, timeouts, per-second records)
//! - `probe.rs`, `sampler.rs`: the probe and the `/proc/PID` readings
//! - `engine.rs`: the event loop that drives them
//! - `procs.rs`: splitting a run over processes, workers, their pipes
//! - `merge.rs`: per-second records of all processes into seconds and totals
//! - `record.rs`: what a process reports each second; histogram bucket exchange
//! - `report.rs`: the public result types, [`Second`] and [`Report`]
//! - `net.rs`: sockets, source addresses, failure causes

mod client;
mod conns;
pub mod endpoint;
mod engine;
pub mod hostile;
mod merge;
mod net;
mod probe;
mod procs;
pub mod record;
pub mod report;
pub mod sampler;
mod worker;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use endpoint::{Request, TimeUnit, Timestamp, Url};
use serde::{Deserialize, Serialize};

pub use client::parse_event;
pub use report::{Delivery, Failures, Report, Second, ServerSample, Totals};

const DEFAULT_CONNECTIONS: u64 = 100;
const DEFAULT_RAMP_PER_SEC: f64 = 100.0;
const DEFAULT_HOLD_S: f64 = 10.0;
const DEFAULT_PROBE_MS: u64 = 200;
const DEFAULT_PROBE_TIMEOUT_MS: u64 = 2_000;
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The server holds a long poll up to its `--poll-timeout-ms` (30 s by default) before it
/// answers `[]`: each poll gets that long plus `--timeout-ms`.
const SERVER_POLL_TIMEOUT_MS: u64 = crate::app::config::ServerConfig::DEFAULT.poll_timeout_ms;
/// Descriptors each process keeps free for probes, pipes, epoll and `/proc` reads.
const FD_HEADROOM: u64 = 200;
/// The most processes one run may use.
const MAX_PROCESSES: u64 = 256;
/// The longest run accepted, ramp and hold together.
const MAX_RUN_S: f64 = 86_400.0;
/// Connections waiting for their response head at most, over all processes: below the contract
/// servers' listen backlog (1024), so a ramp faster than the server accepts waits for it instead
/// of overflowing its accept queue into dropped handshakes and connect timeouts.
const DEFAULT_MAX_CONNECTING: u64 = 512;
/// A ramp that has to wait for the server may take this many times its planned length (plus
/// `RAMP_GRACE_S`) before it stops opening connections.
const RAMP_STRETCH: f64 = 4.0;
const RAMP_GRACE_S: f64 = 30.0;

/// What each connection subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `GET /sse`: a Server-Sent Events stream.
    Sse,
    /// `GET /ws`: a WebSocket; the server sends each event as a text frame.
    Ws,
    /// `GET /stream`: chunked NDJSON, one event per chunk.
    Stream,
    /// `GET /poll?after=SEQ`, again and again on one keep-alive connection.
    Poll,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sse => "sse",
            Kind::Ws => "ws",
            Kind::Stream => "stream",
            Kind::Poll => "poll",
        }
    }
}

/// How progress is printed while the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// One compact line per second on stdout.
    Human,
    /// One JSON object (a `Second`) per line per second on stdout, nothing else on stdout.
    Json,
}

/// `c10k load` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Address of a server that serves the contract, e.g. 127.0.0.1:8080 (the path follows from
    /// --kind).
    #[arg(
        help_heading = "What to connect to",
        long,
        required_unless_present = "url",
        conflicts_with = "url"
    )]
    pub target: Option<SocketAddr>,
    /// Any server instead: http://HOST:PORT/PATH?QUERY (SSE, or --kind stream / poll) or
    /// ws://HOST:PORT/PATH (WebSocket), e.g. http://127.0.0.1:3000/events.
    #[arg(help_heading = "What to connect to", long)]
    pub url: Option<String>,
    /// What each connection subscribes to: sse, ws (WebSocket), stream (chunked NDJSON) or
    /// poll (long polling on a keep-alive connection); a ws:// URL means ws.
    #[arg(
        help_heading = "What to connect to",
        long,
        value_enum,
        default_value = "sse"
    )]
    pub kind: Kind,
    /// A header field for every request, the WebSocket upgrade included (repeatable), e.g.
    /// -H 'Authorization: Bearer TOKEN'.
    #[arg(
        help_heading = "What to connect to",
        short = 'H',
        long = "header",
        value_name = "NAME: VALUE"
    )]
    pub headers: Vec<String>,
    /// Subprotocols offered in the WebSocket upgrade (`Sec-WebSocket-Protocol`), e.g. chat.v1.
    #[arg(help_heading = "What to connect to", long, value_name = "NAMES")]
    pub ws_protocol: Option<String>,
    /// Each WebSocket sends this text message every --ws-send-every-ms, with a marker holding
    /// its send time (in place of `{marker}`, or at the end); an echo of it is timed as a round
    /// trip, e.g. --ws-send '{"type":"ping","id":"{marker}"}'.
    #[arg(help_heading = "What to measure", long, value_name = "TEXT")]
    pub ws_send: Option<String>,
    /// How often each WebSocket sends the --ws-send message, in milliseconds.
    #[arg(help_heading = "What to measure", long, default_value_t = 1000)]
    pub ws_send_every_ms: u64,
    /// The field of an event's JSON data that holds its send time (`a.b` for a nested one).
    #[arg(
        help_heading = "What to measure",
        long,
        value_name = "FIELD",
        default_value = "sent_ns"
    )]
    pub timestamp: String,
    /// The unit of that send time, since the Unix epoch; auto tells s, ms, µs and ns apart by
    /// size.
    #[arg(
        help_heading = "What to measure",
        long,
        value_enum,
        default_value = "auto"
    )]
    pub timestamp_unit: TimeUnit,
    /// Connections to open and hold.
    #[arg(help_heading = "How many, how fast", long, default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: u64,
    /// Connections opened per second, evenly paced.
    #[arg(help_heading = "How many, how fast", long, default_value_t = DEFAULT_RAMP_PER_SEC)]
    pub ramp_per_sec: f64,
    /// Connections waiting for their response head at most: the ramp slows to the server's
    /// pace rather than overflow its accept queue (keep it below the server's listen backlog).
    #[arg(help_heading = "How many, how fast", long, default_value_t = DEFAULT_MAX_CONNECTING)]
    pub max_connecting: u64,
    /// Seconds to hold the connections once the ramp is over; then they are closed and the run
    /// ends.
    #[arg(help_heading = "How many, how fast", long, default_value_t = DEFAULT_HOLD_S)]
    pub hold_s: f64,
    /// Start a probe (a fresh connection and `GET /`) this often, in milliseconds; 0 turns
    /// probing off.
    #[arg(help_heading = "What to measure", long, default_value_t = DEFAULT_PROBE_MS)]
    pub probe_ms: u64,
    /// A probe not answered within this many milliseconds counts as a timeout and is abandoned.
    #[arg(help_heading = "What to measure", long, default_value_t = DEFAULT_PROBE_TIMEOUT_MS)]
    pub probe_timeout_ms: u64,
    /// What the probe asks for: http://HOST:PORT/PATH [default: GET / on the server under load],
    /// e.g. http://127.0.0.1:3000/health.
    #[arg(help_heading = "What to measure", long, value_name = "URL")]
    pub probe_url: Option<String>,
    /// The status that counts as the probe's answer.
    #[arg(help_heading = "What to measure", long, default_value_t = 200)]
    pub probe_status: u16,
    /// PID of the server: its memory, threads and open descriptors are sampled from /proc each
    /// second.
    #[arg(help_heading = "What to measure", long)]
    pub server_pid: Option<u32>,
    /// Write the final report (JSON) to this file; `-` prints it on stdout at the end, after the
    /// progress lines (the summary then goes to stderr).
    #[arg(help_heading = "Output", long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Progress output: `human` (a line per second) or `json` (a JSON object per line per
    /// second on stdout, for programs).
    #[arg(help_heading = "Output", long, value_enum, default_value = "human")]
    pub progress: Progress,
    /// Milliseconds allowed for a TCP connect and for the response head after it.
    #[arg(help_heading = "How many, how fast", long, default_value_t = DEFAULT_TIMEOUT_MS)]
    pub timeout_ms: u64,
    /// Spread connections over this many loopback source addresses (127.0.0.2 up); 0 picks as
    /// many as the ephemeral port range needs. Only for a loopback IPv4 target.
    #[arg(help_heading = "How many, how fast", long, default_value_t = 0)]
    pub source_addrs: u64,
    /// A source address to connect from (repeatable), for a server that is not on loopback: an
    /// address of one of this machine's interfaces. Each carries two fifths of the ephemeral
    /// port range to one server (about 11,000 with Linux's default range).
    #[arg(
        help_heading = "How many, how fast",
        long,
        value_name = "IPV4",
        conflicts_with = "source_addrs"
    )]
    pub source_ip: Vec<std::net::Ipv4Addr>,
    /// After the last readiness, keep polling without sleeping for up to this many
    /// microseconds before blocking. On a machine shared with the server, every wake-up of a
    /// sleeping client is an interrupt the server's CPU sends (loopback runs the receiver's
    /// input in the sender's write); polling keeps that cost off the server, as it is when the
    /// clients are elsewhere. Costs the load generator up to this much CPU per pause.
    #[arg(help_heading = "How many, how fast", long, default_value_t = 0)]
    pub busy_poll_us: u64,
    /// Most connections one process holds (the default follows the open file limit).
    #[arg(long, hide = true)]
    pub max_per_process: Option<u64>,
    /// Internal: run as a worker process with this plan (JSON).
    #[arg(long, hide = true)]
    pub worker_plan: Option<String>,
    /// Internal: the executable started for worker processes (default: this one).
    #[arg(long, hide = true)]
    pub worker_exe: Option<PathBuf>,
}

impl LoadArgs {
    /// The address connected to (once `--url` is resolved, its address).
    pub fn addr(&self) -> SocketAddr {
        self.target
            .unwrap_or(SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// The defaults of the command line, against `target`.
    pub fn new(target: SocketAddr) -> LoadArgs {
        LoadArgs {
            target: Some(target),
            url: None,
            kind: Kind::Sse,
            headers: Vec::new(),
            ws_protocol: None,
            ws_send: None,
            ws_send_every_ms: 1000,
            timestamp: Timestamp::default().field,
            timestamp_unit: TimeUnit::Auto,
            connections: DEFAULT_CONNECTIONS,
            ramp_per_sec: DEFAULT_RAMP_PER_SEC,
            max_connecting: DEFAULT_MAX_CONNECTING,
            hold_s: DEFAULT_HOLD_S,
            probe_ms: DEFAULT_PROBE_MS,
            probe_timeout_ms: DEFAULT_PROBE_TIMEOUT_MS,
            probe_url: None,
            probe_status: 200,
            server_pid: None,
            json: None,
            progress: Progress::Human,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            source_addrs: 0,
            source_ip: Vec::new(),
            busy_poll_us: 0,
            max_per_process: None,
            worker_plan: None,
            worker_exe: None,
        }
    }

    /// The arguments after `c10k load` that reproduce these options, for running the load
    /// generator as a subprocess (`c10k load ARGS...`; add `--progress json` to read its
    /// seconds as JSON lines).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = match (&self.url, self.target) {
            (Some(url), _) => vec!["--url".to_string(), url.clone()],
            (None, Some(target)) => vec!["--target".to_string(), target.to_string()],
            (None, None) => Vec::new(),
        };
        for field in &self.headers {
            a.extend(["-H".to_string(), field.clone()]);
        }
        if let Some(p) = &self.ws_protocol {
            a.extend(["--ws-protocol".to_string(), p.clone()]);
        }
        if let Some(text) = &self.ws_send {
            a.extend(["--ws-send".to_string(), text.clone()]);
            a.extend([
                "--ws-send-every-ms".to_string(),
                self.ws_send_every_ms.to_string(),
            ]);
        }
        a.extend([
            "--timestamp".to_string(),
            self.timestamp.clone(),
            "--timestamp-unit".to_string(),
            clap::ValueEnum::to_possible_value(&self.timestamp_unit)
                .map_or_else(String::new, |v| v.get_name().to_string()),
        ]);
        a.extend([
            "--kind".into(),
            self.kind.name().into(),
            "--connections".into(),
            self.connections.to_string(),
            "--ramp-per-sec".into(),
            self.ramp_per_sec.to_string(),
            "--max-connecting".into(),
            self.max_connecting.to_string(),
            "--hold-s".into(),
            self.hold_s.to_string(),
            "--probe-ms".into(),
            self.probe_ms.to_string(),
            "--probe-timeout-ms".into(),
            self.probe_timeout_ms.to_string(),
            "--timeout-ms".into(),
            self.timeout_ms.to_string(),
            "--source-addrs".into(),
            self.source_addrs.to_string(),
            "--busy-poll-us".into(),
            self.busy_poll_us.to_string(),
            "--progress".into(),
            match self.progress {
                Progress::Human => "human",
                Progress::Json => "json",
            }
            .into(),
        ]);
        if let Some(url) = &self.probe_url {
            a.extend(["--probe-url".into(), url.clone()]);
        }
        a.extend(["--probe-status".into(), self.probe_status.to_string()]);
        if let Some(pid) = self.server_pid {
            a.extend(["--server-pid".into(), pid.to_string()]);
        }
        if let Some(path) = &self.json {
            a.extend(["--json".into(), path.display().to_string()]);
        }
        for ip in &self.source_ip {
            a.extend(["--source-ip".into(), ip.to_string()]);
        }
        if let Some(n) = self.max_per_process {
            a.extend(["--max-per-process".into(), n.to_string()]);
        }
        if let Some(exe) = &self.worker_exe {
            a.extend(["--worker-exe".into(), exe.display().to_string()]);
        }
        a
    }
}

/// Runs `c10k load`: progress on stdout while it runs, the report to `--json` and a summary at
/// the end. An error is one sentence for the user.
pub fn run(args: &LoadArgs) -> Result<(), String> {
    if let Some(plan) = &args.worker_plan {
        return worker::worker_main(plan);
    }
    let stop =
        engine::stop_on_signals().map_err(|e| format!("could not set up signal handling: {e}"))?;
    let report_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    // Fail before the run, not after it, when the report cannot be written.
    let mut report_file = match &args.json {
        Some(_) if report_to_stdout => None,
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|e| format!("could not create the report file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let progress = args.progress;
    let connections = args.connections;
    let mut stdout = std::io::stdout();
    let report = execute(args, Some(stop), &mut |second: &Second| {
        let line = match progress {
            Progress::Human => second.human(connections),
            Progress::Json => serde_json::to_string(second).unwrap_or_default(),
        };
        // A reader that went away must not stop the run: it is bounded and writes its report.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            if let (Some(file), Some(path)) = (report_file.take(), &args.json) {
                drop(file);
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    if let (Some(file), Some(path)) = (&mut report_file, &args.json) {
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| format!("could not encode the report: {e}"))?;
        file.write_all(&json)
            .and_then(|()| file.write_all(b"\n"))
            .map_err(|e| format!("could not write the report to {}: {e}", path.display()))?;
    }
    if report_to_stdout {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("could not encode the report: {e}"))?;
        println!("{json}");
    }
    match progress {
        Progress::Human if !report_to_stdout => println!("{}", report.summary()),
        _ => eprintln!("{}", report.summary()),
    }
    Ok(())
}

/// Runs a load in this process and returns its report; `on_second` sees each second as it is
/// merged. Worker processes, when the run needs several, are started from `--worker-exe` or
/// else the current executable, which must then be `c10k`. Nothing is printed but notes on
/// stderr.
pub fn run_with(args: &LoadArgs, mut on_second: impl FnMut(&Second)) -> Result<Report, String> {
    execute(args, None, &mut on_second)
}

/// Checks the options and turns them into numbers.
fn validate(args: &LoadArgs) -> Result<(), String> {
    if !(args.ramp_per_sec.is_finite() && args.ramp_per_sec > 0.0) {
        return Err("--ramp-per-sec must be a positive number".into());
    }
    if !(args.hold_s.is_finite() && args.hold_s >= 0.0) {
        return Err("--hold-s must be zero or a positive number".into());
    }
    if ramp_limit_s(args) + args.hold_s > MAX_RUN_S {
        return Err(format!(
            "the ramp (which may stretch to {RAMP_STRETCH} times its length when the server is slow) and hold together must last at most {MAX_RUN_S} seconds"
        ));
    }
    if args.max_connecting == 0 {
        return Err("--max-connecting must be positive".into());
    }
    if args.probe_ms > 0 && args.probe_timeout_ms == 0 {
        return Err("--probe-timeout-ms must be positive".into());
    }
    if args.timeout_ms == 0 {
        return Err("--timeout-ms must be positive".into());
    }
    // Milliseconds become microsecond deadlines: a day is more than any run and cannot overflow.
    let day_ms = 86_400_000;
    for (flag, value) in [
        ("--timeout-ms", args.timeout_ms),
        ("--probe-ms", args.probe_ms),
        ("--probe-timeout-ms", args.probe_timeout_ms),
    ] {
        if value > day_ms {
            return Err(format!("{flag} must be at most {day_ms} (a day)"));
        }
    }
    if args.max_per_process == Some(0) {
        return Err("--max-per-process must be positive".into());
    }
    if args.source_addrs > 0 && !matches!(args.addr().ip(), IpAddr::V4(ip) if ip.is_loopback()) {
        return Err(format!(
            "--source-addrs needs a loopback IPv4 target, and {} is not one",
            args.addr()
        ));
    }
    if !args.source_ip.is_empty() && !args.addr().is_ipv4() {
        return Err(format!(
            "--source-ip takes IPv4 addresses, and {} is an IPv6 server",
            args.addr()
        ));
    }
    if args.source_addrs > net::MAX_SOURCES {
        return Err(format!(
            "--source-addrs can be at most {}",
            net::MAX_SOURCES
        ));
    }
    Ok(())
}

/// The ramp's planned length, in seconds.
fn ramp_s(args: &LoadArgs) -> f64 {
    args.connections as f64 / args.ramp_per_sec
}

/// How long the ramp may take when it has to wait for the server, in seconds.
fn ramp_limit_s(args: &LoadArgs) -> f64 {
    ramp_s(args) * RAMP_STRETCH + RAMP_GRACE_S
}

/// How a run is laid out over processes and source addresses.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    /// Connections per worker process; empty when the parent holds them itself.
    workers: Vec<u64>,
    /// Source addresses to bind; empty to let the kernel choose.
    sources: Vec<std::net::Ipv4Addr>,
}

/// Decides processes and source addresses for `args`, given the open file limit `fd_limit` and
/// the connections one source address can carry.
fn layout(args: &LoadArgs, fd_limit: u64, per_source: u64) -> Result<Layout, String> {
    // Probes in flight at most, each a descriptor.
    let probe_fds = args
        .probe_timeout_ms
        .checked_div(args.probe_ms)
        .map_or(0, |n| n + 2);
    let by_limit = fd_limit.saturating_sub(FD_HEADROOM + probe_fds);
    let per_process = args.max_per_process.unwrap_or(u64::MAX).min(by_limit);
    let n = args.connections;
    if per_process == 0 && n > 0 {
        return Err(format!(
            "the open file limit ({fd_limit}) leaves no room for connections; raise it with `ulimit -n`"
        ));
    }
    let workers = if n <= per_process {
        // The probe measures the server, so it gets a loop of its own: with a probe, even a
        // small run's connections go to a worker process, or the probe's latency would include
        // this loop's time reading every subscriber's events.
        if args.probe_ms > 0 && n > 0 {
            vec![n]
        } else {
            Vec::new()
        }
    } else {
        let processes = n.div_ceil(per_process);
        if processes > MAX_PROCESSES {
            return Err(format!(
                "{n} connections at {per_process} per process would need {processes} processes, more than {MAX_PROCESSES}; raise the open file limit"
            ));
        }
        (0..processes)
            .map(|i| n / processes + u64::from(i < n % processes))
            .collect()
    };
    if !args.source_ip.is_empty() {
        let capacity = per_source * args.source_ip.len() as u64;
        if n > capacity {
            eprintln!(
                "c10k load: {n} connections from {} source addresses may run out of ephemeral ports (about {capacity}); give more with --source-ip",
                args.source_ip.len()
            );
        }
        return Ok(Layout {
            workers,
            sources: args.source_ip.clone(),
        });
    }
    let loopback_v4 = matches!(args.addr().ip(), IpAddr::V4(ip) if ip.is_loopback());
    let sources = if args.source_addrs > 0 {
        args.source_addrs
    } else if loopback_v4 && n > per_source {
        n.div_ceil(per_source)
    } else {
        if n > per_source {
            eprintln!(
                "c10k load: {n} connections to {} from one source address may run out of ephemeral ports (one address reaches about {per_source} to one server); past that, add addresses to an interface and give them with --source-ip",
                args.addr()
            );
        }
        0
    };
    Ok(Layout {
        workers,
        sources: net::loopback_sources(sources.min(net::MAX_SOURCES)),
    })
}

/// `--target`/`--url`, `--kind` and `-H` made into one address, kind and request: the options
/// with `target` set (and `kind` ws for a ws:// URL), and what each connection sends.
fn resolve(args: &LoadArgs) -> Result<(LoadArgs, Request), String> {
    let mut args = args.clone();
    for field in &args.headers {
        endpoint::check_header(field)?;
    }
    if args.timestamp.is_empty() {
        return Err("--timestamp must name a field".into());
    }
    let mut request = match (&args.url, args.target) {
        (Some(text), _) => {
            let url = Url::parse(text)?;
            if url.websocket {
                args.kind = Kind::Ws;
            } else if args.kind == Kind::Ws {
                return Err(format!("{text}: a WebSocket URL starts with ws://"));
            }
            args.target = Some(url.resolve()?);
            Request {
                path: url.path,
                host: url.authority,
                headers: Vec::new(),
                ws_protocol: None,
            }
        }
        (None, Some(target)) => Request::contract(args.kind, &target.to_string()),
        (None, None) => return Err("give the server with --target ADDR or --url URL".into()),
    };
    request.headers = args.headers.clone();
    if args.ws_send.is_some() && args.kind != Kind::Ws {
        return Err("--ws-send needs WebSocket connections (--kind ws or a ws:// URL)".into());
    }
    if args.ws_send_every_ms == 0 || args.ws_send_every_ms > 86_400_000 {
        return Err("--ws-send-every-ms must be between 1 and 86400000 (a day)".into());
    }
    if let Some(p) = &args.ws_protocol {
        endpoint::check_ws_protocol(p)?;
        request.ws_protocol = Some(p.clone());
    }
    Ok((args, request))
}

/// The run itself, for `run` and `run_with`.
fn execute(
    args: &LoadArgs,
    stop: Option<mio::unix::pipe::Receiver>,
    on_second: &mut dyn FnMut(&Second),
) -> Result<Report, String> {
    let (args, request) = &resolve(args)?;
    validate(args)?;
    let fd_limit = match crate::sys::raise_fd_limit() {
        Ok((soft, _)) => soft,
        Err(e) => return Err(format!("could not read the open file limit: {e}")),
    };
    let layout = layout(args, fd_limit, net::per_source_capacity())?;
    let hold_us = (args.hold_s * 1e6) as u64;
    let ramp_limit_us = (ramp_limit_s(args) * 1e6) as u64;
    let schedule = engine::Schedule {
        planned_close_us: ((ramp_s(args) * 1e6) as u64 + hold_us).max(1),
        hold_us,
        latest_close_us: (ramp_limit_us + hold_us).max(1),
    };
    let conn_plan = conns::ConnPlan {
        kind: args.kind,
        target: args.addr(),
        count: args.connections,
        rate: args.ramp_per_sec,
        first_index: 0,
        sources: layout.sources.clone(),
        timeout_ms: args.timeout_ms,
        request: request.clone(),
        timestamp: Timestamp {
            field: args.timestamp.clone(),
            unit: args.timestamp_unit,
        },
        poll_timeout_ms: SERVER_POLL_TIMEOUT_MS + args.timeout_ms,
        max_connecting: args.max_connecting,
        ramp_limit_us,
        busy_poll_us: args.busy_poll_us,
        ws_send: args.ws_send.as_ref().map(|text| conns::WsSend {
            text: text.clone(),
            every_ms: args.ws_send_every_ms,
        }),
    };
    let processes = layout.workers.len().max(1) as u64;
    eprintln!(
        "c10k load: {} {} connections to {} at {}/s, held {}s; open file limit {fd_limit}; {} process{}; {}",
        args.connections,
        args.kind.name(),
        args.url.as_deref().map_or_else(|| args.addr().to_string(), str::to_string),
        args.ramp_per_sec,
        args.hold_s,
        processes,
        if processes == 1 { "" } else { "es" },
        match layout.sources.as_slice() {
            [] => "source address chosen by the kernel".to_string(),
            [one] => format!("source address {one}"),
            [first, .., last] => format!("{} source addresses {first}..{last}", layout.sources.len()),
        }
    );
    let probe = match (&args.probe_url, args.probe_ms) {
        (_, 0) => None,
        (Some(text), _) => {
            let url = Url::parse(text)?;
            if url.websocket {
                return Err(format!(
                    "--probe-url {text}: the probe speaks http://, not ws://"
                ));
            }
            let probe_request = Request {
                path: url.path.clone(),
                host: url.authority.clone(),
                headers: request.headers.clone(),
                ws_protocol: None,
            };
            Some((url.resolve()?, probe_request))
        }
        (None, _) => Some((
            args.addr(),
            Request {
                path: "/".into(),
                ..request.clone()
            },
        )),
    };
    let parent = Box::new(engine::ParentParts {
        probe: probe.map(|(addr, probe_request)| {
            probe::Probe::new(
                addr,
                &probe_request,
                args.probe_status,
                args.probe_ms,
                args.probe_timeout_ms,
            )
        }),
        sampler: args.server_pid.map(sampler::Sampler::new),
        // The kernel's count is the machine's: it says something of this server only when the
        // server is here.
        listen_drops_base: args
            .addr()
            .ip()
            .is_loopback()
            .then(net::listen_drops)
            .flatten(),
    });
    let (start_ns, outcome) = if layout.workers.is_empty() {
        let start_ns = crate::sys::now_ns();
        let engine = engine::Engine::new(
            start_ns,
            schedule,
            Some(conns::Conns::new(conn_plan)),
            engine::Role::Parent {
                parts: parent,
                children: Vec::new(),
            },
            stop,
        )
        .map_err(|e| format!("could not start the event loop: {e}"))?;
        (start_ns, engine.run(on_second)?)
    } else {
        let exe = match &args.worker_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("could not find this executable to start workers: {e}"))?,
        };
        // Workers start together a moment from now, so their seconds line up with the parent's.
        let start_ns = crate::sys::now_ns() + 300_000_000;
        let plans = procs::split(
            &conn_plan,
            &layout.workers,
            start_ns,
            schedule.latest_close_us,
        );
        let children = procs::spawn(&exe, args.addr(), &plans)?;
        let engine = engine::Engine::new(
            start_ns,
            schedule,
            None,
            engine::Role::Parent {
                parts: parent,
                children,
            },
            stop,
        )
        .map_err(|e| format!("could not start the event loop: {e}"))?;
        (start_ns, engine.run(on_second)?)
    };
    let (seconds, totals) = outcome
        .merger
        .finish(outcome.ramp_done_us / 1000, outcome.closed_at_us / 1000);
    Ok(Report {
        target: args.url.clone().unwrap_or_else(|| args.addr().to_string()),
        kind: args.kind.name().to_string(),
        connections: args.connections,
        ramp_per_sec: args.ramp_per_sec,
        hold_s: args.hold_s,
        processes,
        source_addrs: layout.sources.len().max(1) as u64,
        max_connecting: args.max_connecting,
        busy_poll_us: args.busy_poll_us,
        started_unix_ns: start_ns,
        duration_s: outcome.closed_at_us as f64 / 1e6,
        teardown_s: outcome.teardown_us as f64 / 1e6,
        seconds,
        totals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(extra: &[&str]) -> LoadArgs {
        let mut argv = vec!["load", "--target", "127.0.0.1:9"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().load
    }

    #[test]
    fn defaults_match_new_and_args_round_trip() {
        let parsed = parse(&[]);
        let new = LoadArgs::new("127.0.0.1:9".parse().unwrap());
        assert_eq!(format!("{parsed:?}"), format!("{new:?}"));
        let mut custom = parse(&[
            "--kind",
            "ws",
            "--connections",
            "7",
            "--hold-s",
            "1.5",
            "--server-pid",
            "42",
            "--progress",
            "json",
            "--max-per-process",
            "3",
        ]);
        custom.json = Some("/tmp/x.json".into());
        let mut argv = vec!["load".to_string()];
        argv.extend(custom.to_args());
        let back = Cli::try_parse_from(argv).unwrap().load;
        assert_eq!(format!("{back:?}"), format!("{custom:?}"));
    }

    #[test]
    fn layout_splits_processes_and_sources() {
        let mut args = parse(&["--connections", "30", "--probe-ms", "0"]);
        assert_eq!(
            layout(&args, 20_000, 25_000).unwrap(),
            Layout {
                workers: vec![],
                sources: vec![]
            }
        );
        // With a probe, the connections live in a worker and the probe has the parent's loop.
        args.probe_ms = 200;
        assert_eq!(layout(&args, 20_000, 25_000).unwrap().workers, vec![30]);
        args.max_per_process = Some(10);
        assert_eq!(
            layout(&args, 20_000, 25_000).unwrap().workers,
            vec![10, 10, 10]
        );
        args.max_per_process = None;
        args.connections = 60_000;
        let l = layout(&args, 20_000, 25_000).unwrap();
        // 20,000 less headroom per process: four processes of 15,000.
        assert_eq!(l.workers, vec![15_000; 4]);
        assert_eq!(l.sources.len(), 3);
        // Headroom is kept below the limit.
        assert!(layout(&args, 200, 25_000).is_err());
    }

    #[test]
    fn bad_options_are_one_sentence() {
        let mut args = parse(&[]);
        args.ramp_per_sec = 0.0;
        assert!(validate(&args).unwrap_err().contains("--ramp-per-sec"));
        let mut args = parse(&["--source-addrs", "2"]);
        assert!(validate(&args).is_ok());
        args.target = Some("10.0.0.1:80".parse().unwrap());
        assert!(validate(&args).unwrap_err().contains("loopback"));
        let mut args = parse(&["--timeout-ms", "18446744073709551"]);
        assert!(validate(&args).unwrap_err().contains("--timeout-ms"));
        args.timeout_ms = 5000;
        args.probe_ms = u64::MAX;
        assert!(validate(&args).unwrap_err().contains("--probe-ms"));
    }
}
