//! Slow consumers: while large events are published, K subscribers stop reading and the others
//! keep up. What each model does with the bytes it cannot deliver — the kernel's send buffer
//! fills, then the server's own per-connection queue up to `--max-write-queue`, then the slow
//! subscriber is cut off — and whether the readers that keep up notice anything.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Socket, Type};

use super::chart::{self, Panel, Series};
use super::client::Client;
use super::harness::{self, fmt_mib, fmt_us, LoadProc, ServerProc};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::app::config::{Model, ServerConfig};
use crate::sys;

/// `c10k run slow-consumer`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server models, comma-separated (the blocking one with a thread per connection).
    #[arg(long, value_enum, default_values_t = [Model::Evented, Model::Blocking], value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Subscribers that keep reading (held by the load generator, which times every event).
    #[arg(long, default_value_t = 50)]
    pub fast: u64,
    /// Subscribers that never read after their request.
    #[arg(long, default_value_t = 10)]
    pub slow: u64,
    /// Bytes of each published event's text (at most 64 KiB, the publish limit).
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=65_000))]
    pub event_bytes: u64,
    /// One event every this many milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(5..))]
    pub period_ms: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub seconds: u64,
    /// The servers' `--max-write-queue`: bytes queued for one subscriber before it is cut off.
    #[arg(long, default_value_t = ServerConfig::DEFAULT.max_write_queue)]
    pub max_write_queue: usize,
    /// The servers' `--retain-bytes`: the retained history, which large events fill too.
    #[arg(long, default_value_t = ServerConfig::DEFAULT.retain_bytes)]
    pub retain_bytes: usize,
    /// A short run for tests: 10 fast and 3 slow subscribers, 6 s of events every 20 ms.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/slow-consumer].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// One second of one model's run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub t_s: f64,
    pub events_published: u64,
    /// The server's own resident memory.
    pub server_rss: u64,
    /// TCP buffer memory of the whole machine (`/proc/net/sockstat` `mem`), both ends of
    /// loopback: where the bytes a slow reader does not take wait first.
    pub tcp_buffers: u64,
    /// SSE subscribers the server still holds (`/stats`).
    pub sse_held: u64,
    /// Slow subscribers the server let go of so far.
    pub slow_cut: u64,
    /// The most server threads seen asleep in `write()` this second, waiting for room in a
    /// socket's send buffer (from `/proc/PID/task/*/stack`, readable by root; 0 otherwise).
    pub threads_in_write: u64,
    pub threads: u64,
    /// The readers that keep up: events received this second and their delivery latency.
    pub fast_events: u64,
    pub fast_p50_us: Option<u64>,
    pub fast_p99_us: Option<u64>,
}

/// What one model did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub model: String,
    pub fast: u64,
    pub slow: u64,
    pub rss_before: u64,
    pub rss_peak: u64,
    /// What the server may add to its memory for events: the retained history plus a full
    /// write queue for every slow subscriber (the events they hold are mostly the history's
    /// own, shared, so this is the worst case).
    pub event_memory_bound: u64,
    /// The first second of publishing by whose end every slow subscriber was let go; `None` if
    /// some were still held at the end.
    pub all_slow_cut_s: Option<f64>,
    pub slow_cut: u64,
    pub peak_threads_in_write: u64,
    /// The fast group: every event reached every one of them (fraction of connections that got
    /// each event, the lowest over the events).
    pub fast_min_fraction: Option<f64>,
    pub fast_held_p50_us: Option<u64>,
    pub fast_held_p99_us: Option<u64>,
    pub fast_failed: u64,
}

struct Plan {
    fast: u64,
    slow: u64,
    event_bytes: u64,
    period_ms: u64,
    seconds: u64,
}

impl Args {
    fn plan(&self) -> Plan {
        if self.quick {
            Plan {
                fast: 10,
                slow: 3,
                event_bytes: self.event_bytes,
                period_ms: 20,
                seconds: 6,
            }
        } else {
            Plan {
                fast: self.fast,
                slow: self.slow,
                event_bytes: self.event_bytes,
                period_ms: self.period_ms,
                seconds: self.seconds,
            }
        }
    }
}

pub fn run(args: &Args) -> Result<(), String> {
    let dir = harness::results_dir("slow-consumer", args.out.as_deref())?;
    let plan = args.plan();
    harness::announce(&format!("slow-consumer: {} subscribers read, {} never do; a {} B event every {} ms for {} s; cut off past {} queued",
        plan.fast,
        plan.slow,
        plan.event_bytes,
        plan.period_ms,
        plan.seconds,
        fmt_mib(args.max_write_queue as u64)));
    let web = Web::start(&args.web, &dashboard(args))?;
    let mut rows = Vec::new();
    let mut outcomes = Vec::new();
    for &model in &args.models {
        println!(
            "\n{:<9} {:>5} {:>7} {:>11} {:>12} {:>5} {:>9} {:>9} {:>8} {:>9} {:>9}",
            "model",
            "t",
            "events",
            "server rss",
            "tcp buffers",
            "held",
            "slow cut",
            "in write",
            "fast ev",
            "fast p50",
            "fast p99"
        );
        let outcome = measure(&dir, model, &plan, args, &mut |row: Row| {
            println!(
                "{:<9} {:>4.0}s {:>7} {:>11} {:>12} {:>5} {:>9} {:>9} {:>8} {:>9} {:>9}",
                row.model,
                row.t_s,
                row.events_published,
                fmt_mib(row.server_rss),
                fmt_mib(row.tcp_buffers),
                row.sse_held,
                row.slow_cut,
                row.threads_in_write,
                row.fast_events,
                fmt_us(row.fast_p50_us),
                fmt_us(row.fast_p99_us)
            );
            web.row(
                &row.model,
                row.t_s,
                serde_json::json!({
                    "rss_mib": harness::mib(row.server_rss),
                    "tcp_mib": harness::mib(row.tcp_buffers),
                    "slow_cut": row.slow_cut,
                    "in_write": row.threads_in_write,
                    "fast_p99_ms": harness::ms(row.fast_p99_us),
                }),
            );
            rows.push(row);
        })?;
        outcomes.push(outcome);
    }
    let summary: Vec<String> = outcomes.iter().map(|o| verdict(o, args)).collect();
    write_results(&dir, &rows, &outcomes)?;
    harness::print_verdict(&summary);
    harness::conclude(
        &dir,
        web,
        &summary,
        &["slow-consumer.svg"],
        &["slow-consumer-summary.csv", "slow-consumer.csv"],
        &["slow-consumer.json"],
    )
}

fn verdict(o: &Outcome, args: &Args) -> String {
    let cut = match o.all_slow_cut_s {
        Some(t) => format!(
            "all {} slow subscribers were cut off {t:.1} s after the first event",
            o.slow
        ),
        None => format!(
            "{} of {} slow subscribers were cut off by the end",
            o.slow_cut, o.slow
        ),
    };
    let fraction = o
        .fast_min_fraction
        .map_or("-".to_string(), |f| format!("{:.0}%", f * 100.0));
    format!(
        "{}: {cut}; server memory went from {} to at most {}, {} more (events may take {}: {} of history and {} per slow subscriber); up to {} threads sat in write(); the {} readers got at least {fraction} of each event, p50/p99 {} / {}, {} failed",
        o.model,
        fmt_mib(o.rss_before),
        fmt_mib(o.rss_peak),
        fmt_mib(o.rss_peak.saturating_sub(o.rss_before)),
        fmt_mib(o.event_memory_bound),
        fmt_mib(args.retain_bytes as u64),
        fmt_mib(args.max_write_queue as u64),
        o.peak_threads_in_write,
        o.fast,
        fmt_us(o.fast_held_p50_us),
        fmt_us(o.fast_held_p99_us),
        o.fast_failed
    )
}

fn measure(
    dir: &std::path::Path,
    model: Model,
    plan: &Plan,
    args: &Args,
    show: &mut dyn FnMut(Row),
) -> Result<Outcome, String> {
    let (queue, retain) = (
        args.max_write_queue.to_string(),
        args.retain_bytes.to_string(),
    );
    let mut server_args = vec![
        "--model",
        model.name(),
        "--tick-ms",
        "0",
        "--max-write-queue",
        &queue,
        "--retain-bytes",
        &retain,
    ];
    if model == Model::Blocking {
        server_args.extend(["--threads", "unbounded"]);
    }
    let server = ServerProc::start(model.name(), &server_args)?;
    let mut stats = Client::connect(server.addr)?;
    thread::sleep(Duration::from_millis(200));
    let rss_before = server.reading().map_or(0, |r| r.rss_bytes);
    // The readers first, held for the whole run; then the slow ones; then the events.
    let hold = (plan.seconds + 3).to_string();
    let fast = plan.fast.to_string();
    let mut load = LoadProc::start(
        server.addr,
        &dir.join(format!("{}-fast.json", model.name())),
        &[
            "--kind",
            "sse",
            "--connections",
            &fast,
            "--ramp-per-sec",
            "1000",
            "--hold-s",
            &hold,
            "--probe-ms",
            "500",
        ],
    )?;
    wait_for_sse(&mut stats, plan.fast, Duration::from_secs(10))?;
    let slow: Vec<Socket> = (0..plan.slow)
        .map(|_| slow_subscriber(server.addr))
        .collect::<Result<_, _>>()?;
    wait_for_sse(&mut stats, plan.fast + plan.slow, Duration::from_secs(10))?;
    let mut publisher = Client::connect(server.addr)?;
    let text = "x".repeat(plan.event_bytes as usize);
    let publish = format!(
        "POST /publish HTTP/1.1\r\nHost: c10k\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    let period = Duration::from_millis(plan.period_ms);
    let start = Instant::now();
    let end = start + Duration::from_secs(plan.seconds);
    let mut next_publish = start;
    let mut next_sample = start + Duration::from_secs(1);
    let mut published = 0;
    let mut rows: Vec<Row> = Vec::new();
    let (mut second, mut in_write) = (0, 0);
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_publish {
            let (status, _) = publisher.request(publish.as_bytes())?;
            if status != 200 {
                return Err(format!("a publish was answered {status}"));
            }
            published += 1;
            next_publish += period;
            // Sampled at every event: a thread may sit in write() for less than a second.
            in_write = in_write.max(threads_in_write(server.pid()));
        }
        if now >= next_sample {
            next_sample += Duration::from_secs(1);
            second += 1;
            load.poll();
            let fast_second = load.history.last().cloned();
            let held = sse_held(&mut stats)?;
            let reading = server.reading().unwrap_or_default();
            let slow_cut = (plan.fast + plan.slow).saturating_sub(held).min(plan.slow);
            let row = Row {
                model: model.name().to_string(),
                t_s: second as f64,
                events_published: published,
                server_rss: reading.rss_bytes,
                tcp_buffers: sys::KernelMemory::read().tcp_buffers,
                sse_held: held,
                slow_cut,
                threads_in_write: std::mem::take(&mut in_write),
                threads: reading.threads,
                fast_events: fast_second.as_ref().map_or(0, |s| s.events),
                fast_p50_us: fast_second.as_ref().and_then(|s| s.event_p50_us),
                fast_p99_us: fast_second.as_ref().and_then(|s| s.event_p99_us),
            };
            show(row.clone());
            rows.push(row);
        }
        let wake = next_publish.min(next_sample).min(end);
        thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    drop(slow);
    let report = load.finish(Duration::from_secs(30))?;
    let peak = |value: fn(&Row) -> u64| rows.iter().map(value).max().unwrap_or(0);
    Ok(Outcome {
        model: model.name().to_string(),
        fast: plan.fast,
        slow: plan.slow,
        rss_before,
        rss_peak: peak(|r| r.server_rss).max(rss_before),
        event_memory_bound: (args.retain_bytes + plan.slow as usize * args.max_write_queue) as u64,
        all_slow_cut_s: rows.iter().find(|r| r.slow_cut == plan.slow).map(|r| r.t_s),
        slow_cut: rows.last().map_or(0, |r| r.slow_cut),
        peak_threads_in_write: peak(|r| r.threads_in_write),
        fast_min_fraction: report.totals.delivery.min_fraction,
        fast_held_p50_us: report.totals.held_event_p50_us,
        fast_held_p99_us: report.totals.held_event_p99_us,
        fast_failed: report.totals.failed_total,
    })
}

/// A subscriber with a small receive buffer that sends its request and never reads again.
fn slow_subscriber(addr: SocketAddr) -> Result<Socket, String> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)
        .map_err(|e| format!("cannot open a socket: {e}"))?;
    // Set before connect, so the window it advertises is small from the start.
    socket
        .set_recv_buffer_size(4096)
        .map_err(|e| format!("cannot shrink a receive buffer: {e}"))?;
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .map_err(|e| format!("cannot connect a slow subscriber: {e}"))?;
    socket
        .send(b"GET /sse HTTP/1.1\r\nHost: c10k\r\n\r\n")
        .map_err(|e| format!("a slow subscriber cannot send its request: {e}"))?;
    Ok(socket)
}

/// The SSE subscribers the server holds, from `/stats`.
fn sse_held(stats: &mut Client) -> Result<u64, String> {
    let (_, body) = stats.request(b"GET /stats HTTP/1.1\r\nHost: c10k\r\n\r\n")?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("/stats is not JSON: {e}"))?;
    Ok(value["connections"]["sse"].as_u64().unwrap_or(0))
}

fn wait_for_sse(stats: &mut Client, n: u64, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while sse_held(stats)? < n {
        if Instant::now() > deadline {
            return Err(format!(
                "the server did not get {n} subscribers within {limit:?}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Threads of `pid` asleep waiting for room in a socket's send buffer, from their kernel
/// stacks (`wchan` says only `wait_woken`, which a thread blocked in `read()` shares).
fn threads_in_write(pid: u32) -> u64 {
    sys::task_files(pid, "stack").map_or(0, |stacks| {
        stacks
            .iter()
            .filter(|stack| stack.contains("sk_stream_wait_memory"))
            .count() as u64
    })
}

fn dashboard(args: &Args) -> Meta {
    Meta {
        title: "slow-consumer: subscribers that stop reading".to_string(),
        x: Axis {
            label: "seconds of publishing",
            log: false,
        },
        points: false,
        series: args.models.iter().map(|m| m.name().to_string()).collect(),
        charts: vec![
            Chart::new("rss_mib", "server resident memory", "MiB", false),
            Chart::new("tcp_mib", "TCP buffers, whole machine", "MiB", false),
            Chart::new("slow_cut", "slow subscribers cut off", "", false),
            Chart::new("fast_p99_ms", "readers' event delivery p99", "ms", true),
        ],
        columns: vec![
            column("rss_mib", "server RSS", "MiB"),
            column("slow_cut", "slow cut", ""),
            column("in_write", "threads in write()", ""),
            column("fast_p99_ms", "readers' p99", "ms"),
        ],
    }
}

fn write_results(dir: &std::path::Path, rows: &[Row], outcomes: &[Outcome]) -> Result<(), String> {
    #[derive(Serialize)]
    struct Results<'a> {
        outcomes: &'a [Outcome],
        rows: &'a [Row],
    }
    harness::write_results(&dir.join("slow-consumer.json"), &Results { outcomes, rows })?;
    let csv: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                format!("{:.0}", r.t_s),
                r.events_published.to_string(),
                r.server_rss.to_string(),
                r.tcp_buffers.to_string(),
                r.sse_held.to_string(),
                r.slow_cut.to_string(),
                r.threads_in_write.to_string(),
                r.threads.to_string(),
                r.fast_events.to_string(),
                harness::opt_cell(r.fast_p50_us),
                harness::opt_cell(r.fast_p99_us),
            ]
        })
        .collect();
    harness::write_csv(
        &dir.join("slow-consumer.csv"),
        &[
            "model",
            "t_s",
            "events_published",
            "server_rss",
            "tcp_buffers",
            "sse_held",
            "slow_cut",
            "threads_in_write",
            "threads",
            "fast_events",
            "fast_p50_us",
            "fast_p99_us",
        ],
        &csv,
    )?;
    let summary: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.model.clone(),
                o.fast.to_string(),
                o.slow.to_string(),
                o.rss_before.to_string(),
                o.rss_peak.to_string(),
                o.event_memory_bound.to_string(),
                o.all_slow_cut_s
                    .map_or(String::new(), |t| format!("{t:.2}")),
                o.slow_cut.to_string(),
                o.peak_threads_in_write.to_string(),
                o.fast_min_fraction
                    .map_or(String::new(), |f| format!("{f:.4}")),
                harness::opt_cell(o.fast_held_p50_us),
                harness::opt_cell(o.fast_held_p99_us),
                o.fast_failed.to_string(),
            ]
        })
        .collect();
    harness::write_csv(
        &dir.join("slow-consumer-summary.csv"),
        &[
            "model",
            "fast",
            "slow",
            "rss_before",
            "rss_peak",
            "event_memory_bound",
            "all_slow_cut_s",
            "slow_cut",
            "peak_threads_in_write",
            "fast_min_fraction",
            "fast_held_p50_us",
            "fast_held_p99_us",
            "fast_failed",
        ],
        &summary,
    )?;
    let lines = |value: &dyn Fn(&Row) -> Option<f64>| {
        chart::per_model(
            rows,
            &chart::MODELS,
            |r| r.model.as_str(),
            |r| Some((r.t_s, value(r)?)),
            str::to_string,
            false,
        )
    };
    let panel = |title: &str, y_label: &str, log_y: bool, series: Vec<Series>| Panel {
        title: title.to_string(),
        y_label: y_label.to_string(),
        log_y,
        y_min: if log_y { 0.1 } else { 0.0 },
        series,
    };
    chart::draw(
        &dir.join("slow-consumer.svg"),
        "subscribers that stop reading: memory stays bounded, the readers do not notice",
        "seconds of publishing",
        &[
            panel(
                "server resident memory",
                "MiB",
                false,
                lines(&|r| Some(harness::mib(r.server_rss))),
            ),
            panel(
                "slow subscribers cut off",
                "subscribers",
                false,
                lines(&|r| Some(r.slow_cut as f64)),
            ),
            panel(
                "the readers' event delivery latency, p99 per second",
                "ms (log)",
                true,
                lines(&|r| harness::ms(r.fast_p99_us)),
            ),
        ],
    )
}
