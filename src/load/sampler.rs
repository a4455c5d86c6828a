//! Readings of the server from `/proc` (`--server-pid`): resident and proportional memory,
//! threads and open descriptors of the process and every process under it (a server's worker
//! processes), taken by the parent once a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::report::ServerSample;
use crate::sys;

/// Samples one process tree on a thread of its own: reading `/proc` of a server with thousands
/// of threads takes milliseconds (`smaps_rollup` of 8,000 threads: 16 ms here), which the loop
/// that times the probe must not spend.
pub struct Sampler {
    latest: Arc<Mutex<Option<ServerSample>>>,
    stop: Arc<AtomicBool>,
}

/// How often the thread reads: the newest reading is at most this old.
const EVERY: Duration = Duration::from_millis(250);

impl Sampler {
    pub fn new(pid: u32) -> Sampler {
        let latest = Arc::new(Mutex::new(read_tree(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (latest.clone(), stop.clone());
        let _ = thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    thread::sleep(EVERY);
                    let reading = read_tree(pid);
                    if let Ok(mut latest) = shared.lock() {
                        *latest = reading;
                    }
                }
            });
        Sampler { latest, stop }
    }

    /// The newest reading, summed over the tree; `None` once the process is gone (or was never
    /// there).
    pub fn sample(&self) -> Option<ServerSample> {
        self.latest.lock().ok().and_then(|l| *l)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads `pid` and every process under it, once.
pub fn read_tree(pid: u32) -> Option<ServerSample> {
    let mut sample = ServerSample::default();
    let pids = std::iter::once(pid).chain(sys::descendants(pid));
    for (i, pid) in pids.enumerate() {
        let reading = match sys::read_proc(Some(pid)) {
            Ok(r) => r,
            // A worker may exit between the listing and the reading; the server may not.
            Err(_) if i > 0 => continue,
            Err(_) => return None,
        };
        sample.rss_bytes += reading.rss_bytes;
        sample.threads += reading.threads;
        sample.fds += reading.fds;
        let (pss, anon) = sys::pss_bytes(pid).unwrap_or((0, 0));
        sample.pss_bytes += pss;
        sample.pss_anon_bytes += anon;
        sample.processes += 1;
    }
    Some(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process_and_not_a_missing_one() {
        let s = Sampler::new(std::process::id()).sample().unwrap();
        assert!(s.rss_bytes > 0 && s.threads >= 1 && s.fds >= 1 && s.pss_bytes > 0);
        assert!(s.processes >= 1);
        // PIDs are at most 2^22 on Linux.
        assert_eq!(Sampler::new(u32::MAX).sample(), None);
        // The tree: a child process is in the sum.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let s = read_tree(std::process::id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(s.processes >= 2, "{s:?}");
    }
}
