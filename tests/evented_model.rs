//! The evented model's own behaviour at its limits: out of file descriptors it neither spins
//! nor dies, keeps serving the connections it has, and accepts again once descriptors free up.

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use common::*;

const PROBE: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn out_of_descriptors_it_waits_without_spinning_and_recovers() {
    // A handful of descriptors: stdio, epoll, the listener, the signal pipe, a few connections.
    let server = Server::start_with_limit(
        libc::RLIMIT_NOFILE,
        24,
        &["--model", "evented", "--tick-ms", "100"],
    );
    // Subscribe until a connection is no longer accepted (EMFILE): it waits in the backlog.
    let (mut held, stuck) = subscribe_until_unanswered(&server, 24);
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
