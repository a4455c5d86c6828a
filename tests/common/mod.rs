//! What every integration test needs: a real `c10k` server process on a port the OS picked,
//! and small raw-socket helpers for talking HTTP to it byte by byte.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any single read in a test may wait before the test fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A server process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
}

impl Server {
    /// Starts `c10k serve --listen 127.0.0.1:0 ARGS...` and waits for `listening on ADDR`.
    pub fn start(args: &[&str]) -> Server {
        Server::spawn(Server::command(args))
    }

    /// `start`, with one resource limit (soft and hard) set in the server before `exec`.
    pub fn start_with_limit(
        resource: libc::__rlimit_resource_t,
        limit: u64,
        args: &[&str],
    ) -> Server {
        use std::os::unix::process::CommandExt;
        let mut cmd = Server::command(args);
        // SAFETY: between fork and exec only setrlimit(2) runs, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Server::spawn(cmd)
    }

    /// `start`, with the server's stderr written to the file `log`.
    pub fn start_logged(args: &[&str], log: &std::path::Path) -> Server {
        let mut cmd = Server::command(args);
        cmd.stderr(std::fs::File::create(log).expect("create the server log"));
        Server::spawn(cmd)
    }

    fn command(args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_c10k"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd
    }

    fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.spawn().expect("start c10k serve");
        let stdout = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from server: {line:?}"))
            .parse()
            .expect("server address");
        Server { addr, child }
    }

    /// CPU time (user + system) the server has used so far, from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("server stat");
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a configuration value.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / per_sec)
    }

    /// A connected socket with read and write timeouts.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /stats`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let mut s = self.connect();
        s.write_all(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut s);
        assert_eq!(resp.status, 200);
        serde_json::from_slice(&resp.body).expect("stats JSON")
    }

    /// Polls `/stats` until `pred` holds (or fails the test after `IO_TIMEOUT`).
    pub fn wait_stats(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let s = self.stats();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last stats {s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
}

impl Response {
    /// A response from its parsed head and decoded body.
    pub fn new(head: &c10k_lab::proto::http::ResponseHead, body: Vec<u8>) -> Response {
        Response {
            status: head.status,
            headers: head
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one complete response (Content-Length, chunked, or until close) from `s`.
pub fn read_response(s: &mut TcpStream) -> Response {
    use c10k_lab::proto::http::{parse_response_head, BodyDecoder, BodyFraming};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head, used) = loop {
        if let Some(found) = parse_response_head(&buf).expect("valid response head") {
            break found;
        }
        let n = s.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut rest = buf.split_off(used);
    let mut body = Vec::new();
    let mut decoder = BodyDecoder::new(head.body, u64::MAX);
    loop {
        let n = decoder.decode(&rest, &mut body).expect("valid body");
        rest.drain(..n);
        if decoder.is_done() || head.body == BodyFraming::None {
            break;
        }
        let n = s.read(&mut chunk).expect("read body");
        if n == 0 {
            assert_eq!(
                head.body,
                BodyFraming::UntilClose,
                "connection closed mid-body"
            );
            break;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    Response::new(&head, body)
}

/// Reads the head of a response that has no content (the answer to a HEAD); a body that the
/// server sends anyway is left in the socket, where it breaks the next response read.
pub fn read_head_only(s: &mut TcpStream) -> Response {
    use c10k_lab::proto::http::parse_response_head;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if let Some((head, used)) = parse_response_head(&buf).expect("valid response head") {
            assert_eq!(used, buf.len());
            return Response::new(&head, Vec::new());
        }
        // A byte at a time, so nothing past the head is taken from the socket.
        let n = s.read(&mut byte).expect("read response head");
        assert!(n > 0, "connection closed before a response head");
        buf.push(byte[0]);
    }
}

/// Sends `raw` on a fresh connection and reads one response.
pub fn roundtrip(server: &Server, raw: &[u8]) -> (TcpStream, Response) {
    let mut s = server.connect();
    s.write_all(raw).expect("send request");
    let r = read_response(&mut s);
    (s, r)
}

/// Whether the peer closed the connection (EOF) within `IO_TIMEOUT`, discarding any bytes.
pub fn closes(s: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

impl Server {
    /// Sends SIGTERM and returns at once, so a test can watch what its clients receive while the
    /// server shuts down; `wait_exit` then collects the exit status.
    pub fn send_sigterm(&self) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the process to exit, failing the test after `IO_TIMEOUT`.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether anything arrives on `s` within `wait` (left unread). An outcome check: `false` means
/// the server has not answered, not that it is slow.
pub fn answered_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let got = match s.peek(&mut byte) {
        Ok(n) => n > 0,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        Err(e) => panic!("reading: {e}"),
    };
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    got
}

/// Opens SSE subscriptions until one gets no answer — the server is out of descriptors and the
/// connection waits in its listen backlog — and returns the answered ones (responses unread)
/// and the waiting one. Fails the test if `max` answered first.
pub fn subscribe_until_unanswered(server: &Server, max: usize) -> (Vec<TcpStream>, TcpStream) {
    let mut held = Vec::new();
    loop {
        assert!(held.len() < max, "the descriptor limit was never reached");
        let mut s = server.connect();
        s.write_all(b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        if !answered_within(&mut s, Duration::from_millis(500)) {
            return (held, s);
        }
        held.push(s);
    }
}
