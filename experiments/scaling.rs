//! Scaling: idle long-lived connections ramped in steps against each model in turn, each step
//! against a fresh server, until the model fails or the target is reached — what a connection
//! costs in user and kernel memory, threads and latency, and which limit stops each model.

use std::path::Path;
use std::thread;
use std::time::Duration;

use serde::Serialize;

use super::chart::{self, Panel, Series};
use super::harness::{self, fmt_us, LoadProc};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::app::config::Model;
use crate::capacity::{self, thousands, Limits};
use crate::load::report::Report;
use crate::load::sampler::read_tree;
use crate::load::Kind;
use crate::sys::KernelMemory;

/// `c10k run scaling`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kind of idle long-lived connection.
    #[arg(long, value_enum, default_value_t = Kind::Sse)]
    pub kind: Kind,
    /// Where the steps end: 1,000, 3,000, 10,000, 30,000, ... up to this many connections.
    #[arg(long, default_value_t = 100_000)]
    pub connections: u64,
    /// The steps, comma-separated, instead of the 1-3-10 sequence up to --connections.
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<u64>,
    /// Server models, comma-separated, run one after the other (never side by side).
    #[arg(long, value_enum, default_values_t = [Model::Evented, Model::Blocking], value_delimiter = ',')]
    pub models: Vec<Model>,
    /// New connections per second.
    #[arg(long, default_value_t = 10_000)]
    pub ramp_per_sec: u64,
    /// Seconds to hold each step once it is connected (longer when the step's tick period
    /// needs it: two ticks are always delivered while held).
    #[arg(long, default_value_t = 3)]
    pub hold_s: u64,
    /// Milliseconds between probes (a fresh `GET /`).
    #[arg(long, default_value_t = 200)]
    pub probe_ms: u64,
    /// Redraw the charts from the JSON of an earlier run in the results folder, measuring
    /// nothing.
    #[arg(long)]
    pub replot: bool,
    /// A few tens of connections, for a check in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/scaling].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// One step of one model, once held.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Row {
    pub model: String,
    pub kind: String,
    /// Connections asked for.
    pub step: u64,
    /// Server processes (`--workers`; 1 for the blocking model).
    pub workers: u64,
    /// The tick period of this step: one event to every connection this often.
    pub tick_ms: u64,
    /// The most connections open at once.
    pub held: u64,
    pub failed: u64,
    /// Failures by cause (`timed_out=3 http_error=2`).
    pub failures: String,
    pub ramp_s: f64,
    pub accepted_per_sec: f64,
    /// The server's anonymous PSS (heap and stacks), summed over its processes, idle and held:
    /// the binary's pages are left out, which the load generator, the same binary, shares.
    pub pss_anon_idle: u64,
    pub pss_anon_held: u64,
    /// (held − idle) / connections held.
    pub user_bytes_per_conn: f64,
    pub rss_bytes_per_conn: f64,
    /// Growth of `Slab` and `KernelStack` while held, both ends of every loopback connection.
    pub slab_delta: u64,
    pub kernel_stack_delta: u64,
    /// (slab + kernel stack growth) / connections held.
    pub kernel_bytes_per_conn: f64,
    /// Growth of TCP sockets in use (`/proc/net/sockstat`: both ends) and of their buffers.
    pub tcp_sockets_delta: u64,
    pub tcp_buffer_delta: u64,
    pub threads: u64,
    pub fds: u64,
    /// Probes answered once every connection was held, and their latency.
    pub held_probes: u64,
    pub probe_p50_us: Option<u64>,
    pub probe_p99_us: Option<u64>,
    pub probe_timeouts: u64,
    /// Ticks received once every connection was held, and their delivery latency (the
    /// client's receipt − the event's `sent_ns`).
    pub events: u64,
    pub event_p50_us: Option<u64>,
    pub event_p99_us: Option<u64>,
    /// From the load generator's close until every connection was closed.
    pub teardown_s: f64,
    /// Why this model went no further, on its last step.
    pub stopped_by: Option<String>,
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.replot {
        let dir = harness::results_dir("scaling", args.out.as_deref())?;
        let rows: Vec<Row> = harness::read_rows(&dir.join("scaling.json"))?;
        draw_charts(&dir, &rows)?;
        println!("charts redrawn in {}/", dir.display());
        return Ok(());
    }
    let steps = plan(&args.steps, args.quick, args.connections);
    let dir = harness::results_dir("scaling", args.out.as_deref())?;
    let limits = Limits::read();
    let target = steps.iter().copied().max().unwrap_or(0);
    harness::announce(&format!("scaling: idle {} connections in steps of {} against each model in turn, a fresh server per step",
        args.kind.name(),
        steps.iter().map(|&n| thousands(n)).collect::<Vec<_>>().join(", ")));
    warn_about_limits(&limits, target);
    let web = Web::start(&args.web, &dashboard(args))?;
    let mut rows = Vec::new();
    let quiet_sockets = KernelMemory::read().tcp_sockets;
    for &model in &args.models {
        println!();
        for &n in &steps {
            settle(quiet_sockets);
            let row = measure(&dir, model, n, args, &limits, &web)?;
            print_row(&row);
            web.row(&row.model, n as f64, web_values(&row));
            let stop = row.stopped_by.is_some();
            rows.push(row);
            if stop {
                break;
            }
        }
    }
    println!();
    let verdict: Vec<String> = args
        .models
        .iter()
        .filter_map(|m| rows.iter().rev().find(|r| r.model == m.name()))
        .map(|last| verdict(last, &rows))
        .collect();
    for line in &verdict {
        println!("{line}");
    }
    write_results(&dir, args, &rows)?;
    harness::conclude(
        &dir,
        web,
        &verdict,
        &[
            "scaling-memory.svg",
            "scaling-latency.svg",
            "scaling-threads.svg",
        ],
        &["scaling.csv"],
        &["scaling.json"],
    )
}

/// The dashboard's charts: one point per step and model.
fn dashboard(args: &Args) -> Meta {
    Meta {
        title: format!("scaling: idle {} connections", args.kind.name()),
        x: Axis {
            label: "connections",
            log: true,
        },
        points: true,
        series: args.models.iter().map(|m| m.name().to_string()).collect(),
        charts: vec![
            Chart::new("user_b", "user memory per connection", "B", true),
            Chart::new("kernel_b", "kernel memory per connection", "B", true),
            Chart::new("threads", "server threads", "threads", true),
            Chart::new("probe_p99_ms", "probe p99 while held", "ms", true),
            Chart::new("event_p99_ms", "tick delivery p99", "ms", true),
            Chart::new(
                "accepted_per_s",
                "accepted per second in the ramp",
                "conn/s",
                false,
            ),
        ],
        columns: vec![
            column("held", "held", ""),
            column("failed", "failed", ""),
            column("user_b", "user/conn", "B"),
            column("kernel_b", "kernel/conn", "B"),
            column("threads", "threads", ""),
            column("probe_p99_ms", "probe p99", "ms"),
            column("event_p99_ms", "tick p99", "ms"),
        ],
    }
}

fn web_values(r: &Row) -> serde_json::Value {
    serde_json::json!({
        "held": r.held,
        "failed": r.failed,
        "user_b": r.user_bytes_per_conn,
        "kernel_b": r.kernel_bytes_per_conn,
        "threads": r.threads,
        "probe_p99_ms": harness::ms(r.probe_p99_us),
        "event_p99_ms": harness::ms(r.event_p99_us),
        "accepted_per_s": r.accepted_per_sec,
    })
}

/// Waits (at most 30 s) until the sockets of the step before are gone from the kernel: a
/// million closing connections keep both cores busy for seconds after their processes exited,
/// and the next step must not share the machine with them.
pub(super) fn settle(quiet_sockets: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while KernelMemory::read().tcp_sockets > quiet_sockets + 100
        && std::time::Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(100));
    }
}

/// The steps: the ones asked for, or 1-3-10 up to the target (tens of connections with --quick).
pub(super) fn plan(asked: &[u64], quick: bool, target: u64) -> Vec<u64> {
    if !asked.is_empty() {
        let mut steps = asked.to_vec();
        steps.retain(|&n| n > 0);
        steps.sort_unstable();
        steps.dedup();
        return steps;
    }
    if quick {
        return vec![20, 60];
    }
    let mut steps = Vec::new();
    let mut scale = 1_000u64;
    'sequence: loop {
        for n in [scale, 3 * scale] {
            if n >= target {
                break 'sequence;
            }
            steps.push(n);
        }
        scale *= 10;
    }
    steps.push(target);
    steps
}

/// Says which of this machine's limits the target crosses, and what lifts them, before the run.
fn warn_about_limits(limits: &Limits, target: u64) {
    let evented = capacity::evented(limits);
    let short: Vec<_> = evented
        .limits
        .iter()
        .filter(|l| l.connections < target)
        .collect();
    if short.is_empty() {
        let blocking = capacity::blocking(limits, 1);
        println!(
            "this machine allows the evented server about {} connections (bound by {}); the blocking one about {} (bound by {}): see `c10k doctor`",
            thousands(evented.max()),
            evented.binding().name,
            thousands(blocking.max()),
            blocking.binding().name
        );
        return;
    }
    println!(
        "warning: {} connections is past what this machine allows the evented server; first:",
        thousands(target)
    );
    for l in short {
        println!(
            "  {} allows {}: {} — lift: {}",
            l.name,
            thousands(l.connections),
            l.why,
            l.lift
        );
    }
}

/// The tick period a step can afford: every connection gets an event, no more than about
/// 10,000 of them a second in all (one a second up to 10,000 connections, one every 10 s from
/// 100,000). More, and a blocking server's ten thousand threads waking for each tick take the
/// CPU its accept thread needs to start new ones.
fn tick_ms(n: u64) -> u64 {
    (n / 10).clamp(1_000, 10_000)
}

fn measure(
    dir: &Path,
    model: Model,
    n: u64,
    args: &Args,
    limits: &Limits,
    web: &Web,
) -> Result<Row, String> {
    let tick = tick_ms(n);
    let hold_s = args.hold_s.max((2 * tick).div_ceil(1000) + 1);
    let (mut server, workers) =
        harness::start_sized(model, n, limits, &["--tick-ms", &tick.to_string()])?;
    // Let the fresh processes settle before the baselines are read.
    thread::sleep(Duration::from_millis(500));
    let idle = read_tree(server.pid()).ok_or("the server exited before it was measured")?;
    let kernel_idle = KernelMemory::read();
    let load_args = [
        "--kind",
        args.kind.name(),
        "--connections",
        &n.to_string(),
        "--ramp-per-sec",
        &args.ramp_per_sec.to_string(),
        "--hold-s",
        &hold_s.to_string(),
        "--probe-ms",
        &args.probe_ms.to_string(),
        // A thread-per-connection server that starts thousands of threads a second answers
        // slowly, not never.
        "--timeout-ms",
        "10000",
        "--server-pid",
        &server.pid().to_string(),
    ]
    .map(str::to_string);
    let report_path = dir.join(format!("{}-{}-{n}.json", model.name(), args.kind.name()));
    let mut load = LoadProc::start(server.addr, &report_path, &load_args)?;
    let mut kernel_held = kernel_idle;
    let mut shown = 0;
    while !load.finished() {
        thread::sleep(Duration::from_millis(200));
        load.poll();
        for s in &load.history[shown..] {
            println!(
                "  {:<8} {:>9}  t={:>3.0}s open={} connecting={} fail={} probe p99={}",
                model.name(),
                thousands(n),
                s.t_s,
                s.open,
                s.connecting,
                s.failed.total(),
                fmt_us(s.probe_p99_us)
            );
        }
        if let Some(last) = load.history.get(shown..).and_then(|h| h.last()) {
            web.status(&harness::progress(model.name(), n, last));
        }
        shown = load.history.len();
        // Kernel memory counts once the ramp is over, while everything is held.
        let held = load
            .history
            .last()
            .is_some_and(|s| harness::ramp_over(s, n));
        if held {
            kernel_held = kernel_held.max(KernelMemory::read());
        }
    }
    let planned = n as f64 / args.ramp_per_sec.max(1) as f64;
    let limit = Duration::from_secs_f64(planned * 4.0 + 30.0 + hold_s as f64 + 90.0);
    let report = load.finish(limit)?;
    let server_exited = !server.running();
    server.stop();
    let mut row = row(
        model,
        args.kind,
        n,
        workers,
        tick,
        &report,
        idle,
        kernel_idle,
        kernel_held,
    );
    row.stopped_by = stopped_by(&row, &report, server_exited, limits, args.kind);
    Ok(row)
}

#[allow(clippy::too_many_arguments)]
fn row(
    model: Model,
    kind: Kind,
    n: u64,
    workers: u64,
    tick_ms: u64,
    report: &Report,
    idle: crate::load::report::ServerSample,
    kernel_idle: KernelMemory,
    kernel_held: KernelMemory,
) -> Row {
    let t = &report.totals;
    let peak = t.server_peak.unwrap_or_default();
    let held = t.peak_open;
    let per = |bytes: u64| {
        if held == 0 {
            0.0
        } else {
            bytes as f64 / held as f64
        }
    };
    let slab_delta = kernel_held.slab.saturating_sub(kernel_idle.slab);
    let kernel_stack_delta = kernel_held
        .kernel_stack
        .saturating_sub(kernel_idle.kernel_stack);
    Row {
        model: model.name().to_string(),
        kind: kind.name().to_string(),
        step: n,
        workers,
        tick_ms,
        held,
        failed: t.failed_total,
        failures: t.failed.nonzero(),
        ramp_s: t.ramp_s,
        accepted_per_sec: t.accepted_per_sec.unwrap_or(0.0),
        pss_anon_idle: idle.pss_anon_bytes,
        pss_anon_held: peak.pss_anon_bytes,
        user_bytes_per_conn: per(peak.pss_anon_bytes.saturating_sub(idle.pss_anon_bytes)),
        rss_bytes_per_conn: per(peak.rss_bytes.saturating_sub(idle.rss_bytes)),
        slab_delta,
        kernel_stack_delta,
        kernel_bytes_per_conn: per(slab_delta + kernel_stack_delta),
        tcp_sockets_delta: kernel_held
            .tcp_sockets
            .saturating_sub(kernel_idle.tcp_sockets),
        tcp_buffer_delta: kernel_held
            .tcp_buffers
            .saturating_sub(kernel_idle.tcp_buffers),
        threads: peak.threads,
        fds: peak.fds,
        held_probes: t.held_probes,
        probe_p50_us: t.held_probe_p50_us,
        probe_p99_us: t.held_probe_p99_us,
        probe_timeouts: t.probe_timeouts,
        events: t.held_events,
        event_p50_us: t.held_event_p50_us,
        event_p99_us: t.held_event_p99_us,
        teardown_s: report.teardown_s,
        stopped_by: None,
    }
}

/// Why a step did not hold every connection: the limit of this machine it reached (from the
/// same figures as `c10k doctor`), or what the failures were. `None` when it held them all.
fn stopped_by(
    row: &Row,
    report: &Report,
    server_exited: bool,
    limits: &Limits,
    kind: Kind,
) -> Option<String> {
    if row.held >= row.step && row.failed == 0 && !server_exited {
        return None;
    }
    let how = if server_exited {
        "the server exited".to_string()
    } else {
        let mut how = format!("{} connections failed ({})", row.failed, row.failures);
        if let Some((cause, first)) = report.totals.first_failures.iter().next() {
            how.push_str(&format!("; first {cause}: {first}"));
        }
        how
    };
    let capacity = match row.model.as_str() {
        "blocking" => capacity::blocking(limits, if kind == Kind::Ws { 2 } else { 1 }),
        _ => capacity::evented(limits),
    };
    // The limit reached is the tightest one the connections held came within 2% of.
    let reached = capacity
        .limits
        .iter()
        .find(|l| row.held as f64 >= l.connections as f64 * 0.98 && row.held < row.step);
    Some(match reached {
        Some(l) => format!(
            "{} (about {} connections here: {}); {how}",
            l.name,
            thousands(l.connections),
            l.why
        ),
        None => how,
    })
}

fn print_row(r: &Row) {
    println!(
        "{:<8} {:>9} held {:>9} failed {:<6} ramp {:>5.1}s ({:>6.0}/s)  user {:>7.0} B/conn  kernel {:>7.0} B/conn  threads {:>6}  probe p50/p99 {}/{}  tick every {} ms: p50/p99 {}/{}",
        r.model,
        thousands(r.step),
        thousands(r.held),
        r.failed,
        r.ramp_s,
        r.accepted_per_sec,
        r.user_bytes_per_conn,
        r.kernel_bytes_per_conn,
        r.threads,
        fmt_us(r.probe_p50_us),
        fmt_us(r.probe_p99_us),
        r.tick_ms,
        fmt_us(r.event_p50_us),
        fmt_us(r.event_p99_us),
    );
    if let Some(why) = &r.stopped_by {
        println!("{:<8} stopped: {why}", "");
    }
}

/// One sentence per model: how far it went and what it cost there.
fn verdict(last: &Row, rows: &[Row]) -> String {
    let best = rows
        .iter()
        .filter(|r| r.model == last.model && r.stopped_by.is_none())
        .max_by_key(|r| r.step);
    let held = best.map_or("no step".to_string(), |b| {
        format!(
            "held every step up to {} ({} B of user and {} B of kernel memory per connection; threads: {}; processes: {}; probe p99 {} while held)",
            thousands(b.step),
            b.user_bytes_per_conn.round(),
            b.kernel_bytes_per_conn.round(),
            b.threads,
            b.workers,
            fmt_us(b.probe_p99_us)
        )
    });
    match &last.stopped_by {
        None => format!("{}: {held}.", last.model),
        Some(why) => format!(
            "{}: {held}; at {} it held {}, stopped by {why}.",
            last.model,
            thousands(last.step),
            thousands(last.held)
        ),
    }
}

fn write_results(dir: &Path, args: &Args, rows: &[Row]) -> Result<(), String> {
    #[derive(Serialize)]
    struct Results<'a> {
        kind: &'a str,
        ramp_per_sec: u64,
        /// Both ends of every connection are on this machine: the kernel figures count two
        /// sockets per connection.
        kernel_counts_both_ends: bool,
        rows: &'a [Row],
    }
    harness::write_results(
        &dir.join("scaling.json"),
        &Results {
            kind: args.kind.name(),
            ramp_per_sec: args.ramp_per_sec,
            kernel_counts_both_ends: true,
            rows,
        },
    )?;
    let opt = harness::opt_cell;
    let csv_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.kind.clone(),
                r.step.to_string(),
                r.workers.to_string(),
                r.tick_ms.to_string(),
                r.held.to_string(),
                r.failed.to_string(),
                r.failures.replace(' ', ";"),
                format!("{:.2}", r.ramp_s),
                format!("{:.0}", r.accepted_per_sec),
                r.pss_anon_idle.to_string(),
                r.pss_anon_held.to_string(),
                format!("{:.1}", r.user_bytes_per_conn),
                format!("{:.1}", r.rss_bytes_per_conn),
                r.slab_delta.to_string(),
                r.kernel_stack_delta.to_string(),
                format!("{:.1}", r.kernel_bytes_per_conn),
                r.tcp_sockets_delta.to_string(),
                r.tcp_buffer_delta.to_string(),
                r.threads.to_string(),
                r.fds.to_string(),
                r.held_probes.to_string(),
                opt(r.probe_p50_us),
                opt(r.probe_p99_us),
                r.probe_timeouts.to_string(),
                r.events.to_string(),
                opt(r.event_p50_us),
                opt(r.event_p99_us),
                format!("{:.2}", r.teardown_s),
                // The CSV stays one line per row: no commas inside a cell.
                r.stopped_by.clone().unwrap_or_default().replace(',', ""),
            ]
        })
        .collect();
    harness::write_csv(&dir.join("scaling.csv"), &CSV_HEADER, &csv_rows)?;
    draw_charts(dir, rows)
}

/// The CSV's columns, in the order of [`Row`]'s fields.
pub const CSV_HEADER: [&str; 30] = [
    "model",
    "kind",
    "step",
    "workers",
    "tick_ms",
    "held",
    "failed",
    "failures",
    "ramp_s",
    "accepted_per_sec",
    "pss_anon_idle",
    "pss_anon_held",
    "user_bytes_per_conn",
    "rss_bytes_per_conn",
    "slab_delta",
    "kernel_stack_delta",
    "kernel_bytes_per_conn",
    "tcp_sockets_delta",
    "tcp_buffer_delta",
    "threads",
    "fds",
    "held_probes",
    "probe_p50_us",
    "probe_p99_us",
    "probe_timeouts",
    "events",
    "event_p50_us",
    "event_p99_us",
    "teardown_s",
    "stopped_by",
];

fn draw_charts(dir: &Path, rows: &[Row]) -> Result<(), String> {
    // Each model's held steps, as (connections held, value) points.
    let series = |label: &str, pick: &dyn Fn(&Row) -> Option<f64>, pale: bool| -> Vec<Series> {
        chart::per_model(
            rows,
            &chart::MODELS,
            |r| &r.model,
            |r| {
                (r.held > 0)
                    .then(|| Some((r.held as f64, pick(r)?)))
                    .flatten()
            },
            |model| format!("{model}: {label}"),
            pale,
        )
    };
    let x_label = "connections held (log)";
    let mut memory = series(
        "user (anonymous PSS)",
        &|r| Some(r.user_bytes_per_conn),
        false,
    );
    memory.extend(series(
        "kernel (slab + stacks, both ends)",
        &|r| Some(r.kernel_bytes_per_conn),
        true,
    ));
    chart::draw_with_x(
        &dir.join("scaling-memory.svg"),
        "memory per idle connection",
        x_label,
        true,
        &[Panel {
            title: "bytes per connection held (log scale)".to_string(),
            y_label: "bytes (log)".to_string(),
            log_y: true,
            y_min: 10.0,
            series: memory,
        }],
    )?;
    let ms = harness::ms;
    let mut latency = series("probe p99 while held", &|r| ms(r.probe_p99_us), false);
    latency.extend(series("tick delivery p99", &|r| ms(r.event_p99_us), true));
    chart::draw_with_x(
        &dir.join("scaling-latency.svg"),
        "latency as connections grow",
        x_label,
        true,
        &[Panel {
            title: "p99 (log scale): a fresh GET /, and the ticks to every connection".to_string(),
            y_label: "ms (log)".to_string(),
            log_y: true,
            y_min: 0.01,
            series: latency,
        }],
    )?;
    chart::draw_with_x(
        &dir.join("scaling-threads.svg"),
        "threads as connections grow",
        x_label,
        true,
        &[Panel {
            title: "server threads, all processes (log scale)".to_string(),
            y_label: "threads (log)".to_string(),
            log_y: true,
            y_min: 1.0,
            series: series("threads", &|r| Some(r.threads as f64), false),
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_go_one_three_ten_up_to_the_target() {
        assert_eq!(
            plan(&[], false, 100_000),
            [1_000, 3_000, 10_000, 30_000, 100_000]
        );
        assert_eq!(
            plan(&[], false, 1_000_000),
            [1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000]
        );
        assert_eq!(
            plan(&[], false, 50_000),
            [1_000, 3_000, 10_000, 30_000, 50_000]
        );
        assert_eq!(plan(&[], false, 500), [500]);
        assert_eq!(plan(&[300, 0, 100, 300], false, 0), [100, 300]);
        assert_eq!(plan(&[], true, 100_000), [20, 60]);
    }

    #[test]
    fn the_tick_period_grows_with_the_connections() {
        assert_eq!(tick_ms(20), 1_000);
        assert_eq!(tick_ms(30_000), 3_000);
        assert_eq!(tick_ms(1_000_000), 10_000);
    }
}
