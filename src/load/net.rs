//! The socket edge of the load generator: non-blocking connects (optionally from a chosen
//! loopback source address), the ephemeral port range, and the mapping from an OS error to the
//! failure cause the report counts.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::report::Failures;

/// Why a connection failed; one field of [`Failures`] each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Refused,
    TimedOut,
    AddrNotAvail,
    Emfile,
    Reset,
    ClosedByServer,
    HttpError,
    Other,
}

impl Cause {
    /// The name of this cause's field in [`Failures`].
    pub fn name(self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::TimedOut => "timed_out",
            Cause::AddrNotAvail => "addr_not_avail",
            Cause::Emfile => "emfile",
            Cause::Reset => "reset",
            Cause::ClosedByServer => "closed_by_server",
            Cause::HttpError => "http_error",
            Cause::Other => "other",
        }
    }

    /// Adds one to this cause's counter.
    pub fn count(self, failures: &mut Failures) {
        let field = match self {
            Cause::Refused => &mut failures.refused,
            Cause::TimedOut => &mut failures.timed_out,
            Cause::AddrNotAvail => &mut failures.addr_not_avail,
            Cause::Emfile => &mut failures.emfile,
            Cause::Reset => &mut failures.reset,
            Cause::ClosedByServer => &mut failures.closed_by_server,
            Cause::HttpError => &mut failures.http_error,
            Cause::Other => &mut failures.other,
        };
        *field += 1;
    }

    /// The cause an OS error stands for.
    pub fn of(e: &io::Error) -> Cause {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Cause::Refused,
            Some(libc::ETIMEDOUT) => Cause::TimedOut,
            Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => Cause::AddrNotAvail,
            Some(libc::EMFILE) | Some(libc::ENFILE) => Cause::Emfile,
            Some(libc::ECONNRESET) | Some(libc::ECONNABORTED) => Cause::Reset,
            Some(libc::EPIPE) => Cause::ClosedByServer,
            _ => Cause::Other,
        }
    }
}

/// Starts a non-blocking connect to `target`, from `source` (any port) when given. The connect
/// is usually still in progress on return: the socket turns writable when it completes.
pub fn start_connect(target: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<Socket> {
    // socket2 opens sockets with SOCK_CLOEXEC, so worker processes inherit none of them.
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    // Requests are tiny and latency is what is measured.
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        // Pick the port at connect time, from the full 4-tuple, instead of reserving one at bind
        // time that no other destination could reuse. Best effort: old kernels lack it.
        let _ = set_bind_address_no_port(&socket);
        socket.bind(&SockAddr::from(SocketAddr::new(IpAddr::V4(ip), 0)))?;
    }
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket)
}

/// `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+).
fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How many ephemeral ports the kernel hands out (`net.ipv4.ip_local_port_range`), or the
/// usual default when it cannot be read.
pub fn ephemeral_ports() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            (hi >= lo).then_some(hi - lo + 1)
        })
        .unwrap_or(28_232)
}

/// Connections one source address should carry to one target. Linux's `connect()` searches
/// for a free ephemeral port in one half of the range first; once that half is taken, every
/// further `connect()` walks it in vain before trying the other half, and the load generator
/// spends its time in the kernel's port search instead of opening connections (measured here:
/// the ramp stalled at about 14,100 connections, half of a 28,232-port range). Staying below
/// that half, with headroom for `TIME_WAIT` and other programs, keeps `connect()` cheap.
pub fn per_source_capacity() -> u64 {
    (ephemeral_ports() * 2 / 5).max(1)
}

/// `count` loopback source addresses, 127.0.0.2 upwards.
pub fn loopback_sources(count: u64) -> Vec<Ipv4Addr> {
    let base = u32::from(Ipv4Addr::new(127, 0, 0, 2));
    (0..count)
        .map(|i| Ipv4Addr::from(base + i as u32))
        .collect()
}

/// The most source addresses `loopback_sources` may hand out (127.0.0.2 up to 127.255.255.254).
pub const MAX_SOURCES: u64 = (1 << 24) - 3;

/// This machine's count of connections its listening sockets dropped since boot (`ListenDrops`
/// in `/proc/net/netstat`: a handshake completed into a full accept queue, above all), or `None`
/// where it cannot be read.
pub fn listen_drops() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    netstat_field(&text, "TcpExt", "ListenDrops")
}

/// Field `name` of the `group` lines of a `/proc/net/netstat` text: a line of names, then a line
/// of values.
fn netstat_field(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_fields_are_found_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 15\nIpExt: InNoRoutes\nIpExt: 3\n";
        assert_eq!(netstat_field(text, "TcpExt", "ListenDrops"), Some(15));
        assert_eq!(netstat_field(text, "IpExt", "InNoRoutes"), Some(3));
        assert_eq!(netstat_field(text, "TcpExt", "Missing"), None);
        assert!(
            listen_drops().is_some(),
            "/proc/net/netstat has ListenDrops"
        );
    }

    #[test]
    fn causes_from_errors() {
        let e = |code| io::Error::from_raw_os_error(code);
        assert_eq!(Cause::of(&e(libc::ECONNREFUSED)), Cause::Refused);
        assert_eq!(Cause::of(&e(libc::EADDRNOTAVAIL)), Cause::AddrNotAvail);
        assert_eq!(Cause::of(&e(libc::EMFILE)), Cause::Emfile);
        assert_eq!(Cause::of(&e(libc::ECONNRESET)), Cause::Reset);
        assert_eq!(Cause::of(&e(libc::EPIPE)), Cause::ClosedByServer);
        assert_eq!(Cause::of(&e(libc::EHOSTUNREACH)), Cause::Other);
        let mut f = Failures::default();
        Cause::Refused.count(&mut f);
        Cause::Other.count(&mut f);
        assert_eq!((f.refused, f.other, f.total()), (1, 1, 2));
    }

    #[test]
    fn sources_walk_up_from_127_0_0_2() {
        let s = loopback_sources(300);
        assert_eq!(s[0], Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(s[253], Ipv4Addr::new(127, 0, 0, 255));
        assert_eq!(s[254], Ipv4Addr::new(127, 0, 1, 0));
        assert!(ephemeral_ports() > 0);
    }
}
