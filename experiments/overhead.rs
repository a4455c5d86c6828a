//! Overhead: the same published messages, 16 B to 64 KiB, delivered by short polling, long
//! polling, SSE, a chunked stream and a WebSocket — the bytes and TCP segments each costs per
//! message in each direction (the client socket's `TCP_INFO`: HTTP heads and framing counted,
//! IP and TCP headers added per segment), the server's CPU per message and the delivery
//! latency; then what it costs to open each one (TCP connect, first response, upgrade) and
//! what TLS 1.3 adds, full and resumed (see `tls`). Settles "WebSockets: high latency, high
//! overhead", the TLS claims, and when each transport is the right tool.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::chart::{self, Panel, Series};
use super::client::Client;
use super::harness::{self, fmt_us, ServerProc};
use super::tls;
use super::transport::{Subscriber, Transport, TRANSPORTS};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::app::config::{Model, MAX_PUBLISH_BYTES};
use crate::load::endpoint::Timestamp;
use crate::load::parse_event;
use crate::load::record::{new_hist, quantile};
use crate::sys::{self, TcpCounters};

/// `c10k run overhead`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server models, comma-separated.
    #[arg(long, value_enum, default_values_t = [Model::Evented], value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Message sizes in bytes (the published text; each event adds its JSON envelope),
    /// comma-separated, at most 65536.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 256, 1024, 4096, 16384, 65536],
          value_parser = clap::value_parser!(u64).range(1..=MAX_PUBLISH_BYTES))]
    pub sizes: Vec<u64>,
    /// Messages published for each transport and size.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub messages: u64,
    /// Milliseconds between two published messages.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub period_ms: u64,
    /// Milliseconds between two short polls.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub poll_interval_ms: u64,
    /// Subscribers at once when the server's CPU per delivery is measured.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    pub subscribers: u64,
    /// Connections opened to measure each transport's setup, and TLS handshakes of each kind.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub setups: u64,
    /// A short run for tests: two sizes, 5 messages 20 ms apart, polls every 50 ms, 5
    /// subscribers, 10 setups.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/overhead].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// The cost of delivering messages of one size by one transport.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    pub model: String,
    pub transport: String,
    /// Bytes of published text per message.
    pub size: u64,
    pub messages: u64,
    /// The event as JSON, the same bytes in every transport (`data:` line, chunk, frame,
    /// array element): the text plus its envelope.
    pub event_bytes: f64,
    /// Requests the subscriber made per message (polling; 0 for the streams).
    pub requests_per_message: f64,
    /// TCP payload bytes per message, server to client and back: HTTP heads, framing, ACKs'
    /// absence of payload — everything above TCP.
    pub down_bytes: f64,
    pub up_bytes: f64,
    /// `down_bytes` beyond the event itself: what the transport adds.
    pub framing_bytes: f64,
    /// TCP segments per message each way, pure ACKs included.
    pub down_packets: f64,
    pub up_packets: f64,
    /// Payload plus IPv4 and TCP headers of every segment, per message.
    pub down_wire_bytes: f64,
    pub up_wire_bytes: f64,
    /// What TLS 1.3 would add to the event written as one message (record headers and tags).
    pub tls_adds_bytes: u64,
    /// The server's CPU per message delivered to one subscriber, measured with `subscribers`
    /// of them and the publishes' own CPU (`publish_cpu_us`, each, with no subscriber) taken
    /// off.
    pub delivery_cpu_us: f64,
    pub subscribers: u64,
    pub publish_cpu_us: f64,
    /// From the server's `sent_ns` to the subscriber's parse.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

/// The cost of opening one transport, or of a TLS handshake.
#[derive(Debug, Clone, Serialize)]
pub struct SetupRow {
    pub model: String,
    pub setup: String,
    pub count: u64,
    /// Round trips before the client holds the first response: TCP's handshake is one, each
    /// request another; for TLS, those of the handshake and the request on top of TCP's.
    pub round_trips: u64,
    /// Bytes (TCP payload or TLS records) and segments each way until the first response.
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub up_packets: Option<u64>,
    pub down_packets: Option<u64>,
    /// Median times on loopback, from the start of `connect()`.
    pub connect_us: Option<u64>,
    pub first_response_us: Option<u64>,
    /// CPU per setup: the server's (accept and the first answer, or the TLS server's
    /// handshake) and the TLS client's.
    pub server_cpu_us: f64,
    pub client_cpu_us: Option<f64>,
}

/// Everything a run measured.
#[derive(Serialize)]
struct Results<'a> {
    messages: &'a [MessageRow],
    setups: &'a [SetupRow],
}

/// The numbers a run uses, after `--quick`.
struct Plan {
    sizes: Vec<u64>,
    messages: u64,
    period: Duration,
    poll_interval: Duration,
    subscribers: u64,
    setups: u64,
}

pub fn run(args: &Args) -> Result<(), String> {
    let dir = harness::results_dir("overhead", args.out.as_deref())?;
    let plan = if args.quick {
        Plan {
            sizes: vec![16, 4096],
            messages: 5,
            period: Duration::from_millis(20),
            poll_interval: Duration::from_millis(50),
            subscribers: 5,
            setups: 10,
        }
    } else {
        Plan {
            sizes: args.sizes.clone(),
            messages: args.messages,
            period: Duration::from_millis(args.period_ms),
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            subscribers: args.subscribers,
            setups: args.setups,
        }
    };
    harness::announce(&format!(
        "overhead: {} messages of each size, one every {} ms, by short polling (every {} ms), long polling, SSE, a chunked stream and a WebSocket; then the cost of opening each, and TLS 1.3",
        plan.messages,
        plan.period.as_millis(),
        plan.poll_interval.as_millis()
    ));
    let web = Web::start(&args.web, &dashboard(&args.models))?;
    let tls = tls::Configs::new()?;
    let mut messages = Vec::new();
    let mut setups = Vec::new();
    for &model in &args.models {
        let server = ServerProc::start(
            model.name(),
            &[
                "--model",
                model.name(),
                "--tick-ms",
                "0",
                "--heartbeat-ms",
                "0",
            ],
        )?;
        println!(
            "\n{:<9} {:<15} {:>6} {:>7} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>9}",
            model.name(),
            "per message",
            "size",
            "event",
            "down B",
            "framing",
            "up B",
            "packets ↓/↑",
            "CPU/deliv.",
            "p50",
            "p99"
        );
        for &size in &plan.sizes {
            web.status(&format!("{}: {size} B, publishes alone", model.name()));
            let publish_cpu_us = publish_cost(&server, size, &plan)?;
            for transport in TRANSPORTS {
                web.status(&format!(
                    "{}: {size} B by {}",
                    model.name(),
                    transport.name()
                ));
                let row = deliver(&server, model, transport, size, &plan, publish_cpu_us, &tls)?;
                println!(
                    "{:<9} {:<15} {:>6} {:>7.0} {:>9.1} {:>9.1} {:>9.1} {:>5.2}/{:<5.2} {:>6.1} µs {:>9} {:>9}",
                    "",
                    row.transport,
                    row.size,
                    row.event_bytes,
                    row.down_bytes,
                    row.framing_bytes,
                    row.up_bytes,
                    row.down_packets,
                    row.up_packets,
                    row.delivery_cpu_us,
                    fmt_us(row.p50_us),
                    fmt_us(row.p99_us)
                );
                web.row(
                    &series_name(args.models.len(), &row.model, &row.transport),
                    size as f64,
                    serde_json::json!({
                        "framing": row.framing_bytes,
                        "up": row.up_bytes,
                        "packets": row.down_packets + row.up_packets,
                        "cpu_us": row.delivery_cpu_us,
                        "p50_ms": harness::ms(row.p50_us),
                    }),
                );
                messages.push(row);
            }
        }
        println!(
            "\n{:<9} {:<40} {:>6} {:>8} {:>8} {:>10} {:>9} {:>9} {:>11}",
            model.name(),
            "opening",
            "RTTs",
            "up B",
            "down B",
            "packets",
            "connect",
            "response",
            "server CPU"
        );
        for setup in [None].into_iter().chain(TRANSPORTS.map(Some)) {
            if setup == Some(Transport::LongPoll) {
                // Its opening is short polling's: the same request, answered at once here.
                continue;
            }
            let row = open_cost(&server, model, setup, plan.setups)?;
            print_setup(&row);
            setups.push(row);
        }
    }
    web.status("TLS 1.3 handshakes, in memory");
    for start in tls::Start::ALL {
        let h = tls::measure(&tls, start, plan.setups)?;
        if h.as_asked != h.count {
            return Err(format!(
                "{}: only {} of {} handshakes went that way",
                h.start, h.as_asked, h.count
            ));
        }
        let row = SetupRow {
            model: "rustls (in memory)".to_string(),
            setup: h.start,
            count: h.count,
            // TCP's own round trip comes first on a network.
            round_trips: h.round_trips + 1,
            up_bytes: h.client_bytes,
            down_bytes: h.server_bytes,
            up_packets: None,
            down_packets: None,
            connect_us: None,
            first_response_us: None,
            server_cpu_us: h.server_cpu_us,
            client_cpu_us: Some(h.client_cpu_us),
        };
        print_setup(&row);
        setups.push(row);
    }
    let summary = verdict(&messages, &setups);
    write_results(&dir, &messages, &setups)?;
    harness::print_verdict(&summary);
    harness::conclude(
        &dir,
        web,
        &summary,
        &["overhead.svg"],
        &["overhead.csv", "overhead-setup.csv"],
        &["overhead.json"],
    )
}

fn print_setup(row: &SetupRow) {
    let packets = match (row.up_packets, row.down_packets) {
        (Some(up), Some(down)) => format!("{up}/{down}"),
        _ => "-".to_string(),
    };
    let cpu = match row.client_cpu_us {
        Some(client) => format!("{:.0} µs (client {client:.0} µs)", row.server_cpu_us),
        None => format!("{:.1} µs", row.server_cpu_us),
    };
    println!(
        "{:<9} {:<40} {:>6} {:>8} {:>8} {:>10} {:>9} {:>9} {:>11}",
        "",
        row.setup,
        row.round_trips,
        row.up_bytes,
        row.down_bytes,
        packets,
        fmt_us(row.connect_us),
        fmt_us(row.first_response_us),
        cpu
    );
}

/// A transport's name, with its model's when more than one model runs.
fn series_name(models: usize, model: &str, transport: &str) -> String {
    if models > 1 {
        format!("{model} {transport}")
    } else {
        transport.to_string()
    }
}

// ---- delivering ----------------------------------------------------------------------------

/// Publishes `plan.messages` messages of `size` bytes, one per period, from its own
/// connection; returns when the last is answered.
fn publish(c: &mut Client, size: u64, messages: u64, period: Duration) -> Result<(), String> {
    let mut request =
        format!("POST /publish HTTP/1.1\r\nHost: c10k\r\nContent-Length: {size}\r\n\r\n")
            .into_bytes();
    request.resize(request.len() + size as usize, b'x');
    let start = Instant::now();
    for i in 0..messages {
        let at = start + period * i as u32;
        thread::sleep(at.saturating_duration_since(Instant::now()));
        match c.request(&request)? {
            (200, _) => {}
            (status, _) => return Err(format!("a publish was answered {status}")),
        }
    }
    Ok(())
}

/// The server's CPU per message for the publishes alone, read while the publisher is still
/// connected (as every CPU reading here: a blocking server's thread takes its CPU time with it
/// when it exits).
fn publish_cost(server: &ServerProc, size: u64, plan: &Plan) -> Result<f64, String> {
    let mut c = Client::connect(server.addr)?;
    let before = server.cpu_ns()?;
    publish(&mut c, size, plan.messages, plan.period)?;
    Ok((server.cpu_ns()? - before) as f64 / 1000.0 / plan.messages as f64)
}

/// One subscriber of `transport` receives `plan.messages` messages of `size` bytes.
fn deliver(
    server: &ServerProc,
    model: Model,
    transport: Transport,
    size: u64,
    plan: &Plan,
    publish_cpu_us: f64,
    tls: &tls::Configs,
) -> Result<MessageRow, String> {
    let mut c = Client::connect(server.addr)?;
    let mut sub = Subscriber::open(&mut c, transport, plan.poll_interval)?;
    let before = c.tcp_counters()?;
    let addr = server.addr;
    let (messages, period) = (plan.messages, plan.period);
    let publisher = thread::spawn(move || {
        Client::connect(addr).and_then(|mut c| publish(&mut c, size, messages, period))
    });
    let deadline = Instant::now() + plan.period * plan.messages as u32 + Duration::from_secs(10);
    let timestamp = Timestamp::default();
    let mut latencies = new_hist();
    let mut event_bytes = 0u64;
    let delivered = sub.take(&mut c, plan.messages, deadline, |data| {
        let now = sys::now_ns();
        if let Some(sent) = parse_event(data, &timestamp).sent_ns {
            latencies.saturating_record((now.saturating_sub(sent) / 1000).max(1));
        }
        event_bytes += data.len() as u64;
    })?;
    if delivered < plan.messages {
        return Err(format!(
            "{} of {size} B: {delivered} of {} messages arrived",
            transport.name(),
            plan.messages
        ));
    }
    publisher
        .join()
        .map_err(|_| "the publisher panicked".to_string())??;
    // Let the last delayed ACKs go out before the counters are read.
    thread::sleep(Duration::from_millis(100));
    let after = c.tcp_counters()?;
    drop(c);
    let per = |v: u64| v as f64 / delivered as f64;
    let down_bytes = per(after.bytes_received - before.bytes_received);
    let up_bytes = per(after.bytes_acked - before.bytes_acked);
    let down_packets = per(after.segs_in - before.segs_in);
    let up_packets = per(after.segs_out - before.segs_out);
    let header = after.header_bytes() as f64;
    Ok(MessageRow {
        model: model.name().to_string(),
        transport: transport.name().to_string(),
        size,
        messages: delivered,
        event_bytes: per(event_bytes),
        requests_per_message: per(sub.requests),
        down_bytes,
        up_bytes,
        framing_bytes: down_bytes - per(event_bytes),
        down_packets,
        up_packets,
        down_wire_bytes: down_bytes + down_packets * header,
        up_wire_bytes: up_bytes + up_packets * header,
        tls_adds_bytes: tls::record_overhead(tls, (event_bytes / delivered) as usize)?,
        delivery_cpu_us: delivery_cpu(server, transport, size, plan, publish_cpu_us)?,
        subscribers: plan.subscribers,
        publish_cpu_us,
        p50_us: quantile(&latencies, 0.5),
        p99_us: quantile(&latencies, 0.99),
    })
}

/// The server's CPU per delivery: `plan.subscribers` subscribers, each on a thread of its own,
/// take every message; the publishes' own CPU is taken off. The subscribers stay connected until
/// the CPU is read: a blocking server's thread takes its CPU time with it when it exits.
fn delivery_cpu(
    server: &ServerProc,
    transport: Transport,
    size: u64,
    plan: &Plan,
    publish_cpu_us: f64,
) -> Result<f64, String> {
    let (n, messages, every) = (plan.subscribers, plan.messages, plan.poll_interval);
    let ready = Arc::new(Barrier::new(n as usize + 1));
    let addr = server.addr;
    let readers: Vec<_> = (0..n)
        .map(|_| {
            let ready = Arc::clone(&ready);
            thread::spawn(move || -> Result<Client, String> {
                let opened = Client::connect(addr).and_then(|mut c| {
                    Subscriber::open(&mut c, transport, every).map(|sub| (c, sub))
                });
                ready.wait();
                let (mut c, mut sub) = opened?;
                let deadline = Instant::now() + every + Duration::from_secs(30);
                sub.take(&mut c, messages, deadline, |_| {})?;
                Ok(c)
            })
        })
        .collect();
    ready.wait();
    let mut publisher = Client::connect(addr)?;
    let before = server.cpu_ns()?;
    publish(&mut publisher, size, messages, plan.period)?;
    let mut held = Vec::new();
    for reader in readers {
        held.push(
            reader
                .join()
                .map_err(|_| "a subscriber panicked".to_string())??,
        );
    }
    thread::sleep(Duration::from_millis(50));
    let cpu_us = (server.cpu_ns()? - before) as f64 / 1000.0;
    drop((held, publisher));
    Ok((cpu_us - publish_cpu_us * messages as f64) / (messages * n) as f64)
}

// ---- opening ---------------------------------------------------------------------------------

/// `count` connections opened as `transport` opens (`None`: TCP's handshake alone), held until
/// the server's CPU is read (a blocking server's thread takes its CPU time with it when it
/// exits), then closed.
fn open_cost(
    server: &ServerProc,
    model: Model,
    transport: Option<Transport>,
    count: u64,
) -> Result<SetupRow, String> {
    let (mut connects, mut responses) = (new_hist(), new_hist());
    let mut last = TcpCounters::default();
    let cpu_before = server.cpu_ns()?;
    let mut held = Vec::new();
    for _ in 0..count {
        let start = Instant::now();
        let mut c = Client::connect(server.addr)?;
        connects.saturating_record(start.elapsed().as_micros().max(1) as u64);
        let Some(transport) = transport else {
            last = c.tcp_counters()?;
            held.push(c);
            continue;
        };
        match transport {
            Transport::Sse | Transport::Stream | Transport::ShortPoll | Transport::LongPoll => {
                let target = match transport {
                    Transport::Sse => "/sse",
                    Transport::Stream => "/stream",
                    _ => "/poll?wait=0",
                };
                c.send(format!("GET {target} HTTP/1.1\r\nHost: c10k\r\n\r\n").as_bytes())?;
                let head = c.read_head()?;
                if matches!(transport, Transport::ShortPoll | Transport::LongPoll) {
                    c.read_body(&head)?;
                }
            }
            Transport::WebSocket => c.upgrade("/ws")?,
        }
        responses.saturating_record(start.elapsed().as_micros().max(1) as u64);
        last = c.tcp_counters()?;
        held.push(c);
    }
    // Let the server finish with the last one.
    thread::sleep(Duration::from_millis(50));
    let cpu_ns = server.cpu_ns()? - cpu_before;
    drop(held);
    let (setup, round_trips) = match transport {
        None => ("TCP connect".to_string(), 1),
        Some(t) => (
            format!(
                "{}: TCP + {}",
                t.name(),
                match t {
                    Transport::WebSocket => "upgrade to 101",
                    Transport::ShortPoll | Transport::LongPoll => "first answer",
                    _ => "response head",
                }
            ),
            2,
        ),
    };
    Ok(SetupRow {
        model: model.name().to_string(),
        setup,
        count,
        round_trips,
        up_bytes: last.bytes_acked,
        down_bytes: last.bytes_received,
        up_packets: Some(last.segs_out),
        down_packets: Some(last.segs_in),
        connect_us: quantile(&connects, 0.5),
        first_response_us: transport.and_then(|_| quantile(&responses, 0.5)),
        server_cpu_us: cpu_ns as f64 / 1000.0 / count as f64,
        client_cpu_us: None,
    })
}

// ---- results -------------------------------------------------------------------------------

fn verdict(messages: &[MessageRow], setups: &[SetupRow]) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(small) = messages.iter().map(|r| r.size).min() else {
        return lines;
    };
    let of = |transport: Transport| {
        messages
            .iter()
            .find(|r| r.size == small && r.transport == transport.name())
    };
    if let (Some(ws), Some(sse), Some(long), Some(short)) = (
        of(Transport::WebSocket),
        of(Transport::Sse),
        of(Transport::LongPoll),
        of(Transport::ShortPoll),
    ) {
        lines.push(format!(
            "a {small}-byte message ({:.0} B as an event) costs {:.0} B of framing on a WebSocket, {:.0} B on SSE, {:.0} B by long polling (a request and a response per message: {:.0} B up), {:.0} B by short polling ({:.2} polls per message)",
            ws.event_bytes,
            ws.framing_bytes,
            sse.framing_bytes,
            long.framing_bytes,
            long.up_bytes,
            short.framing_bytes,
            short.requests_per_message
        ));
        lines.push(format!(
            "delivery p50: WebSocket {}, SSE {}, long polling {}, short polling {} (every poll waits up to its interval)",
            fmt_us(ws.p50_us),
            fmt_us(sse.p50_us),
            fmt_us(long.p50_us),
            fmt_us(short.p50_us)
        ));
    }
    let tls: Vec<&SetupRow> = setups
        .iter()
        .filter(|s| s.setup.starts_with("TLS"))
        .collect();
    if let [full, resumed, early] = tls[..] {
        lines.push(format!(
            "round trips until the first response, TCP's included: plain HTTP 2, TLS 1.3 full {} ({:.0} µs of server CPU), resumed {} ({:.0} µs), resumed with a 0-RTT request {} ({:.0} µs)",
            full.round_trips,
            full.server_cpu_us,
            resumed.round_trips,
            resumed.server_cpu_us,
            early.round_trips,
            early.server_cpu_us
        ));
    }
    lines
}

fn dashboard(models: &[Model]) -> Meta {
    let series = models
        .iter()
        .flat_map(|m| TRANSPORTS.map(|t| series_name(models.len(), m.name(), t.name())))
        .collect();
    Meta {
        title: "overhead: bytes, packets, CPU and latency per message, by transport".to_string(),
        x: Axis {
            label: "message size (bytes)",
            log: true,
        },
        points: true,
        series,
        charts: vec![
            Chart::new(
                "framing",
                "framing per message, server to client",
                "B",
                true,
            ),
            Chart::new("up", "client to server per message", "B", true),
            Chart::new("p50_ms", "delivery latency p50", "ms", true),
            Chart::new("cpu_us", "server CPU per delivery", "µs", true),
        ],
        columns: vec![
            column("framing", "framing ↓", "B"),
            column("up", "up", "B"),
            column("packets", "packets", ""),
            column("p50_ms", "p50", "ms"),
            column("cpu_us", "server CPU", "µs"),
        ],
    }
}

fn write_results(
    dir: &std::path::Path,
    messages: &[MessageRow],
    setups: &[SetupRow],
) -> Result<(), String> {
    harness::write_results(&dir.join("overhead.json"), &Results { messages, setups })?;
    let f1 = |v: f64| format!("{v:.1}");
    let f2 = |v: f64| format!("{v:.2}");
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.transport.clone(),
                r.size.to_string(),
                r.messages.to_string(),
                f1(r.event_bytes),
                f2(r.requests_per_message),
                f1(r.down_bytes),
                f1(r.up_bytes),
                f1(r.framing_bytes),
                f2(r.down_packets),
                f2(r.up_packets),
                f1(r.down_wire_bytes),
                f1(r.up_wire_bytes),
                r.tls_adds_bytes.to_string(),
                f2(r.delivery_cpu_us),
                r.subscribers.to_string(),
                f2(r.publish_cpu_us),
                harness::opt_cell(r.p50_us),
                harness::opt_cell(r.p99_us),
            ]
        })
        .collect();
    harness::write_csv(
        &dir.join("overhead.csv"),
        &[
            "model",
            "transport",
            "size",
            "messages",
            "event_bytes",
            "requests_per_message",
            "down_bytes",
            "up_bytes",
            "framing_bytes",
            "down_packets",
            "up_packets",
            "down_wire_bytes",
            "up_wire_bytes",
            "tls_adds_bytes",
            "delivery_cpu_us",
            "subscribers",
            "publish_cpu_us",
            "p50_us",
            "p99_us",
        ],
        &rows,
    )?;
    let rows: Vec<Vec<String>> = setups
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.setup.clone(),
                r.count.to_string(),
                r.round_trips.to_string(),
                r.up_bytes.to_string(),
                r.down_bytes.to_string(),
                harness::opt_cell(r.up_packets),
                harness::opt_cell(r.down_packets),
                harness::opt_cell(r.connect_us),
                harness::opt_cell(r.first_response_us),
                f1(r.server_cpu_us),
                r.client_cpu_us.map_or(String::new(), f1),
            ]
        })
        .collect();
    harness::write_csv(
        &dir.join("overhead-setup.csv"),
        &[
            "model",
            "setup",
            "count",
            "round_trips",
            "up_bytes",
            "down_bytes",
            "up_packets",
            "down_packets",
            "connect_us",
            "first_response_us",
            "server_cpu_us",
            "client_cpu_us",
        ],
        &rows,
    )?;
    draw(&dir.join("overhead.svg"), messages)
}

fn draw(path: &std::path::Path, rows: &[MessageRow]) -> Result<(), String> {
    let mut models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    // One line per model and transport; a second model's lines are paler.
    let lines: Vec<(&str, Transport, bool)> = models
        .iter()
        .enumerate()
        .flat_map(|(i, &m)| TRANSPORTS.map(|t| (m, t, i > 0)))
        .collect();
    let panel = |title: &str,
                 y_label: &str,
                 y_min: f64,
                 value: &dyn Fn(&MessageRow) -> Option<f64>| Panel {
        title: title.to_string(),
        y_label: y_label.to_string(),
        log_y: true,
        y_min,
        series: lines
            .iter()
            .map(|&(model, t, pale)| Series {
                label: series_name(models.len(), model, t.name()),
                color: if pale {
                    chart::lighter(t.color())
                } else {
                    t.color()
                },
                points: rows
                    .iter()
                    .filter(|r| r.model == model && r.transport == t.name())
                    .filter_map(|r| Some((r.size as f64, value(r)?)))
                    .collect(),
                markers: false,
            })
            .collect(),
    };
    chart::draw_with_x(
        path,
        &format!(
            "the same messages by five transports ({} server)",
            models.join(" and ")
        ),
        "message size (bytes of text)",
        true,
        &[
            panel(
                "bytes per message beyond the event, server to client",
                "bytes",
                1.0,
                &|r| Some(r.framing_bytes.max(1.0)),
            ),
            panel(
                "bytes per message, client to server (the streams send none: drawn at 1)",
                "bytes",
                1.0,
                &|r| Some(r.up_bytes.max(1.0)),
            ),
            panel(
                "TCP segments per message, both ways",
                "segments",
                0.1,
                &|r| Some(r.down_packets + r.up_packets),
            ),
            panel("delivery latency p50", "ms", 0.01, &|r| {
                harness::ms(r.p50_us)
            }),
            panel("server CPU per delivery", "µs", 0.1, &|r| {
                Some(r.delivery_cpu_us.max(0.1))
            }),
        ],
    )
}
