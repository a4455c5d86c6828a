//! Through a real nginx: what proxy buffering does to server-sent events and to a chunked
//! stream (nginx's defaults, the server's `X-Accel-Buffering: no`, `proxy_buffering off`), what
//! a WebSocket upgrade needs from the proxy (the `Upgrade`/`Connection` forwarding), and whether
//! a reverse proxy "offloads" long-lived connections from a blocking pool (every proxied stream
//! holds an upstream connection, and so a pool thread).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::chart::{self, Panel, Series};
use super::client::{self, since, Client};
use super::harness::{self, fmt_us, ServerProc};
use super::nginx::Nginx;
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::load::endpoint::Timestamp;
use crate::load::parse_event;
use crate::load::record::{max, new_hist, quantile};
use crate::proto::http::BodyDecoder;
use crate::proto::sse;
use crate::proto::ws::{Message, OpCode};
use crate::sys::{self, TcpState};

/// `c10k run proxy`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds each stream is watched.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub watch_s: u64,
    /// The server's tick period, in milliseconds: the events that cross the proxy.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub tick_ms: u64,
    /// Threads of the blocking pool put behind nginx.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub pool: u64,
    /// How long a probe through the proxy may take before it counts as unanswered, in ms.
    #[arg(long, default_value_t = 3000)]
    pub probe_timeout_ms: u64,
    /// A short run for tests: each stream watched 3 s, a tick every 50 ms, a pool of 4.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/proxy].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// One stream watched through the proxy (or directly).
#[derive(Debug, Clone, Serialize)]
pub struct Stream {
    pub case: String,
    pub path: String,
    pub status: u16,
    /// Events published while it was watched, and those that arrived.
    pub published: u64,
    pub received: u64,
    pub first_event_s: Option<f64>,
    pub p50_us: Option<u64>,
    pub max_us: Option<u64>,
    /// `(seconds into the watch, delivery latency in µs)` of every event received.
    pub events: Vec<(f64, u64)>,
}

/// A WebSocket upgrade through the proxy.
#[derive(Debug, Clone, Serialize)]
pub struct Upgrade {
    pub case: String,
    pub status: u16,
    /// The round trip of one echoed message, when the upgrade succeeded.
    pub echo_us: Option<u64>,
}

/// Long-lived streams through nginx in front of a backend, then a probe through nginx.
#[derive(Debug, Clone, Serialize)]
pub struct Offload {
    pub backend: String,
    pub streams: u64,
    /// Connections nginx held open to the backend meanwhile.
    pub upstream_connections: u64,
    /// The probe's latency through nginx; `None` if unanswered within the timeout.
    pub probe_us: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub nginx: String,
    pub tick_ms: u64,
    pub watch_s: u64,
    pub streams: Vec<Stream>,
    pub upgrades: Vec<Upgrade>,
    pub offload: Vec<Offload>,
}

/// The SSE and stream cases: a name, and the path through nginx (or none: straight).
const STREAM_CASES: [(&str, &str, bool); 5] = [
    ("SSE, no proxy", "/sse", false),
    (
        "SSE, nginx defaults (server header ignored)",
        "/plain/sse",
        true,
    ),
    (
        "SSE, nginx defaults + X-Accel-Buffering: no",
        "/accel/sse",
        true,
    ),
    ("SSE, proxy_buffering off", "/unbuffered/sse", true),
    (
        "chunked stream, nginx defaults (header ignored)",
        "/plain/stream",
        true,
    ),
];

pub fn run(args: &Args) -> Result<(), String> {
    let dir = harness::results_dir("proxy", args.out.as_deref())?;
    let (watch_s, pool, tick_ms) = if args.quick {
        (3, 4, 50)
    } else {
        (args.watch_s, args.pool, args.tick_ms)
    };
    let version = Nginx::version();
    harness::announce("proxy: SSE, streams and WebSocket through a real nginx, and nginx in front of a blocking pool");
    let tick = tick_ms.to_string();
    let evented = ServerProc::start("evented", &["--model", "evented", "--tick-ms", &tick])?;
    let threads = pool.to_string();
    let blocking = ServerProc::start(
        "blocking",
        &[
            "--model",
            "blocking",
            "--threads",
            &threads,
            "--tick-ms",
            &tick,
        ],
    )?;
    let nginx = Nginx::start(&locations(evented.addr, blocking.addr))?;
    println!(
        "{version}, on {}; the evented server on {}",
        nginx.addr, evented.addr
    );
    let web = Web::start(&args.web, &dashboard())?;

    println!(
        "\n{:<50} {:>6} {:>9} {:>11} {:>9} {:>9}",
        "stream", "status", "received", "first event", "p50", "max"
    );
    let mut streams = Vec::new();
    for (case, path, proxied) in STREAM_CASES {
        let target = if proxied { nginx.addr } else { evented.addr };
        let s = watch(target, case, path, Duration::from_secs(watch_s), tick_ms)?;
        println!(
            "{:<50} {:>6} {:>4} of {:<3} {:>11} {:>9} {:>9}",
            s.case,
            s.status,
            s.received,
            s.published,
            s.first_event_s
                .map_or("-".to_string(), |t| format!("{t:.2} s")),
            fmt_us(s.p50_us),
            fmt_us(s.max_us)
        );
        for &(t, us) in &s.events {
            web.row(
                case,
                t,
                serde_json::json!({ "latency_ms": us as f64 / 1000.0 }),
            );
        }
        streams.push(s);
    }

    let mut upgrades = Vec::new();
    for (case, path) in [
        ("WebSocket, proxy_http_version 1.1 only", "/ws-plain/ws"),
        ("WebSocket, Upgrade and Connection forwarded", "/ws/ws"),
    ] {
        let u = upgrade(nginx.addr, case, path)?;
        println!(
            "{:<50} {:>6} {}",
            u.case,
            u.status,
            u.echo_us
                .map_or(String::new(), |us| format!("echo in {}", fmt_us(Some(us))))
        );
        web.status(&format!("{}: {}", u.case, u.status));
        upgrades.push(u);
    }

    let probe_timeout = Duration::from_millis(args.probe_timeout_ms);
    let offload = vec![
        offload(
            &nginx,
            "/pool/",
            &format!("blocking pool of {pool}"),
            blocking.addr,
            pool,
            probe_timeout,
        )?,
        offload(
            &nginx,
            "/evented/",
            "evented",
            evented.addr,
            pool + 2,
            probe_timeout,
        )?,
    ];
    for o in &offload {
        println!(
            "nginx in front of the {}: {} streams held {} upstream connections; a probe through nginx: {}",
            o.backend,
            o.streams,
            o.upstream_connections,
            o.probe_us.map_or("no answer".to_string(), |us| format!("answered in {}", fmt_us(Some(us))))
        );
    }
    let results = Results {
        nginx: version,
        tick_ms,
        watch_s,
        streams,
        upgrades,
        offload,
    };
    let summary = verdict(&results, probe_timeout);
    write_results(&dir, &results)?;
    harness::print_verdict(&summary);
    harness::conclude(
        &dir,
        web,
        &summary,
        &["proxy.svg"],
        &["proxy.csv"],
        &["proxy.json", "proxy-events.csv"],
    )
}

/// nginx's locations: `/plain/` is `proxy_pass` and nothing else, but that it ignores the
/// server's `X-Accel-Buffering: no`, as for a server that does not send it; `/accel/` honours it.
fn locations(evented: SocketAddr, pool: SocketAddr) -> String {
    format!(
        "    location /plain/ {{ proxy_pass http://{evented}/; proxy_ignore_headers X-Accel-Buffering; }}\n\
         location /accel/ {{ proxy_pass http://{evented}/; }}\n\
         location /unbuffered/ {{ proxy_pass http://{evented}/; proxy_buffering off; proxy_ignore_headers X-Accel-Buffering; }}\n\
         location /ws-plain/ {{ proxy_pass http://{evented}/; proxy_http_version 1.1; }}\n\
         location /ws/ {{ proxy_pass http://{evented}/; proxy_http_version 1.1; \
         proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; }}\n\
         location /evented/ {{ proxy_pass http://{evented}/; proxy_buffering off; }}\n\
         location /pool/ {{ proxy_pass http://{pool}/; proxy_buffering off; }}"
    )
}

/// Watches `path` for `window` from the moment the request is sent, and times every event it
/// delivers from its `sent_ns`. A buffering proxy holds back the response head too, so the head
/// is read inside the window like the rest: status 0 if it never came.
fn watch(
    addr: SocketAddr,
    case: &str,
    path: &str,
    window: Duration,
    tick_ms: u64,
) -> Result<Stream, String> {
    let mut c = Client::connect(addr)?;
    c.stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| format!("cannot set a read timeout: {e}"))?;
    let start = Instant::now();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: c10k\r\n\r\n").as_bytes())?;
    // The status and the body's decoder, once the head is in.
    let mut response: Option<(u16, BodyDecoder)> = None;
    let (mut parser, mut parsed) = (sse::Parser::new(), Vec::new());
    let (mut body, mut events) = (Vec::new(), Vec::new());
    let timestamp = Timestamp::default();
    let mut latencies = new_hist();
    while start.elapsed() < window {
        match c.fill() {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(format!("{case}: the stream broke: {e}")),
        }
        if response.is_none() {
            response = c
                .try_head()?
                .map(|h| (h.status, BodyDecoder::new(h.body, u64::MAX)));
        }
        let Some((_, decoder)) = &mut response else {
            continue;
        };
        c.decode_buffered(decoder, &mut body)?;
        // Each event's data (SSE), or each whole line (NDJSON; a partial one waits).
        let data: Vec<Vec<u8>> = if path.ends_with("/sse") {
            parser.feed(&body, &mut parsed);
            body.clear();
            parsed.drain(..).map(|e| e.data.into_bytes()).collect()
        } else {
            let whole = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let lines: Vec<u8> = body.drain(..whole).collect();
            lines.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
        };
        let now = sys::now_ns();
        for sent in data
            .iter()
            .filter_map(|d| parse_event(d, &timestamp).sent_ns)
        {
            let us = now.saturating_sub(sent) / 1000;
            latencies.saturating_record(us);
            events.push((since(start), us));
        }
    }
    Ok(Stream {
        case: case.to_string(),
        path: path.to_string(),
        status: response.map_or(0, |(status, _)| status),
        published: window.as_millis() as u64 / tick_ms,
        received: events.len() as u64,
        first_event_s: events.first().map(|&(t, _)| t),
        p50_us: quantile(&latencies, 0.5),
        max_us: max(&latencies),
        events,
    })
}

/// Asks for a WebSocket upgrade through nginx; if it succeeds, times one echo.
fn upgrade(addr: SocketAddr, case: &str, path: &str) -> Result<Upgrade, String> {
    let mut c = Client::connect(addr)?;
    let status = c.try_upgrade(path)?;
    let mut echo_us = None;
    if status == 101 {
        let mut frames = client::server_frames();
        let sent = Instant::now();
        c.send(&client::client_frame(OpCode::Text, b"through the proxy"))?;
        loop {
            match c.read_message(&mut frames)? {
                Message::Text(t) if t == "through the proxy" => break,
                _ => {}
            }
        }
        echo_us = Some(sent.elapsed().as_micros() as u64);
    }
    Ok(Upgrade {
        case: case.to_string(),
        status,
        echo_us,
    })
}

/// Opens `streams` SSE streams through nginx's `prefix`, counts nginx's connections to the
/// backend, then sends a probe through nginx.
fn offload(
    nginx: &Nginx,
    prefix: &str,
    backend: &str,
    backend_addr: SocketAddr,
    streams: u64,
    probe_timeout: Duration,
) -> Result<Offload, String> {
    let mut held = Vec::new();
    for _ in 0..streams {
        let mut c = Client::connect(nginx.addr)?;
        c.send(format!("GET {prefix}sse HTTP/1.1\r\nHost: c10k\r\n\r\n").as_bytes())?;
        held.push(c);
    }
    // Let nginx connect upstream for each of them.
    std::thread::sleep(Duration::from_millis(500));
    let (upstream, _) = sys::sockets_on_port(backend_addr.port(), TcpState::Established)
        .map_err(|e| format!("/proc/net/tcp: {e}"))?;
    let mut probe = Client::connect(nginx.addr)?;
    probe
        .stream
        .set_read_timeout(Some(probe_timeout))
        .map_err(|e| format!("cannot set a read timeout: {e}"))?;
    let sent = Instant::now();
    probe.send(format!("GET {prefix} HTTP/1.1\r\nHost: c10k\r\n\r\n").as_bytes())?;
    let probe_us = match probe.read_head() {
        Ok(head) if head.status == 200 => Some(sent.elapsed().as_micros() as u64),
        _ => None,
    };
    Ok(Offload {
        backend: backend.to_string(),
        streams,
        upstream_connections: upstream,
        probe_us,
    })
}

fn verdict(r: &Results, probe_timeout: Duration) -> Vec<String> {
    let mut lines: Vec<String> = r
        .streams
        .iter()
        .map(|s| {
            format!(
                "{}: {} of {} events in {} s, first after {}, delivery p50 {} max {}",
                s.case,
                s.received,
                s.published,
                r.watch_s,
                s.first_event_s
                    .map_or("-".to_string(), |t| format!("{t:.2} s")),
                fmt_us(s.p50_us),
                fmt_us(s.max_us)
            )
        })
        .collect();
    lines.extend(r.upgrades.iter().map(|u| {
        format!(
            "{}: the client got {}{}",
            u.case,
            u.status,
            u.echo_us.map_or(String::new(), |us| format!(
                ", and its message echoed in {}",
                fmt_us(Some(us))
            ))
        )
    }));
    lines.extend(r.offload.iter().map(|o| {
        format!(
            "nginx in front of the {}: {} proxied streams held {} connections to it; a probe through nginx was {}",
            o.backend,
            o.streams,
            o.upstream_connections,
            o.probe_us.map_or(format!("not answered within {} ms", probe_timeout.as_millis()), |us| {
                format!("answered in {}", fmt_us(Some(us)))
            })
        )
    }));
    lines
}

fn dashboard() -> Meta {
    Meta {
        title: "proxy: SSE, streams and WebSocket through nginx".to_string(),
        x: Axis {
            label: "seconds into the watch",
            log: false,
        },
        points: true,
        series: STREAM_CASES.iter().map(|c| c.0.to_string()).collect(),
        charts: vec![Chart::new(
            "latency_ms",
            "delivery latency of each event",
            "ms",
            true,
        )],
        columns: vec![column("latency_ms", "latest event's latency", "ms")],
    }
}

fn write_results(dir: &std::path::Path, r: &Results) -> Result<(), String> {
    harness::write_results(&dir.join("proxy.json"), r)?;
    let mut rows: Vec<Vec<String>> = r
        .streams
        .iter()
        .map(|s| {
            vec![
                s.case.clone(),
                s.path.clone(),
                s.status.to_string(),
                s.published.to_string(),
                s.received.to_string(),
                s.first_event_s.map_or(String::new(), |t| format!("{t:.3}")),
                harness::opt_cell(s.p50_us),
                harness::opt_cell(s.max_us),
            ]
        })
        .collect();
    rows.extend(r.upgrades.iter().map(|u| {
        vec![
            u.case.clone(),
            String::new(),
            u.status.to_string(),
            String::new(),
            String::new(),
            String::new(),
            harness::opt_cell(u.echo_us),
            String::new(),
        ]
    }));
    rows.extend(r.offload.iter().map(|o| {
        vec![
            format!(
                "probe through nginx, {} streams to the {} (upstream connections: {})",
                o.streams, o.backend, o.upstream_connections
            ),
            String::new(),
            if o.probe_us.is_some() { "200" } else { "" }.to_string(),
            String::new(),
            String::new(),
            String::new(),
            harness::opt_cell(o.probe_us),
            String::new(),
        ]
    }));
    harness::write_csv(
        &dir.join("proxy.csv"),
        &[
            "case",
            "path",
            "status",
            "published",
            "received",
            "first_event_s",
            "p50_us",
            "max_us",
        ],
        &rows,
    )?;
    let events: Vec<Vec<String>> = r
        .streams
        .iter()
        .flat_map(|s| {
            s.events
                .iter()
                .map(|&(t, us)| vec![s.case.clone(), format!("{t:.3}"), us.to_string()])
        })
        .collect();
    harness::write_csv(
        &dir.join("proxy-events.csv"),
        &["case", "t_s", "latency_us"],
        &events,
    )?;
    let colors = [
        chart::EVENTED,
        chart::BLOCKING,
        plotters::style::RGBColor(0x00, 0x9e, 0x73),
        chart::POOL,
        plotters::style::RGBColor(0xcc, 0x79, 0xa7),
    ];
    let series = r
        .streams
        .iter()
        .zip(colors)
        .map(|(s, color)| Series {
            label: s.case.clone(),
            color,
            points: s
                .events
                .iter()
                .map(|&(t, us)| (t, us as f64 / 1000.0))
                .collect(),
            markers: true,
        })
        .collect();
    chart::draw(
        &dir.join("proxy.svg"),
        "server-sent events through nginx: when buffering holds them back",
        "seconds into the watch",
        &[Panel {
            title: format!(
                "delivery latency of each event (a tick every {} ms)",
                r.tick_ms
            ),
            y_label: "ms (log)".to_string(),
            log_y: true,
            y_min: 0.05,
            series,
        }],
    )
}
