//! A request head in, a decision out: which route serves it, or which error answers it.

use crate::app::config::MAX_PUBLISH_BYTES;
use crate::app::reply;
use crate::proto::http::{BodyFraming, RequestHead};
use crate::proto::ws;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: `ok\n`.
    Probe,
    /// `GET /sse`, replaying retained events after `last_event_id` first.
    Sse { last_event_id: Option<u64> },
    /// `GET /stream`: NDJSON, chunked (or, for HTTP/1.0, delimited by the close).
    Stream { chunked: bool },
    /// `GET /ws` with a valid upgrade: `accept` is the `Sec-WebSocket-Accept` value.
    WebSocket { accept: String },
    /// `GET /poll`: events after `after`, or `None` for "the next one"; held until there are
    /// some unless `wait` is false (`wait=0`: short polling, answered at once).
    Poll { after: Option<u64>, wait: bool },
    /// `POST /publish`.
    Publish,
    /// `POST /echo`: chunked (or, for HTTP/1.0, delimited by the close).
    Echo { chunked: bool },
    /// `GET /stats`.
    Stats,
    /// An error answer with extra header fields (`Allow`, `Sec-WebSocket-Version`, ...).
    Error {
        status: u16,
        headers: &'static [(&'static str, &'static str)],
    },
}

impl Route {
    /// The largest request body this route takes. Routes without a body of their own still read
    /// (and drop) a small one, so a keep-alive connection stays in step.
    pub fn max_body(&self, max_echo: u64) -> u64 {
        match self {
            Route::Publish => MAX_PUBLISH_BYTES,
            Route::Echo { .. } => max_echo,
            _ => 64 * 1024,
        }
    }
}

fn error(status: u16) -> Route {
    Route::Error {
        status,
        headers: &[],
    }
}

/// Routes a request head.
pub fn route(head: &RequestHead) -> Route {
    // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host field is answered 400.
    let hosts = head
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
        .count();
    if head.minor_version == 1 && hosts != 1 {
        return error(400);
    }
    // RFC 9110 §9.3.2: HEAD is GET without the content, on every route GET has.
    let head_only = head.method == "HEAD";
    let get = head.method == "GET" || head_only;
    // RFC 9112 §6.1: chunked framing must not be sent to an HTTP/1.0 recipient.
    let chunked = head.minor_version >= 1;
    let post = head.method == "POST";
    match head.path() {
        "/" if get => Route::Probe,
        "/sse" if get => Route::Sse {
            last_event_id: head
                .header_str("last-event-id")
                .and_then(|v| v.parse().ok()),
        },
        "/stream" if get => Route::Stream { chunked },
        // RFC 6455 §4.1: the opening handshake is a GET; a HEAD is not an upgrade.
        "/ws" if head_only => NO_UPGRADE,
        "/ws" if get => websocket(head),
        "/poll" if get => {
            let after = head.query_param("after").map(str::parse);
            let wait = match head.query_param("wait") {
                None | Some("1") => true,
                Some("0") => false,
                Some(_) => return error(400),
            };
            match after {
                None => Route::Poll { after: None, wait },
                Some(Ok(after)) => Route::Poll {
                    after: Some(after),
                    wait,
                },
                Some(Err(_)) => error(400),
            }
        }
        "/stats" if get => Route::Stats,
        "/publish" if post => Route::Publish,
        "/echo" if post => Route::Echo { chunked },
        "/" | "/sse" | "/stream" | "/ws" | "/poll" | "/stats" => Route::Error {
            status: 405,
            headers: &[("Allow", "GET, HEAD")],
        },
        "/publish" | "/echo" => Route::Error {
            status: 405,
            headers: &[("Allow", "POST")],
        },
        _ => error(404),
    }
}

/// `/ws` without a WebSocket upgrade. RFC 9110 §15.5.22: 426 names the protocol it needs.
const NO_UPGRADE: Route = Route::Error {
    status: 426,
    headers: &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
};

fn websocket(head: &RequestHead) -> Route {
    let upgrade = head.has_token("upgrade", "websocket") && head.has_token("connection", "upgrade");
    if !upgrade || head.minor_version == 0 {
        return NO_UPGRADE;
    }
    match head.header_str("sec-websocket-version").map(str::trim) {
        Some("13") => {}
        // RFC 6455 §4.2.2: a version we do not speak is answered with the one we do.
        Some(_) => {
            return Route::Error {
                status: 426,
                headers: &[("Sec-WebSocket-Version", "13")],
            }
        }
        None => return error(400),
    }
    match head.header("sec-websocket-key") {
        Some(key) if ws::is_valid_client_key(key) => Route::WebSocket {
            accept: ws::accept_key(key),
        },
        _ => error(400),
    }
}

/// How a routed request proceeds once its head is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No body: answer now.
    Answer,
    /// Read a body of this framing, at most `max` bytes, then answer.
    Body { framing: BodyFraming, max: u64 },
    /// The declared body is over the route's limit: `413`, then close.
    TooLarge,
}

/// Decides how a request starts, and appends to `early` what goes out before its body is read:
/// `100 Continue` for a client that waits for it, and the head of an echo, which streams.
pub fn start(head: &RequestHead, route: &Route, max_echo: u64, early: &mut Vec<u8>) -> Start {
    let framing = match head.body {
        BodyFraming::Length(0) => BodyFraming::None,
        other => other,
    };
    let max = route.max_body(max_echo);
    if matches!(framing, BodyFraming::Length(n) if n > max) {
        return Start::TooLarge;
    }
    if framing != BodyFraming::None && head.has_token("expect", "100-continue") {
        early.extend_from_slice(reply::CONTINUE);
    }
    if let Route::Echo { chunked } = *route {
        reply::echo_head(early, head.keep_alive, chunked);
    }
    match framing {
        BodyFraming::None => Start::Answer,
        framing => Start::Body { framing, max },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse_request_head;

    fn route_of(raw: &str) -> Route {
        let (head, _) = parse_request_head(raw.as_bytes()).unwrap().unwrap();
        route(&head)
    }

    #[test]
    fn routes_and_errors() {
        assert_eq!(route_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Route::Probe);
        assert_eq!(route_of("GET / HTTP/1.0\r\n\r\n"), Route::Probe);
        assert_eq!(route_of("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"), Route::Probe);
        assert_eq!(route_of("GET / HTTP/1.1\r\n\r\n"), error(400));
        assert_eq!(
            route_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            error(400)
        );
        assert_eq!(
            route_of("GET /sse HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 7\r\n\r\n"),
            Route::Sse {
                last_event_id: Some(7)
            }
        );
        assert_eq!(
            route_of("GET /sse HTTP/1.1\r\nHost: a\r\nLast-Event-ID: x\r\n\r\n"),
            Route::Sse {
                last_event_id: None
            }
        );
        assert_eq!(
            route_of("GET /poll?after=3 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Route::Poll {
                after: Some(3),
                wait: true
            }
        );
        assert_eq!(
            route_of("GET /poll?wait=0&after=3 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Route::Poll {
                after: Some(3),
                wait: false
            }
        );
        assert_eq!(
            route_of("GET /poll?after=3&wait=no HTTP/1.1\r\nHost: a\r\n\r\n"),
            error(400)
        );
        assert_eq!(
            route_of("GET /poll?after=x HTTP/1.1\r\nHost: a\r\n\r\n"),
            error(400)
        );
        assert_eq!(
            route_of("GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"),
            error(404)
        );
        assert!(matches!(
            route_of("GET /publish HTTP/1.1\r\nHost: a\r\n\r\n"),
            Route::Error {
                status: 405,
                headers: [("Allow", "POST")]
            }
        ));
    }

    #[test]
    fn requests_start_with_what_goes_out_before_the_body() {
        let start_of = |raw: &str| {
            let (head, _) = parse_request_head(raw.as_bytes()).unwrap().unwrap();
            let mut early = Vec::new();
            let s = start(&head, &route(&head), 1000, &mut early);
            (s, String::from_utf8(early).unwrap())
        };
        assert_eq!(
            start_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            (Start::Answer, String::new())
        );
        let (s, early) = start_of(
            "POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(
            s,
            Start::Body {
                framing: BodyFraming::Length(3),
                max: MAX_PUBLISH_BYTES
            }
        );
        assert_eq!(early, "HTTP/1.1 100 Continue\r\n\r\n");
        // Refused before anything is sent: no 100 Continue for a body that will not be read.
        let (s, early) = start_of(
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!((s, early.as_str()), (Start::TooLarge, ""));
        let (s, early) = start_of("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(s, Start::Answer);
        assert!(early.starts_with("HTTP/1.1 200 OK\r\n"), "{early}");
    }

    #[test]
    fn websocket_upgrades() {
        let up = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n";
        let ok = route_of(&format!(
            "{up}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ));
        assert_eq!(
            ok,
            Route::WebSocket {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string()
            }
        );
        let bad_key = route_of(&format!(
            "{up}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"
        ));
        assert_eq!(bad_key, error(400));
        let v8 = route_of(&format!(
            "{up}Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ));
        assert!(matches!(
            v8,
            Route::Error {
                status: 426,
                headers: [("Sec-WebSocket-Version", "13")]
            }
        ));
        assert!(matches!(
            route_of("GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"),
            Route::Error { status: 426, .. }
        ));
        let head = format!(
            "HEAD{}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            &up[3..]
        );
        assert_eq!(route_of(&head), NO_UPGRADE);
    }
}
