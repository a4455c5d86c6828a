//! The edges with the operating system: file-descriptor limits, the listening socket, readings
//! of `/proc`, and the wall clock events are stamped with.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::time::{SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns `(soft, hard)` as they are after.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// A listening TCP socket with `SO_REUSEADDR` (a restarted server binds at once even with
/// connections in TIME_WAIT), optionally `SO_REUSEPORT`, and the given backlog.
pub fn listen(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// A socket that turns readable when SIGINT or SIGTERM arrives: the signal handler writes a
/// byte to its other end, so a loop sees the signal like any input.
pub fn signal_pipe() -> io::Result<UnixStream> {
    let (rx, tx) = UnixStream::pair()?;
    // A handler must never block on a full pipe.
    tx.set_nonblocking(true)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, tx.try_clone()?)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, tx)?;
    Ok(rx)
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Readings of one process from `/proc/PID`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcReading {
    pub rss_bytes: u64,
    pub threads: u64,
    pub fds: u64,
}

/// Reads `/proc/PID/status` (RSS, threads) and counts `/proc/PID/fd`; `None` for `self` when
/// `pid` is `None`. Fails when the process is gone.
pub fn read_proc(pid: Option<u32>) -> io::Result<ProcReading> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let mut reading = ProcReading::default();
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            reading.rss_bytes = parse_kb(v) * 1024;
        } else if let Some(v) = line.strip_prefix("Threads:") {
            reading.threads = v.trim().parse().unwrap_or(0);
        }
    }
    reading.fds = std::fs::read_dir(format!("{dir}/fd")).map_or(0, |d| d.count() as u64);
    Ok(reading)
}

/// CPU time a process has used so far, user and system, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> io::Result<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: the fields that follow start after
    // the last `)`. utime and stime are fields 14 and 15, counting from the pid.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let mut fields = rest.split_whitespace().skip(11);
    let mut ticks = || fields.next().and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(), ticks()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unreadable /proc/PID/stat",
        ));
    };
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(std::time::Duration::from_micros(
        (user + system) * 1_000_000 / per_sec,
    ))
}

fn parse_kb(v: &str) -> u64 {
    v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0)
}

/// Whether an accept error means "out of descriptors" (the process's or the system's).
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_has_rss_and_a_thread() {
        let r = read_proc(None).unwrap();
        assert!(r.rss_bytes > 0);
        assert!(r.threads >= 1);
        assert!(r.fds >= 1);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let pid = std::process::id();
        let before = cpu_time(pid).unwrap();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_time(pid).unwrap() > before);
    }

    #[test]
    fn fd_limit_is_raised_to_hard() {
        let (soft, hard) = raise_fd_limit().unwrap();
        assert_eq!(soft, hard);
    }
}
