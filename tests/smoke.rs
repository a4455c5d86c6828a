//! The harness itself works: a server starts, answers the probe and exits cleanly on SIGTERM.

mod common;
use common::*;

#[test]
fn evented_probe_and_clean_exit() {
    let mut server = Server::start(&["--model", "evented"]);
    let (_, r) = roundtrip(&server, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    assert!(server.terminate().success());
}
