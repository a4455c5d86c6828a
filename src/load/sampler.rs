//! Readings of the server process from `/proc/PID` (`--server-pid`): resident memory, threads
//! and open descriptors, taken by the parent once a second.

use super::report::ServerSample;
use crate::sys;

/// Samples one process.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    pid: u32,
}

impl Sampler {
    pub fn new(pid: u32) -> Sampler {
        Sampler { pid }
    }

    /// The reading now; `None` once the process is gone (or was never there).
    pub fn sample(&self) -> Option<ServerSample> {
        sys::read_proc(Some(self.pid)).ok().map(|r| ServerSample {
            rss_bytes: r.rss_bytes,
            threads: r.threads,
            fds: r.fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process_and_not_a_missing_one() {
        let s = Sampler::new(std::process::id()).sample().unwrap();
        assert!(s.rss_bytes > 0 && s.threads >= 1 && s.fds >= 1);
        // PIDs are at most 2^22 on Linux.
        assert_eq!(Sampler::new(u32::MAX).sample(), None);
    }
}
