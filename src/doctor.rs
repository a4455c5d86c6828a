//! `c10k doctor`: the Linux limits that decide how many connections each model can hold on this
//! machine, what each one bounds, and how to lift it.

use std::fs;

use crate::capacity::{self, thousands, Capacity, Limits};
use crate::sys;

struct Check {
    name: &'static str,
    value: String,
    bounds: &'static str,
    lift: &'static str,
}

fn read(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unreadable".to_string())
}

/// Prints the report.
pub fn run() -> Result<(), String> {
    let (soft_before, hard) = current_nofile();
    let (soft_after, _) =
        sys::raise_fd_limit().map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cores} cores, Linux {}, {} memory",
        read("/proc/sys/kernel/osrelease"),
        mem_total()
    );
    println!();
    print_capacity(&Limits::read());
    println!();
    let checks = [
        Check {
            name: "RLIMIT_NOFILE (soft / hard)",
            value: format!("{soft_before} / {hard} (c10k raises its soft limit to {soft_after})"),
            bounds: "sockets per process: every connection is a file descriptor, on the server and on the client",
            lift: "ulimit -n N (up to the hard limit); hard limit: /etc/security/limits.conf, or LimitNOFILE= for a systemd unit; above fs.nr_open only after raising it. Past it, run several processes: c10k load does, the evented server does with --workers",
        },
        Check {
            name: "fs.nr_open",
            value: read("/proc/sys/fs/nr_open"),
            bounds: "the highest RLIMIT_NOFILE any process may be given",
            lift: "sysctl -w fs.nr_open=N",
        },
        Check {
            name: "fs.file-max",
            value: read("/proc/sys/fs/file-max"),
            bounds: "open files in the whole system",
            lift: "sysctl -w fs.file-max=N",
        },
        Check {
            name: "net.ipv4.ip_local_port_range",
            value: read("/proc/sys/net/ipv4/ip_local_port_range"),
            bounds: "client side: one connection per (source address, source port) to one server address; c10k load spreads source addresses over 127.0.0.0/8 past it",
            lift: "sysctl -w net.ipv4.ip_local_port_range='1024 65000'",
        },
        Check {
            name: "net.core.somaxconn",
            value: read("/proc/sys/net/core/somaxconn"),
            bounds: "the listen backlog: connections the kernel completes and queues before the server accepts them (--backlog is capped to it)",
            lift: "sysctl -w net.core.somaxconn=N",
        },
        Check {
            name: "net.ipv4.tcp_max_syn_backlog",
            value: read("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            bounds: "half-open connections waiting for their handshake to finish, during a fast ramp",
            lift: "sysctl -w net.ipv4.tcp_max_syn_backlog=N",
        },
        Check {
            name: "kernel.pid_max",
            value: read("/proc/sys/kernel/pid_max"),
            bounds: "blocking model: every thread takes a pid, so threads in the whole system stay below it",
            lift: "sysctl -w kernel.pid_max=N (at most 4194304)",
        },
        Check {
            name: "kernel.threads-max",
            value: read("/proc/sys/kernel/threads-max"),
            bounds: "blocking model: threads in the whole system",
            lift: "sysctl -w kernel.threads-max=N",
        },
        Check {
            name: "vm.max_map_count",
            value: read("/proc/sys/vm/max_map_count"),
            bounds: "blocking model: each thread's stack and guard page are memory mappings of the process",
            lift: "sysctl -w vm.max_map_count=N",
        },
        Check {
            name: "RLIMIT_NPROC",
            value: nproc_limit(),
            bounds: "blocking model: threads of one user (not enforced for root)",
            lift: "ulimit -u N",
        },
    ];
    for c in &checks {
        println!("{:<32} {}", c.name, c.value);
        println!("{:<32} limits: {}", "", c.bounds);
        println!("{:<32} raise:  {}", "", c.lift);
    }
    println!();
    println!("scripts/tune-linux.sh raises the system-wide ones for a large run (as root), explaining each.");
    Ok(())
}

/// Each model's largest connection count here, the limit that binds first, and the next ones.
fn print_capacity(l: &Limits) {
    println!("capacity: SSE clients held on this machine's loopback (both ends here)");
    let evented = capacity::evented(l);
    print_model(&evented, None);
    println!(
        "{:<10}per process {}, bound by RLIMIT_NOFILE {}: past it, --workers N ({} for {})",
        "",
        thousands(l.per_process()),
        l.nofile,
        l.workers_for(evented.max()),
        thousands(evented.max())
    );
    let ws = capacity::blocking(l, 2).max();
    print_model(
        &capacity::blocking(l, 1),
        Some(format!("WebSocket {}: two threads each", thousands(ws))),
    );
}

fn print_model(c: &Capacity, aside: Option<String>) {
    let aside = aside.map_or(String::new(), |a| format!(" ({a})"));
    for (i, limit) in c.limits.iter().enumerate() {
        let head = if i == 0 {
            format!(
                "{:<10}about {}{aside}, bound by {}",
                c.model,
                thousands(limit.connections),
                limit.name
            )
        } else {
            format!(
                "{:<10}then {} at {}",
                "",
                limit.name,
                thousands(limit.connections)
            )
        };
        println!("{head}: {}", limit.why);
        println!("{:<10}  lift: {}", "", limit.lift);
    }
}

fn current_nofile() -> (u64, u64) {
    sys::rlimit(libc::RLIMIT_NOFILE).unwrap_or((0, 0))
}

fn nproc_limit() -> String {
    let Some((soft, hard)) = sys::rlimit(libc::RLIMIT_NPROC) else {
        return "unreadable".to_string();
    };
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    format!("{} / {}", show(soft), show(hard))
}

fn mem_total() -> String {
    sys::meminfo("MemTotal").map_or("unknown".to_string(), |bytes| {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    })
}
