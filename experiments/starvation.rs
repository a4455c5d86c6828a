//! Starvation: the same long-lived clients, ramped at the same pace against the evented server
//! and the blocking one, while a probe (a fresh `GET /` every few hundred milliseconds) asks
//! each of them "can you still answer anybody else?".

use std::thread;
use std::time::Duration;

use serde::Serialize;

use super::chart::{self, Panel, Series};
use super::harness::{self, fmt_mib, fmt_us, LoadProc, ServerProc};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::app::config::{ServerConfig, Threads};
use crate::load::report::{Report, Second};
use crate::load::Kind;

/// `c10k run starvation`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kind of long-lived client.
    #[arg(long, value_enum, default_value_t = Kind::Sse)]
    pub kind: Kind,
    /// The blocking server's threads: a pool size (1 is the sequential server) or `unbounded`.
    #[arg(long, default_value_t = ServerConfig::DEFAULT.threads)]
    pub threads: Threads,
    /// Long-lived clients to ramp up to [default: pool + 16, or 1000 with `unbounded`].
    #[arg(long)]
    pub clients: Option<u64>,
    /// New clients per second, against each server.
    #[arg(long)]
    pub ramp_per_sec: Option<u64>,
    /// Seconds to hold all clients after the ramp.
    #[arg(long, default_value_t = 10)]
    pub hold_s: u64,
    /// Milliseconds between probes.
    #[arg(long, default_value_t = 200)]
    pub probe_ms: u64,
    /// A probe unanswered after this many milliseconds counts as a timeout.
    #[arg(long, default_value_t = 2000)]
    pub probe_timeout_ms: u64,
    /// The servers publish a tick this often, so every client has something to receive.
    #[arg(long, default_value_t = 250)]
    pub tick_ms: u64,
    /// A small, fast run (pool of 4, 8 clients) that shows the same outcome in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/starvation].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// What one model did, as the verdict and the tests read it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Outcome {
    pub label: String,
    pub max_held: u64,
    pub probes_sent: u64,
    pub probes_answered: u64,
    pub probe_timeouts: u64,
    /// Clients held when the first probe that went unanswered was sent.
    pub held_at_first_timeout: Option<u64>,
    pub probe_p50_us: Option<u64>,
    pub probe_p99_us: Option<u64>,
    /// Delivery latency of the events, over the clients that were served.
    pub event_p50_us: Option<u64>,
    pub event_p99_us: Option<u64>,
    pub peak_threads: u64,
    pub peak_rss_bytes: u64,
    /// Long-lived clients that failed (gave up waiting for their answer, or were refused).
    pub clients_failed: u64,
    pub verdict: String,
}

#[derive(Serialize)]
struct Results<'a> {
    kind: &'a str,
    threads: String,
    clients: u64,
    ramp_per_sec: u64,
    hold_s: u64,
    probe_ms: u64,
    probe_timeout_ms: u64,
    outcomes: Vec<Outcome>,
    evented: &'a Report,
    blocking: &'a Report,
}

pub fn run(args: &Args) -> Result<(), String> {
    let mut args = args.clone();
    if args.quick {
        if args.threads == ServerConfig::DEFAULT.threads {
            args.threads = Threads::Pool(4);
        }
        args.hold_s = args.hold_s.min(3);
        args.probe_ms = args.probe_ms.min(100);
        args.probe_timeout_ms = args.probe_timeout_ms.min(1000);
    }
    let pool = match args.threads {
        Threads::Unbounded => None,
        Threads::Pool(n) => Some(n as u64),
    };
    let clients = args.clients.unwrap_or(match pool {
        Some(n) => n + if args.quick { 4 } else { 16 },
        None => 1000,
    });
    let ramp = args
        .ramp_per_sec
        .unwrap_or(if args.quick {
            8
        } else if pool.is_none() {
            100
        } else {
            4
        })
        .max(1);
    let blocking_label = match pool {
        Some(1) => "blocking, sequential".to_string(),
        Some(n) => format!("blocking, pool of {n}"),
        None => "blocking, thread per connection".to_string(),
    };
    let dir = harness::results_dir("starvation", args.out.as_deref())?;

    harness::announce(&format!("starvation: {clients} long-lived {} clients, {ramp}/s, against both servers; a probe every {} ms", args.kind.name(), args.probe_ms));
    let tick = args.tick_ms.to_string();
    let mut evented = ServerProc::start("evented", &["--model", "evented", "--tick-ms", &tick])?;
    let mut blocking = ServerProc::start(
        &blocking_label,
        &[
            "--model",
            "blocking",
            "--threads",
            &args.threads.to_string(),
            "--tick-ms",
            &tick,
        ],
    )?;
    let load_args = |server: &ServerProc| {
        [
            "--kind",
            args.kind.name(),
            "--connections",
            &clients.to_string(),
            "--ramp-per-sec",
            &ramp.to_string(),
            "--hold-s",
            &args.hold_s.to_string(),
            "--probe-ms",
            &args.probe_ms.to_string(),
            "--probe-timeout-ms",
            &args.probe_timeout_ms.to_string(),
            "--server-pid",
            &server.pid().to_string(),
        ]
        .map(str::to_string)
    };
    let mut loads = [
        LoadProc::start(
            evented.addr,
            &dir.join("evented-load.json"),
            &load_args(&evented),
        )?,
        LoadProc::start(
            blocking.addr,
            &dir.join("blocking-load.json"),
            &load_args(&blocking),
        )?,
    ];

    let web = Web::start(&args.web, &dashboard(&args, &blocking_label))?;
    println!();
    println!(
        "{:>5} │ {:^45} │ {:^45}",
        "", "evented (one thread, epoll)", blocking_label
    );
    let columns = format!(
        "{:>4} {:>4} {:>4} {:>9} {:>4} {:>5} {:>9}",
        "held", "wait", "fail", "probe p99", "t/o", "thr", "rss"
    );
    println!("{:>5} │ {columns} │ {columns}", "t");
    // One row per second, once both runs have reported it (or one of them has ended).
    let mut shown = 0;
    loop {
        let done = [loads[0].finished(), loads[1].finished()];
        loads[0].poll();
        loads[1].poll();
        let (e, b) = (&loads[0].history, &loads[1].history);
        while (e.len() > shown || done[0])
            && (b.len() > shown || done[1])
            && (e.len() > shown || b.len() > shown)
        {
            let (a, z) = (e.get(shown), b.get(shown));
            let t = a.or(z).map_or(0.0, |s| s.t_s);
            println!("{:>4.0}s │ {} │ {}", t, live_cells(a), live_cells(z));
            if let Some(a) = a {
                web.row(
                    "evented",
                    a.t_s,
                    web_values(a, harness::probes_timed_out_in(e, shown)),
                );
            }
            if let Some(z) = z {
                web.row(
                    &blocking_label,
                    z.t_s,
                    web_values(z, harness::probes_timed_out_in(b, shown)),
                );
            }
            shown += 1;
        }
        if done[0] && done[1] {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let limit = Duration::from_secs(30);
    let [load_e, load_b] = loads;
    let (report_e, report_b) = (load_e.finish(limit)?, load_b.finish(limit)?);
    evented.stop();
    blocking.stop();

    let outcomes = vec![
        outcome("evented", &report_e, args.probe_timeout_ms),
        outcome(&blocking_label, &report_b, args.probe_timeout_ms),
    ];
    println!();
    for o in &outcomes {
        println!("{}", o.verdict);
    }
    write_results(&dir, &args, clients, ramp, &outcomes, &report_e, &report_b)?;
    let verdict: Vec<String> = outcomes.iter().map(|o| o.verdict.clone()).collect();
    harness::conclude(
        &dir,
        web,
        &verdict,
        &["starvation.svg"],
        &["starvation.csv"],
        &["starvation.json"],
    )
}

/// The dashboard's charts: the terminal view's columns, over time, both models side by side.
fn dashboard(args: &Args, blocking_label: &str) -> Meta {
    Meta {
        title: format!("starvation: {blocking_label} vs evented"),
        x: Axis {
            label: "seconds",
            log: false,
        },
        points: false,
        series: vec!["evented".to_string(), blocking_label.to_string()],
        charts: vec![
            Chart::new("held", "long-lived clients held", "clients", false),
            Chart::new("waiting", "clients waiting for an answer", "clients", false),
            Chart::new("probe_p99_ms", "probe latency p99", "ms", true).marked(
                "probe_timed_out",
                "a probe timed out",
                args.probe_timeout_ms as f64,
            ),
            Chart::new("event_p99_ms", "event delivery p99", "ms", true),
            Chart::new("threads", "server threads", "threads", false),
            Chart::new("rss_mib", "server resident memory", "MiB", false),
        ],
        columns: vec![
            column("held", "held", ""),
            column("waiting", "waiting", ""),
            column("failed", "failed", ""),
            column("probe_p99_ms", "probe p99", "ms"),
            column("probe_timeouts", "probes timed out", ""),
            column("event_p99_ms", "event p99", "ms"),
            column("threads", "threads", ""),
            column("rss_mib", "RSS", "MiB"),
        ],
    }
}

/// One second of a load run as the dashboard's row.
fn web_values(s: &Second, probe_timed_out: bool) -> serde_json::Value {
    let server = s.server.as_ref();
    serde_json::json!({
        "held": s.open,
        "waiting": s.connecting,
        "failed": s.failed.total(),
        "probe_p99_ms": harness::ms(s.probe_p99_us),
        "probe_timeouts": s.probe_timeouts,
        "probe_timed_out": probe_timed_out,
        "event_p99_ms": harness::ms(s.event_p99_us),
        "threads": server.map(|v| v.threads),
        "rss_mib": server.map(|v| harness::mib(v.rss_bytes)),
    })
}

fn live_cells(s: Option<&Second>) -> String {
    match s {
        None => format!("{:>45}", ""),
        Some(s) => {
            let (thr, rss) = s
                .server
                .as_ref()
                .map_or(("-".to_string(), "-".to_string()), |v| {
                    (v.threads.to_string(), fmt_mib(v.rss_bytes))
                });
            format!(
                "{:>4} {:>4} {:>4} {:>9} {:>4} {:>5} {:>9}",
                s.open,
                s.connecting,
                s.failed.total(),
                fmt_us(s.probe_p99_us),
                s.probe_timeouts,
                thr,
                rss
            )
        }
    }
}

/// Reads the verdict off a load run's totals.
pub fn outcome(label: &str, report: &Report, probe_timeout_ms: u64) -> Outcome {
    let t = &report.totals;
    let peak = t.server_peak.unwrap_or_default();
    let threads = match peak.threads {
        1 => "1 thread".to_string(),
        n => format!("{n} threads"),
    };
    let gave_up = match t.failed_total {
        0 => String::new(),
        n => format!("; {n} long-lived clients gave up waiting"),
    };
    let events = format!(
        "events reached the clients it served in {} (p50), {} (p99)",
        fmt_us(t.event_p50_us),
        fmt_us(t.event_p99_us)
    );
    let verdict = match t.held_at_first_probe_timeout {
        None => format!(
            "{label}: every probe answered ({} of {}; p50 {}, p99 {}) with up to {} clients held{gave_up}; {events}; peak {threads}, {}",
            t.probes_answered,
            t.probes_sent,
            fmt_us(t.probe_p50_us),
            fmt_us(t.probe_p99_us),
            t.peak_open,
            fmt_mib(peak.rss_bytes)
        ),
        Some(held) => format!(
            "{label}: the probe stopped being answered at {held} held {}; {} of {} probes timed out (after {probe_timeout_ms} ms){gave_up}; {events}; peak {threads}, {}",
            if held == 1 { "client" } else { "clients" },
            t.probe_timeouts,
            t.probes_sent,
            fmt_mib(peak.rss_bytes)
        ),
    };
    Outcome {
        label: label.to_string(),
        max_held: t.peak_open,
        probes_sent: t.probes_sent,
        probes_answered: t.probes_answered,
        probe_timeouts: t.probe_timeouts,
        held_at_first_timeout: t.held_at_first_probe_timeout,
        probe_p50_us: t.probe_p50_us,
        probe_p99_us: t.probe_p99_us,
        event_p50_us: t.event_p50_us,
        event_p99_us: t.event_p99_us,
        peak_threads: peak.threads,
        peak_rss_bytes: peak.rss_bytes,
        clients_failed: t.failed_total,
        verdict,
    }
}

#[allow(clippy::too_many_arguments)]
fn write_results(
    dir: &std::path::Path,
    args: &Args,
    clients: u64,
    ramp: u64,
    outcomes: &[Outcome],
    evented: &Report,
    blocking: &Report,
) -> Result<(), String> {
    let results = Results {
        kind: args.kind.name(),
        threads: args.threads.to_string(),
        clients,
        ramp_per_sec: ramp,
        hold_s: args.hold_s,
        probe_ms: args.probe_ms,
        probe_timeout_ms: args.probe_timeout_ms,
        outcomes: outcomes.to_vec(),
        evented,
        blocking,
    };
    harness::write_results(&dir.join("starvation.json"), &results)?;

    let mut rows = Vec::new();
    for (model, report) in [("evented", evented), ("blocking", blocking)] {
        for s in &report.seconds {
            let opt = harness::opt_cell;
            rows.push(vec![
                model.to_string(),
                format!("{:.1}", s.t_s),
                s.open.to_string(),
                s.probes_sent.to_string(),
                s.probes_answered.to_string(),
                s.probe_timeouts.to_string(),
                opt(s.probe_p50_us),
                opt(s.probe_p99_us),
                opt(s.event_p50_us),
                opt(s.event_p99_us),
                opt(s.server.as_ref().map(|v| v.threads)),
                opt(s.server.as_ref().map(|v| v.rss_bytes)),
            ]);
        }
    }
    harness::write_csv(
        &dir.join("starvation.csv"),
        &[
            "model",
            "t_s",
            "held",
            "probes_sent",
            "probes_answered",
            "probe_timeouts",
            "probe_p50_us",
            "probe_p99_us",
            "event_p50_us",
            "event_p99_us",
            "server_threads",
            "server_rss_bytes",
        ],
        &rows,
    )?;

    let labels = [outcomes[0].label.as_str(), outcomes[1].label.as_str()];
    let colors = [chart::EVENTED, chart::BLOCKING];
    let reports = [evented, blocking];
    let series = |f: &dyn Fn(&Second) -> Option<f64>| -> Vec<Series> {
        (0..2)
            .map(|i| Series {
                label: labels[i].to_string(),
                color: colors[i],
                points: reports[i]
                    .seconds
                    .iter()
                    .filter_map(|s| f(s).map(|y| (s.t_s, y)))
                    .collect(),
                markers: false,
            })
            .collect()
    };
    let mut latency = series(&|s| harness::ms(s.probe_p99_us));
    for i in 0..2 {
        // A cross at the timeout line for every second in which probes timed out.
        let seconds = &reports[i].seconds;
        let points = (0..seconds.len())
            .filter(|&k| harness::probes_timed_out_in(seconds, k))
            .map(|k| (seconds[k].t_s, args.probe_timeout_ms as f64))
            .collect::<Vec<_>>();
        if !points.is_empty() {
            latency.push(Series {
                label: format!("{}: probe timed out", labels[i]),
                color: colors[i],
                points,
                markers: true,
            });
        }
    }
    let mut held = series(&|s| Some(s.open as f64));
    for i in 0..2 {
        if reports[i].seconds.iter().any(|s| s.connecting > 0) {
            held.push(Series {
                label: format!("{}: connected, still waiting for an answer", labels[i]),
                color: chart::lighter(colors[i]),
                points: reports[i]
                    .seconds
                    .iter()
                    .map(|s| (s.t_s, s.connecting as f64))
                    .collect(),
                markers: false,
            });
        }
    }
    let panels = [
        Panel {
            title: format!("long-lived {} clients held (served)", args.kind.name()),
            y_label: "clients".to_string(),
            log_y: false,
            y_min: 0.0,
            series: held,
        },
        chart::probe_panel(args.probe_ms, latency),
        Panel {
            title: "server threads".to_string(),
            y_label: "threads".to_string(),
            log_y: false,
            y_min: 0.0,
            series: series(&|s| s.server.as_ref().map(|v| v.threads as f64)),
        },
        Panel {
            title: "server resident memory".to_string(),
            y_label: "MiB".to_string(),
            log_y: false,
            y_min: 0.0,
            series: series(&|s| s.server.as_ref().map(|v| harness::mib(v.rss_bytes))),
        },
    ];
    chart::draw(
        &dir.join("starvation.svg"),
        &format!("starvation: {} vs evented", labels[1]),
        "seconds",
        &panels,
    )
}
