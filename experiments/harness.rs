//! What every experiment needs: servers and load generators as child processes of this very
//! binary, a live view fed by the load generators' per-second records, and a results folder.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::app::config::Model;
use crate::capacity::Limits;
use crate::load::report::{Report, Second};
use crate::sys::{self, ProcReading};

/// A `c10k serve` child process, stopped with SIGTERM when dropped.
pub struct ServerProc {
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProc {
    /// Starts `c10k serve --listen 127.0.0.1:0 ARGS` and waits for its `listening on` line.
    pub fn start(label: &str, args: &[impl AsRef<OsStr>]) -> Result<ServerProc, String> {
        let mut command = c10k_command()?;
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        ServerProc::start_command(label, command)
    }

    /// Starts `command`, a `c10k serve` (perhaps behind a wrapper such as `ip netns exec` that
    /// execs it), and waits for its `listening on` line.
    pub fn start_command(label: &str, mut command: Command) -> Result<ServerProc, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the {label} server: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout from the server")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("the {label} server did not start listening within 10 s"))?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("the {label} server printed {line:?} instead of its address"))?;
        Ok(ServerProc { addr, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// RSS, threads and descriptors of the server right now.
    pub fn reading(&self) -> Option<ProcReading> {
        sys::read_proc(Some(self.pid())).ok()
    }

    /// CPU time the server's living threads have run, in nanoseconds (`sys::cpu_time_ns`: read
    /// it while the threads that did the work still exist).
    pub fn cpu_ns(&self) -> Result<u64, String> {
        sys::cpu_time_ns(self.pid()).map_err(|e| format!("server CPU: {e}"))
    }

    /// Whether the server is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited after 5 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `model` server sized for `connections` on this machine: the evented server and the floor
/// with as many `--workers` as that takes, the blocking one as one process with a thread per
/// connection. Returns it and its number of serving processes.
pub fn start_sized(
    model: Model,
    connections: u64,
    limits: &Limits,
    extra: &[&str],
) -> Result<(ServerProc, u64), String> {
    let workers = match model {
        Model::Blocking => 1,
        Model::Evented | Model::Floor => limits.workers_for(connections),
    };
    let workers_arg = workers.to_string();
    let mut args = vec!["--model", model.name()];
    match model {
        Model::Blocking => args.extend(["--threads", "unbounded"]),
        Model::Evented | Model::Floor => args.extend(["--workers", &workers_arg]),
    }
    args.extend(extra);
    Ok((ServerProc::start(model.name(), &args)?, workers))
}

/// Whether the load generator's record `s` comes after its ramp to `n`: every connection
/// attempted and none still waiting, some held.
pub fn ramp_over(s: &Second, n: u64) -> bool {
    s.attempted >= n && s.connecting == 0 && s.open > 0
}

/// One line of a step's progress, for the dashboard.
pub fn progress(model: &str, step: u64, s: &Second) -> String {
    format!(
        "{model} {}: {:.0} s, {} held, {} connecting, {} failed, probe p99 {}",
        crate::capacity::thousands(step),
        s.t_s,
        crate::capacity::thousands(s.open),
        s.connecting,
        s.failed.total(),
        fmt_us(s.probe_p99_us)
    )
}

/// A CSV cell for a value that may be missing (empty then).
pub fn opt_cell(v: Option<u64>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

/// A `c10k load --progress json` child process and the per-second records it prints.
pub struct LoadProc {
    child: Child,
    seconds: Receiver<Second>,
    report_path: PathBuf,
    /// Every record received so far.
    pub history: Vec<Second>,
}

impl LoadProc {
    /// Starts `c10k load --target ADDR --progress json --json REPORT ARGS`.
    pub fn start(
        target: SocketAddr,
        report_path: &Path,
        args: &[impl AsRef<OsStr>],
    ) -> Result<LoadProc, String> {
        let mut command = c10k_command()?;
        command
            .arg("load")
            .args(["--target", &target.to_string(), "--progress", "json"])
            .arg("--json")
            .arg(report_path)
            .args(args)
            .stdin(Stdio::null());
        let (child, seconds) = spawn_with_json_lines(command, "the load generator")?;
        Ok(LoadProc {
            child,
            seconds,
            report_path: report_path.to_path_buf(),
            history: Vec::new(),
        })
    }

    /// Takes in every record that has arrived; returns the newest one, if any.
    pub fn poll(&mut self) -> Option<&Second> {
        self.history.extend(self.seconds.try_iter());
        self.history.last()
    }

    /// Whether the load generator has exited.
    pub fn finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits (at most `limit`) for the load generator to exit and reads its report.
    pub fn finish(mut self, limit: Duration) -> Result<Report, String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    match self.seconds.recv_timeout(Duration::from_millis(100)) {
                        Ok(s) => self.history.push(s),
                        Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
                    }
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("the load generator did not finish in time".to_string());
                }
            }
        }
        let text = std::fs::read_to_string(&self.report_path).map_err(|e| {
            format!(
                "cannot read the load report {}: {e}",
                self.report_path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("the load report is not valid: {e}"))
    }
}

impl Drop for LoadProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A command that runs this very binary.
pub fn c10k_command() -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the c10k binary: {e}"))?;
    Ok(Command::new(exe))
}

/// Starts `command` (stderr discarded) and, on a thread, reads its stdout: every line that is a
/// `T` in JSON arrives on the receiver; other lines are skipped.
pub fn spawn_with_json_lines<T: serde::de::DeserializeOwned + Send + 'static>(
    mut command: Command,
    what: &str,
) -> Result<(Child, Receiver<T>), String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| format!("no stdout from {what}"))?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(value) = serde_json::from_str::<T>(&line) {
                if tx.send(value).is_err() {
                    break;
                }
            }
        }
    });
    Ok((child, rx))
}

/// Where an experiment writes: `out` if given, else `results/NAME/`; created if needed.
pub fn results_dir(name: &str, out: Option<&Path>) -> Result<PathBuf, String> {
    let dir = out.map_or_else(|| PathBuf::from("results").join(name), Path::to_path_buf);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `body` after the machine and the command line of this run, as every result and the
/// dashboard's description carry them.
#[derive(serde::Serialize)]
pub struct Described<'a, T> {
    pub machine: String,
    pub command: String,
    #[serde(flatten)]
    pub body: &'a T,
}

pub fn described<T>(body: &T) -> Described<'_, T> {
    Described {
        machine: machine(),
        command: command_line(),
        body,
    }
}

/// An experiment's results that are a list of rows (what [`read_rows`] reads back).
#[derive(serde::Serialize)]
pub struct Rows<'a, T> {
    pub rows: &'a [T],
}

/// Writes an experiment's results as pretty JSON: `body`'s fields after the machine and the
/// command line.
pub fn write_results<T: serde::Serialize>(path: &Path, body: &T) -> Result<(), String> {
    write_json(path, &described(body))
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The `rows` of an experiment's JSON results.
pub fn read_rows<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, String> {
    #[derive(serde::Deserialize)]
    struct Results<T> {
        rows: Vec<T>,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str::<Results<T>>(&text)
        .map(|r| r.rows)
        .map_err(|e| format!("{} is not an experiment's results: {e}", path.display()))
}

/// Writes a CSV file from a header and rows of already formatted cells.
pub fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<(), String> {
    let mut text = header.join(",");
    text.push('\n');
    for row in rows {
        text.push_str(&row.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The verdict, after a blank line.
pub fn print_verdict(lines: &[String]) {
    println!();
    for line in lines {
        println!("{line}");
    }
}

/// The end of every run: `report.html` written under the run's title from the `charts` (SVG)
/// and `tables` (CSV) already in `dir`, everything written listed (`others` first: files the
/// report leaves out), and the verdict sent to the dashboard, which stays up for its linger.
pub fn conclude(
    dir: &Path,
    web: super::web::Web,
    verdict: &[String],
    charts: &[&str],
    tables: &[&str],
    others: &[&str],
) -> Result<(), String> {
    super::report::write(dir, &web.title, verdict, charts, tables)?;
    let written: Vec<&str> = [others, tables, charts, &["report.html"]].concat();
    println!("\nresults: {}/ ({})", dir.display(), written.join(", "));
    web.finish(verdict, &format!("{}/report.html", dir.display()));
    Ok(())
}

/// The first lines of every run: what it does, the machine it runs on, and the command that
/// reproduces it.
pub fn announce(what: &str) {
    println!("{what}");
    println!("machine: {}", machine());
    println!("command: {}", command_line());
}

/// The command line that reproduces this run, for the output and the notes.
pub fn command_line() -> String {
    let mut args = std::env::args();
    args.next();
    let rest: Vec<String> = args.collect();
    format!("cargo run --release -- {}", rest.join(" "))
}

/// `1.23 ms`, `456 µs`, or `-`.
pub fn fmt_us(us: Option<u64>) -> String {
    match us {
        None => "-".to_string(),
        Some(us) if us >= 10_000 => format!("{:.0} ms", us as f64 / 1000.0),
        Some(us) if us >= 1000 => format!("{:.1} ms", us as f64 / 1000.0),
        Some(us) => format!("{us} µs"),
    }
}

/// `12.3 MiB`.
pub fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", mib(bytes))
}

/// Milliseconds from microseconds, for charts in ms.
pub fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|us| us as f64 / 1000.0)
}

/// MiB from bytes.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Whether probes timed out in second `i` of `seconds` (their count is cumulative).
pub fn probes_timed_out_in(seconds: &[Second], i: usize) -> bool {
    let before = i.checked_sub(1).map_or(0, |j| seconds[j].probe_timeouts);
    seconds.get(i).is_some_and(|s| s.probe_timeouts > before)
}

/// What this machine is, for the header of every result.
pub fn machine() -> String {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let nofile = sys::raise_fd_limit().map_or(0, |(soft, _)| soft);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| format!("{}, ", model.trim()))
        })
        .unwrap_or_default();
    format!("{cpu}{cores} cores, Linux {kernel}, RLIMIT_NOFILE {nofile}")
}
