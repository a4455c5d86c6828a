//! Fan-out: what it costs to push one event to N subscribers. For each N, each model in turn —
//! and the floor, a bare loop writing the same prebuilt bytes to the same sockets from the same
//! number of processes — holds N SSE subscribers and sends them one event per period, a period
//! long enough for the fan-out to finish, while a probe (a fresh `GET /` every 20 ms) asks how
//! long a newcomer waits meanwhile.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::chart::{self, Panel, Series};
use super::harness::{self, fmt_us, LoadProc};
use super::scaling::{plan, settle};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::app::config::Model;
use crate::capacity::{self, thousands, Limits};
use crate::sys::{self, KernelMemory};

/// `c10k run fanout`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where the steps end: 1,000, 3,000, 10,000, ... up to this many subscribers.
    #[arg(long, default_value_t = 100_000)]
    pub connections: u64,
    /// The steps, comma-separated, instead of the 1-3-10 sequence up to --connections.
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<u64>,
    /// Server models, comma-separated (the floor always runs too). The blocking model runs the
    /// steps its threads allow.
    #[arg(long, value_enum, default_values_t = [Model::Evented, Model::Blocking], value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Events sent to every subscriber in each step.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..))]
    pub events: u64,
    /// Milliseconds between probes.
    #[arg(long, default_value_t = 20)]
    pub probe_ms: u64,
    /// The load generator's `--busy-poll-us`: after the last readiness it polls this long
    /// before it sleeps, so that the server's CPU does not pay for waking its clients
    /// (notes/fanout.md); 0 lets it sleep at once.
    #[arg(long, default_value_t = 0)]
    pub busy_poll_us: u64,
    /// Redraw the charts from the JSON of an earlier run in the results folder, measuring
    /// nothing.
    #[arg(long)]
    pub replot: bool,
    /// A few tens of subscribers, for a check in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/fanout].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// One step of one model.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Row {
    pub model: String,
    pub subscribers: u64,
    pub workers: u64,
    /// One event to every subscriber this often.
    pub period_ms: u64,
    pub held: u64,
    pub failed: u64,
    /// Events received once every subscriber was held (the ramp's are left out), each copy
    /// counted.
    pub deliveries: u64,
    /// Their delivery latency (receipt − the event's `sent_ns`).
    pub delivery_p50_us: Option<u64>,
    pub delivery_p99_us: Option<u64>,
    pub delivery_max_us: Option<u64>,
    /// Subscribers one fan-out reaches per second: held / the slowest delivery.
    pub fanout_per_sec: f64,
    /// Server CPU (user + system, every process) per delivery while held, in nanoseconds.
    pub cpu_ns_per_delivery: Option<f64>,
    /// Probes answered while every subscriber was held, and their latency.
    pub held_probes: u64,
    pub probe_p50_us: Option<u64>,
    pub probe_p99_us: Option<u64>,
    pub probe_timeouts: u64,
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.replot {
        let dir = harness::results_dir("fanout", args.out.as_deref())?;
        let rows: Vec<Row> = harness::read_rows(&dir.join("fanout.json"))?;
        draw_charts(&dir, &rows)?;
        println!("charts redrawn in {}/", dir.display());
        return Ok(());
    }
    let steps = plan(&args.steps, args.quick, args.connections);
    let dir = harness::results_dir("fanout", args.out.as_deref())?;
    let limits = Limits::read();
    let mut models = vec![Model::Floor];
    models.extend(args.models.iter().filter(|&&m| m != Model::Floor));
    harness::announce(&format!(
        "fanout: one event per period to {} SSE subscribers, {} events a step; a probe every {} ms",
        steps
            .iter()
            .map(|&n| thousands(n))
            .collect::<Vec<_>>()
            .join(", "),
        args.events,
        args.probe_ms
    ));
    let web = Web::start(&args.web, &dashboard(&models))?;
    let blocking_max = capacity::blocking(&limits, 1).max();
    let quiet_sockets = KernelMemory::read().tcp_sockets;
    let mut rows = Vec::new();
    for &n in &steps {
        println!();
        for &model in &models {
            if model == Model::Blocking && n > blocking_max {
                println!(
                    "{:<8} {:>9}  skipped: past its {} threads here (c10k doctor)",
                    "blocking",
                    thousands(n),
                    thousands(blocking_max)
                );
                continue;
            }
            settle(quiet_sockets);
            let row = measure(&dir, model, n, args, &limits, &web)?;
            print_row(&row);
            web.row(&row.model, n as f64, web_values(&row));
            rows.push(row);
        }
    }
    println!();
    let verdict: Vec<String> = steps
        .last()
        .map(|&n| verdict(&rows, n))
        .into_iter()
        .collect();
    for line in &verdict {
        println!("{line}");
    }
    write_results(&dir, &rows)?;
    harness::conclude(
        &dir,
        web,
        &verdict,
        &["fanout-delivery.svg", "fanout-probe.svg"],
        &["fanout.csv"],
        &["fanout.json"],
    )
}

/// The dashboard's charts: one point per step and model, the floor beside the models.
fn dashboard(models: &[Model]) -> Meta {
    Meta {
        title: "fanout: one event to N subscribers".to_string(),
        x: Axis {
            label: "subscribers",
            log: true,
        },
        points: true,
        series: models.iter().map(|m| m.name().to_string()).collect(),
        charts: vec![
            Chart::new("delivery_p50_ms", "delivery latency p50", "ms", true),
            Chart::new("delivery_p99_ms", "delivery latency p99", "ms", true),
            Chart::new("probe_p99_ms", "probe p99 during the fan-out", "ms", true),
            Chart::new("cpu_us", "server CPU per delivery", "µs", true),
        ],
        columns: vec![
            column("held", "held", ""),
            column("delivery_p50_ms", "p50", "ms"),
            column("delivery_p99_ms", "p99", "ms"),
            column("delivery_max_ms", "max", "ms"),
            column("cpu_us", "CPU/delivery", "µs"),
            column("probe_p99_ms", "probe p99", "ms"),
            column("probe_timeouts", "probe t/o", ""),
        ],
    }
}

fn web_values(r: &Row) -> serde_json::Value {
    serde_json::json!({
        "held": r.held,
        "delivery_p50_ms": harness::ms(r.delivery_p50_us),
        "delivery_p99_ms": harness::ms(r.delivery_p99_us),
        "delivery_max_ms": harness::ms(r.delivery_max_us),
        "cpu_us": r.cpu_ns_per_delivery.map(|ns| ns / 1000.0),
        "probe_p99_ms": harness::ms(r.probe_p99_us),
        "probe_timeouts": r.probe_timeouts,
    })
}

/// A period long enough for one fan-out to finish with room to spare: 20 µs per subscriber
/// (about four times what the event loop takes here), at least 500 ms.
fn period_ms(n: u64) -> u64 {
    (n / 50).max(500)
}

fn measure(
    dir: &Path,
    model: Model,
    n: u64,
    args: &Args,
    limits: &Limits,
    web: &Web,
) -> Result<Row, String> {
    let period = period_ms(n);
    let (mut server, workers) = harness::start_sized(
        model,
        n,
        limits,
        &["--tick-ms", &period.to_string(), "--heartbeat-ms", "0"],
    )?;
    let hold_s = (args.events * period).div_ceil(1000) + 1;
    let load_args = [
        "--kind",
        "sse",
        "--connections",
        &n.to_string(),
        "--ramp-per-sec",
        "10000",
        "--hold-s",
        &hold_s.to_string(),
        "--probe-ms",
        &args.probe_ms.to_string(),
        "--timeout-ms",
        "10000",
        "--busy-poll-us",
        &args.busy_poll_us.to_string(),
        "--server-pid",
        &server.pid().to_string(),
    ]
    .map(str::to_string);
    let report_path = dir.join(format!("{}-{n}.json", model.name()));
    let mut load = LoadProc::start(server.addr, &report_path, &load_args)?;
    // Server CPU and deliveries from the first second everything is held to the last one seen
    // before the load generator closes.
    let mut held_from: Option<(Duration, usize)> = None;
    let mut held_to: Option<(Duration, usize)> = None;
    let started = Instant::now();
    let mut reported = 0;
    while !load.finished() {
        thread::sleep(Duration::from_millis(100));
        load.poll();
        let Some(last) = load.history.last() else {
            continue;
        };
        if load.history.len() > reported {
            reported = load.history.len();
            web.status(&harness::progress(model.name(), n, last));
        }
        if harness::ramp_over(last, n) {
            let cpu = tree_cpu(server.pid());
            let at = (cpu, load.history.len());
            held_from.get_or_insert(at);
            held_to = Some(at);
        }
        if started.elapsed() > Duration::from_secs(hold_s + 600) {
            break;
        }
    }
    let held_windows = match (held_from, held_to) {
        (Some((cpu_a, a)), Some((cpu_b, b))) if b > a => {
            let deliveries: u64 = load.history[a..b].iter().map(|s| s.events).sum();
            Some((cpu_b.saturating_sub(cpu_a), deliveries))
        }
        _ => None,
    };
    let report = load.finish(Duration::from_secs(hold_s + 300))?;
    server.stop();
    let t = &report.totals;
    let held = t.peak_open;
    Ok(Row {
        model: model.name().to_string(),
        subscribers: n,
        workers,
        period_ms: period,
        held,
        failed: t.failed_total,
        deliveries: t.held_events,
        delivery_p50_us: t.held_event_p50_us,
        delivery_p99_us: t.held_event_p99_us,
        delivery_max_us: t.held_event_max_us,
        fanout_per_sec: t
            .held_event_max_us
            .filter(|&us| us > 0)
            .map_or(0.0, |us| held as f64 / (us as f64 / 1e6)),
        cpu_ns_per_delivery: held_windows
            .filter(|&(_, d)| d > 0)
            .map(|(cpu, d)| cpu.as_nanos() as f64 / d as f64),
        held_probes: t.held_probes,
        probe_p50_us: t.held_probe_p50_us,
        probe_p99_us: t.held_probe_p99_us,
        probe_timeouts: t.probe_timeouts,
    })
}

/// CPU used so far by `pid` and every process under it.
fn tree_cpu(pid: u32) -> Duration {
    std::iter::once(pid)
        .chain(sys::descendants(pid))
        .filter_map(|p| sys::cpu_time(p).ok())
        .sum()
}

fn print_row(r: &Row) {
    println!(
        "{:<8} {:>9}  held {:>9} failed {:<5} every {:>5} ms  delivery p50/p99/max {}/{}/{}  {:>9.0} subscribers/s  cpu {} per delivery  probe p50/p99 {}/{} ({} probes, {} timed out)",
        r.model,
        thousands(r.subscribers),
        thousands(r.held),
        r.failed,
        r.period_ms,
        fmt_us(r.delivery_p50_us),
        fmt_us(r.delivery_p99_us),
        fmt_us(r.delivery_max_us),
        r.fanout_per_sec,
        r.cpu_ns_per_delivery
            .map_or("-".to_string(), |ns| format!("{:.1} µs", ns / 1000.0)),
        fmt_us(r.probe_p50_us),
        fmt_us(r.probe_p99_us),
        r.held_probes,
        r.probe_timeouts
    );
}

/// How close each model came to the floor at the largest step.
fn verdict(rows: &[Row], n: u64) -> String {
    let at = |model: &str| rows.iter().find(|r| r.model == model && r.subscribers == n);
    let Some(floor) = at("floor") else {
        return String::new();
    };
    let mut lines = vec![format!(
        "at {} subscribers the floor delivers p50 {} / p99 {}; the probe waits p99 {} meanwhile",
        thousands(n),
        fmt_us(floor.delivery_p50_us),
        fmt_us(floor.delivery_p99_us),
        fmt_us(floor.probe_p99_us)
    )];
    let ratio = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.2}×", a as f64 / b as f64),
        _ => "-".to_string(),
    };
    for r in rows
        .iter()
        .filter(|r| r.subscribers == n && r.model != "floor")
    {
        lines.push(format!(
            "{}: p50 {} ({} the floor), p99 {} ({}); probe p99 {}",
            r.model,
            fmt_us(r.delivery_p50_us),
            ratio(r.delivery_p50_us, floor.delivery_p50_us),
            fmt_us(r.delivery_p99_us),
            ratio(r.delivery_p99_us, floor.delivery_p99_us),
            fmt_us(r.probe_p99_us)
        ));
    }
    lines.join("\n")
}

/// The CSV's columns, in the order of [`Row`]'s fields.
pub const CSV_HEADER: [&str; 17] = [
    "model",
    "subscribers",
    "workers",
    "period_ms",
    "held",
    "failed",
    "deliveries",
    "delivery_p50_us",
    "delivery_p99_us",
    "delivery_max_us",
    "fanout_per_sec",
    "cpu_ns_per_delivery",
    "held_probes",
    "probe_p50_us",
    "probe_p99_us",
    "probe_timeouts",
    "period_fraction_fanning_out",
];

fn write_results(dir: &Path, rows: &[Row]) -> Result<(), String> {
    harness::write_results(&dir.join("fanout.json"), &harness::Rows { rows })?;
    let opt = harness::opt_cell;
    let csv_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.subscribers.to_string(),
                r.workers.to_string(),
                r.period_ms.to_string(),
                r.held.to_string(),
                r.failed.to_string(),
                r.deliveries.to_string(),
                opt(r.delivery_p50_us),
                opt(r.delivery_p99_us),
                opt(r.delivery_max_us),
                format!("{:.0}", r.fanout_per_sec),
                r.cpu_ns_per_delivery
                    .map_or(String::new(), |v| format!("{v:.0}")),
                r.held_probes.to_string(),
                opt(r.probe_p50_us),
                opt(r.probe_p99_us),
                r.probe_timeouts.to_string(),
                r.delivery_max_us.map_or(String::new(), |us| {
                    format!("{:.3}", us as f64 / 1000.0 / r.period_ms as f64)
                }),
            ]
        })
        .collect();
    harness::write_csv(&dir.join("fanout.csv"), &CSV_HEADER, &csv_rows)?;
    draw_charts(dir, rows)
}

fn draw_charts(dir: &Path, rows: &[Row]) -> Result<(), String> {
    let models = [
        ("floor", chart::POOL),
        ("evented", chart::EVENTED),
        ("blocking", chart::BLOCKING),
    ];
    let series = |label: &str, pick: &dyn Fn(&Row) -> Option<u64>, pale: bool| -> Vec<Series> {
        chart::per_model(
            rows,
            &models,
            |r| &r.model,
            |r| Some((r.subscribers as f64, pick(r)? as f64 / 1000.0)),
            |model| format!("{model} {label}"),
            pale,
        )
    };
    let mut delivery = series("p50", &|r| r.delivery_p50_us, true);
    delivery.extend(series("p99", &|r| r.delivery_p99_us, false));
    let x_label = "subscribers (log)";
    chart::draw_with_x(
        &dir.join("fanout-delivery.svg"),
        "one event to every subscriber: delivery latency",
        x_label,
        true,
        &[Panel {
            title: "receipt − sent_ns (log scale)".to_string(),
            y_label: "ms (log)".to_string(),
            log_y: true,
            y_min: 0.01,
            series: delivery,
        }],
    )?;
    chart::draw_with_x(
        &dir.join("fanout-probe.svg"),
        "a newcomer while fan-outs run",
        x_label,
        true,
        &[Panel {
            title: "probe p99 while every subscriber is held (log scale)".to_string(),
            y_label: "ms (log)".to_string(),
            log_y: true,
            y_min: 0.01,
            series: series("probe p99", &|r| r.probe_p99_us, false),
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_leaves_room_for_the_fan_out() {
        assert_eq!(period_ms(20), 500);
        assert_eq!(period_ms(100_000), 2_000);
        assert_eq!(period_ms(1_000_000), 20_000);
    }
}
