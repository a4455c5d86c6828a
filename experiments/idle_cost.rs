//! Idle cost: what one open, idle long-lived connection costs each server — resident memory
//! and threads, read from `/proc/PID`, and the kernel's share, from `/proc/meminfo` — before
//! and while N idle clients are held.

use std::thread;
use std::time::Duration;

use serde::Serialize;

use super::chart::{self, Panel, Series};
use super::harness::{self, fmt_mib, LoadProc, ServerProc};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::app::config::Model;
use crate::load::Kind;
use crate::sys::KernelMemory;

/// `c10k run idle-cost`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Numbers of idle clients to hold, comma-separated.
    #[arg(long, default_value = "1000,5000,10000", value_delimiter = ',')]
    pub connections: Vec<u64>,
    /// Kinds of connection, comma-separated.
    #[arg(long, value_enum, default_values_t = [Kind::Sse, Kind::Ws], value_delimiter = ',')]
    pub kinds: Vec<Kind>,
    /// Server models, comma-separated.
    #[arg(long, value_enum, default_values_t = [Model::Evented, Model::Blocking], value_delimiter = ',')]
    pub models: Vec<Model>,
    /// New clients per second.
    #[arg(long, default_value_t = 5000)]
    pub ramp_per_sec: u64,
    /// Seconds to hold the clients once all are connected (at least 1: they are measured
    /// during the hold).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub hold_s: u64,
    /// Stack size for the blocking model's connection threads, in bytes (default: std's).
    #[arg(long)]
    pub stack_size: Option<usize>,
    /// Where to write results [default: results/idle-cost].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub kind: String,
    pub clients: u64,
    pub established: u64,
    pub rss_before: u64,
    pub rss_held: u64,
    pub rss_per_conn: f64,
    pub threads_before: u64,
    pub threads_held: u64,
    pub threads_per_conn: f64,
    pub fds_held: u64,
    /// Growth of the kernel's `Slab` (sockets, files, inodes, epoll items, task structures)
    /// and `KernelStack` (a stack per thread) per connection: machine-wide, so both ends of
    /// each loopback connection and anything else the machine did meanwhile.
    pub slab_per_conn: f64,
    pub kernel_stack_per_conn: f64,
    /// User and kernel memory together per connection.
    pub whole_per_conn: f64,
}

pub fn run(args: &Args) -> Result<(), String> {
    let dir = harness::results_dir("idle-cost", args.out.as_deref())?;
    harness::announce("idle cost: resident memory and threads per idle connection");
    let web = Web::start(&args.web, &dashboard(args))?;
    println!();
    println!(
        "{:<9} {:<6} {:>8} {:>8} {:>11} {:>11} {:>12} {:>8} {:>9} {:>12} {:>12} {:>12}",
        "model",
        "kind",
        "clients",
        "held",
        "rss before",
        "rss held",
        "rss / conn",
        "threads",
        "thr/conn",
        "slab / conn",
        "stack / conn",
        "whole / conn"
    );
    let mut rows = Vec::new();
    for &model in &args.models {
        for &kind in &args.kinds {
            for &n in &args.connections {
                let row = measure(&dir, model, kind, n, args)?;
                println!(
                    "{:<9} {:<6} {:>8} {:>8} {:>11} {:>11} {:>10.0} B {:>8} {:>9.2} {:>10.0} B {:>10.0} B {:>10.0} B",
                    row.model,
                    row.kind,
                    row.clients,
                    row.established,
                    fmt_mib(row.rss_before),
                    fmt_mib(row.rss_held),
                    row.rss_per_conn,
                    row.threads_held,
                    row.threads_per_conn,
                    row.slab_per_conn,
                    row.kernel_stack_per_conn,
                    row.whole_per_conn
                );
                web.row(
                    &format!("{} {}", row.model, row.kind),
                    n as f64,
                    serde_json::json!({
                        "held": row.established,
                        "rss_b": row.rss_per_conn,
                        "whole_b": row.whole_per_conn,
                        "threads_per_conn": row.threads_per_conn,
                        "rss_mib": harness::mib(row.rss_held),
                    }),
                );
                rows.push(row);
            }
        }
    }
    write_results(&dir, &rows)?;
    let summary: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {}: {} of {} connections held, {:.0} B of resident memory and {:.2} threads per connection; with the kernel's share (both ends) {:.0} B",
                r.model, r.kind, r.established, r.clients, r.rss_per_conn, r.threads_per_conn, r.whole_per_conn
            )
        })
        .collect();
    harness::conclude(
        &dir,
        web,
        &summary,
        &["idle-cost.svg"],
        &["idle-cost.csv"],
        &["idle-cost.json"],
    )
}

fn measure(
    dir: &std::path::Path,
    model: Model,
    kind: Kind,
    n: u64,
    args: &Args,
) -> Result<Row, String> {
    let stack_size = args.stack_size.map(|bytes| bytes.to_string());
    let mut server_args = vec!["--model", model.name(), "--tick-ms", "0"];
    if model == Model::Blocking {
        server_args.extend(["--threads", "unbounded"]);
        if let Some(bytes) = &stack_size {
            server_args.extend(["--stack-size", bytes]);
        }
    }
    let mut server = ServerProc::start(model.name(), &server_args)?;
    // Let the fresh process settle before the baseline is read.
    thread::sleep(Duration::from_millis(300));
    let before = server
        .reading()
        .ok_or("the server exited before it was measured")?;
    let kernel_before = KernelMemory::read();
    let (count, ramp, hold, pid) = (
        n.to_string(),
        args.ramp_per_sec.to_string(),
        args.hold_s.to_string(),
        server.pid().to_string(),
    );
    let load_args = [
        "--kind",
        kind.name(),
        "--connections",
        &count,
        "--ramp-per-sec",
        &ramp,
        "--hold-s",
        &hold,
        "--probe-ms",
        "1000",
        "--server-pid",
        &pid,
    ];
    let report_path = dir.join(format!("{}-{}-{n}.json", model.name(), kind.name()));
    let mut load = LoadProc::start(server.addr, &report_path, &load_args)?;
    // Sample the server throughout and keep each reading's highest value: the clients only
    // ever add memory, threads and descriptors, so the maxima are the readings of the hold,
    // however late the load generator's own records arrive.
    let mut held = before;
    let mut kernel_held = kernel_before;
    while !load.finished() {
        thread::sleep(Duration::from_millis(200));
        load.poll();
        if let Some(r) = server.reading() {
            held.rss_bytes = held.rss_bytes.max(r.rss_bytes);
            held.threads = held.threads.max(r.threads);
            held.fds = held.fds.max(r.fds);
        }
        kernel_held = kernel_held.max(KernelMemory::read());
    }
    let established = load.history.iter().map(|s| s.open).max().unwrap_or(0);
    load.finish(Duration::from_secs(30))?;
    server.stop();
    let per = |after: u64, before: u64| {
        if established == 0 {
            0.0
        } else {
            (after as f64 - before as f64) / established as f64
        }
    };
    let rss_per_conn = per(held.rss_bytes, before.rss_bytes);
    let slab_per_conn = per(kernel_held.slab, kernel_before.slab);
    let kernel_stack_per_conn = per(kernel_held.kernel_stack, kernel_before.kernel_stack);
    Ok(Row {
        model: model.name().to_string(),
        kind: kind.name().to_string(),
        clients: n,
        established,
        rss_before: before.rss_bytes,
        rss_held: held.rss_bytes,
        rss_per_conn,
        threads_before: before.threads,
        threads_held: held.threads,
        threads_per_conn: per(held.threads, before.threads),
        fds_held: held.fds,
        slab_per_conn,
        kernel_stack_per_conn,
        whole_per_conn: rss_per_conn + slab_per_conn + kernel_stack_per_conn,
    })
}

/// The dashboard's charts: one point per model, kind and number of clients.
fn dashboard(args: &Args) -> Meta {
    let series = args
        .models
        .iter()
        .flat_map(|m| {
            args.kinds
                .iter()
                .map(move |k| format!("{} {}", m.name(), k.name()))
        })
        .collect();
    Meta {
        title: "idle-cost: memory and threads per idle connection".to_string(),
        x: Axis {
            label: "idle clients",
            log: true,
        },
        points: true,
        series,
        charts: vec![
            Chart::new("rss_b", "resident memory per connection", "B", true),
            Chart::new("whole_b", "user + kernel memory per connection", "B", true),
            Chart::new(
                "threads_per_conn",
                "threads per connection",
                "threads",
                false,
            ),
            Chart::new("rss_mib", "server resident memory, all held", "MiB", true),
        ],
        columns: vec![
            column("held", "held", ""),
            column("rss_b", "RSS/conn", "B"),
            column("whole_b", "with kernel", "B"),
            column("threads_per_conn", "threads/conn", ""),
            column("rss_mib", "RSS", "MiB"),
        ],
    }
}

fn write_results(dir: &std::path::Path, rows: &[Row]) -> Result<(), String> {
    harness::write_results(&dir.join("idle-cost.json"), &harness::Rows { rows })?;
    let csv_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.kind.clone(),
                r.clients.to_string(),
                r.established.to_string(),
                r.rss_before.to_string(),
                r.rss_held.to_string(),
                format!("{:.1}", r.rss_per_conn),
                r.threads_before.to_string(),
                r.threads_held.to_string(),
                format!("{:.3}", r.threads_per_conn),
                r.fds_held.to_string(),
                format!("{:.0}", r.slab_per_conn),
                format!("{:.0}", r.kernel_stack_per_conn),
                format!("{:.0}", r.whole_per_conn),
            ]
        })
        .collect();
    harness::write_csv(
        &dir.join("idle-cost.csv"),
        &[
            "model",
            "kind",
            "clients",
            "established",
            "rss_before",
            "rss_held",
            "rss_per_conn",
            "threads_before",
            "threads_held",
            "threads_per_conn",
            "fds_held",
            "slab_per_conn",
            "kernel_stack_per_conn",
            "whole_per_conn",
        ],
        &csv_rows,
    )?;
    let series = |value: fn(&Row) -> f64| {
        let mut series = Vec::new();
        for (model, color) in chart::MODELS {
            for kind in ["sse", "ws", "stream", "poll"] {
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.model == model && r.kind == kind)
                    .map(|r| (r.established as f64, value(r).max(1.0)))
                    .collect();
                if !points.is_empty() {
                    series.push(Series {
                        label: format!("{model} {kind}"),
                        color: if kind == "ws" { darker(color) } else { color },
                        points,
                        markers: false,
                    });
                }
            }
        }
        series
    };
    chart::draw(
        &dir.join("idle-cost.svg"),
        "memory per idle connection",
        "idle connections held",
        &[
            Panel {
                title: "server RSS growth / connections (log scale)".to_string(),
                y_label: "bytes per connection".to_string(),
                log_y: true,
                y_min: 10.0,
                series: series(|r| r.rss_per_conn),
            },
            Panel {
                title: "with the kernel's Slab and KernelStack growth (both ends of loopback)"
                    .to_string(),
                y_label: "bytes per connection".to_string(),
                log_y: true,
                y_min: 1000.0,
                series: series(|r| r.whole_per_conn),
            },
        ],
    )
}

fn darker(c: plotters::style::RGBColor) -> plotters::style::RGBColor {
    plotters::style::RGBColor(c.0 / 2, c.1 / 2, c.2 / 2)
}
