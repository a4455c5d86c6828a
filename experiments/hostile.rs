//! Hostile: good clients (SSE subscribers, and a probe in a process of its own) before, during
//! and after a mix of misbehaving connections — slowloris heads, silent connections, subscribers
//! that never read, ping floods, stalled bodies, oversized heads, random bytes, resets, invalid
//! chunked bodies — against each model in turn, alone on the machine. What it shows: which bound
//! or timeout ends each kind of client, what the good clients notice, and how long the server
//! takes to give everything back.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::chart::{self, Panel, Series};
use super::harness::{self, fmt_mib, fmt_us, LoadProc, ServerProc};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::load::hostile::{HostileReport, HostileSecond, Tally};
use crate::load::report::Second;
use crate::sys;

/// `c10k run hostile`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Misbehaving connections kept going at once, spread over the nine behaviours (up to what
    /// the descriptors allow: about 19,000 here).
    #[arg(long, default_value_t = 2000)]
    pub scale: u64,
    /// Good SSE subscribers, connected before the attack and held through it.
    #[arg(long, default_value_t = 100)]
    pub subscribers: u64,
    /// Seconds of each phase: before the attack, during it, after it.
    #[arg(long, default_value_t = 5)]
    pub before_s: u64,
    #[arg(long, default_value_t = 20)]
    pub during_s: u64,
    #[arg(long, default_value_t = 15)]
    pub after_s: u64,
    /// Also attack a blocking server with a pool of this many threads (0: skip it).
    #[arg(long, default_value_t = 256)]
    pub pool: usize,
    /// Milliseconds between probes.
    #[arg(long, default_value_t = 100)]
    pub probe_ms: u64,
    /// A probe unanswered after this many milliseconds counts as a timeout.
    #[arg(long, default_value_t = 2000)]
    pub probe_timeout_ms: u64,
    /// Large events (64,000 bytes) published per second, in every phase.
    #[arg(long, default_value_t = 5)]
    pub publish_per_sec: u64,
    /// Seconds of publishing and subscribing before the first phase, to fill the history.
    #[arg(long, default_value_t = 4)]
    pub warm_up_s: u64,
    /// A small, fast run (180 hostile connections, short phases, a 2 s header timeout, a pool
    /// of 64) that shows the same outcome in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/hostile].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// The servers' tick, so good subscribers have events to time.
const TICK_MS: u64 = 200;
/// The history is bounded at 2 MiB so that the large events fill it before the attack starts:
/// what memory the server holds afterwards is then what the hostile clients left behind.
const RETAIN_BYTES: &str = "2097152";
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One server under attack.
struct Target {
    label: String,
    slug: &'static str,
    args: Vec<String>,
    color: plotters::style::RGBColor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Before,
    During,
    After,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Before, Phase::During, Phase::After];

    fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::During => "during",
            Phase::After => "after",
        }
    }
}

/// What the good clients and the server looked like over one phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseRow {
    pub phase: String,
    pub seconds: f64,
    /// Hostile connections open at once, at most (sampled each second by the attacker).
    pub hostile_open_peak: u64,
    pub probes_sent: u64,
    pub probes_answered: u64,
    pub probe_timeouts: u64,
    pub probe_errors: u64,
    pub probe_p50_us: Option<u64>,
    pub probe_p99_us: Option<u64>,
    /// Good subscribers open at the end of the phase, and lost during it.
    pub subscribers_open: u64,
    pub subscribers_lost: u64,
    /// Events the good subscribers received in the phase.
    pub events: u64,
    /// Delivery latency: the median of the per-second medians, and the worst per-second p99.
    pub event_p50_us: Option<u64>,
    pub event_p99_worst_second_us: Option<u64>,
    /// Server CPU time over the phase's wall time, in percent of one core.
    pub server_cpu_pct: f64,
    /// The same for the process playing the hostile clients (during the attack): on a small
    /// machine the attacker's CPU is CPU the server and the good clients do not get.
    pub attacker_cpu_pct: f64,
    pub server_rss_peak_bytes: u64,
    pub server_fds_peak: u64,
    pub server_threads_peak: u64,
}

/// How the server came back after the attack stopped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recovery {
    /// The most descriptors and resident memory seen before the attack.
    pub baseline_fds: u64,
    pub baseline_rss_bytes: u64,
    /// Milliseconds from the attacker's exit until descriptors were at the baseline again, and
    /// until resident memory was within 10% (or 2 MiB) of it; `None`: not within the phase.
    pub fds_back_ms: Option<u64>,
    pub rss_back_ms: Option<u64>,
    pub final_fds: u64,
    pub final_rss_bytes: u64,
    /// The server process was still running at the end, and exited 0 on SIGTERM.
    pub server_alive: bool,
    pub clean_exit: bool,
}

/// One server's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetResult {
    pub label: String,
    pub server_args: Vec<String>,
    pub phases: Vec<PhaseRow>,
    pub recovery: Recovery,
    pub behaviours: Vec<Tally>,
    pub publishes_answered: u64,
    pub publishes_sent: u64,
    pub verdict: String,
    /// One row per sample: seconds since the first phase began, and the server's readings.
    pub timeline: Vec<Sample>,
    /// The attacker's seconds, on the same clock.
    pub hostile_open: Vec<(f64, u64)>,
    /// Probe p99 per second, and the seconds in which probes timed out.
    pub probe_p99: Vec<(f64, u64)>,
    pub probe_timeouts_at: Vec<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Sample {
    pub t_s: f64,
    pub rss_bytes: u64,
    pub fds: u64,
    pub threads: u64,
    /// CPU over the last sample interval, percent of one core.
    pub cpu_pct: f64,
}

#[derive(Serialize)]
struct Results<'a> {
    scale: u64,
    subscribers: u64,
    phases_s: [u64; 3],
    probe_ms: u64,
    probe_timeout_ms: u64,
    publish_per_sec: u64,
    targets: &'a [TargetResult],
}

pub fn run(args: &Args) -> Result<(), String> {
    let mut args = args.clone();
    let mut timeouts = Vec::new();
    if args.quick {
        args.scale = args.scale.min(180);
        args.subscribers = args.subscribers.min(20);
        args.before_s = args.before_s.min(2);
        args.during_s = args.during_s.min(5);
        args.after_s = args.after_s.min(3);
        args.warm_up_s = args.warm_up_s.min(2);
        args.pool = args.pool.min(64);
        timeouts = ["--header-timeout-ms", "2000", "--idle-timeout-ms", "3000"]
            .map(str::to_string)
            .to_vec();
    }
    let fd_limit = sys::raise_fd_limit().map_or(1024, |(soft, _)| soft);
    if args.scale + 64 > fd_limit {
        return Err(format!(
            "--scale {} needs more descriptors than this process may open ({fd_limit})",
            args.scale
        ));
    }
    if args.during_s == 0 {
        return Err("--during-s must be positive".to_string());
    }
    let mut targets = vec![
        Target {
            label: "evented".to_string(),
            slug: "evented",
            args: vec!["--model".into(), "evented".into()],
            color: chart::EVENTED,
        },
        Target {
            label: "blocking, thread per connection".to_string(),
            slug: "blocking",
            args: ["--model", "blocking", "--threads", "unbounded"]
                .map(str::to_string)
                .to_vec(),
            color: chart::BLOCKING,
        },
    ];
    if args.pool > 0 {
        targets.push(Target {
            label: format!("blocking, pool of {}", args.pool),
            slug: "pool",
            args: vec![
                "--model".into(),
                "blocking".into(),
                "--threads".into(),
                args.pool.to_string(),
            ],
            color: chart::POOL,
        });
    }
    for t in &mut targets {
        t.args.extend(timeouts.iter().cloned());
        t.args.extend(
            [
                "--tick-ms",
                &TICK_MS.to_string(),
                "--retain-bytes",
                RETAIN_BYTES,
            ]
            .map(str::to_string),
        );
    }
    let dir = harness::results_dir("hostile", args.out.as_deref())?;
    harness::announce(&format!("hostile: {} misbehaving connections against each server in turn, {} good SSE subscribers and a probe every {} ms; phases {} s before, {} s during, {} s after",
        args.scale, args.subscribers, args.probe_ms, args.before_s, args.during_s, args.after_s));
    let web = Web::start(&args.web, &dashboard(&targets))?;

    let mut results = Vec::new();
    for target in &targets {
        let result = attack(&args, target, &dir, &web)?;
        println!("{}", result.verdict);
        results.push(result);
    }
    println!();
    print_tables(&results);
    write_results(&dir, &args, &targets, &results)?;
    let verdict: Vec<String> = results.iter().map(|r| r.verdict.clone()).collect();
    harness::conclude(
        &dir,
        web,
        &verdict,
        &["hostile.svg"],
        &["hostile.csv", "hostile-phases.csv"],
        &["hostile.json"],
    )
}

/// The dashboard's charts: the terminal view's columns over each server's run.
fn dashboard(targets: &[Target]) -> Meta {
    Meta {
        title: "hostile: misbehaving clients against each model".to_string(),
        x: Axis {
            label: "seconds",
            log: false,
        },
        points: false,
        series: targets.iter().map(|t| t.label.clone()).collect(),
        charts: vec![
            Chart::new(
                "hostile",
                "misbehaving connections open",
                "connections",
                false,
            ),
            Chart::new("subscribers", "good subscribers held", "clients", false),
            Chart::new("probe_p99_ms", "probe latency p99", "ms", true),
            Chart::new(
                "event_p99_ms",
                "event delivery p99 to the good ones",
                "ms",
                true,
            ),
            Chart::new("cpu_pct", "server CPU", "%", false),
            Chart::new("fds", "server descriptors", "fds", false),
        ],
        columns: vec![
            column("phase", "phase", ""),
            column("hostile", "hostile", ""),
            column("subscribers", "subs", ""),
            column("probe_p99_ms", "probe p99", "ms"),
            column("probe_timeouts", "t/o", ""),
            column("event_p99_ms", "event p99", "ms"),
            column("cpu_pct", "CPU", "%"),
            column("rss_mib", "RSS", "MiB"),
        ],
    }
}

/// Runs the three phases against one server.
fn attack(args: &Args, target: &Target, dir: &Path, web: &Web) -> Result<TargetResult, String> {
    println!("\n── {} ──", target.label);
    let mut server = ServerProc::start(&target.label, &target.args)?;
    let pid = server.pid();
    let total_s = args.warm_up_s + args.before_s + args.during_s + args.after_s + 2;
    let total = total_s.to_string();
    let publisher = HostileProc::start(
        server.addr,
        &dir.join(format!("{}-publisher.json", target.slug)),
        0,
        total_s,
        args.publish_per_sec,
    )?;
    let subs_started = Instant::now();
    let mut subs = LoadProc::start(
        server.addr,
        &dir.join(format!("{}-subscribers.json", target.slug)),
        &[
            "--kind",
            "sse",
            "--connections",
            &args.subscribers.to_string(),
            "--ramp-per-sec",
            "1000",
            "--hold-s",
            &total,
            "--probe-ms",
            "0",
        ],
    )?;
    thread::sleep(Duration::from_secs(args.warm_up_s));

    println!(
        "{:>5} {:>6} │ {:>7} {:>5} {:>9} {:>4} {:>9} │ {:>5} {:>9} {:>6} {:>6}",
        "t",
        "phase",
        "hostile",
        "subs",
        "probe p99",
        "t/o",
        "event p99",
        "cpu",
        "rss",
        "fds",
        "thr"
    );
    let start = Instant::now();
    let subs_offset = (start - subs_started).as_secs_f64();
    let mut timeline: Vec<Sample> = Vec::new();
    let mut last_cpu = sys::cpu_time(pid).unwrap_or_default();
    let mut last_sample = Instant::now();
    let mut hostile_open = Vec::new();
    let mut probe_p99 = Vec::new();
    let mut probe_timeouts_at = Vec::new();
    let mut phases = Vec::new();
    let mut hostile_report = HostileReport::default();
    let mut stopped_at: Option<Instant> = None;
    let mut next_row = start + Duration::from_secs(1);

    for phase in Phase::ALL {
        let len = match phase {
            Phase::Before => args.before_s,
            Phase::During => args.during_s,
            Phase::After => args.after_s,
        };
        let phase_start = Instant::now();
        let phase_t0 = (phase_start - start).as_secs_f64();
        let cpu_at_start = sys::cpu_time(pid).unwrap_or_default();
        let probe_path = dir.join(format!("{}-probe-{}.json", target.slug, phase.name()));
        let mut probe = LoadProc::start(
            server.addr,
            &probe_path,
            &[
                "--connections",
                "0",
                "--hold-s",
                &len.to_string(),
                "--probe-ms",
                &args.probe_ms.to_string(),
                "--probe-timeout-ms",
                &args.probe_timeout_ms.to_string(),
            ],
        )?;
        let mut hostile = match phase {
            Phase::During => Some(HostileProc::start(
                server.addr,
                &dir.join(format!("{}-hostile.json", target.slug)),
                args.scale,
                args.during_s + 5,
                0,
            )?),
            _ => None,
        };
        let attacker_cpu_at_start = hostile
            .as_ref()
            .map_or(Duration::ZERO, HostileProc::cpu_time);
        let phase_end = phase_start + Duration::from_secs(len);
        let mut row = PhaseRow {
            phase: phase.name().to_string(),
            ..PhaseRow::default()
        };
        let mut probe_last = Second::default();
        let mut hostile_last = HostileSecond::default();
        while Instant::now() < phase_end {
            thread::sleep(SAMPLE_EVERY);
            let now = Instant::now();
            let t = (now - start).as_secs_f64();
            if let Some(h) = &mut hostile {
                for s in h.poll() {
                    hostile_open.push((phase_t0 + s.t_s, s.open));
                    row.hostile_open_peak = row.hostile_open_peak.max(s.open);
                    hostile_last = s;
                }
            }
            if let Some(s) = probe.poll() {
                if s.t_s > probe_last.t_s {
                    if let Some(p) = s.probe_p99_us {
                        probe_p99.push((phase_t0 + s.t_s, p));
                    }
                    if s.probe_timeouts > probe_last.probe_timeouts {
                        probe_timeouts_at.push(phase_t0 + s.t_s);
                    }
                    probe_last = s.clone();
                }
            }
            subs.poll();
            let reading = server.reading().unwrap_or_default();
            let cpu = sys::cpu_time(pid).unwrap_or(last_cpu);
            let wall = (now - last_sample).as_secs_f64().max(1e-3);
            let cpu_pct = (cpu.saturating_sub(last_cpu)).as_secs_f64() / wall * 100.0;
            (last_cpu, last_sample) = (cpu, now);
            timeline.push(Sample {
                t_s: t,
                rss_bytes: reading.rss_bytes,
                fds: reading.fds,
                threads: reading.threads,
                cpu_pct,
            });
            row.server_rss_peak_bytes = row.server_rss_peak_bytes.max(reading.rss_bytes);
            row.server_fds_peak = row.server_fds_peak.max(reading.fds);
            row.server_threads_peak = row.server_threads_peak.max(reading.threads);
            if now >= next_row {
                next_row += Duration::from_secs(1);
                let sub = subs.history.last();
                let recent = &timeline[timeline.len().saturating_sub(10)..];
                let cpu_1s = recent.iter().map(|s| s.cpu_pct).sum::<f64>() / recent.len() as f64;
                println!(
                    "{:>4.0}s {:>6} │ {:>7} {:>5} {:>9} {:>4} {:>9} │ {:>4.0}% {:>9} {:>6} {:>6}",
                    t,
                    phase.name(),
                    if hostile.is_some() {
                        hostile_last.open.to_string()
                    } else {
                        "-".to_string()
                    },
                    sub.map_or(0, |s| s.open),
                    fmt_us(probe_last.probe_p99_us),
                    probe_last.probe_timeouts,
                    fmt_us(sub.and_then(|s| s.event_p99_us)),
                    cpu_1s,
                    fmt_mib(reading.rss_bytes),
                    reading.fds,
                    reading.threads
                );
                web.row(
                    &target.label,
                    t,
                    serde_json::json!({
                        "phase": phase.name(),
                        "hostile": hostile.is_some().then_some(hostile_last.open),
                        "subscribers": sub.map_or(0, |s| s.open),
                        "probe_p99_ms": harness::ms(probe_last.probe_p99_us),
                        "probe_timeouts": probe_last.probe_timeouts,
                        "event_p99_ms": harness::ms(sub.and_then(|s| s.event_p99_us)),
                        "cpu_pct": cpu_1s,
                        "rss_mib": harness::mib(reading.rss_bytes),
                        "fds": reading.fds,
                    }),
                );
            }
        }
        if let Some(h) = hostile.take() {
            let used = h.cpu_time().saturating_sub(attacker_cpu_at_start);
            row.attacker_cpu_pct = used.as_secs_f64() / phase_start.elapsed().as_secs_f64() * 100.0;
            hostile_report = h.finish()?;
            stopped_at = Some(Instant::now());
        }
        let cpu = sys::cpu_time(pid).unwrap_or(cpu_at_start);
        let wall = phase_start.elapsed().as_secs_f64();
        row.seconds = wall;
        row.server_cpu_pct = cpu.saturating_sub(cpu_at_start).as_secs_f64() / wall * 100.0;
        let probe_report = probe.finish(Duration::from_secs(10))?;
        let p = &probe_report.totals;
        (row.probes_sent, row.probes_answered) = (p.probes_sent, p.probes_answered);
        (row.probe_timeouts, row.probe_errors) = (p.probe_timeouts, p.probe_errors);
        (row.probe_p50_us, row.probe_p99_us) = (p.probe_p50_us, p.probe_p99_us);
        subs.poll();
        let t_end = (Instant::now() - start).as_secs_f64();
        subscriber_figures(&mut row, &subs.history, subs_offset, phase_t0, t_end);
        phases.push(row);
    }
    subs.poll();
    subs.finish(Duration::from_secs(10))?;
    let publisher_report = publisher.finish()?;

    let before = timeline.iter().filter(|s| s.t_s <= args.before_s as f64);
    let (baseline_fds, baseline_rss) =
        before.fold((0, 0), |(f, r), s| (f.max(s.fds), r.max(s.rss_bytes)));
    let stopped_t = stopped_at.map_or(f64::MAX, |i| (i - start).as_secs_f64());
    let after: Vec<&Sample> = timeline.iter().filter(|s| s.t_s >= stopped_t).collect();
    let back_ms = |ok: &dyn Fn(&Sample) -> bool| {
        // Back means back for good: from the first sample after which every one is within.
        let first_bad = after.iter().rposition(|s| !ok(s));
        let at = match first_bad {
            None => after.first(),
            Some(i) => after.get(i + 1),
        };
        at.map(|s| ((s.t_s - stopped_t).max(0.0) * 1000.0) as u64)
    };
    let rss_slack = (baseline_rss / 10).max(2 << 20);
    let last = timeline.last().copied().unwrap_or_default();
    let mut recovery = Recovery {
        baseline_fds,
        baseline_rss_bytes: baseline_rss,
        fds_back_ms: back_ms(&|s| s.fds <= baseline_fds),
        rss_back_ms: back_ms(&|s| s.rss_bytes <= baseline_rss + rss_slack),
        final_fds: last.fds,
        final_rss_bytes: last.rss_bytes,
        server_alive: server.running(),
        clean_exit: false,
    };
    recovery.clean_exit = server.stop().is_some_and(|s| s.success());
    let verdict = verdict(&target.label, &phases, &recovery, &hostile_report);
    Ok(TargetResult {
        label: target.label.clone(),
        server_args: target.args.clone(),
        phases,
        recovery,
        behaviours: hostile_report.behaviours,
        publishes_answered: publisher_report.publishes_answered,
        publishes_sent: publisher_report.publishes_sent,
        verdict,
        timeline,
        hostile_open,
        probe_p99,
        probe_timeouts_at,
    })
}

/// The good subscribers' figures for the phase from `t0` to `t1` (experiment clock).
fn subscriber_figures(row: &mut PhaseRow, seconds: &[Second], offset: f64, t0: f64, t1: f64) {
    let at = |s: &Second| s.t_s - offset;
    let failed_before = seconds
        .iter()
        .rfind(|s| at(s) <= t0)
        .map_or(0, |s| s.failed.total());
    let inside: Vec<&Second> = seconds
        .iter()
        .filter(|s| at(s) > t0 && at(s) <= t1 + 0.5)
        .collect();
    let Some(last) = inside.last() else { return };
    row.subscribers_open = last.open;
    row.subscribers_lost = last.failed.total().saturating_sub(failed_before);
    row.events = inside.iter().map(|s| s.events).sum();
    let mut p50s: Vec<u64> = inside.iter().filter_map(|s| s.event_p50_us).collect();
    p50s.sort_unstable();
    row.event_p50_us = p50s.get(p50s.len() / 2).copied();
    row.event_p99_worst_second_us = inside.iter().filter_map(|s| s.event_p99_us).max();
}

fn verdict(label: &str, phases: &[PhaseRow], r: &Recovery, h: &HostileReport) -> String {
    let during = &phases[1];
    let probes = if during.probe_timeouts == 0 && during.probe_errors == 0 {
        format!(
            "every probe answered during the attack (p99 {}, {} before)",
            fmt_us(during.probe_p99_us),
            fmt_us(phases[0].probe_p99_us)
        )
    } else {
        format!(
            "{} of {} probes unanswered during the attack",
            during.probe_timeouts + during.probe_errors,
            during.probes_sent
        )
    };
    let back = match r.fds_back_ms {
        Some(ms) => format!("descriptors back to {} in {ms} ms", r.baseline_fds),
        None => format!(
            "descriptors not back to {} by the end ({})",
            r.baseline_fds, r.final_fds
        ),
    };
    let alive = if !r.server_alive {
        "; the server died"
    } else if !r.clean_exit {
        "; it did not exit cleanly on SIGTERM"
    } else {
        ""
    };
    format!(
        "{label}: {} hostile connections at once; {probes}; subscribers lost {}; peak {} and {} descriptors; {back}{alive}",
        h.peak_open,
        during.subscribers_lost,
        fmt_mib(during.server_rss_peak_bytes),
        during.server_fds_peak,
    )
}

fn print_tables(results: &[TargetResult]) {
    println!(
        "{:<32} {:>6} {:>8} {:>9} {:>9} {:>5} {:>9} {:>9} {:>5} {:>9} {:>6}",
        "server",
        "phase",
        "probes",
        "p50",
        "p99",
        "lost",
        "event p50",
        "ev p99*",
        "cpu",
        "rss",
        "fds"
    );
    for r in results {
        for p in &r.phases {
            println!(
                "{:<32} {:>6} {:>8} {:>9} {:>9} {:>5} {:>9} {:>9} {:>4.0}% {:>9} {:>6} {:>7.0}%",
                r.label,
                p.phase,
                format!("{}/{}", p.probes_answered, p.probes_sent),
                fmt_us(p.probe_p50_us),
                fmt_us(p.probe_p99_us),
                p.subscribers_lost,
                fmt_us(p.event_p50_us),
                fmt_us(p.event_p99_worst_second_us),
                p.server_cpu_pct,
                fmt_mib(p.server_rss_peak_bytes),
                p.server_fds_peak,
                p.attacker_cpu_pct
            );
        }
    }
    println!("(* the worst second's p99)\n");
    let names: Vec<&str> = results
        .first()
        .map(|r| r.behaviours.iter().map(|b| b.behaviour.as_str()).collect())
        .unwrap_or_default();
    print!("{:<20}", "how each kind ended");
    for r in results {
        print!(" │ {:<30}", r.label);
    }
    println!();
    for (i, name) in names.iter().enumerate() {
        print!("{name:<20}");
        for r in results {
            print!(" │ {:<30}", ending(&r.behaviours[i]));
        }
        println!();
    }
}

/// `408 after 10.0 s ×40`: what ended one kind of connection, for the tables.
pub fn ending(t: &Tally) -> String {
    let statuses = t
        .statuses
        .iter()
        .map(|(code, n)| format!("{code}×{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    let life = t.server_ended_life_p50_ms.map_or(String::new(), |ms| {
        format!(" after {:.1} s", ms as f64 / 1000.0)
    });
    let mut parts = Vec::new();
    if t.closed_by_server > 0 {
        parts.push(format!("closed ×{}{life}", t.closed_by_server));
    }
    if t.reset_by_server > 0 {
        let life = if t.closed_by_server > 0 {
            String::new()
        } else {
            life
        };
        parts.push(format!("reset ×{}{life}", t.reset_by_server));
    }
    if t.ended_by_client > 0 {
        parts.push(format!("own end ×{}", t.ended_by_client));
    }
    if t.open > 0 {
        parts.push(format!("open ×{}", t.open));
    }
    if t.connect_failed > 0 {
        parts.push(format!("no connect ×{}", t.connect_failed));
    }
    if !statuses.is_empty() {
        parts.push(format!("[{statuses}]"));
    }
    parts.join(", ")
}

fn write_results(
    dir: &Path,
    args: &Args,
    targets: &[Target],
    results: &[TargetResult],
) -> Result<(), String> {
    harness::write_results(
        &dir.join("hostile.json"),
        &Results {
            scale: args.scale,
            subscribers: args.subscribers,
            phases_s: [args.before_s, args.during_s, args.after_s],
            probe_ms: args.probe_ms,
            probe_timeout_ms: args.probe_timeout_ms,
            publish_per_sec: args.publish_per_sec,
            targets: results,
        },
    )?;
    let opt = harness::opt_cell;
    let mut rows = Vec::new();
    for r in results {
        for p in &r.phases {
            rows.push(vec![
                format!("\"{}\"", r.label),
                p.phase.clone(),
                format!("{:.1}", p.seconds),
                p.hostile_open_peak.to_string(),
                p.probes_sent.to_string(),
                p.probes_answered.to_string(),
                p.probe_timeouts.to_string(),
                p.probe_errors.to_string(),
                opt(p.probe_p50_us),
                opt(p.probe_p99_us),
                p.subscribers_open.to_string(),
                p.subscribers_lost.to_string(),
                p.events.to_string(),
                opt(p.event_p50_us),
                opt(p.event_p99_worst_second_us),
                format!("{:.1}", p.server_cpu_pct),
                format!("{:.1}", p.attacker_cpu_pct),
                p.server_rss_peak_bytes.to_string(),
                p.server_fds_peak.to_string(),
                p.server_threads_peak.to_string(),
            ]);
        }
    }
    harness::write_csv(
        &dir.join("hostile-phases.csv"),
        &[
            "server",
            "phase",
            "seconds",
            "hostile_open_peak",
            "probes_sent",
            "probes_answered",
            "probe_timeouts",
            "probe_errors",
            "probe_p50_us",
            "probe_p99_us",
            "subscribers_open",
            "subscribers_lost",
            "events",
            "event_p50_us",
            "event_p99_worst_second_us",
            "server_cpu_pct",
            "attacker_cpu_pct",
            "server_rss_peak_bytes",
            "server_fds_peak",
            "server_threads_peak",
        ],
        &rows,
    )?;
    let rows: Vec<Vec<String>> = results
        .iter()
        .flat_map(|r| {
            r.timeline.iter().map(|s| {
                vec![
                    format!("\"{}\"", r.label),
                    format!("{:.1}", s.t_s),
                    s.rss_bytes.to_string(),
                    s.fds.to_string(),
                    s.threads.to_string(),
                    format!("{:.1}", s.cpu_pct),
                ]
            })
        })
        .collect();
    harness::write_csv(
        &dir.join("hostile.csv"),
        &["server", "t_s", "rss_bytes", "fds", "threads", "cpu_pct"],
        &rows,
    )?;

    let series = |f: &dyn Fn(&TargetResult) -> Vec<(f64, f64)>| -> Vec<Series> {
        results
            .iter()
            .zip(targets)
            .map(|(r, t)| Series {
                label: r.label.clone(),
                color: t.color,
                points: f(r),
                markers: false,
            })
            .collect()
    };
    let mut latency = series(&|r| {
        r.probe_p99
            .iter()
            .map(|&(t, us)| (t, us as f64 / 1000.0))
            .collect()
    });
    for (r, t) in results.iter().zip(targets) {
        if !r.probe_timeouts_at.is_empty() {
            latency.push(Series {
                label: format!("{}: probes timed out", r.label),
                color: t.color,
                points: r
                    .probe_timeouts_at
                    .iter()
                    .map(|&t| (t, args.probe_timeout_ms as f64))
                    .collect(),
                markers: true,
            });
        }
    }
    let sampled = |f: fn(&Sample) -> f64| {
        move |r: &TargetResult| r.timeline.iter().map(|s| (s.t_s, f(s))).collect()
    };
    let panels = [
        Panel {
            title: "hostile connections open".to_string(),
            y_label: "connections".to_string(),
            log_y: false,
            y_min: 0.0,
            series: series(&|r| r.hostile_open.iter().map(|&(t, n)| (t, n as f64)).collect()),
        },
        chart::probe_panel(args.probe_ms, latency),
        Panel {
            title: "server descriptors".to_string(),
            y_label: "fds".to_string(),
            log_y: false,
            y_min: 0.0,
            series: series(&sampled(|s| s.fds as f64)),
        },
        Panel {
            title: "server resident memory".to_string(),
            y_label: "MiB".to_string(),
            log_y: false,
            y_min: 0.0,
            series: series(&sampled(|s| s.rss_bytes as f64 / (1024.0 * 1024.0))),
        },
        Panel {
            title: "server CPU".to_string(),
            y_label: "% of a core".to_string(),
            log_y: false,
            y_min: 0.0,
            series: series(&sampled(|s| s.cpu_pct)),
        },
    ];
    chart::draw(
        &dir.join("hostile.svg"),
        &format!(
            "hostile: {} misbehaving connections, attack from {} s to {} s",
            args.scale,
            args.before_s,
            args.before_s + args.during_s
        ),
        "seconds",
        &panels,
    )
}

/// A `c10k hostile` child process: stopped by closing its stdin.
struct HostileProc {
    child: Child,
    seconds: Receiver<HostileSecond>,
    report_path: PathBuf,
}

impl HostileProc {
    fn start(
        target: std::net::SocketAddr,
        report_path: &Path,
        connections: u64,
        duration_s: u64,
        publish_per_sec: u64,
    ) -> Result<HostileProc, String> {
        let mut command = harness::c10k_command()?;
        command
            .arg("hostile")
            .args(["--target", &target.to_string()])
            .args(["--connections", &connections.to_string()])
            .args(["--duration-s", &duration_s.to_string()])
            .args(["--publish-per-sec", &publish_per_sec.to_string()])
            .arg("--json")
            .arg(report_path)
            .stdin(Stdio::piped());
        let (child, seconds) = harness::spawn_with_json_lines(command, "the hostile clients")?;
        Ok(HostileProc {
            child,
            seconds,
            report_path: report_path.to_path_buf(),
        })
    }

    fn cpu_time(&self) -> Duration {
        sys::cpu_time(self.child.id()).unwrap_or_default()
    }

    fn poll(&mut self) -> Vec<HostileSecond> {
        self.seconds.try_iter().collect()
    }

    /// Closes its stdin, waits (at most 10 s) for it to exit and reads its report.
    fn finish(mut self) -> Result<HostileReport, String> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("the hostile clients did not stop in time".to_string());
            }
            thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&self.report_path)
            .map_err(|e| format!("cannot read {}: {e}", self.report_path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("the hostile report is not valid: {e}"))
    }
}

impl Drop for HostileProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
