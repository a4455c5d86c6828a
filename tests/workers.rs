//! `serve --workers N`: several processes, one server. Each case finds a connection on every
//! worker (asking `/stats` on it which worker answered) and checks that they all see one event
//! stream, and that the server's processes come and go together.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{read_response, Server, IO_TIMEOUT};
use serde_json::Value;

const WORKERS: usize = 4;

/// A keep-alive connection and the worker that serves it.
struct OnWorker {
    sock: TcpStream,
    worker: u64,
}

fn get(sock: &mut TcpStream, target: &str, extra: &str) -> common::Response {
    write!(sock, "GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").unwrap();
    read_response(sock)
}

fn stats_on(sock: &mut TcpStream) -> Value {
    let r = get(sock, "/stats", "");
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("stats JSON")
}

/// The pid of each worker that answered, by worker index.
fn worker_pids(stats: &Value) -> Vec<(u64, i32)> {
    let workers = stats["workers"].as_array().expect("a per-worker breakdown");
    let field = |w: &Value, key| w[key].as_u64().expect("worker and pid");
    workers
        .iter()
        .map(|w| (field(w, "worker"), field(w, "pid") as i32))
        .collect()
}

/// One connection on each worker. With one shared socket the first idle worker takes every
/// connection, so each worker that has one is stopped (SIGSTOP) to let the next take the next —
/// which also shows that a stopped worker leaves new connections to the others. With a socket
/// per worker the kernel's hash spreads them by itself (and would queue some behind a stopped
/// worker).
fn one_on_each_worker(server: &Server, reuse_port: bool) -> Vec<OnWorker> {
    let mut found: Vec<OnWorker> = Vec::new();
    let mut stopped = Vec::new();
    let deadline = Instant::now() + IO_TIMEOUT * 3;
    while found.len() < WORKERS {
        assert!(
            Instant::now() < deadline,
            "no connection reached some worker"
        );
        let mut sock = server.connect();
        let stats = stats_on(&mut sock);
        let worker = stats["worker"].as_u64().expect("which worker answered");
        if found.iter().any(|c| c.worker == worker) {
            continue;
        }
        let pids = worker_pids(&stats);
        let &(_, pid) = pids.iter().find(|(w, _)| *w == worker).unwrap();
        found.push(OnWorker { sock, worker });
        if !reuse_port && found.len() < WORKERS {
            // SAFETY: kill(2) on a worker of our own server.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            // Until it has stopped, it may still take (and then sit on) the next connection.
            wait_state(pid, 'T');
            stopped.push(pid);
        }
    }
    for pid in stopped {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
    found
}

fn publish(server: &Server, text: &str) -> (u64, u64) {
    let mut s = server.connect();
    write!(
        s,
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    (
        v["seq"].as_u64().unwrap(),
        v["subscribers"].as_u64().unwrap(),
    )
}

/// Reads SSE events (`id` and `data` lines) off a subscribed connection, after its head.
struct Events {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Events {
    fn subscribe(mut sock: TcpStream, last_event_id: Option<u64>) -> Events {
        let extra = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        write!(sock, "GET /sse HTTP/1.1\r\nHost: t\r\n{extra}\r\n").unwrap();
        let mut events = Events {
            sock,
            buf: Vec::new(),
        };
        let head = events.until(b"\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        events
    }

    fn until(&mut self, end: &[u8]) -> String {
        use std::io::Read;
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                let text = String::from_utf8(self.buf.drain(..at + end.len()).collect()).unwrap();
                return text;
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk).expect("read the stream");
            assert!(n > 0, "the stream ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next event's id and its JSON.
    fn next(&mut self) -> (u64, Value) {
        let event = self.until(b"\n\n");
        let field = |name: &str| {
            event
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {event:?}"))
                .to_string()
        };
        let id = field("id: ").parse().unwrap();
        (id, serde_json::from_str(&field("data: ")).unwrap())
    }
}

fn args(reuse_port: bool) -> Vec<&'static str> {
    let mut args = vec!["--model", "evented", "--workers", "4", "--tick-ms", "0"];
    if reuse_port {
        args.push("--reuse-port");
    }
    args
}

fn one_stream_on_every_worker(reuse_port: bool) {
    let server = Server::start(&args(reuse_port));
    let conns = one_on_each_worker(&server, reuse_port);
    for i in 1..=3 {
        assert_eq!(publish(&server, &format!("before {i}")), (i, 0));
    }
    // The same history on every worker, by long poll and by Last-Event-ID.
    let mut subscribers = Vec::new();
    for mut c in conns {
        let r = get(&mut c.sock, "/poll?after=1", "");
        let seqs: Vec<u64> = serde_json::from_slice::<Vec<Value>>(&r.body)
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [2, 3], "/poll?after=1 on worker {}", c.worker);
        let mut events = Events::subscribe(c.sock, Some(1));
        for seq in 2..=3 {
            let (id, json) = events.next();
            assert_eq!(
                (id, json["data"].as_str()),
                (seq, Some(&*format!("before {seq}")))
            );
        }
        subscribers.push(events);
    }
    server.wait_stats("a subscriber on every worker", |s| {
        s["connections"]["sse"] == WORKERS
            && s["workers"]
                .as_array()
                .is_some_and(|w| w.iter().all(|w| w["connections"]["sse"] == 1))
    });
    // A publish on any worker reaches all of them, with one number, and counts them all.
    assert_eq!(publish(&server, "live"), (4, WORKERS as u64));
    for events in &mut subscribers {
        let (id, json) = events.next();
        assert_eq!(
            (id, json["seq"].as_u64(), json["data"].as_str()),
            (4, Some(4), Some("live"))
        );
    }
}

#[test]
fn one_stream_on_every_worker_sharing_a_socket() {
    one_stream_on_every_worker(false);
}

#[test]
fn one_stream_on_every_worker_with_a_socket_each() {
    one_stream_on_every_worker(true);
}

#[test]
fn stats_add_up_the_workers() {
    let server = Server::start(&args(false));
    let mut conns = one_on_each_worker(&server, false);
    let stats = stats_on(&mut conns[0].sock);
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), WORKERS);
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(w["worker"], i, "in order");
        assert_eq!(w["threads"], 1, "each worker is one thread");
        assert!(w["connections"]["http"].as_u64().unwrap() >= 1);
    }
    let sum = |key: &str| {
        workers
            .iter()
            .map(|w| w[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(stats["accepted"], sum("accepted"));
    assert_eq!(stats["connections"]["http"], WORKERS as u64);
    assert!(
        stats["threads"].as_u64().unwrap() > sum("threads"),
        "the supervisor counts too"
    );
    assert!(stats["rss_bytes"].as_u64().unwrap() > sum("rss_bytes"));
    assert_eq!(stats["pid"], server.child.id());
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`...), `None` once it is gone.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits until `done` holds, failing the test with `what` after `IO_TIMEOUT`.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_state(pid: i32, want: char) {
    eventually(&format!("process {pid} never reached state {want}"), || {
        state(pid) == Some(want)
    });
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped: it holds nothing).
fn gone(pid: i32) -> bool {
    matches!(state(pid), None | Some('Z'))
}

fn wait_gone(pids: &[(u64, i32)], what: &str) {
    eventually(&format!("{what}: a worker is still running"), || {
        pids.iter().all(|&(_, p)| gone(p))
    });
}

#[test]
fn sigterm_stops_every_worker_and_exits_0() {
    let mut server = Server::start(&args(false));
    let pids = worker_pids(&server.stats());
    assert_eq!(pids.len(), WORKERS);
    // (How each stream is ended is the contract suite's `sigterm_*` case, run with workers.)
    let status = server.terminate();
    assert!(status.success(), "{status}");
    wait_gone(&pids, "after SIGTERM");
}

#[test]
fn a_killed_server_leaves_no_worker_behind() {
    let mut server = Server::start(&args(true));
    let pids = worker_pids(&server.stats());
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    wait_gone(&pids, "after SIGKILL of the server");
}

#[test]
fn a_dead_worker_is_reported_and_started_again() {
    let log = std::env::temp_dir().join(format!("c10k-workers-{}.log", std::process::id()));
    let server = Server::start_logged(&args(false), &log);
    assert_eq!(publish(&server, "kept").0, 1);
    let before = worker_pids(&server.stats());
    // SAFETY: kill(2) on a worker of our own server.
    unsafe { libc::kill(before[2].1, libc::SIGKILL) };
    let stats = server.wait_stats("worker 2 running again", |s| {
        let pids = worker_pids(s);
        pids.len() == WORKERS && pids[2] != before[2] && pids[..2] == before[..2]
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains(&format!("worker 2 (pid {}) exited", before[2].1))
            && text.contains("starting it again"),
        "{text}"
    );
    // The new worker has the history.
    assert!(stats["workers"][2]["events_published"] == 1, "{stats}");
}
