//! Runs past one process's open file limit: the connections (and the ramp rate) are split over
//! worker processes — copies of this executable started as `c10k load --worker-plan JSON` — which
//! report one [`WorkerRecord`] per second as a line of JSON on stdout. The parent reads the
//! pipes on its event loop and merges. A worker stops at the planned close, when its stdin
//! reaches end of file (the parent closed it, or died), or when its stdout breaks.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use mio::unix::pipe::Receiver;
use serde::{Deserialize, Serialize};

use super::conns::ConnPlan;
use super::record::WorkerRecord;

/// A worker line longer than this is not a record: the worker is considered broken.
const MAX_LINE: usize = 16 << 20;

/// Everything a worker needs, passed as one JSON argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub conns: ConnPlan,
    /// The run's common start, wall clock (Unix epoch ns).
    pub start_ns: u64,
    /// When to close the connections at the latest, µs after the start (the parent says when
    /// sooner, by closing the worker's stdin).
    pub close_at_us: u64,
}

/// One plan per worker: `counts[i]` connections each, the ramp rate and the connections
/// pending at once shared in proportion, and consecutive connection indexes (which pick source addresses) so that together they are the
/// same run as `whole`.
pub fn split(whole: &ConnPlan, counts: &[u64], start_ns: u64, close_at_us: u64) -> Vec<WorkerPlan> {
    let total = counts.iter().sum::<u64>().max(1) as f64;
    let mut first_index = whole.first_index;
    counts
        .iter()
        .map(|&count| {
            let plan = WorkerPlan {
                conns: ConnPlan {
                    count,
                    rate: whole.rate * count as f64 / total,
                    max_connecting: (whole.max_connecting as f64 * count as f64 / total).ceil()
                        as u64,
                    first_index,
                    ..whole.clone()
                },
                start_ns,
                close_at_us,
            };
            first_index += count;
            plan
        })
        .collect()
}

/// A running worker, as the parent sees it.
pub struct ChildLink {
    child: Child,
    /// Dropped (closed) to ask the worker to stop.
    pub stdin: Option<ChildStdin>,
    pub stdout: Receiver,
    buf: Vec<u8>,
    /// Its stdout ended (or it was stopped): nothing more will come.
    pub done: bool,
    last_seen: bool,
    complained: bool,
}

impl ChildLink {
    /// Reads what the worker wrote: the complete records, and whether its stdout ended.
    pub fn read_records(&mut self, scratch: &mut [u8]) -> (Vec<WorkerRecord>, bool) {
        let mut records = Vec::new();
        let mut ended = false;
        loop {
            match self.stdout.read(scratch) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    ended = true;
                    break;
                }
            }
            if self.buf.len() > MAX_LINE {
                eprintln!("c10k load: a worker wrote an over-long line; stopping it");
                ended = true;
                self.kill();
                break;
            }
        }
        let mut start = 0;
        while let Some(end) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buf[start..start + end];
            start += end + 1;
            match serde_json::from_slice::<WorkerRecord>(line) {
                Ok(record) => {
                    self.last_seen |= record.last;
                    records.push(record);
                }
                Err(_) if !self.complained => {
                    self.complained = true;
                    eprintln!(
                        "c10k load: ignoring a line from a worker that is not a record: {}",
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    );
                }
                Err(_) => {}
            }
        }
        self.buf.drain(..start);
        (records, ended)
    }

    /// Whether the worker sent its last record: everything it had to say is in.
    pub fn reported_last(&self) -> bool {
        self.last_seen
    }

    /// Waits until `deadline` for the worker to exit (it closes its connections first), reaps
    /// it, and says so if it ended badly; past the deadline, stops it. Whether it exited by
    /// itself.
    pub fn reap_by(&mut self, index: usize, deadline: std::time::Instant) -> bool {
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => {
                    self.finish(index);
                    return true;
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Ok(None) => {
                    eprintln!("c10k load: worker {index} did not exit in time; stopping it");
                    self.kill();
                    return false;
                }
                Err(e) => {
                    eprintln!("c10k load: could not reap worker {index}: {e}");
                    self.kill();
                    return false;
                }
            }
        }
    }

    /// The worker's stdout ended: reap it, and say so if it ended badly.
    pub fn finish(&mut self, index: usize) {
        self.done = true;
        self.stdin = None;
        match self.child.wait() {
            Ok(status) if status.success() && self.last_seen => {}
            Ok(status) => eprintln!(
                "c10k load: worker {index} ended ({status}){}",
                if self.last_seen {
                    ""
                } else {
                    " before its last record; its connections count as of its last report"
                }
            ),
            Err(e) => eprintln!("c10k load: could not reap worker {index}: {e}"),
        }
    }

    /// Stops the worker for good (SIGKILL to its own PID) and reaps it.
    pub fn kill(&mut self) {
        self.done = true;
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildLink {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
        }
    }
}

/// Starts one worker per plan. On failure, the workers already started are stopped.
pub fn spawn(
    exe: &Path,
    target: SocketAddr,
    plans: &[WorkerPlan],
) -> Result<Vec<ChildLink>, String> {
    let mut children = Vec::with_capacity(plans.len());
    for plan in plans {
        let json = serde_json::to_string(plan)
            .map_err(|e| format!("could not encode a worker plan: {e}"))?;
        let mut child = Command::new(exe)
            .arg("load")
            .args(["--target", &target.to_string()])
            .args(["--worker-plan", &json])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("could not start a worker process ({}): {e}", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("a worker process started without its pipes".into());
        };
        let stdout = Receiver::from(stdout);
        if let Err(e) = stdout.set_nonblocking(true) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("could not set up a worker's pipe: {e}"));
        }
        children.push(ChildLink {
            child,
            stdin: Some(stdin),
            stdout,
            buf: Vec::new(),
            done: false,
            last_seen: false,
            complained: false,
        });
    }
    Ok(children)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Kind;

    #[test]
    fn split_shares_rate_and_indexes() {
        let whole = ConnPlan {
            kind: Kind::Sse,
            target: "127.0.0.1:1".parse().unwrap(),
            count: 30,
            rate: 300.0,
            first_index: 0,
            sources: vec![],
            timeout_ms: 1,
            request: crate::load::endpoint::Request::contract(Kind::Sse, "h"),
            timestamp: Default::default(),
            poll_timeout_ms: 1,
            ws_send: None,
            max_connecting: 30,
            ramp_limit_us: 9,
            busy_poll_us: 20,
        };
        let plans = split(&whole, &[10, 10, 10], 5, 7);
        assert_eq!(plans.len(), 3);
        assert_eq!(
            plans
                .iter()
                .map(|p| p.conns.first_index)
                .collect::<Vec<_>>(),
            vec![0, 10, 20]
        );
        assert!(plans
            .iter()
            .all(|p| p.conns.rate == 100.0 && p.conns.max_connecting == 10 && p.close_at_us == 7));
        assert!(plans.iter().all(|p| p.conns.busy_poll_us == 20));
        let json = serde_json::to_string(&plans[1]).unwrap();
        assert_eq!(serde_json::from_str::<WorkerPlan>(&json).unwrap(), plans[1]);
    }
}
