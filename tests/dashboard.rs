//! The dashboard server over real sockets: the page, the event stream with its history, a
//! reconnect that resumes after `Last-Event-ID`, and clear answers to anything else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use c10k_lab::dashboard::Dashboard;
use c10k_lab::proto::sse::{Event, Parser};

fn start() -> Dashboard {
    let d = Dashboard::start("127.0.0.1:0".parse().expect("an address")).expect("dashboard");
    d.publish("meta", "{\"title\":\"t\"}".to_string());
    d
}

fn get(d: &Dashboard, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(d.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("write");
    s
}

/// An event stream being read: its response head checked once, then events as they come.
struct Stream {
    sock: TcpStream,
    parser: Parser,
    head: Option<Vec<u8>>,
}

impl Stream {
    fn open(d: &Dashboard, head: &str) -> Stream {
        Stream {
            sock: get(d, head),
            parser: Parser::new(),
            head: Some(Vec::new()),
        }
    }

    /// Reads until `n` more events have arrived.
    fn events(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < n {
            let k = self
                .sock
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("read after {:?}: {e}", ids(&out)));
            assert!(k > 0, "the stream ended after {} events", out.len());
            let Some(head) = self.head.as_mut() else {
                self.parser.feed(&buf[..k], &mut out);
                continue;
            };
            head.extend_from_slice(&buf[..k]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).to_string();
                assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
                assert!(text.contains("text/event-stream"), "{text}");
                let rest = head.split_off(end + 4);
                self.head = None;
                self.parser.feed(&rest, &mut out);
            }
        }
        out
    }
}

fn ids(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.last_event_id.parse().expect("a numeric id"))
        .collect()
}

#[test]
fn a_reconnecting_page_resumes_after_its_last_event_id_and_a_fresh_one_gets_everything() {
    let d = start();
    for i in 0..5 {
        d.publish("row", format!("{{\"i\":{i}}}"));
    }
    let mut first = Stream::open(&d, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
    let got = first.events(6);
    assert_eq!(ids(&got), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(got[0].event_type, "meta");
    assert_eq!(got[5].data, "{\"i\":4}");
    // The connection drops; rows go on being published meanwhile.
    drop(first);
    for i in 5..9 {
        d.publish("row", format!("{{\"i\":{i}}}"));
    }
    let mut again = Stream::open(
        &d,
        "GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 6\r\n\r\n",
    );
    let resumed = again.events(4);
    assert_eq!(ids(&resumed), vec![7, 8, 9, 10]);
    // Rows published while it is connected arrive live, once.
    d.publish("row", "{\"i\":9}".to_string());
    assert_eq!(ids(&again.events(1)), vec![11]);
    let mut fresh = Stream::open(&d, "GET /events?after=0 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(ids(&fresh.events(11)), (1..=11).collect::<Vec<_>>());
}

fn answer(d: &Dashboard, head: &str) -> String {
    let mut s = get(d, head);
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

#[test]
fn the_page_is_served_and_anything_else_gets_a_clear_answer() {
    let d = start();
    let page = answer(&d, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page:.80}");
    assert!(page.contains("Content-Type: text/html; charset=utf-8"));
    assert!(page.contains("new EventSource(\"/events\")"));
    // Nothing is fetched from anywhere else: no external script, style, image or font.
    for reference in [" src=", "<link", "url(", "@import"] {
        assert!(
            !page.contains(reference),
            "the page refers to something: {reference}"
        );
    }
    let head = answer(
        &d,
        "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
    let missing = answer(
        &d,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    let post = answer(
        &d,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD"));
    let garbage = answer(&d, "\x01\x02 nonsense\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    // Two requests on one kept-alive connection are both answered.
    let mut s = get(
        &d,
        "GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let mut both = String::new();
    let _ = s.read_to_string(&mut both);
    assert!(both.starts_with("HTTP/1.1 404 ") && both.contains("HTTP/1.1 200 OK"));
}
