//! Keep-alive: N small requests three ways — a new TCP connection for each, one persistent
//! connection answered in turn, and one connection pipelined — with the latency of each, the
//! server's CPU per request and the `TIME_WAIT` sockets left behind. Settles "each request
//! needs a new TCP connection" (RFC 9112 §9.3: HTTP/1.1 connections are persistent by default).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::chart::{self, Panel, Series};
use super::client::Client;
use super::harness::{self, fmt_us, ServerProc};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::app::config::Model;
use crate::load::record::{new_hist, quantile};
use crate::sys::{self, TcpState};

/// `c10k run keepalive`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server models, comma-separated.
    #[arg(long, value_enum, default_values_t = [Model::Evented, Model::Blocking], value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Requests made each way.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub requests: u64,
    /// Requests sent at once on the pipelined connection before their answers are read.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub depth: u64,
    /// A short run for tests: 200 requests each way.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/keepalive].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// How the requests travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// `Connection: close` on a fresh connection each time: a handshake and a close per request.
    NewConnection,
    /// One connection, one request at a time.
    KeepAlive,
    /// One connection, `depth` requests written at once, then their answers read in order.
    Pipelined,
}

const WAYS: [Way; 3] = [Way::NewConnection, Way::KeepAlive, Way::Pipelined];

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::NewConnection => "new connection each",
            Way::KeepAlive => "keep-alive",
            Way::Pipelined => "pipelined",
        }
    }
}

/// One model, one way.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub way: String,
    pub requests: u64,
    pub connections: u64,
    /// Requests written before their answers are read.
    pub depth: u64,
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    /// From writing a request to its answer's last byte (for pipelining, from writing its batch).
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// The server's CPU time (user + system) over the requests, per request.
    pub server_cpu_us_per_request: f64,
    /// Sockets of these requests in `TIME_WAIT` afterwards, on the server's side and on the
    /// client's: whoever closes first keeps one for 60 s (RFC 9293 §3.6.1's 2×MSL).
    pub server_time_wait: u64,
    pub client_time_wait: u64,
    /// Elapsed seconds after every `requests / 50` answers, for the chart.
    #[serde(skip)]
    pub progress: Vec<(u64, f64)>,
}

pub fn run(args: &Args) -> Result<(), String> {
    let dir = harness::results_dir("keepalive", args.out.as_deref())?;
    let requests = if args.quick { 200 } else { args.requests };
    harness::announce(&format!(
        "keepalive: {requests} requests on a new connection each, on one connection, and pipelined"
    ));
    let web = Web::start(&args.web, &dashboard(args))?;
    println!(
        "\n{:<9} {:<20} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "model", "way", "requests", "conns", "time", "req/s", "p50", "p99", "server CPU"
    );
    let mut rows = Vec::new();
    for &model in &args.models {
        let mut server_args = vec!["--model", model.name(), "--tick-ms", "0"];
        if model == Model::Blocking {
            server_args.extend(["--threads", "8"]);
        }
        let server = ServerProc::start(model.name(), &server_args)?;
        for way in WAYS {
            let row = measure(&server, model, way, requests, args.depth)?;
            println!(
                "{:<9} {:<20} {:>8} {:>6} {:>7.3} s {:>9.0} {:>9} {:>9} {:>7.1} µs   TIME_WAIT: server {}, client {}",
                row.model,
                row.way,
                row.requests,
                row.connections,
                row.elapsed_s,
                row.requests_per_s,
                fmt_us(row.p50_us),
                fmt_us(row.p99_us),
                row.server_cpu_us_per_request,
                row.server_time_wait,
                row.client_time_wait
            );
            web.row(
                &format!("{} {}", row.model, row.way),
                row.requests as f64,
                serde_json::json!({
                    "elapsed_ms": row.elapsed_s * 1000.0,
                    "cpu_us": row.server_cpu_us_per_request,
                    "p50_ms": harness::ms(row.p50_us),
                    "time_wait": row.server_time_wait + row.client_time_wait,
                }),
            );
            rows.push(row);
        }
    }
    let summary = verdict(&rows);
    write_results(&dir, &rows)?;
    harness::print_verdict(&summary);
    harness::conclude(
        &dir,
        web,
        &summary,
        &["keepalive.svg"],
        &["keepalive.csv"],
        &["keepalive.json"],
    )
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: c10k\r\n\r\n";
const CLOSING_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: c10k\r\nConnection: close\r\n\r\n";

fn measure(
    server: &ServerProc,
    model: Model,
    way: Way,
    requests: u64,
    depth: u64,
) -> Result<Row, String> {
    // TIME_WAIT left by the previous way lingers 60 s: count what this one adds.
    let port = server.addr.port();
    let tw_before = sys::sockets_on_port(port, TcpState::TimeWait)
        .map_err(|e| format!("/proc/net/tcp: {e}"))?;
    let cpu_before = server.cpu_ns()?;
    let mut latencies = new_hist();
    let mut progress = Vec::new();
    let every = (requests / 50).max(1);
    let start = Instant::now();
    let mut answered = 0u64;
    // An answer to a request sent at `sent` is in.
    let mut answer = |sent: Instant| {
        answered += 1;
        latencies.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        if answered.is_multiple_of(every) || answered == requests {
            progress.push((answered, start.elapsed().as_secs_f64()));
        }
    };
    let connections = match way {
        Way::NewConnection => {
            for _ in 0..requests {
                let sent = Instant::now();
                let mut c = Client::connect(server.addr)?;
                expect_ok(c.request(CLOSING_REQUEST)?)?;
                answer(sent);
                wait_for_close(&mut c)?;
            }
            requests
        }
        Way::KeepAlive => {
            let mut c = Client::connect(server.addr)?;
            for _ in 0..requests {
                let sent = Instant::now();
                expect_ok(c.request(REQUEST)?)?;
                answer(sent);
            }
            1
        }
        Way::Pipelined => {
            let mut c = Client::connect(server.addr)?;
            for first in (0..requests).step_by(depth as usize) {
                let batch = depth.min(requests - first);
                let sent = Instant::now();
                c.send(&REQUEST.repeat(batch as usize))?;
                for _ in 0..batch {
                    let head = c.read_head()?;
                    expect_ok((head.status, c.read_body(&head)?))?;
                    answer(sent);
                }
            }
            1
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_ns = server.cpu_ns()? - cpu_before;
    // The last close's TIME_WAIT appears once the server has closed: give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    let tw_after = sys::sockets_on_port(port, TcpState::TimeWait)
        .map_err(|e| format!("/proc/net/tcp: {e}"))?;
    Ok(Row {
        model: model.name().to_string(),
        way: way.name().to_string(),
        requests,
        connections,
        depth: if way == Way::Pipelined { depth } else { 1 },
        elapsed_s: elapsed,
        requests_per_s: requests as f64 / elapsed.max(1e-9),
        p50_us: quantile(&latencies, 0.5),
        p99_us: quantile(&latencies, 0.99),
        server_cpu_us_per_request: cpu_ns as f64 / 1000.0 / requests as f64,
        server_time_wait: tw_after.0.saturating_sub(tw_before.0),
        client_time_wait: tw_after.1.saturating_sub(tw_before.1),
        progress,
    })
}

fn expect_ok((status, body): (u16, Vec<u8>)) -> Result<(), String> {
    if status == 200 && body == b"ok\n" {
        Ok(())
    } else {
        Err(format!(
            "the probe was answered {status} {:?}",
            String::from_utf8_lossy(&body)
        ))
    }
}

/// Reads until the server's FIN: the server closes first, as `Connection: close` asks.
fn wait_for_close(c: &mut Client) -> Result<(), String> {
    loop {
        match c.fill() {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "the server did not close after Connection: close: {e}"
                ))
            }
        }
    }
}

fn verdict(rows: &[Row]) -> Vec<String> {
    let by = |model: &str, way: Way| {
        rows.iter()
            .find(|r| r.model == model && r.way == way.name())
    };
    let mut lines = Vec::new();
    for model in ["evented", "blocking"] {
        let (Some(new), Some(keep), Some(pipe)) = (
            by(model, Way::NewConnection),
            by(model, Way::KeepAlive),
            by(model, Way::Pipelined),
        ) else {
            continue;
        };
        lines.push(format!(
            "{model}: {} requests took {:.2} s on a new connection each ({} TIME_WAIT sockets left, {:.1} µs of server CPU each), {:.2} s on one keep-alive connection ({:.1} µs), {:.2} s pipelined {} deep ({:.1} µs): a connection per request is {:.1}× slower than keep-alive",
            new.requests,
            new.elapsed_s,
            new.server_time_wait + new.client_time_wait,
            new.server_cpu_us_per_request,
            keep.elapsed_s,
            keep.server_cpu_us_per_request,
            pipe.elapsed_s,
            pipe.depth,
            pipe.server_cpu_us_per_request,
            new.elapsed_s / keep.elapsed_s.max(1e-9)
        ));
    }
    lines
}

fn dashboard(args: &Args) -> Meta {
    let series = args
        .models
        .iter()
        .flat_map(|m| WAYS.map(|w| format!("{} {}", m.name(), w.name())))
        .collect();
    Meta {
        title: "keepalive: a new connection per request, keep-alive, pipelining".to_string(),
        x: Axis {
            label: "requests",
            log: false,
        },
        points: true,
        series,
        charts: vec![
            Chart::new("elapsed_ms", "time for all requests", "ms", true),
            Chart::new("cpu_us", "server CPU per request", "µs", true),
        ],
        columns: vec![
            column("elapsed_ms", "time", "ms"),
            column("p50_ms", "p50", "ms"),
            column("cpu_us", "server CPU/request", "µs"),
            column("time_wait", "TIME_WAIT", ""),
        ],
    }
}

fn write_results(dir: &std::path::Path, rows: &[Row]) -> Result<(), String> {
    harness::write_results(&dir.join("keepalive.json"), &harness::Rows { rows })?;
    let csv: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.way.clone(),
                r.requests.to_string(),
                r.connections.to_string(),
                r.depth.to_string(),
                format!("{:.4}", r.elapsed_s),
                format!("{:.0}", r.requests_per_s),
                harness::opt_cell(r.p50_us),
                harness::opt_cell(r.p99_us),
                format!("{:.2}", r.server_cpu_us_per_request),
                r.server_time_wait.to_string(),
                r.client_time_wait.to_string(),
            ]
        })
        .collect();
    harness::write_csv(
        &dir.join("keepalive.csv"),
        &[
            "model",
            "way",
            "requests",
            "connections",
            "depth",
            "elapsed_s",
            "requests_per_s",
            "p50_us",
            "p99_us",
            "server_cpu_us_per_request",
            "server_time_wait",
            "client_time_wait",
        ],
        &csv,
    )?;
    let series: Vec<Series> = rows
        .iter()
        .map(|r| {
            let base = chart::model_color(&r.model);
            let color = match r.way.as_str() {
                "new connection each" => base,
                "keep-alive" => chart::lighter(base),
                _ => chart::lighter(chart::lighter(base)),
            };
            Series {
                label: format!("{} {}", r.model, r.way),
                color,
                points: r.progress.iter().map(|&(n, t)| (n as f64, t)).collect(),
                markers: false,
            }
        })
        .collect();
    chart::draw(
        &dir.join("keepalive.svg"),
        "the same requests: a new connection each, one kept alive, pipelined",
        "requests answered",
        &[Panel {
            title: "elapsed time".to_string(),
            y_label: "seconds".to_string(),
            log_y: false,
            y_min: 0.0,
            series,
        }],
    )
}
