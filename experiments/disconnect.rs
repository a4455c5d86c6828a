//! Disconnects: how and when each model learns that a long-lived client is gone. A clean close
//! (FIN) and a reset (RST) on loopback; then a client that silently vanishes — its link goes
//! down inside a network namespace, so neither a FIN nor a reset ever comes — with and without
//! heartbeats. Time until the server frees the connection (its descriptor count drops), and why.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::chart::{self, Panel, Series};
use super::client::Client;
use super::harness::{self, ServerProc};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::app::config::Model;
use crate::load::Kind;

/// `c10k run disconnect`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server models, comma-separated.
    #[arg(long, value_enum, default_values_t = [Model::Evented, Model::Blocking], value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Seconds to wait for the server to free a connection before saying it did not.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub limit_s: u64,
    /// `net.ipv4.tcp_retries2` in the server's namespace for the vanishing client (the host's
    /// default, 15, gives up only after about 15 minutes).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=15))]
    pub retries2: u64,
    /// A short run for tests: FIN and RST only, on loopback.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/disconnect].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// How the client leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Leave {
    /// `close()`: a FIN.
    Fin,
    /// `SO_LINGER` 0, then `close()`: a reset.
    Rst,
    /// The link goes down: nothing at all reaches the server again.
    Vanish,
}

/// One way of leaving, against one model.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub kind: String,
    pub leave: Leave,
    pub heartbeat_ms: u64,
    /// Seconds from the client's leaving until the server freed the connection; `None` if it
    /// had not within `limit_s`.
    pub freed_s: Option<f64>,
    pub limit_s: u64,
    /// What ends the connection on the server in this case.
    pub why: String,
}

pub fn run(args: &Args) -> Result<(), String> {
    let dir = harness::results_dir("disconnect", args.out.as_deref())?;
    harness::announce("disconnect: how long until each server frees a client that is gone");
    let web = Web::start(&args.web, &dashboard(args))?;
    let limit = Duration::from_secs(args.limit_s);
    println!(
        "\n{:<3} {:<9} {:<5} {:<7} {:>10} {:>10}  why",
        "#", "model", "kind", "leaves", "heartbeat", "freed"
    );
    let mut rows = Vec::new();
    let mut show = |row: Row| {
        println!(
            "{:<3} {:<9} {:<5} {:<7} {:>10} {:>10}  {}",
            rows.len() + 1,
            row.model,
            row.kind,
            format!("{:?}", row.leave).to_lowercase(),
            if row.heartbeat_ms == 0 {
                "off".to_string()
            } else {
                format!("{} ms", row.heartbeat_ms)
            },
            row.freed_s
                .map_or(format!("> {} s", row.limit_s), |s| format!("{s:.3} s")),
            row.why
        );
        web.row(
            &row.model,
            (rows.len() + 1) as f64,
            serde_json::json!({ "freed_s": row.freed_s }),
        );
        rows.push(row);
    };
    for &model in &args.models {
        // No heartbeats: what each model learns from the departure alone.
        let mut server_args = vec![
            "--model",
            model.name(),
            "--tick-ms",
            "0",
            "--heartbeat-ms",
            "0",
        ];
        if model == Model::Blocking {
            server_args.extend(["--threads", "unbounded"]);
        }
        let server = ServerProc::start(model.name(), &server_args)?;
        for kind in [Kind::Sse, Kind::Ws] {
            for leave in [Leave::Fin, Leave::Rst] {
                let c = subscribe(server.addr, kind, None)?;
                let freed = leave_and_time(&server, c, leave, limit, None)?;
                show(row(model, kind, leave, 0, freed, args));
            }
        }
    }
    let mut skipped = None;
    if !args.quick {
        match Namespaces::create(args.retries2) {
            Ok(ns) => {
                for &model in &args.models {
                    for (kind, heartbeat_ms) in
                        [(Kind::Sse, 1000), (Kind::Sse, 0), (Kind::Ws, 1000)]
                    {
                        let server = ns.server(model, heartbeat_ms)?;
                        let c = subscribe(server.addr, kind, Some(&ns))?;
                        let freed = leave_and_time(&server, c, Leave::Vanish, limit, Some(&ns))?;
                        ns.link(true)?;
                        show(row(model, kind, Leave::Vanish, heartbeat_ms, freed, args));
                    }
                }
            }
            Err(e) => {
                println!("\nthe vanishing client is skipped: {e}");
                skipped = Some(e);
            }
        }
    }
    let mut summary = verdict(&rows);
    if let Some(e) = skipped {
        summary.push(format!("the vanishing client was skipped: {e}"));
    }
    write_results(&dir, &rows)?;
    harness::print_verdict(&summary);
    harness::conclude(
        &dir,
        web,
        &summary,
        &["disconnect.svg"],
        &["disconnect.csv"],
        &["disconnect.json"],
    )
}

fn row(
    model: Model,
    kind: Kind,
    leave: Leave,
    heartbeat_ms: u64,
    freed_s: Option<f64>,
    args: &Args,
) -> Row {
    Row {
        model: model.name().to_string(),
        kind: kind.name().to_string(),
        leave,
        heartbeat_ms,
        freed_s,
        limit_s: args.limit_s,
        why: why(model, kind, leave, heartbeat_ms, args.retries2),
    }
}

/// What ends the connection on the server, by design of each model and of TCP.
fn why(model: Model, kind: Kind, leave: Leave, heartbeat_ms: u64, retries2: u64) -> String {
    match (leave, model, kind) {
        (Leave::Fin | Leave::Rst, Model::Evented, _) => {
            "epoll reports the socket readable; read() returns 0 (FIN) or ECONNRESET (RST)".to_string()
        }
        (Leave::Fin | Leave::Rst, _, Kind::Ws) => {
            "the reader thread is blocked in read(), which returns at once".to_string()
        }
        (Leave::Fin | Leave::Rst, _, _) => {
            "the thread sleeps on its mailbox; it looks for end-of-file every 5 s (or at a write)".to_string()
        }
        (Leave::Vanish, _, _) if heartbeat_ms == 0 => {
            "nothing is written, nothing arrives: TCP cannot tell a silent peer from a gone one".to_string()
        }
        (Leave::Vanish, _, _) => format!(
            "heartbeats go unacknowledged; TCP retransmits with backoff and gives up after tcp_retries2 = {retries2}"
        ),
    }
}

fn verdict(rows: &[Row]) -> Vec<String> {
    let freed = |pred: &dyn Fn(&Row) -> bool| -> Vec<String> {
        rows.iter()
            .filter(|r| pred(r))
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.model,
                    r.kind,
                    r.freed_s
                        .map_or(format!("not within {} s", r.limit_s), |s| format!(
                            "{:.0} ms",
                            s * 1000.0
                        ))
                )
            })
            .collect()
    };
    let mut lines = vec![
        format!("FIN: {}", freed(&|r| r.leave == Leave::Fin).join(", ")),
        format!("RST: {}", freed(&|r| r.leave == Leave::Rst).join(", ")),
    ];
    if rows.iter().any(|r| r.leave == Leave::Vanish) {
        lines.push(format!(
            "vanished, heartbeats on: {}",
            freed(&|r| r.leave == Leave::Vanish && r.heartbeat_ms > 0).join(", ")
        ));
        lines.push(format!(
            "vanished, no heartbeats: {}",
            freed(&|r| r.leave == Leave::Vanish && r.heartbeat_ms == 0).join(", ")
        ));
    }
    lines
}

/// A subscribed client: its request sent and its response head read.
fn subscribe(addr: SocketAddr, kind: Kind, ns: Option<&Namespaces>) -> Result<Client, String> {
    let mut c = match ns {
        Some(ns) => Client::from_stream(ns.connect(addr)?)?,
        None => Client::connect(addr)?,
    };
    if kind == Kind::Ws {
        c.upgrade("/ws")?;
    } else {
        c.send(b"GET /sse HTTP/1.1\r\nHost: c10k\r\n\r\n")?;
        let head = c.read_head()?;
        if head.status != 200 {
            return Err(format!("/sse was answered {}", head.status));
        }
    }
    Ok(c)
}

/// Makes the client leave, then watches the server's descriptors until one is given back.
fn leave_and_time(
    server: &ServerProc,
    client: Client,
    leave: Leave,
    limit: Duration,
    ns: Option<&Namespaces>,
) -> Result<Option<f64>, String> {
    // Let the server settle: a blocking thread may still be starting.
    std::thread::sleep(Duration::from_millis(300));
    let held = server.reading().ok_or("the server exited")?.fds;
    let start = Instant::now();
    // A vanished client stays open until the watch is over: closing it would queue a FIN.
    let _vanished = match leave {
        Leave::Fin => {
            drop(client);
            None
        }
        Leave::Rst => {
            socket2::SockRef::from(&client.stream)
                .set_linger(Some(Duration::ZERO))
                .map_err(|e| format!("cannot set SO_LINGER: {e}"))?;
            drop(client);
            None
        }
        Leave::Vanish => {
            ns.ok_or("a vanishing client needs the namespaces")?
                .link(false)?;
            Some(client)
        }
    };
    while start.elapsed() < limit {
        if server.reading().ok_or("the server exited")?.fds < held {
            return Ok(Some(start.elapsed().as_secs_f64()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(None)
}

/// Two network namespaces joined by a veth pair: the server in one, the vanishing client in
/// the other. Removed when dropped.
struct Namespaces {
    server_ns: String,
    client_ns: String,
}

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);

impl Namespaces {
    fn create(retries2: u64) -> Result<Namespaces, String> {
        let id = std::process::id();
        let ns = Namespaces {
            server_ns: format!("c10k-srv-{id}"),
            client_ns: format!("c10k-cli-{id}"),
        };
        ip(&["netns", "add", &ns.server_ns])?;
        ip(&["netns", "add", &ns.client_ns])?;
        ip(&[
            "link",
            "add",
            "c10k-s",
            "netns",
            &ns.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            "c10k-c",
            "netns",
            &ns.client_ns,
        ])?;
        for (name, dev, addr) in [
            (&ns.server_ns, "c10k-s", SERVER_IP),
            (&ns.client_ns, "c10k-c", CLIENT_IP),
        ] {
            ip(&["-n", name, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", name, "link", "set", dev, "up"])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        succeed(
            Command::new("ip")
                .args(["netns", "exec", &ns.server_ns, "sysctl", "-qw"])
                .arg(format!("net.ipv4.tcp_retries2={retries2}")),
        )?;
        Ok(ns)
    }

    /// A server of `model` in the server's namespace.
    fn server(&self, model: Model, heartbeat_ms: u64) -> Result<ServerProc, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the c10k binary: {e}"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.server_ns])
            .arg(exe)
            .args([
                "serve",
                "--listen",
                &format!("{SERVER_IP}:0"),
                "--model",
                model.name(),
            ])
            .args([
                "--tick-ms",
                "0",
                "--heartbeat-ms",
                &heartbeat_ms.to_string(),
            ]);
        if model == Model::Blocking {
            command.args(["--threads", "unbounded"]);
        }
        ServerProc::start_command(model.name(), command)
    }

    /// A connection to `addr` from inside the client's namespace: a thread enters it, opens the
    /// socket (which stays in that namespace) and hands it back.
    fn connect(&self, addr: SocketAddr) -> Result<TcpStream, String> {
        let path = format!("/var/run/netns/{}", self.client_ns);
        std::thread::spawn(move || -> Result<TcpStream, String> {
            let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace file we opened; it changes only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "cannot enter {path}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map_err(|e| format!("cannot connect to {addr}: {e}"))
        })
        .join()
        .map_err(|_| "the namespace thread panicked".to_string())?
    }

    /// Sets the client's end of the link up or down.
    fn link(&self, up: bool) -> Result<(), String> {
        ip(&[
            "-n",
            &self.client_ns,
            "link",
            "set",
            "c10k-c",
            if up { "up" } else { "down" },
        ])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        let _ = ip(&["netns", "del", &self.client_ns]);
        let _ = ip(&["netns", "del", &self.server_ns]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    succeed(Command::new("ip").args(args))
}

fn succeed(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            command,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn dashboard(args: &Args) -> Meta {
    Meta {
        title: "disconnect: how long until a server frees a client that is gone".to_string(),
        x: Axis {
            label: "case",
            log: false,
        },
        points: true,
        series: args.models.iter().map(|m| m.name().to_string()).collect(),
        charts: vec![Chart::new(
            "freed_s",
            "time until the connection was freed",
            "s",
            true,
        )],
        columns: vec![column("freed_s", "freed after", "s")],
    }
}

fn write_results(dir: &std::path::Path, rows: &[Row]) -> Result<(), String> {
    harness::write_results(&dir.join("disconnect.json"), &harness::Rows { rows })?;
    let csv: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                r.model.clone(),
                r.kind.clone(),
                format!("{:?}", r.leave).to_lowercase(),
                r.heartbeat_ms.to_string(),
                r.freed_s.map_or(String::new(), |s| format!("{s:.4}")),
                r.limit_s.to_string(),
                format!("\"{}\"", r.why.replace('"', "'")),
            ]
        })
        .collect();
    harness::write_csv(
        &dir.join("disconnect.csv"),
        &[
            "case",
            "model",
            "kind",
            "leave",
            "heartbeat_ms",
            "freed_s",
            "limit_s",
            "why",
        ],
        &csv,
    )?;
    let series = chart::per_model(
        &rows.iter().enumerate().collect::<Vec<_>>(),
        &chart::MODELS,
        |(_, r)| r.model.as_str(),
        |(i, r)| {
            Some((
                (i + 1) as f64,
                r.freed_s.unwrap_or(r.limit_s as f64).max(0.0001),
            ))
        },
        |m| format!("{m} (at the top: not freed within the limit)"),
        false,
    )
    .into_iter()
    .map(|s| Series { markers: true, ..s })
    .collect();
    chart::draw(
        &dir.join("disconnect.svg"),
        "how long until the server frees a client that is gone",
        "case (numbered as in disconnect.csv)",
        &[Panel {
            title: "time from the client's leaving to the server's close".to_string(),
            y_label: "seconds (log)".to_string(),
            log_y: true,
            y_min: 0.0001,
            series,
        }],
    )
}
