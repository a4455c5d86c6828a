//! The load generator against real sockets: every kind against the evented server, failures
//! classified against a port with nothing listening and against small misbehaving servers, the
//! split over worker processes, source addresses, how a run closes its connections, and the
//! JSON it writes read back as the public report types. Counts and classifications are
//! asserted, never timings.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use c10k_lab::load::{Report, Second};

/// A run's output: the per-second JSON lines and the final report.
struct Run {
    seconds: Vec<Second>,
    report: Report,
}

/// Runs `c10k load --target TARGET ARGS... --progress json --json TMP` and parses what it wrote.
fn load(target: SocketAddr, args: &[&str]) -> Run {
    let target = target.to_string();
    load_with(&[&["--target", &target], args].concat())
}

/// Runs `c10k load ARGS... --progress json --json TMP` and parses what it wrote.
fn load_with(args: &[&str]) -> Run {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "c10k-load-test-{}-{}.json",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .arg("load")
        .args(args)
        .args(["--progress", "json", "--json"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start c10k load");
    // Every run here is bounded by its own ramp and hold; this only keeps a bug from hanging
    // the suite.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for c10k load") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("c10k load did not finish by itself");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "c10k load failed: {stderr}");
    let seconds: Vec<Second> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("progress line is not a Second ({e}): {line}"))
        })
        .collect();
    let json = std::fs::read(&path).expect("the report file");
    let _ = std::fs::remove_file(&path);
    let report: Report = serde_json::from_slice(&json).expect("the report parses as Report");
    Run { seconds, report }
}

/// A fast run: connections opened within 0.1 s, held 1 s, probing every 100 ms.
const FAST: &[&str] = &[
    "--ramp-per-sec",
    "300",
    "--hold-s",
    "1",
    "--probe-ms",
    "100",
];

fn evented() -> Server {
    Server::start(&["--model", "evented", "--tick-ms", "50"])
}

/// Every connection attempted is connecting, open or failed, in every second.
fn assert_conserved(seconds: &[Second]) {
    for s in seconds {
        assert_eq!(
            s.attempted,
            s.connecting + s.open + s.failed.total(),
            "at t={}: {s:?}",
            s.t_s
        );
    }
}

fn assert_clean_run(run: &Run, connections: u64) {
    assert_conserved(&run.seconds);
    let t = &run.report.totals;
    assert_eq!(t.attempted, connections);
    assert_eq!(t.established, connections, "{:?}", t.failed);
    assert_eq!(t.failed_total, 0, "{:?}", t.failed);
    assert_eq!(t.peak_open, connections);
    assert!(t.events > 0, "no events received");
    assert!(t.event_p50_us.is_some() && t.event_max_us.is_some());
    assert!(t.event_p50_us <= t.event_p99_us && t.event_p99_us <= t.event_max_us);
    assert!(t.probes_answered > 0);
    assert_eq!(
        t.probes_answered + t.probe_timeouts + t.probe_errors,
        t.probes_sent
    );
    assert_eq!(t.probe_errors, 0);
    // Every event published while all connections were open reached all of them.
    assert!(t.delivery.seqs > 0);
    assert_eq!(t.delivery.min_fraction, Some(1.0));
    // The progress lines are the report's seconds.
    assert!(!run.seconds.is_empty());
    assert_eq!(run.seconds, run.report.seconds);
    let last = run.seconds.last().unwrap();
    assert_eq!((last.open, last.established), (connections, connections));
    assert_eq!(
        run.seconds.iter().map(|s| s.events).sum::<u64>(),
        t.events,
        "per-second events add up to the total"
    );
}

fn kind_against_evented(kind: &str) {
    let server = evented();
    let mut args = vec!["--kind", kind, "--connections", "30"];
    args.extend_from_slice(FAST);
    let pid = server.child.id().to_string();
    args.extend(["--server-pid", pid.as_str()]);
    let run = load(server.addr, &args);
    assert_clean_run(&run, 30);
    assert_eq!(run.report.kind, kind);
    assert_eq!(run.report.processes, 1);
    let peak = run.report.totals.server_peak.expect("server sampled");
    assert_eq!(peak.threads, 1, "the evented server is one thread");
    assert!(
        peak.fds >= 30,
        "the server holds a descriptor per connection"
    );
}

#[test]
fn sse_against_evented() {
    kind_against_evented("sse");
}

#[test]
fn websocket_against_evented() {
    kind_against_evented("ws");
}

#[test]
fn stream_against_evented() {
    kind_against_evented("stream");
}

#[test]
fn long_poll_against_evented() {
    kind_against_evented("poll");
}

#[test]
fn nothing_listening_is_refused() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut args = vec!["--connections", "20"];
    args.extend_from_slice(FAST);
    let run = load(target, &args);
    assert_conserved(&run.seconds);
    let t = &run.report.totals;
    assert_eq!(t.attempted, 20);
    assert_eq!(t.established, 0);
    assert_eq!(t.failed.refused, 20, "{:?}", t.failed);
    assert_eq!(t.failed_total, 20);
    assert_eq!(t.events, 0);
    assert_eq!(t.event_p50_us, None);
    assert_eq!(t.probes_answered, 0);
    assert_eq!(t.probe_errors, t.probes_sent);
}

#[test]
fn workers_split_and_merge() {
    let server = evented();
    let mut args = vec![
        "--kind",
        "sse",
        "--connections",
        "30",
        "--max-per-process",
        "10",
    ];
    args.extend_from_slice(FAST);
    let run = load(server.addr, &args);
    assert_eq!(run.report.processes, 3);
    assert_clean_run(&run, 30);
}

#[test]
fn connections_spread_over_source_addresses() {
    let server = evented();
    let mut args = vec!["--kind", "ws", "--connections", "24", "--source-addrs", "3"];
    args.extend_from_slice(FAST);
    let run = load(server.addr, &args);
    assert_eq!(run.report.source_addrs, 3);
    assert_clean_run(&run, 24);
}

/// A server that reads each request head and answers `reply`, then holds the connection (and
/// closes it when `close` is set).
fn fake_server(reply: &'static [u8], close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(reply);
            if !close {
                held.push(conn);
            }
        }
    });
    addr
}

#[test]
fn error_statuses_and_server_closes_are_classified() {
    let mut args = vec!["--connections", "10", "--probe-ms", "0"];
    args.extend_from_slice(&FAST[..4]);
    let addr = fake_server(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    let t = load(addr, &args).report.totals;
    assert_eq!(
        (t.failed.http_error, t.failed_total),
        (10, 10),
        "{:?}",
        t.failed
    );

    let addr = fake_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
        true,
    );
    let t = load(addr, &args).report.totals;
    assert_eq!(t.established, 10);
    assert_eq!(
        (t.failed.closed_by_server, t.failed_total),
        (10, 10),
        "{:?}",
        t.failed
    );
}

#[test]
fn a_silent_server_times_out_and_the_run_still_ends() {
    // Accepted by the kernel (the listen backlog), never answered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let run = load(
        addr,
        &[
            "--connections",
            "10",
            "--ramp-per-sec",
            "100",
            "--hold-s",
            "1",
            "--timeout-ms",
            "300",
            "--probe-ms",
            "100",
            "--probe-timeout-ms",
            "300",
        ],
    );
    let t = &run.report.totals;
    assert_eq!(t.established, 0);
    assert_eq!(
        (t.failed.timed_out, t.failed_total),
        (10, 10),
        "{:?}",
        t.failed
    );
    assert!(t.probe_timeouts > 0);
    assert_eq!(t.probes_answered, 0);
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(listener);
}

/// Twenty connections asked for at once from a server that never answers, each given 300 ms.
const UNANSWERED: &[&str] = &[
    "--connections",
    "20",
    "--ramp-per-sec",
    "1000",
    "--hold-s",
    "0",
    "--timeout-ms",
    "300",
    "--probe-ms",
    "0",
];

#[test]
fn the_ramp_waits_for_a_server_that_does_not_answer_instead_of_overrunning_it() {
    // Handshakes complete into the listen backlog; no response ever comes, so each connection
    // stays pending until its timeout.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for split in [&[][..], &["--max-per-process", "10"][..]] {
        let run = load(
            addr,
            &[UNANSWERED, &["--max-connecting", "4"], split].concat(),
        );
        let t = &run.report.totals;
        assert_eq!((t.attempted, t.failed.timed_out), (20, 20), "{t:?}");
        for second in &run.seconds {
            assert!(second.connecting <= 4, "{second:?}");
        }
        // Five rounds of four pending connections, each waiting out its 300 ms: not the 20 ms
        // the ramp asked for.
        assert!(t.ramp_s >= 1.2, "ramp {} s", t.ramp_s);
        assert!(run.report.duration_s >= t.ramp_s);
        assert_eq!(run.report.max_connecting, 4);
    }
    drop(listener);
}

#[test]
fn handshakes_dropped_at_a_full_accept_queue_are_reported() {
    // A backlog of one, never accepted: the kernel drops the handshakes that do not fit.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(1).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let run = load(addr, UNANSWERED);
    let t = &run.report.totals;
    assert_eq!(t.failed.timed_out, 20, "{t:?}");
    assert!(t.listen_drops.is_some_and(|d| d > 0), "{t:?}");
    drop(socket);
}

#[test]
fn json_dash_prints_the_report_after_the_progress_lines() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["load", "--target", &format!("127.0.0.1:{port}")])
        .args(["--connections", "3", "--json", "-"])
        .args(FAST)
        .stderr(Stdio::null())
        .output()
        .expect("run c10k load");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let start = text
        .find("\n{")
        .expect("a JSON document after the progress lines")
        + 1;
    assert!(text[..start].lines().all(|l| l.starts_with("t=")), "{text}");
    let report: Report = serde_json::from_str(&text[start..]).expect("the report");
    assert_eq!(report.totals.failed.refused, 3);
}

#[test]
fn a_bad_answer_after_the_head_is_a_failure_not_an_open_connection() {
    let mut args = vec!["--connections", "10", "--probe-ms", "0"];
    args.extend_from_slice(&FAST[..4]);
    // A 101 whose accept key is wrong, and a /stream answer that is not chunked: the head
    // arrives, then the check fails in the same read.
    for (kind, reply) in [
        (
            "ws",
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n"[..],
        ),
        (
            "stream",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..],
        ),
    ] {
        let addr = fake_server(reply, false);
        let mut args = args.clone();
        args.extend(["--kind", kind]);
        let run = load(addr, &args);
        assert_conserved(&run.seconds);
        let t = &run.report.totals;
        assert_eq!((t.established, t.peak_open), (0, 0), "{kind}: {t:?}");
        assert_eq!((t.failed.other, t.failed_total), (10, 10), "{kind}: {:?}", t.failed);
        assert_eq!(run.seconds.last().map(|s| s.open), Some(0));
    }
}

/// A small SSE server that is not the contract's: events at `/events?room=1`, only for a
/// request with `X-Token: secret` (401 otherwise), each carrying its send time in milliseconds
/// as `ts`, every 50 ms, and no `seq`; `GET /health` answers `204`.
fn foreign_sse_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if head.starts_with("get /health http/1.1\r\n") {
                    let _ =
                        stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                    return;
                }
                let authorized = head.starts_with("get /events?room=1 http/1.1\r\n")
                    && head.contains("\r\nx-token: secret\r\n");
                if !authorized {
                    let _ = stream.write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
                );
                loop {
                    let ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis();
                    let event = format!("event: note\ndata: {{\"ts\":{ms},\"text\":\"hi\"}}\n\n");
                    if stream.write_all(event.as_bytes()).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    });
    addr
}

#[test]
fn a_foreign_sse_server_through_url_header_and_a_millisecond_timestamp() {
    let addr = foreign_sse_server();
    let url = format!("http://{addr}/events?room=1");
    let common = ["--url", &url, "--connections", "4", "--ramp-per-sec", "100"];
    let run = load_with(
        &[
            &common[..],
            &[
                "--hold-s",
                "1",
                "-H",
                "X-Token: secret",
                "--timestamp",
                "ts",
            ],
            &[
                "--probe-ms",
                "100",
                "--probe-url",
                &format!("http://{addr}/health"),
            ],
            &["--probe-status", "204"],
        ]
        .concat(),
    );
    let t = &run.report.totals;
    assert!(t.probes_answered > 0, "{t:?}");
    assert_eq!((t.probe_errors, t.probe_timeouts), (0, 0), "{t:?}");
    assert_eq!(run.report.target, url);
    assert_eq!(t.established, 4, "{t:?}");
    assert_eq!(t.failed_total, 0, "{t:?}");
    assert!(t.events >= 4, "{t:?}");
    // Milliseconds read as milliseconds: a latency, not 55 years.
    let p99 = t.event_p99_us.expect("delivery latency from the ts field");
    assert!(p99 < 10_000_000, "{t:?}");
    assert!(
        run.report.summary().contains("needs events with a seq"),
        "{}",
        run.report.summary()
    );

    // Without the field the server asks for: every connection is refused with its status.
    let run = load_with(&[&common[..], &["--hold-s", "0", "--probe-ms", "0"]].concat());
    let t = &run.report.totals;
    assert_eq!((t.established, t.failed.http_error), (0, 4), "{t:?}");
    let first = &t.first_failures["http_error"];
    assert!(first.starts_with("HTTP/1.1 401 Unauthorized | "), "{first}");
    assert!(run
        .report
        .summary()
        .contains("first http_error: HTTP/1.1 401"));

    // Without --timestamp: events counted, latency not measured, and the summary says why.
    let run = load_with(
        &[
            &common[..],
            &["--hold-s", "1", "--probe-ms", "0", "-H", "X-Token: secret"],
        ]
        .concat(),
    );
    let t = &run.report.totals;
    assert!(t.events >= 4 && t.event_p50_us.is_none(), "{t:?}");
    // What can be measured without a send time: the gaps between events (50 ms apart here).
    let gap = t.gap_p50_us.expect("gaps between events");
    assert!((10_000..5_000_000).contains(&gap), "{t:?}");
    assert!(
        run.report.summary().contains("events/s"),
        "{}",
        run.report.summary()
    );
    assert!(
        run.report.summary().contains("--timestamp"),
        "{}",
        run.report.summary()
    );
}

#[test]
fn the_contract_through_url_on_both_models() {
    for model in ["evented", "blocking"] {
        let server = Server::start(&["--model", model, "--tick-ms", "50"]);
        for (url, kind) in [
            (format!("http://{}/sse", server.addr), "sse"),
            (format!("http://{}/stream", server.addr), "stream"),
            (format!("http://{}/poll", server.addr), "poll"),
            (format!("ws://{}/ws", server.addr), "sse"),
        ] {
            let run = load_with(&[
                "--url",
                &url,
                "--kind",
                kind,
                "--connections",
                "3",
                "--ramp-per-sec",
                "100",
                "--hold-s",
                "0.5",
                "--probe-ms",
                "0",
            ]);
            let t = &run.report.totals;
            assert_eq!(
                (t.established, t.failed_total),
                (3, 0),
                "{model} {url}: {t:?}"
            );
            assert!(
                t.events > 0 && t.event_p50_us.is_some(),
                "{model} {url}: {t:?}"
            );
        }
    }
}

#[test]
fn websocket_messages_echoed_by_both_models_are_timed_as_round_trips() {
    for model in ["evented", "blocking"] {
        let server = Server::start(&["--model", model, "--tick-ms", "0"]);
        let url = format!("ws://{}/ws", server.addr);
        let run = load_with(&[
            "--url",
            &url,
            "--connections",
            "3",
            "--ramp-per-sec",
            "100",
            "--hold-s",
            "1",
            "--probe-ms",
            "0",
            "--ws-send",
            r#"{"hello":"{marker}"}"#,
            "--ws-send-every-ms",
            "100",
        ]);
        let t = &run.report.totals;
        assert_eq!((t.established, t.failed_total), (3, 0), "{model}: {t:?}");
        // Each connection sends about ten in its second; the echoes are round trips, not events.
        assert!(t.echoes >= 6, "{model}: {t:?}");
        assert!(
            t.echo_p50_us.is_some() && t.echo_p99_us < Some(10_000_000),
            "{model}: {t:?}"
        );
        assert_eq!(t.events, 0, "{model}: {t:?}");
        assert!(run.report.summary().contains("round trip"), "{model}");
    }
}

#[test]
fn source_addresses_given_by_hand() {
    let server = Server::start(&["--model", "evented"]);
    let addr = server.addr.to_string();
    let run = load_with(&[
        "--target",
        &addr,
        "--connections",
        "4",
        "--ramp-per-sec",
        "100",
        "--hold-s",
        "0.2",
        "--probe-ms",
        "0",
        "--source-ip",
        "127.0.0.7",
        "--source-ip",
        "127.0.0.8",
    ]);
    assert_eq!(run.report.totals.established, 4, "{:?}", run.report.totals);
    assert_eq!(run.report.source_addrs, 2);
    // An address this machine does not have: every connect fails binding to it.
    let run = load_with(&[
        "--target",
        &addr,
        "--connections",
        "2",
        "--ramp-per-sec",
        "100",
        "--hold-s",
        "0",
        "--probe-ms",
        "0",
        "--source-ip",
        "192.0.2.1",
    ]);
    let t = &run.report.totals;
    assert_eq!((t.established, t.failed.addr_not_avail), (0, 2), "{t:?}");
}

#[test]
fn the_run_ends_with_resets_and_a_failure_mid_run_closes_with_a_fin() {
    use c10k_lab::sys::{sockets_on_port, TcpState};
    // The end of the run: every connection reset, so no TIME_WAIT on either end (a FIN from
    // the client, which closes first, would leave one per connection on its side).
    let server = evented();
    let mut args = vec!["--connections", "30", "--probe-ms", "0"];
    args.extend_from_slice(&FAST[..4]);
    let t = load(server.addr, &args).report.totals;
    assert_eq!((t.established, t.failed_total), (30, 0), "{t:?}");
    assert_eq!(
        sockets_on_port(server.addr.port(), TcpState::TimeWait).unwrap(),
        (0, 0)
    );
    // A server that closes after its head: the client answers the FIN with its own, as any
    // client would, so the server (which closed first) keeps a TIME_WAIT per connection.
    let addr = fake_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
        true,
    );
    let t = load(addr, &args).report.totals;
    assert_eq!(t.failed.closed_by_server, 30, "{:?}", t.failed);
    assert_eq!(
        sockets_on_port(addr.port(), TcpState::TimeWait).unwrap(),
        (30, 0)
    );
}

#[test]
fn a_run_that_polls_before_sleeping_is_as_complete_and_says_so() {
    let server = evented();
    let mut args = vec!["--connections", "30", "--busy-poll-us", "50"];
    args.extend_from_slice(FAST);
    let run = load(server.addr, &args);
    assert_clean_run(&run, 30);
    assert_eq!(run.report.busy_poll_us, 50);
}
