//! A request head in, a decision out: which route serves it, or which error answers it.

use crate::app::config::MAX_PUBLISH_BYTES;
use crate::proto::http::RequestHead;
use crate::proto::ws;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: `ok\n`.
    Probe,
    /// `GET /sse`, replaying retained events after `last_event_id` first.
    Sse { last_event_id: Option<u64> },
    /// `GET /stream`: chunked NDJSON.
    Stream,
    /// `GET /ws` with a valid upgrade: `accept` is the `Sec-WebSocket-Accept` value.
    WebSocket { accept: String },
    /// `GET /poll`: events after `after`, or `None` for "the next one".
    Poll { after: Option<u64> },
    /// `POST /publish`.
    Publish,
    /// `POST /echo`.
    Echo,
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
            Route::Echo => max_echo,
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
    let get = head.method == "GET";
    let post = head.method == "POST";
    match head.path() {
        "/" if get => Route::Probe,
        "/sse" if get => Route::Sse {
            last_event_id: head
                .header_str("last-event-id")
                .and_then(|v| v.parse().ok()),
        },
        "/stream" if get => Route::Stream,
        "/ws" if get => websocket(head),
        "/poll" if get => match head.query_param("after") {
            None => Route::Poll { after: None },
            Some(v) => match v.parse() {
                Ok(after) => Route::Poll { after: Some(after) },
                Err(_) => error(400),
            },
        },
        "/stats" if get => Route::Stats,
        "/publish" if post => Route::Publish,
        "/echo" if post => Route::Echo,
        "/" | "/sse" | "/stream" | "/ws" | "/poll" | "/stats" => Route::Error {
            status: 405,
            headers: &[("Allow", "GET")],
        },
        "/publish" | "/echo" => Route::Error {
            status: 405,
            headers: &[("Allow", "POST")],
        },
        _ => error(404),
    }
}

fn websocket(head: &RequestHead) -> Route {
    let upgrade = head.has_token("upgrade", "websocket") && head.has_token("connection", "upgrade");
    if !upgrade || head.minor_version == 0 {
        // RFC 9110 §15.5.22: 426 names the protocol this resource needs.
        return Route::Error {
            status: 426,
            headers: &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        };
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
