//! The evented model's own behaviour at its limits: out of file descriptors it neither spins
//! nor dies, keeps serving the connections it has, and accepts again once descriptors free up.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;

const SSE: &[u8] = b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n";
const PROBE: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

/// Whether anything arrives on `s` within `wait` (left unread): an outcome, not a speed.
fn answered_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let got = match s.peek(&mut byte) {
        Ok(n) => n > 0,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("reading: {e}"),
    };
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    got
}

#[test]
fn out_of_descriptors_it_waits_without_spinning_and_recovers() {
    // A handful of descriptors: stdio, epoll, the listener, the signal pipe, a few connections.
    let server = Server::start_with_limit(
        libc::RLIMIT_NOFILE,
        24,
        &["--model", "evented", "--tick-ms", "100"],
    );
    // Subscribe until a connection is no longer accepted (EMFILE): it waits in the backlog.
    let mut held = Vec::new();
    let stuck = loop {
        assert!(held.len() < 24, "the descriptor limit was never reached");
        let mut s = server.connect();
        s.write_all(SSE).unwrap();
        if !answered_within(&mut s, Duration::from_millis(500)) {
            break s;
        }
        held.push(s);
    };
    assert!(held.len() >= 5, "only {} subscribers fit", held.len());

    // Starved of descriptors, the loop must not spin on a listener that stays readable: over
    // a second it may use a little CPU for ticks and retries, nowhere near a core.
    let before = server.cpu_time();
    thread::sleep(Duration::from_secs(1));
    let used = server.cpu_time() - before;
    assert!(
        used < Duration::from_millis(300),
        "{used:?} of CPU in 1 s while starved"
    );

    // The subscribers it holds are still served: ticks keep arriving.
    let mut sink = [0u8; 4096];
    for s in &mut held {
        assert!(s.read(&mut sink).unwrap() > 0);
    }

    // A probe waits in the backlog, and is answered once descriptors free up.
    let mut probe = server.connect();
    probe.write_all(PROBE).unwrap();
    assert!(!answered_within(&mut probe, Duration::from_millis(300)));
    drop(stuck);
    held.truncate(held.len() - 2);
    let r = read_response(&mut probe);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
}
