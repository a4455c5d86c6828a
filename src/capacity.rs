//! How many long-lived connections each model can hold on this machine: every limit that bounds
//! it, turned into a connection count, and which one binds first. `c10k doctor` prints it;
//! `c10k run scaling` uses it to plan its steps and to say why a model stopped.
//!
//! The per-connection costs are the ones measured here (notes/workers.md, notes/idle-cost.md):
//! they are estimates for another machine, good to a factor well under two.

use std::fs;

use crate::blocking::budget::{MAPS_PER_THREAD, MARGIN};

/// Kernel memory per loopback connection, both of its sockets (slab growth per connection held,
/// measured at a million).
pub const KERNEL_BYTES_PER_LOOPBACK_CONN: u64 = 10_500;
/// The kernel stack of one thread (x86_64: 16 KiB).
pub const KERNEL_STACK_BYTES: u64 = 16 * 1024;
/// Resident user memory of one idle connection thread of the blocking model (its stack pages
/// and allocations, measured with SSE).
pub const BLOCKING_USER_BYTES_PER_THREAD: u64 = 19_500;
/// Descriptors a server process keeps for itself (listener, epoll, pipes, standard streams),
/// with room to spare: what is left of `RLIMIT_NOFILE` is for connections. A tenth of a small
/// limit.
const RESERVED_FDS: u64 = 500;
/// Threads of a blocking server that serve no connection (main, accept, ticker, reject).
const BLOCKING_SERVICE_THREADS: u64 = 4;

/// This machine's limits, read from `/proc` and `getrlimit`.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// `RLIMIT_NOFILE` once raised to its hard limit (what c10k runs with).
    pub nofile: u64,
    pub file_max: u64,
    /// Files open in the whole system now.
    pub files_open: u64,
    pub mem_available: u64,
    pub pid_max: u64,
    pub threads_max: u64,
    /// Threads (tasks) in the whole system now.
    pub tasks: u64,
    pub max_map_count: u64,
    /// Mappings of a fresh c10k process (this one).
    pub maps_in_use: u64,
    /// `RLIMIT_NPROC` when it applies (not root, not unlimited).
    pub nproc: Option<u64>,
    /// `nf_conntrack_max` and the entries in use, where connection tracking is loaded.
    pub conntrack: Option<(u64, u64)>,
}

impl Limits {
    /// The limits of this machine now.
    pub fn read() -> Limits {
        let num = |path: &str| -> u64 {
            fs::read_to_string(path)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let nofile = crate::sys::raise_fd_limit().map_or(0, |(soft, _)| soft);
        let files_open = num("/proc/sys/fs/file-nr");
        // The fourth field of /proc/loadavg is "running/total" tasks.
        let tasks = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
            .unwrap_or(0);
        let conntrack = fs::metadata("/proc/sys/net/netfilter/nf_conntrack_max")
            .is_ok()
            .then(|| {
                (
                    num("/proc/sys/net/netfilter/nf_conntrack_max"),
                    num("/proc/sys/net/netfilter/nf_conntrack_count"),
                )
            });
        Limits {
            nofile,
            file_max: num("/proc/sys/fs/file-max"),
            files_open,
            mem_available: crate::sys::meminfo("MemAvailable").unwrap_or(0),
            pid_max: num("/proc/sys/kernel/pid_max"),
            threads_max: num("/proc/sys/kernel/threads-max"),
            tasks,
            max_map_count: num("/proc/sys/vm/max_map_count"),
            maps_in_use: fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count())
                as u64,
            nproc: nproc_limit(),
            conntrack,
        }
    }

    /// Connections one server process can hold: its descriptors, less its own.
    pub fn per_process(&self) -> u64 {
        self.nofile - RESERVED_FDS.min(self.nofile / 10)
    }

    /// Worker processes the evented server needs for `connections`.
    pub fn workers_for(&self, connections: u64) -> u64 {
        connections.div_ceil(self.per_process().max(1)).max(1)
    }
}

/// One limit on a model, as the connections it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// `vm.max_map_count`, `memory`, ...
    pub name: &'static str,
    pub connections: u64,
    /// How the limit turns into that count, with this machine's values.
    pub why: String,
    /// What lifts it.
    pub lift: &'static str,
}

/// Every limit on one model, tightest first.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub model: &'static str,
    pub limits: Vec<Limit>,
}

impl Capacity {
    fn new(model: &'static str, mut limits: Vec<Limit>) -> Capacity {
        limits.sort_by_key(|l| l.connections);
        Capacity { model, limits }
    }

    /// The limit that binds first.
    pub fn binding(&self) -> &Limit {
        &self.limits[0]
    }

    /// The largest number of connections the limits allow.
    pub fn max(&self) -> u64 {
        self.binding().connections
    }
}

/// The evented server (with as many `--workers` as it takes), its clients on this machine's
/// loopback.
pub fn evented(l: &Limits) -> Capacity {
    let mut limits = vec![
        Limit {
            name: "memory",
            connections: l.mem_available / KERNEL_BYTES_PER_LOOPBACK_CONN,
            why: format!(
                "MemAvailable {} at ~{:.1} KB of kernel memory per loopback connection (both sockets); the server's own share is ~100 B",
                gib(l.mem_available),
                KERNEL_BYTES_PER_LOOPBACK_CONN as f64 / 1000.0
            ),
            lift: "more memory; or clients on another machine, which halves the kernel's share here",
        },
        Limit {
            name: "fs.file-max",
            connections: l.file_max.saturating_sub(l.files_open) / 2,
            why: format!(
                "{} files, {} open now, two per loopback connection",
                l.file_max, l.files_open
            ),
            lift: "sysctl -w fs.file-max=4194304",
        },
    ];
    if let Some((max, count)) = l.conntrack.filter(|&(_, count)| count > 0) {
        limits.push(Limit {
            name: "net.netfilter.nf_conntrack_max",
            connections: max.saturating_sub(count),
            why: format!("{max} tracked connections, {count} tracked now"),
            lift: "sysctl -w net.netfilter.nf_conntrack_max=2097152",
        });
    }
    Capacity::new("evented", limits)
}

/// The blocking server (one process, a thread per connection), its clients on this machine's
/// loopback; `threads_per_conn` is 1 for SSE, streams and polls, 2 for WebSocket (a reader and
/// a writer).
pub fn blocking(l: &Limits, threads_per_conn: u64) -> Capacity {
    let per = |threads: u64| threads.saturating_sub(BLOCKING_SERVICE_THREADS) / threads_per_conn;
    let maps_free = l
        .max_map_count
        .saturating_sub(l.maps_in_use + MARGIN as u64);
    let thread_bytes = KERNEL_STACK_BYTES + BLOCKING_USER_BYTES_PER_THREAD;
    let mut limits = vec![
        Limit {
            name: "vm.max_map_count",
            connections: per(maps_free / MAPS_PER_THREAD as u64),
            why: format!(
                "{} mappings per process, {MAPS_PER_THREAD} per thread (stack, signal stack and their guard pages)",
                l.max_map_count
            ),
            lift: "sysctl -w vm.max_map_count=1048576",
        },
        Limit {
            name: "kernel.pid_max",
            connections: per(l.pid_max.saturating_sub(l.tasks)),
            why: format!(
                "{} pids, {} tasks now: every thread takes one",
                l.pid_max, l.tasks
            ),
            lift: "sysctl -w kernel.pid_max=4194304",
        },
        Limit {
            name: "kernel.threads-max",
            connections: per(l.threads_max.saturating_sub(l.tasks)),
            why: format!("{} threads in the system, {} now", l.threads_max, l.tasks),
            lift: "sysctl -w kernel.threads-max=4194304",
        },
        Limit {
            name: "RLIMIT_NOFILE",
            connections: l.per_process(),
            why: format!(
                "{} descriptors in its one process, one per connection",
                l.nofile
            ),
            lift: "ulimit -n (up to the hard limit; past it /etc/security/limits.conf or LimitNOFILE=); the blocking server has no --workers",
        },
        Limit {
            name: "memory",
            connections: l.mem_available
                / (KERNEL_BYTES_PER_LOOPBACK_CONN + threads_per_conn * thread_bytes),
            why: format!(
                "MemAvailable {} at ~{:.0} KB per connection: {:.1} KB of sockets and, per thread, a {} KB kernel stack and ~{:.0} KB of user stack",
                gib(l.mem_available),
                (KERNEL_BYTES_PER_LOOPBACK_CONN + threads_per_conn * thread_bytes) as f64 / 1000.0,
                KERNEL_BYTES_PER_LOOPBACK_CONN as f64 / 1000.0,
                KERNEL_STACK_BYTES / 1024,
                BLOCKING_USER_BYTES_PER_THREAD as f64 / 1000.0
            ),
            lift: "more memory, or smaller stacks (--stack-size)",
        },
    ];
    if let Some(nproc) = l.nproc {
        limits.push(Limit {
            name: "RLIMIT_NPROC",
            connections: per(nproc.saturating_sub(l.tasks)),
            why: format!("{nproc} threads for this user"),
            lift: "ulimit -u N, or run as root",
        });
    }
    Capacity::new("blocking", limits)
}

fn nproc_limit() -> Option<u64> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let (soft, _) = crate::sys::rlimit(libc::RLIMIT_NPROC)?;
    (!root && soft != libc::RLIM_INFINITY).then_some(soft)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Limits {
        Limits {
            nofile: 20_000,
            file_max: 9_223_372_036_854_775_807,
            files_open: 1_000,
            mem_available: 23 << 30,
            pid_max: 32_768,
            threads_max: 192_000,
            tasks: 300,
            max_map_count: 65_530,
            maps_in_use: 60,
            nproc: None,
            conntrack: Some((262_144, 0)),
        }
    }

    #[test]
    fn the_evented_server_is_bound_by_memory_and_needs_workers_past_one_process() {
        let l = machine();
        let c = evented(&l);
        assert_eq!(c.binding().name, "memory");
        assert_eq!(c.max(), (23u64 << 30) / KERNEL_BYTES_PER_LOOPBACK_CONN);
        // Conntrack that tracks nothing here is no limit.
        assert!(c
            .limits
            .iter()
            .all(|x| x.name != "net.netfilter.nf_conntrack_max"));
        assert_eq!(l.per_process(), 19_500);
        assert_eq!(l.workers_for(1_000_000), 52);
        assert_eq!(l.workers_for(10), 1);
    }

    #[test]
    fn the_blocking_server_is_bound_by_mappings_then_descriptors() {
        let l = machine();
        let sse = blocking(&l, 1);
        assert_eq!(sse.binding().name, "vm.max_map_count");
        assert_eq!(sse.max(), (65_530 - 60 - 1024) / 4 - 4);
        assert_eq!(sse.limits[1].name, "RLIMIT_NOFILE");
        let ws = blocking(&l, 2);
        assert_eq!(ws.max(), ((65_530 - 60 - 1024) / 4 - 4) / 2);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(2_412_345), "2,412,345");
    }
}
