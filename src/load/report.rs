//! What a load run reports: one [`Second`] per second while it runs (printed as a line of JSON
//! with `--progress json`), and one [`Report`] at the end (written with `--json OUT`). Both are
//! plain serde types, so an experiment runner reads them back with `serde_json`.
//!
//! Conventions for every record:
//! - Latencies are in microseconds. `None` means there was nothing to measure (no event, no
//!   answered probe).
//! - Connection and probe counters in a [`Second`] are cumulative since the start of the run;
//!   `open` and `connecting` are the numbers at the end of the second. Latency fields and
//!   `events` cover only that second's window.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Connections that failed, by cause. At every moment each connection attempted is exactly one
/// of: connecting, open, or failed (counted here once, under one cause) — so in every [`Second`],
/// `attempted == connecting + open + failed.total()`. A connection that was established and later
/// lost counts here too (and stays counted in `established`). Connections the load generator
/// closes at the end of the run are not failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    /// The server refused the connection (`ECONNREFUSED`): nothing listening, or the listen
    /// backlog overflowed and the kernel answered with a reset.
    pub refused: u64,
    /// The TCP handshake or the response head took longer than `--timeout-ms` (a long poll gets
    /// the server's poll timeout on top), or the kernel gave up (`ETIMEDOUT`).
    pub timed_out: u64,
    /// No local address or port was left for the connection (`EADDRNOTAVAIL`).
    pub addr_not_avail: u64,
    /// The load generator ran out of descriptors (`EMFILE` / `ENFILE`).
    pub emfile: u64,
    /// The connection was reset (`ECONNRESET`).
    pub reset: u64,
    /// The server closed the connection (FIN, or a write hit `EPIPE`), before or after the
    /// response head; on a WebSocket also a close frame from the server.
    pub closed_by_server: u64,
    /// The server answered with a status other than the one the route promises (200, or 101
    /// for a WebSocket).
    pub http_error: u64,
    /// Anything else: malformed responses, protocol violations, unexpected socket errors.
    pub other: u64,
}

impl Failures {
    /// All failures, whatever the cause.
    pub fn total(&self) -> u64 {
        self.refused
            + self.timed_out
            + self.addr_not_avail
            + self.emfile
            + self.reset
            + self.closed_by_server
            + self.http_error
            + self.other
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Failures) {
        self.refused += other.refused;
        self.timed_out += other.timed_out;
        self.addr_not_avail += other.addr_not_avail;
        self.emfile += other.emfile;
        self.reset += other.reset;
        self.closed_by_server += other.closed_by_server;
        self.http_error += other.http_error;
        self.other += other.other;
    }

    /// `refused=3 timed_out=2`, non-zero causes only; empty when there are none.
    pub fn nonzero(&self) -> String {
        let mut s = String::new();
        for (name, n) in [
            ("refused", self.refused),
            ("timed_out", self.timed_out),
            ("addr_not_avail", self.addr_not_avail),
            ("emfile", self.emfile),
            ("reset", self.reset),
            ("closed_by_server", self.closed_by_server),
            ("http_error", self.http_error),
            ("other", self.other),
        ] {
            if n > 0 {
                if !s.is_empty() {
                    s.push(' ');
                }
                let _ = write!(s, "{name}={n}");
            }
        }
        s
    }
}

/// A reading of the server from `/proc` (with `--server-pid`): the process and every process
/// under it (worker processes), summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSample {
    /// Resident set size, summed: pages shared between the processes (the binary, say) count
    /// once per process.
    pub rss_bytes: u64,
    /// Threads of the processes.
    pub threads: u64,
    /// Open file descriptors (sockets included).
    pub fds: u64,
    /// Proportional set size (`/proc/PID/smaps_rollup`), summed: a shared page counts once in
    /// all, split between the processes that share it. What several processes really cost.
    #[serde(default)]
    pub pss_bytes: u64,
    /// The anonymous part of `pss_bytes` (heap, stacks): what connections allocate, without the
    /// pages of the binary, which the load generator shares when it is the same one.
    #[serde(default)]
    pub pss_anon_bytes: u64,
    /// Processes read: the server and its descendants.
    #[serde(default)]
    pub processes: u64,
}

/// One second of a run. Cumulative counters count since the start; window fields
/// (`events`, `event_*_us`, `probe_*_us`) cover the second that ends at `t_s` only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// End of this window, seconds since the start of the run. Whole seconds except for the
    /// last record, which ends when the connections were closed.
    pub t_s: f64,
    /// Cumulative: connections the load generator tried to open.
    pub attempted: u64,
    /// Cumulative: connections that got their successful response (the SSE/stream `200` head,
    /// the WebSocket `101` with a valid accept key, the first `200` answer to a long poll).
    pub established: u64,
    /// Established connections open at the end of this second.
    pub open: u64,
    /// Cumulative failures by cause (including established connections lost later).
    pub failed: Failures,
    /// Window: events received over all connections (each copy counted).
    pub events: u64,
    /// Window: delivery latency (client clock at receipt − the event's `sent_ns`).
    pub event_p50_us: Option<u64>,
    pub event_p99_us: Option<u64>,
    pub event_max_us: Option<u64>,
    /// Cumulative: probes started (a fresh connection and `GET /` every `--probe-ms`).
    pub probes_sent: u64,
    /// Cumulative: probes that got a complete `200` answer.
    pub probes_answered: u64,
    /// Cumulative: probes still unanswered after `--probe-timeout-ms` (then abandoned).
    pub probe_timeouts: u64,
    /// Window: probe latency, from the start of the connect to the end of the response, of the
    /// probes answered in this second.
    pub probe_p50_us: Option<u64>,
    pub probe_p99_us: Option<u64>,
    pub probe_max_us: Option<u64>,
    /// The server process at the end of this second (with `--server-pid`, while it exists).
    pub server: Option<ServerSample>,
    /// Attempted connections neither established nor failed yet, at the end of this second
    /// (TCP handshake or response head still pending: in a full listen backlog, say).
    #[serde(default)]
    pub connecting: u64,
    /// Cumulative: probes that failed other than by timing out (refused, reset, not `200`, ...).
    #[serde(default)]
    pub probe_errors: u64,
    /// Connections open at the moment the first probe that later timed out was sent: where the
    /// server stopped answering newcomers. `None` while no probe has timed out.
    #[serde(default)]
    pub held_at_first_probe_timeout: Option<u64>,
    /// Window: WebSocket messages sent with `--ws-send` that came back, and their round trip
    /// (the client's clock at receipt − the send time in their marker).
    #[serde(default)]
    pub echoes: u64,
    #[serde(default)]
    pub echo_p50_us: Option<u64>,
    #[serde(default)]
    pub echo_p99_us: Option<u64>,
    /// Cumulative: connections this machine's listening sockets dropped since the start
    /// (`ListenDrops`: a full accept queue, above all); only when the server is on loopback.
    #[serde(default)]
    pub listen_drops: Option<u64>,
}

/// How completely broadcast events reached the connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Events (sequence numbers) the fractions are over: those published while the ramp was
    /// complete, until shortly before the connections were closed (`from_s`..`to_s`), that
    /// reached at least one connection or lie between two that did. The most recent 1024
    /// sequence numbers are tracked.
    pub seqs: u64,
    /// For each such event, the fraction of the connections established when it was published
    /// that received it (capped at 1): the mean over events.
    pub mean_fraction: Option<f64>,
    /// The smallest such fraction.
    pub min_fraction: Option<f64>,
    /// The publication-time window considered, in seconds since the start of the run.
    pub from_s: f64,
    pub to_s: f64,
}

/// Totals over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// From the start until every connection was attempted and answered or failed, seconds.
    #[serde(default)]
    pub ramp_s: f64,
    /// Connections established per second of the ramp: the rate the server really accepted at.
    #[serde(default)]
    pub accepted_per_sec: Option<f64>,
    /// The most connections established in one second.
    #[serde(default)]
    pub peak_accepted_per_sec: u64,
    /// Connections this machine's listening sockets dropped during the run (server on loopback
    /// only).
    #[serde(default)]
    pub listen_drops: Option<u64>,
    pub attempted: u64,
    pub established: u64,
    /// The most connections open at the end of any second.
    pub peak_open: u64,
    pub failed: Failures,
    /// `failed.total()`.
    pub failed_total: u64,
    /// Events received over the whole run (each copy counted).
    pub events: u64,
    pub event_p50_us: Option<u64>,
    pub event_p99_us: Option<u64>,
    pub event_p999_us: Option<u64>,
    pub event_max_us: Option<u64>,
    pub delivery: Delivery,
    pub probes_sent: u64,
    pub probes_answered: u64,
    pub probe_timeouts: u64,
    pub probe_errors: u64,
    pub probe_p50_us: Option<u64>,
    pub probe_p99_us: Option<u64>,
    pub probe_p999_us: Option<u64>,
    pub probe_max_us: Option<u64>,
    /// Probes answered in the seconds after the ramp was over, while the server held every
    /// connection it got, and their latency.
    #[serde(default)]
    pub held_probes: u64,
    #[serde(default)]
    pub held_probe_p50_us: Option<u64>,
    #[serde(default)]
    pub held_probe_p99_us: Option<u64>,
    #[serde(default)]
    pub held_probe_max_us: Option<u64>,
    /// Events received in those seconds, and their delivery latency: broadcasts to every
    /// connection, without the ramp's.
    #[serde(default)]
    pub held_events: u64,
    #[serde(default)]
    pub held_event_p50_us: Option<u64>,
    #[serde(default)]
    pub held_event_p99_us: Option<u64>,
    #[serde(default)]
    pub held_event_max_us: Option<u64>,
    /// Connections open when the first probe that timed out was sent (see [`Second`]).
    #[serde(default)]
    pub held_at_first_probe_timeout: Option<u64>,
    /// Highest readings of the server, each field on its own (they may come from different
    /// seconds); `None` without `--server-pid`.
    pub server_peak: Option<ServerSample>,
    /// Echoed `--ws-send` messages and their round trips, over the whole run.
    #[serde(default)]
    pub echoes: u64,
    #[serde(default)]
    pub echo_p50_us: Option<u64>,
    #[serde(default)]
    pub echo_p99_us: Option<u64>,
    #[serde(default)]
    pub echo_max_us: Option<u64>,
    /// For each cause of failure, what the first one looked like (for a refusal, the
    /// response head), e.g. `{"http_error": "HTTP/1.1 401 Unauthorized | …"}`.
    #[serde(default)]
    pub first_failures: std::collections::BTreeMap<String, String>,
    /// Time between successive arrivals of events on one connection (events that arrive in one
    /// read count once), over the run: how evenly the server delivers, with or without a send
    /// time in the events.
    #[serde(default)]
    pub gap_p50_us: Option<u64>,
    #[serde(default)]
    pub gap_p99_us: Option<u64>,
    #[serde(default)]
    pub gap_max_us: Option<u64>,
}

/// The whole run: what was asked, every second, and the totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The server address.
    pub target: String,
    /// `sse`, `ws`, `stream` or `poll`.
    pub kind: String,
    /// Connections asked for.
    pub connections: u64,
    pub ramp_per_sec: f64,
    pub hold_s: f64,
    /// Processes that held connections (1 when the parent held them itself).
    pub processes: u64,
    /// Loopback source addresses the connections were spread over (1 when left to the kernel).
    pub source_addrs: u64,
    /// Connections allowed to wait for their response head at once (`--max-connecting`).
    #[serde(default)]
    pub max_connecting: u64,
    /// Microseconds each process polls without sleeping after the last readiness
    /// (`--busy-poll-us`).
    #[serde(default)]
    pub busy_poll_us: u64,
    /// Wall clock at the start of the run, Unix epoch nanoseconds.
    pub started_unix_ns: u64,
    /// From the start until the connections were closed, in seconds.
    pub duration_s: f64,
    /// From the close until every connection was closed and every worker process exited, in
    /// seconds.
    #[serde(default)]
    pub teardown_s: f64,
    pub seconds: Vec<Second>,
    pub totals: Totals,
}

/// `1.9ms`, `850us`, `2.31s`, or `-` for nothing measured.
pub fn fmt_us(us: Option<u64>) -> String {
    match us {
        None => "-".to_string(),
        Some(us) if us < 1_000 => format!("{us}us"),
        Some(us) if us < 1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        Some(us) => format!("{:.2}s", us as f64 / 1e6),
    }
}

fn fmt_mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Second {
    /// The one-line human form, e.g.
    /// `t=12s open=1200/1200 fail=0 ev p50=0.4ms p99=1.9ms probe p50=0.2ms p99=0.5ms to=0 srv rss=14.2MiB thr=1 fds=1210`.
    pub fn human(&self, connections: u64) -> String {
        let mut s = format!("t={}s open={}/{connections}", fmt_t(self.t_s), self.open);
        if self.connecting > 0 {
            let _ = write!(s, " connecting={}", self.connecting);
        }
        let _ = write!(s, " fail={}", self.failed.total());
        let causes = self.failed.nonzero();
        if !causes.is_empty() {
            let _ = write!(s, " ({causes})");
        }
        let _ = write!(
            s,
            " ev={} p50={} p99={} probe p50={} p99={} to={}",
            self.events,
            fmt_us(self.event_p50_us),
            fmt_us(self.event_p99_us),
            fmt_us(self.probe_p50_us),
            fmt_us(self.probe_p99_us),
            self.probe_timeouts
        );
        if self.probe_errors > 0 {
            let _ = write!(s, " err={}", self.probe_errors);
        }
        if let Some(drops) = self.listen_drops.filter(|&d| d > 0) {
            let _ = write!(s, " listen-drops={drops}");
        }
        if let Some(srv) = &self.server {
            let _ = write!(
                s,
                " srv rss={} thr={} fds={}",
                fmt_mib(srv.rss_bytes),
                srv.threads,
                srv.fds
            );
        }
        s
    }
}

fn fmt_t(t: f64) -> String {
    if (t - t.round()).abs() < 1e-9 {
        format!("{}", t.round() as u64)
    } else {
        format!("{t:.2}")
    }
}

impl Report {
    /// A few lines for a person, after the run.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let mut s = format!(
            "{} x{} -> {} over {:.1}s ({} process{}, {} source address{}): established {}/{}",
            self.kind,
            self.connections,
            self.target,
            self.duration_s,
            self.processes,
            if self.processes == 1 { "" } else { "es" },
            self.source_addrs,
            if self.source_addrs == 1 { "" } else { "es" },
            t.established,
            self.connections,
        );
        let _ = write!(
            s,
            ", peak open {}, failed {}; closed in {:.1}s",
            t.peak_open, t.failed_total, self.teardown_s
        );
        let causes = t.failed.nonzero();
        if !causes.is_empty() {
            let _ = write!(s, " ({causes})");
        }
        for (cause, why) in &t.first_failures {
            let _ = write!(s, "\n  first {cause}: {why}");
        }
        if let Some(rate) = t.accepted_per_sec {
            let planned_s = self.connections as f64 / self.ramp_per_sec;
            let _ = write!(
                s,
                "\nramp {:.1}s (planned {planned_s:.1}s at {}/s): the server accepted {rate:.0}/s, at most {} in a second",
                t.ramp_s, self.ramp_per_sec, t.peak_accepted_per_sec
            );
            if t.attempted < self.connections {
                let _ = write!(
                    s,
                    "; the ramp stopped at its time limit with {} connections not attempted",
                    self.connections - t.attempted
                );
            } else if t.ramp_s > planned_s + 1.0 {
                let _ = write!(
                    s,
                    " (slower than asked: it waited while {} connections awaited an answer)",
                    self.max_connecting
                );
            }
        }
        if let Some(drops) = t.listen_drops.filter(|&d| d > 0) {
            let _ = write!(
                s,
                "\n  warning: this machine's listening sockets dropped {drops} connections during the run (ListenDrops): a full accept queue; lower --max-connecting or raise the server's backlog"
            );
        }
        let _ = write!(
            s,
            "\nevents {}: latency p50 {} p99 {} p99.9 {} max {}",
            t.events,
            fmt_us(t.event_p50_us),
            fmt_us(t.event_p99_us),
            fmt_us(t.event_p999_us),
            fmt_us(t.event_max_us)
        );
        match (t.delivery.mean_fraction, t.delivery.min_fraction) {
            (Some(mean), Some(min)) => {
                let _ = write!(
                    s,
                    "; delivered to {:.2}% of open connections on average, {:.2}% at worst, over {} events",
                    mean * 100.0,
                    min * 100.0,
                    t.delivery.seqs
                );
            }
            _ if t.events > 0 && t.event_p50_us.is_none() => s.push_str(
                "; no send time found in the events (name its field with --timestamp): delivery latency not measured",
            ),
            _ if t.events > 0 => s.push_str(
                "; delivery to every connection not measured (it needs events with a seq, published after the ramp)",
            ),
            _ => s.push_str("; no events to measure delivery with"),
        }
        // Connection-seconds: each window's open connections times its length (the last window
        // is shorter).
        let mut held = 0.0;
        let mut from = 0.0;
        for sec in &self.seconds {
            held += sec.open as f64 * (sec.t_s - from).max(0.0);
            from = sec.t_s;
        }
        if t.events > 0 && held > 0.0 {
            let _ = write!(
                s,
                "\n  per connection: {:.2} events/s, gaps between events p50 {} p99 {} max {}",
                t.events as f64 / held,
                fmt_us(t.gap_p50_us),
                fmt_us(t.gap_p99_us),
                fmt_us(t.gap_max_us)
            );
        }
        let _ = write!(
            s,
            "\nprobes {}/{} answered, {} timed out, {} failed: latency p50 {} p99 {} p99.9 {} max {}",
            t.probes_answered,
            t.probes_sent,
            t.probe_timeouts,
            t.probe_errors,
            fmt_us(t.probe_p50_us),
            fmt_us(t.probe_p99_us),
            fmt_us(t.probe_p999_us),
            fmt_us(t.probe_max_us)
        );
        if t.held_probes > 0 {
            let _ = write!(
                s,
                "\n  after the ramp, while every connection was held: {} answered, p50 {} p99 {} max {}",
                t.held_probes,
                fmt_us(t.held_probe_p50_us),
                fmt_us(t.held_probe_p99_us),
                fmt_us(t.held_probe_max_us)
            );
        }
        if t.echoes > 0 {
            let _ = write!(
                s,
                "\nechoes {}: round trip p50 {} p99 {} max {}",
                t.echoes,
                fmt_us(t.echo_p50_us),
                fmt_us(t.echo_p99_us),
                fmt_us(t.echo_max_us)
            );
        }
        if let Some(srv) = &t.server_peak {
            let _ = write!(
                s,
                "\nserver peak: rss {} pss {} threads {} fds {}",
                fmt_mib(srv.rss_bytes),
                fmt_mib(srv.pss_bytes),
                srv.threads,
                srv.fds
            );
            if srv.processes > 1 {
                let _ = write!(s, " over {} processes", srv.processes);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_line_is_compact() {
        let s = Second {
            t_s: 12.0,
            open: 1200,
            event_p50_us: Some(400),
            event_p99_us: Some(1900),
            probe_p50_us: Some(200),
            probe_p99_us: Some(500),
            server: Some(ServerSample {
                rss_bytes: 14 * 1024 * 1024 + 200 * 1024,
                threads: 1,
                fds: 1210,
                ..ServerSample::default()
            }),
            ..Second::default()
        };
        assert_eq!(
            s.human(1200),
            "t=12s open=1200/1200 fail=0 ev=0 p50=400us p99=1.9ms probe p50=200us p99=500us to=0 srv rss=14.2MiB thr=1 fds=1210"
        );
    }

    #[test]
    fn failures_add_and_total() {
        let mut a = Failures {
            refused: 1,
            other: 2,
            ..Failures::default()
        };
        a.add(&Failures {
            refused: 3,
            reset: 1,
            ..Failures::default()
        });
        assert_eq!(a.total(), 7);
        assert_eq!(a.nonzero(), "refused=4 reset=1 other=2");
    }

    #[test]
    fn second_round_trips_and_tolerates_missing_extras() {
        let s = Second {
            t_s: 1.0,
            attempted: 5,
            connecting: 2,
            ..Second::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Second>(&json).unwrap(), s);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v.as_object_mut().unwrap().remove("connecting");
        v.as_object_mut().unwrap().remove("probe_errors");
        let back: Second = serde_json::from_value(v).unwrap();
        assert_eq!(back.connecting, 0);
    }
}
