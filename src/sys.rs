//! The edges with the operating system: file-descriptor limits, the listening socket, readings
//! of `/proc`, and the wall clock events are stamped with.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::RawFd;
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
    reading.fds = open_fds(&format!("{dir}/fd"));
    Ok(reading)
}

/// The open descriptors listed in `fd_dir` (`/proc/PID/fd`). Since Linux 6.2 the directory's
/// size is their count: listing a million descriptors instead would take the sampler most of a
/// second and fill the dentry cache with an entry per descriptor.
fn open_fds(fd_dir: &str) -> u64 {
    match std::fs::metadata(fd_dir) {
        Ok(m) if m.len() > 0 => m.len(),
        _ => std::fs::read_dir(fd_dir).map_or(0, |d| d.count() as u64),
    }
}

/// The processes under `pid` (children, their children, ...), from the parent ids in
/// `/proc/*/stat`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // The parent id is the second field after the command name's closing parenthesis.
            let rest = stat.rsplit_once(')')?.1;
            Some((p, rest.split_whitespace().nth(1)?.parse().ok()?))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// The kernel's memory for everyone, from `/proc/meminfo` and `/proc/net/sockstat`: what a
/// connection costs outside any process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelMemory {
    /// `Slab`: sockets, their dentries and inodes, epoll items, ... (bytes).
    pub slab: u64,
    /// `KernelStack`: one stack per thread (bytes).
    pub kernel_stack: u64,
    /// TCP sockets in use (`TCP: inuse`).
    pub tcp_sockets: u64,
    /// Pages of TCP buffers (`TCP: mem`), in bytes.
    pub tcp_buffers: u64,
}

impl KernelMemory {
    pub fn read() -> KernelMemory {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| kb_field(&meminfo, name).unwrap_or(0);
        let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
        let tcp_field = |name| sockstat_field(&sockstat, "TCP", name).unwrap_or(0);
        KernelMemory {
            slab: field("Slab"),
            kernel_stack: field("KernelStack"),
            tcp_sockets: tcp_field("inuse"),
            tcp_buffers: tcp_field("mem") * page_size(),
        }
    }

    /// Each field's highest value of the two.
    pub fn max(self, other: KernelMemory) -> KernelMemory {
        KernelMemory {
            slab: self.slab.max(other.slab),
            kernel_stack: self.kernel_stack.max(other.kernel_stack),
            tcp_sockets: self.tcp_sockets.max(other.tcp_sockets),
            tcp_buffers: self.tcp_buffers.max(other.tcp_buffers),
        }
    }
}

/// A TCP state as `/proc/net/tcp` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Established = 1,
    TimeWait = 6,
}

/// IPv4 sockets in `state` on either end of connections to `port`: `(local, remote)`, the
/// first on the side that listens on `port`, the second on its clients. From `/proc/net/tcp`,
/// so only this port's connections count, whatever else the machine does.
pub fn sockets_on_port(port: u16, state: TcpState) -> io::Result<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let (mut local, mut remote) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().take(4).collect();
        if let [_, from, to, st] = fields[..] {
            if u8::from_str_radix(st, 16).ok() == Some(state as u8) {
                local += u64::from(port_of(from) == Some(port));
                remote += u64::from(port_of(to) == Some(port));
            }
        }
    }
    Ok((local, remote))
}

/// `name`'s value on the `PROTOCOL: name value name value ...` line of a sockstat file.
fn sockstat_field(text: &str, protocol: &str, name: &str) -> Option<u64> {
    let words: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix(protocol)?.strip_prefix(':'))?
        .split_whitespace()
        .collect();
    let i = words.iter().position(|&w| w == name)?;
    words.get(i + 1)?.parse().ok()
}

/// A process's proportional set size, from `/proc/PID/smaps_rollup` (Linux 4.14+): all of it,
/// and its anonymous part (the heap and stacks, without the binary's and libraries' pages).
pub fn pss_bytes(pid: u32) -> io::Result<(u64, u64)> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let pss = kb_field(&rollup, "Pss")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Pss in smaps_rollup"))?;
    // Pss_Anon is there since Linux 5.10; before it, the whole PSS stands in.
    Ok((pss, kb_field(&rollup, "Pss_Anon").unwrap_or(pss)))
}

/// Makes the child that `command` starts get SIGTERM when this process dies, however it dies
/// (`PR_SET_PDEATHSIG`), so that nothing it started is left behind.
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions (prctl,
    // getppid) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the line above: then the parent is already another.
            if libc::getppid() != parent {
                return Err(io::Error::other("the parent exited"));
            }
            Ok(())
        });
    }
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

/// CPU time the threads of a process that are alive now have run, to the nanosecond (the sum
/// of `/proc/PID/task/*/schedstat`): for short measurements, where `/proc/PID/stat`'s clock
/// ticks (10 ms) are too coarse. Threads that exited are not counted.
pub fn cpu_time_ns(pid: u32) -> io::Result<u64> {
    Ok(task_files(pid, "schedstat")?
        .iter()
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum())
}

/// The file `name` of every thread of a process (`/proc/PID/task/*/NAME`), for the threads
/// that still exist when it is read and whose file this process may read.
pub fn task_files(pid: u32, name: &str) -> io::Result<Vec<String>> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join(name)).ok())
        .collect())
}

/// What the kernel counted on one TCP socket (`TCP_INFO`, Linux 4.6 and later): the payload
/// bytes and the segments each way, pure ACKs and the handshake included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Payload bytes sent and acknowledged by the peer.
    pub bytes_acked: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    pub segs_out: u64,
    pub segs_in: u64,
    /// Whether segments carry the 12-byte timestamp option (RFC 7323).
    pub timestamps: bool,
}

impl TcpCounters {
    /// IPv4 and TCP header bytes of each segment on this connection: 20 + 20, and 12 of
    /// timestamp option (10 padded to 12) when it was negotiated. SACK blocks, when a loss
    /// brings them, are not counted.
    pub fn header_bytes(&self) -> u64 {
        40 + if self.timestamps { 12 } else { 0 }
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `linux/tcp.h`'s bit in `tcpi_options` for the timestamp option.
const TCPI_OPT_TIMESTAMPS: u8 = 1;

/// `TCP_INFO` of a connected TCP socket.
pub fn tcp_counters(fd: RawFd) -> io::Result<TcpCounters> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info` and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let filled = std::mem::offset_of!(libc::tcp_info, tcpi_data_segs_out);
    if (len as usize) <= filled {
        return Err(io::Error::other(
            "this kernel's TCP_INFO has no segment counts",
        ));
    }
    Ok(TcpCounters {
        // The kernel counts the SYN's sequence number (and a FIN's) as acknowledged bytes.
        bytes_acked: info.tcpi_bytes_acked.saturating_sub(1),
        bytes_received: info.tcpi_bytes_received,
        segs_out: u64::from(info.tcpi_segs_out),
        segs_in: u64::from(info.tcpi_segs_in),
        timestamps: info.tcpi_options & TCPI_OPT_TIMESTAMPS != 0,
    })
}

/// A field of `/proc/meminfo`, in bytes.
pub fn meminfo(name: &str) -> Option<u64> {
    kb_field(&std::fs::read_to_string("/proc/meminfo").ok()?, name)
}

/// The `NAME:  123 kB` line of a `/proc` file, in bytes.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| parse_kb(v) * 1024)
}

/// `RLIMIT_*`'s `(soft, hard)` limits (`RLIM_INFINITY` for none).
pub fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    (unsafe { libc::getrlimit(resource, &mut lim) } == 0).then_some((lim.rlim_cur, lim.rlim_max))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

fn parse_kb(v: &str) -> u64 {
    v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0)
}

/// Adds `fd` to the epoll instance `epfd` for input, edge-triggered, with `EPOLLEXCLUSIVE`: of
/// several loops waiting on one listening socket, a new connection wakes one that is idle in
/// `epoll_wait` instead of all of them. `token` comes back as the event's data (what mio reads
/// as its token).
pub fn epoll_add_exclusive(epfd: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32,
        u64: token,
    };
    // SAFETY: epoll_ctl reads the event we pass; bad descriptors are reported as errors.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes `fd` from the epoll instance `epfd` (an exclusive entry cannot be modified, only
/// removed and added again).
pub fn epoll_delete(epfd: RawFd, fd: RawFd) -> io::Result<()> {
    // SAFETY: as above; a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether an accept error means "out of descriptors" (the process's or the system's).
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_fields_by_protocol_and_name() {
        let text =
            "sockets: used 10\nTCP: inuse 7 orphan 0 tw 3 alloc 9 mem 2\nUDP: inuse 1 mem 4\n";
        assert_eq!(sockstat_field(text, "TCP", "tw"), Some(3));
        assert_eq!(sockstat_field(text, "TCP", "mem"), Some(2));
        assert_eq!(sockstat_field(text, "UDP", "mem"), Some(4));
        assert_eq!(sockstat_field(text, "TCP", "nothing"), None);
    }

    #[test]
    fn a_connection_is_established_on_both_ends_of_its_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _server = listener.accept().unwrap();
        assert_eq!(
            sockets_on_port(port, TcpState::Established).unwrap(),
            (1, 1)
        );
        assert_eq!(sockets_on_port(port, TcpState::TimeWait).unwrap(), (0, 0));
    }

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
    fn a_child_is_a_descendant_and_pss_is_read() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = descendants(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
        let (pss, anon) = pss_bytes(std::process::id()).unwrap();
        assert!(pss > 0 && pss <= read_proc(None).unwrap().rss_bytes * 2);
        assert!(anon > 0 && anon < pss);
    }

    #[test]
    fn fd_limit_is_raised_to_hard() {
        let (soft, hard) = raise_fd_limit().unwrap();
        assert_eq!(soft, hard);
    }
}
