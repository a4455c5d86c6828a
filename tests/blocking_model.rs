//! The blocking model over real sockets: what its threads cost and where it runs out of them.
//! A pool is exhausted by long-lived clients (the probe waits until one leaves), the unbounded
//! model answers past 100 subscribers at one thread each, a WebSocket costs two threads, thread
//! creation refused by the OS is answered `503`, and the answers are byte for byte the evented
//! server's. Outcomes are asserted, never durations: a short read timeout only ever shows that
//! nothing arrived.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use c10k_lab::proto::ws;
use common::*;

const PROBE: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
const SSE: &[u8] = b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n";
const WS_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Reads a response head (up to the blank line) byte by byte, leaving what follows unread.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "no complete response head ({other:?}); got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Opens an SSE subscription and waits for its response head: the server is serving it.
fn open_sse(server: &Server) -> TcpStream {
    let mut s = server.connect();
    s.write_all(SSE).unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    s
}

/// Opens a WebSocket and waits for the `101`.
fn open_ws(server: &Server) -> TcpStream {
    let mut s = server.connect();
    s.write_all(WS_UPGRADE).unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A masked client frame.
fn client_frame(opcode: ws::OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ws::encode_frame(&mut out, opcode, payload, Some([1, 2, 3, 4]));
    out
}

/// Reads server frames until a close frame; returns its code.
fn read_until_close(s: &mut TcpStream) -> Option<u16> {
    let mut dec = ws::Decoder::new(ws::Role::Client, 1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let mut used = 0;
        while used < n {
            let (k, msg) = dec.decode(&buf[used..n]).expect("valid server frames");
            used += k;
            match msg {
                Some(ws::Message::Close(code)) => return code.map(|(c, _)| c),
                Some(_) => {}
                None => break,
            }
        }
    }
}

/// Sends the probe on a fresh connection. Returns the connection for the caller to read.
fn send_probe(server: &Server) -> TcpStream {
    let mut s = server.connect();
    s.write_all(PROBE).unwrap();
    s
}

fn stat(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut v = v;
    for key in path {
        v = &v[*key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("no {path:?} in stats {v}"))
}

/// A blocking server with a thread per connection, plus `extra` flags.
fn unbounded(extra: &[&str]) -> Server {
    Server::start(
        &[
            &["--model", "blocking", "--threads", "unbounded"][..],
            extra,
        ]
        .concat(),
    )
}

/// With every worker held by an SSE client, the probe is accepted but not answered; once one
/// client leaves, its worker takes the probe.
fn pool_starves_then_recovers(threads: usize) {
    let server = Server::start(&[
        "--model",
        "blocking",
        "--threads",
        &threads.to_string(),
        "--tick-ms",
        "100",
    ]);
    // `/stats` itself needs a free worker, so holding is confirmed by each response head.
    let mut clients: Vec<TcpStream> = (0..threads).map(|_| open_sse(&server)).collect();
    let mut probe = send_probe(&server);
    assert!(
        !answered_within(&mut probe, Duration::from_millis(500)),
        "the probe was answered while all {threads} workers were held by SSE clients"
    );
    drop(clients.pop());
    let r = read_response(&mut probe);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    drop(clients);
}

#[test]
fn a_pool_of_two_is_held_by_two_sse_clients() {
    pool_starves_then_recovers(2);
}

#[test]
fn the_sequential_server_is_held_by_one_sse_client() {
    pool_starves_then_recovers(1);
}

#[test]
fn unbounded_threads_answer_the_probe_past_100_subscribers() {
    let server = unbounded(&[]);
    let clients: Vec<TcpStream> = (0..100).map(|_| open_sse(&server)).collect();
    let mut probe = send_probe(&server);
    let r = read_response(&mut probe);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    let s = server.wait_stats("100 SSE subscribers", |s| s["connections"]["sse"] == 100);
    assert_eq!(s["model"], "blocking");
    assert!(
        stat(&s, &["threads"]) >= 101,
        "100 subscribers and the stats request should each hold a thread: {s}"
    );
    drop(clients);
}

/// Threads once only the stats request itself is open, read twice the same in a row (a thread
/// that just closed its socket may still be on its way out).
fn settled_threads(server: &Server) -> u64 {
    let mut last = u64::MAX;
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let s = server.wait_stats("only the stats connection open", |s| {
            s["connections"]["http"] == 1 && s["connections"]["ws"] == 0
        });
        let threads = stat(&s, &["threads"]);
        if threads == last {
            return threads;
        }
        last = threads;
        assert!(Instant::now() < deadline, "thread count never settled");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_websocket_costs_two_threads() {
    let server = unbounded(&[]);
    let before = settled_threads(&server);
    let mut ws = open_ws(&server);
    server.wait_stats("a reader and a writer thread for the WebSocket", |s| {
        s["connections"]["ws"] == 1 && s["threads"] == before + 2
    });
    // The two threads serve it: an echo comes back, the close handshake completes.
    ws.write_all(&client_frame(ws::OpCode::Text, b"hello"))
        .unwrap();
    let mut dec = ws::Decoder::new(ws::Role::Client, 1 << 20);
    let mut buf = [0u8; 256];
    let echo = loop {
        let n = ws.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the echo");
        match dec.decode(&buf[..n]).unwrap() {
            (_, Some(ws::Message::Text(t))) => break t,
            _ => continue,
        }
    };
    assert_eq!(echo, "hello");
    let mut close = Vec::new();
    ws::encode_close(&mut close, ws::close_code::NORMAL, "", Some([9, 9, 9, 9]));
    ws.write_all(&close).unwrap();
    assert_eq!(read_until_close(&mut ws), Some(ws::close_code::NORMAL));
    drop(ws);
    server.wait_stats("both WebSocket threads gone", |s| {
        s["connections"]["ws"] == 0 && s["threads"] == before
    });
}

/// A blocking server started with one resource limit set (soft and hard) before `exec`.
fn start_with_limit(resource: libc::__rlimit_resource_t, limit: u64, args: &[&str]) -> Server {
    let mut all = vec!["--model", "blocking"];
    all.extend_from_slice(args);
    Server::start_with_limit(resource, limit, &all)
}

/// A server whose address space is limited, so a connection thread with a huge stack fits once
/// and a second one does not: the OS really refuses to create the thread (`pthread_create`
/// fails with `EAGAIN` when the stack cannot be mapped). Unlike `RLIMIT_NPROC`, `RLIMIT_AS`
/// also binds root.
fn start_with_address_space_limit(args: &[&str]) -> Server {
    const GIB: u64 = 1 << 30;
    let stack = (2 * GIB).to_string();
    let args = [&["--stack-size", stack.as_str()][..], args].concat();
    start_with_limit(libc::RLIMIT_AS, 3 * GIB, &args)
}

/// `/stats` once a thread is free to answer it (503s in between are expected here).
fn stats_when_answered(
    server: &Server,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let (_, r) = roundtrip(
            server,
            b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        if r.status == 200 {
            let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            if pred(&s) {
                return s;
            }
        } else {
            assert_eq!(r.status, 503);
        }
        assert!(
            Instant::now() < deadline,
            "stats never showed what was expected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_refused_connection_thread_is_answered_503_and_counted() {
    let mut server =
        start_with_address_space_limit(&["--threads", "unbounded", "--tick-ms", "100"]);
    let sse = open_sse(&server);
    let (mut s, r) = roundtrip(&server, PROBE);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"Service Unavailable\n");
    assert!(closes(&mut s));
    // The server is still up: once the SSE client leaves, its thread's place is free again.
    drop(sse);
    let st = stats_when_answered(&server, |s| s["connections"]["sse"] == 0);
    assert!(stat(&st, &["rejected"]) >= 1, "{st}");
    assert!(server.terminate().success());
}

#[test]
fn a_refused_websocket_writer_thread_is_answered_503_instead_of_101() {
    // One worker (with the big stack) exists from the start; the writer thread cannot be made.
    let mut server = start_with_address_space_limit(&["--threads", "1"]);
    let (mut s, r) = roundtrip(&server, WS_UPGRADE);
    assert_eq!(r.status, 503);
    assert!(closes(&mut s));
    let st = server.stats();
    assert_eq!(stat(&st, &["rejected"]), 1, "{st}");
    assert_eq!(stat(&st, &["connections", "ws"]), 0, "{st}");
    assert!(server.terminate().success());
}

#[test]
fn out_of_descriptors_the_server_waits_and_recovers() {
    // A handful of descriptors: the listener, stdio, the signal pipe, and a few connections.
    let server = start_with_limit(
        libc::RLIMIT_NOFILE,
        24,
        &["--threads", "unbounded", "--tick-ms", "100"],
    );
    // Subscribe until a connection is no longer accepted (EMFILE): it waits in the backlog.
    let (mut held, stuck) = subscribe_until_unanswered(&server, 24);
    for s in &mut held {
        let head = read_head(s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let mut probe = send_probe(&server);
    assert!(!answered_within(&mut probe, Duration::from_millis(500)));
    // Descriptors free up: the server accepts again, in order, and answers.
    drop(stuck);
    held.truncate(held.len().saturating_sub(2));
    let r = read_response(&mut probe);
    assert_eq!(r.status, 200);
    drop(held);
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off() {
    let server = unbounded(&["--tick-ms", "0", "--max-write-queue", "65536"]);
    let _stuck = open_sse(&server);
    let mut publisher = server.connect();
    let text = "x".repeat(16 * 1024);
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    // Socket buffers take a few MiB first; after that the mailbox passes its bound.
    let mut cut = false;
    for i in 0..4000 {
        publisher.write_all(request.as_bytes()).unwrap();
        let r = read_response(&mut publisher);
        assert_eq!(r.status, 200);
        if i % 50 == 49 && server.stats()["connections"]["sse"] == 0 {
            cut = true;
            break;
        }
    }
    assert!(cut, "a subscriber that never reads was never cut off");
    let (_, r) = roundtrip(&server, PROBE);
    assert_eq!(r.status, 200);
}

#[test]
fn echo_is_streamed_as_the_body_arrives() {
    let server = Server::start(&["--model", "blocking", "--threads", "2"]);
    let mut s = server.connect();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    let mut first = [0u8; 10];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"5\r\nhello\r\n");
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut last = [0u8; 5];
    s.read_exact(&mut last).unwrap();
    assert_eq!(&last, b"0\r\n\r\n");
}

#[test]
fn shutdown_says_goodbye_on_every_route_and_exits() {
    let mut server = unbounded(&["--tick-ms", "0"]);
    let mut sse = open_sse(&server);
    let mut stream = server.connect();
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    read_head(&mut stream);
    let mut websocket = open_ws(&server);
    let mut poll = server.connect();
    poll.write_all(b"GET /poll HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (mut idle, r) = roundtrip(&server, PROBE);
    assert_eq!(r.status, 200);
    // A WebSocket client that never reads and never closes must not hold the exit up.
    let _stubborn = open_ws(&server);
    server.wait_stats("everyone subscribed", |s| {
        s["connections"]["ws"] == 2 && s["connections"]["poll"] == 1 && s["connections"]["sse"] == 1
    });

    let (tx, rx) = std::sync::mpsc::channel();
    let ws_thread = std::thread::spawn(move || {
        let code = read_until_close(&mut websocket);
        // Complete the handshake as a well-behaved client does.
        let mut close = Vec::new();
        ws::encode_close(
            &mut close,
            ws::close_code::GOING_AWAY,
            "",
            Some([7, 7, 7, 7]),
        );
        let _ = websocket.write_all(&close);
        tx.send(code).unwrap();
    });
    assert!(server.terminate().success());

    assert_eq!(rx.recv().unwrap(), Some(ws::close_code::GOING_AWAY));
    ws_thread.join().unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.ends_with(b"0\r\n\r\n"), "{rest:?}");
    let r = read_response(&mut poll);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"[]"[..]));
    assert!(closes(&mut sse));
    assert!(closes(&mut idle));
}

/// Everything a server writes back to `input` until it closes, or until nothing more comes for
/// a while (a kept-alive connection).
fn transcript(server: &Server, input: &[u8]) -> Vec<u8> {
    let mut s = server.connect();
    s.write_all(input).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return out
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("reading a transcript: {e}"),
        }
    }
}

#[test]
fn answers_are_byte_for_byte_the_evented_servers() {
    let common = [
        "--tick-ms",
        "0",
        "--heartbeat-ms",
        "0",
        "--header-timeout-ms",
        "300",
        "--poll-timeout-ms",
        "300",
        "--idle-timeout-ms",
        "400",
    ];
    let evented = Server::start(&[&["--model", "evented"][..], &common].concat());
    let blocking = Server::start(
        &[
            &["--model", "blocking", "--threads", "unbounded"][..],
            &common,
        ]
        .concat(),
    );

    let ws = |frames: &[Vec<u8>]| {
        let mut v = WS_UPGRADE.to_vec();
        for f in frames {
            v.extend_from_slice(f);
        }
        v
    };
    let mut close = Vec::new();
    ws::encode_close(
        &mut close,
        ws::close_code::NORMAL,
        "bye",
        Some([5, 6, 7, 8]),
    );
    let mut unmasked = Vec::new();
    ws::encode_frame(&mut unmasked, ws::OpCode::Text, b"x", None);
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(17_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("probe, kept alive", PROBE.to_vec()),
        ("probe, HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        (
            "pipelined",
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /publish HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcDELETE /sse HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        ("no host", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("malformed", b"GARBAGE\r\n\r\n".to_vec()),
        ("head too large", big_head.into_bytes()),
        ("version", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec()),
        (
            "both framings",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc".to_vec(),
        ),
        (
            "publish too large",
            b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n".to_vec(),
        ),
        (
            "publish not UTF-8",
            b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n\xff\xfe".to_vec(),
        ),
        (
            "echo, 100-continue, chunked",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "echo, bad chunk",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n".to_vec(),
        ),
        ("partial head: 408", b"GET / HTTP/1.1\r\nHost:".to_vec()),
        ("partial body: 408", b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc".to_vec()),
        ("poll, bad after", b"GET /poll?after=x HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
        ("poll, held until the timeout", b"GET /poll HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
        ("sse head", SSE.to_vec()),
        ("stream head", b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
        ("ws, no upgrade", b"GET /ws HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
        (
            "ws, bad key",
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n".to_vec(),
        ),
        (
            "ws, version 8",
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec(),
        ),
        (
            "ws, echo, ping, close",
            ws(&[
                client_frame(ws::OpCode::Text, b"hi there"),
                client_frame(ws::OpCode::Binary, &[0, 1, 2, 255]),
                client_frame(ws::OpCode::Ping, b"p"),
                close,
            ]),
        ),
        ("ws, unmasked frame: 1002", ws(&[unmasked])),
        (
            "ws, invalid UTF-8: 1007",
            ws(&[client_frame(ws::OpCode::Text, &[0xff, 0xfe])]),
        ),
    ];
    let results: Vec<(&str, Vec<u8>, Vec<u8>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(name, input)| {
                let (e, b) = (&evented, &blocking);
                scope.spawn(move || (*name, transcript(e, input), transcript(b, input)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (name, from_evented, from_blocking) in results {
        assert!(
            !from_evented.is_empty(),
            "{name}: the evented server said nothing"
        );
        assert_eq!(
            String::from_utf8_lossy(&from_blocking),
            String::from_utf8_lossy(&from_evented),
            "{name}: the blocking server's answer differs"
        );
    }
}
