//! The server contract (`CONTRACT.md`), checked row by row over real sockets on 127.0.0.1.
//!
//! Every case is a function of the arguments that start a server model, and `contract_suite!`
//! instantiates all of them for one model, so each model runs exactly the same checks. Each case
//! starts its own server process on a port the OS picks, so the cases are independent and run in
//! parallel.
//!
//! What is checked: the probe and keep-alive; pipelining; SSE (head, events through the project's
//! WHATWG parser, heartbeats, `Last-Event-ID` replay, ticks); the chunked NDJSON stream; WebSocket
//! through an independent client (tungstenite) and every protocol violation through hand-written
//! frames; long polling; publish, echo, stats; 404/405; every bad-input row; clients that vanish,
//! slowloris, idle and slow clients; SIGTERM; garbage.
//!
//! Assertions are on behaviour, never on durations. Where the server works asynchronously (a
//! subscription lands server-side after the request is sent), the case waits on `/stats` for the
//! state it needs before acting. Every read has a timeout, so a broken server fails a case
//! instead of hanging it.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use c10k_lab::proto::http::{parse_response_head, BodyDecoder, BodyFraming, ResponseHead};
use c10k_lab::proto::sse;
use c10k_lab::proto::ws::{encode_frame, OpCode};
use common::*;
use serde_json::Value;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode as TOpCode};
use tungstenite::protocol::frame::Frame as TFrame;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Bytes, Message, WebSocket};

// ---- the suites --------------------------------------------------------------------------------

/// `contract_suite!(MODEL, ARGS)` makes a module `MODEL` with one `#[test]` per contract case,
/// each starting its server with `ARGS` (plus whatever the case itself needs).
macro_rules! contract_suite {
    ($model:ident, $args:expr) => {
        mod $model {
            const ARGS: &[&str] = $args;
            contract_suite!(@cases
                probe_answers_ok_and_keeps_the_connection,
                probe_over_http10_closes,
                connection_close_closes,
                pipelined_requests_are_answered_in_order,
                pipelined_request_behind_a_held_poll_waits_its_turn,
                requests_and_frames_sent_a_byte_at_a_time,
                unknown_path_is_404,
                wrong_method_is_405_with_allow,
                head_is_get_without_the_content,
                sse_head_and_published_events,
                sse_heartbeat_when_nothing_is_published,
                sse_last_event_id_replays_then_goes_live,
                sse_ticks_share_the_sequence_with_messages,
                sse_and_poll_replay_at_least_1024_events,
                replay_past_the_byte_bound_gives_what_is_left,
                stream_is_chunked_ndjson_one_line_per_chunk,
                http10_stream_and_echo_are_delimited_by_the_close,
                ws_handshake_and_broadcast,
                ws_echoes_text_and_binary_and_answers_ping,
                ws_echoes_large_and_fragmented_messages,
                ws_frames_in_the_same_write_as_the_upgrade,
                ws_close_handshake,
                ws_empty_close_is_answered_and_closed,
                ws_unmasked_frame_is_1002,
                ws_reserved_bit_is_1002,
                ws_reserved_opcode_is_1002,
                ws_fragmented_control_frame_is_1002,
                ws_long_control_frame_is_1002,
                ws_continuation_without_start_is_1002,
                ws_invalid_utf8_text_is_1007,
                ws_invalid_utf8_across_fragments_is_1007,
                ws_invalid_utf8_close_reason_is_1007,
                ws_message_over_limit_is_1009,
                ws_fragmented_message_over_limit_is_1009,
                ws_upgrade_without_valid_key_is_400,
                ws_upgrade_with_version_8_is_426,
                poll_returns_retained_events_at_once,
                poll_is_held_until_an_event_is_published,
                poll_times_out_with_an_empty_array,
                short_poll_answers_at_once,
                publish_answers_seq_and_live_subscribers,
                every_transport_carries_the_same_json,
                publish_body_over_64k_is_413_and_closes,
                publish_chunked_body_over_64k_is_413_and_closes,
                publish_non_utf8_is_400,
                publish_chunked_with_extensions_and_trailer,
                echo_streams_before_the_body_ends,
                echo_large_body_round_trips,
                expect_100_continue,
                stats_has_every_key_and_live_counts,
                malformed_request_line_is_400_and_closes,
                malformed_header_is_400_and_closes,
                head_over_16k_is_431_and_closes,
                http2_request_line_is_505_and_closes,
                content_length_with_transfer_encoding_is_400_and_closes,
                conflicting_content_lengths_is_400_and_closes,
                http11_without_host_is_400,
                vanished_clients_are_removed_after_fin,
                vanished_clients_are_removed_after_rst,
                slowloris_gets_408_and_is_closed,
                a_client_that_stays_after_its_408_is_let_go_after_the_linger,
                idle_connections_are_closed_but_subscribers_are_not,
                slow_consumer_is_cut_off_and_others_are_served,
                a_client_that_reads_no_answers_is_not_read_either,
                sigterm_ends_streams_cleanly_and_exits_0,
                garbage_leaves_the_server_serving,
            );
        }
    };
    (@cases $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                super::$case(ARGS)
            }
        )*
    };
}

contract_suite!(evented, &["--model", "evented", "--tick-ms", "0"]);
// One server of four processes: whichever worker takes a connection, it must keep the contract
// of the one event stream.
contract_suite!(
    evented_workers,
    &["--model", "evented", "--workers", "4", "--tick-ms", "0"]
);
// The same with a socket per worker: the kernel spreads the cases' connections over all four.
contract_suite!(
    evented_reuse_port_workers,
    &[
        "--model",
        "evented",
        "--workers",
        "4",
        "--reuse-port",
        "--tick-ms",
        "0"
    ]
);
contract_suite!(
    blocking,
    &[
        "--model",
        "blocking",
        "--threads",
        "unbounded",
        "--tick-ms",
        "0"
    ]
);

// ---- starting servers --------------------------------------------------------------------------

/// Starts a server with the model's `args`, then `extra`; a flag given again overrides the earlier
/// value (the command line itself refuses repeated flags). Ticks are off unless asked for, so
/// every event a case sees is one it published.
fn start(args: &[&str], extra: &[&str]) -> Server {
    let mut flags: Vec<(&str, Option<&str>)> = Vec::new();
    for list in [&["--tick-ms", "0"][..], args, extra] {
        let mut it = list.iter().copied().peekable();
        while let Some(flag) = it.next() {
            let value = it.next_if(|v| !v.starts_with("--"));
            flags.retain(|(f, _)| *f != flag);
            flags.push((flag, value));
        }
    }
    let argv: Vec<&str> = flags
        .iter()
        .flat_map(|&(flag, value)| std::iter::once(flag).chain(value))
        .collect();
    Server::start(&argv)
}

/// The model named in `args`, which `/stats` must report.
fn model_name<'a>(args: &[&'a str]) -> &'a str {
    args.iter()
        .position(|&a| a == "--model")
        .and_then(|i| args.get(i + 1).copied())
        .unwrap_or("evented")
}

// ---- a buffered client connection --------------------------------------------------------------

/// A raw connection that keeps what it read past the current message, so pipelined responses,
/// streams and frames can be read one by one.
struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn open(server: &Server) -> Client {
        Client::wrap(server.connect())
    }

    fn wrap(sock: TcpStream) -> Client {
        Client {
            sock,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.sock.write_all(bytes.as_ref()).expect("send");
    }

    /// Reads more into the buffer; false at end of stream. A timeout fails the case.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.sock.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!(
                "read failed ({e}); unread so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    fn head(&mut self) -> ResponseHead {
        loop {
            if let Some((head, n)) = parse_response_head(&self.buf).expect("valid response head") {
                self.buf.drain(..n);
                return head;
            }
            assert!(
                self.fill(),
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// One whole response; the bytes after it stay buffered for the next.
    fn response(&mut self) -> Response {
        let head = self.head();
        let body = match head.body {
            BodyFraming::None => Vec::new(),
            BodyFraming::UntilClose => {
                while self.fill() {}
                std::mem::take(&mut self.buf)
            }
            framing => {
                let mut body = Vec::new();
                let mut decoder = BodyDecoder::new(framing, u64::MAX);
                loop {
                    let n = decoder.decode(&self.buf, &mut body).expect("valid body");
                    self.buf.drain(..n);
                    if decoder.is_done() {
                        break;
                    }
                    assert!(self.fill(), "connection closed mid-body");
                }
                body
            }
        };
        Response::new(&head, body)
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "connection closed; wanted {n} bytes");
        }
        self.buf.drain(..n).collect()
    }

    /// One CRLF-terminated line, without the CRLF.
    fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill(), "connection closed mid-line");
        }
    }

    /// The data of the next chunk of a chunked body, read by hand so chunk boundaries are seen;
    /// empty for the last chunk, which must be exactly `0\r\n\r\n`.
    fn chunk(&mut self) -> Vec<u8> {
        let size_line = self.line();
        let size_line = String::from_utf8(size_line).expect("ASCII chunk size line");
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            assert_eq!(self.line(), b"", "the last chunk carries no trailer");
            return Vec::new();
        }
        let data = self.take(size);
        assert_eq!(self.take(2), b"\r\n", "chunk data ends with CRLF");
        data
    }

    /// The rest of a chunked body, chunk by chunk, up to and including the last chunk.
    fn chunks_to_end(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let chunk = self.chunk();
            if chunk.is_empty() {
                return body;
            }
            body.extend_from_slice(&chunk);
        }
    }

    /// One server WebSocket frame: (first header byte, payload). Server frames are never masked.
    fn ws_frame(&mut self) -> (u8, Vec<u8>) {
        let head = self.take(2);
        assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
        let len = match head[1] & 0x7F {
            126 => u16::from_be_bytes(self.take(2).try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(self.take(8).try_into().unwrap()) as usize,
            n => n as usize,
        };
        (head[0], self.take(len))
    }

    /// Skips heartbeat pings up to the server's close frame and returns its status code.
    fn ws_close_code(&mut self) -> u16 {
        loop {
            let (first, payload) = self.ws_frame();
            if first == 0x89 {
                continue;
            }
            assert_eq!(
                first, 0x88,
                "expected a close frame, got {first:#x} {payload:?}"
            );
            assert!(payload.len() >= 2, "close frame without a status code");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }

    /// Whether the server closes the connection (whatever it still sends is discarded).
    fn closes(&mut self) -> bool {
        self.buf.clear();
        closes(&mut self.sock)
    }
}

// ---- requests and answers ----------------------------------------------------------------------

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n")
}

fn post(target: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// The media type of a `Content-Type`, without parameters.
fn media_type(r: &Response) -> String {
    r.header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn head_field<'a>(head: &'a ResponseHead, name: &str) -> &'a str {
    std::str::from_utf8(head.header(name).unwrap_or_default()).unwrap_or("")
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(bytes)))
}

fn assert_probe(r: &Response) {
    assert_eq!(r.status, 200);
    assert_eq!(media_type(r), "text/plain");
    assert_eq!(r.body, b"ok\n");
}

/// `POST /publish` on its own connection; returns (seq, subscribers).
fn publish(server: &Server, text: &str) -> (u64, u64) {
    let mut c = Client::open(server);
    c.send(post("/publish", text.as_bytes()));
    published(&c.response())
}

/// Checks a publish answer is exactly `{"seq":N,"subscribers":M}` and returns (N, M).
fn published(r: &Response) -> (u64, u64) {
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(media_type(r), "application/json");
    let v = json(&r.body);
    let keys: BTreeSet<&str> = v
        .as_object()
        .expect("publish answers an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["seq", "subscribers"]));
    (
        v["seq"].as_u64().expect("seq is a u64"),
        v["subscribers"].as_u64().expect("subscribers is a u64"),
    )
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Checks an event's JSON: exactly `seq`, `event`, `sent_ns` (and `data` for a message), with
/// `sent_ns` a Unix-epoch wall-clock time (not, say, a monotonic clock's).
fn assert_event(json_text: &str, seq: u64, name: &str, data: Option<&str>) {
    let v = json(json_text.as_bytes());
    let obj = v.as_object().expect("an event is a JSON object");
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let mut expected = BTreeSet::from(["seq", "event", "sent_ns"]);
    if data.is_some() {
        expected.insert("data");
    }
    assert_eq!(keys, expected, "{json_text}");
    assert_eq!(v["seq"].as_u64(), Some(seq), "{json_text}");
    assert_eq!(v["event"], name, "{json_text}");
    let sent = v["sent_ns"].as_u64().expect("sent_ns is a u64");
    let hour = 3_600_000_000_000;
    let now = now_ns();
    assert!(
        sent > now - hour && sent < now + hour,
        "sent_ns {sent} is not near the wall clock {now}"
    );
    if let Some(data) = data {
        assert_eq!(v["data"], data, "{json_text}");
    }
}

/// A live count from `/stats`.
fn count(stats: &Value, kind: &str) -> u64 {
    stats["connections"][kind]
        .as_u64()
        .unwrap_or_else(|| panic!("connections.{kind} missing from {stats}"))
}

/// Waits until the live counts are exactly these (`http` includes the `/stats` request itself).
fn wait_counts(server: &Server, http: u64, sse: u64, stream: u64, ws: u64) {
    server.wait_stats(
        &format!("http={http} sse={sse} stream={stream} ws={ws}"),
        |s| {
            count(s, "http") == http
                && count(s, "sse") == sse
                && count(s, "stream") == stream
                && count(s, "ws") == ws
        },
    );
}

// ---- SSE ---------------------------------------------------------------------------------------

/// An open `/sse` response, read through the project's WHATWG event-stream parser.
struct Sse {
    client: Client,
    head: ResponseHead,
    parser: sse::Parser,
    ready: VecDeque<sse::Event>,
    /// Every body byte received so far, for checks on the exact wire form.
    raw: Vec<u8>,
}

impl Sse {
    fn open(server: &Server, extra_fields: &str) -> Sse {
        let mut client = Client::open(server);
        client.send(format!(
            "GET /sse HTTP/1.1\r\nHost: t\r\n{extra_fields}\r\n"
        ));
        let head = client.head();
        assert_eq!(head.status, 200);
        Sse {
            client,
            head,
            parser: sse::Parser::new(),
            ready: VecDeque::new(),
            raw: Vec::new(),
        }
    }

    /// Hands what is buffered to the parser, or reads more; false at end of stream.
    fn advance(&mut self) -> bool {
        if self.client.buf.is_empty() && !self.client.fill() {
            return false;
        }
        let bytes = std::mem::take(&mut self.client.buf);
        self.raw.extend_from_slice(&bytes);
        let mut out = Vec::new();
        self.parser.feed(&bytes, &mut out);
        self.ready.extend(out);
        true
    }

    fn next(&mut self) -> sse::Event {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return event;
            }
            assert!(self.advance(), "SSE stream ended");
        }
    }

    fn wait_raw(&mut self, needle: &[u8]) {
        while !self.raw.windows(needle.len()).any(|w| w == needle) {
            assert!(
                self.advance(),
                "SSE stream ended before {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

// ---- WebSocket ---------------------------------------------------------------------------------

/// The sample key of RFC 6455 §1.3 and its accept value.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The masking key of every hand-made client frame.
const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// An upgrade request, its tokens spelled as some browsers send them: in a list, in any case.
fn ws_upgrade(version: &str, key: Option<&str>) -> String {
    let key = key.map_or(String::new(), |k| format!("Sec-WebSocket-Key: {k}\r\n"));
    format!(
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Version: {version}\r\n{key}\r\n"
    )
}

/// A WebSocket over a raw socket, for frames no well-behaved client would send.
fn ws_raw(server: &Server) -> Client {
    let mut c = Client::open(server);
    c.send(ws_upgrade("13", Some(WS_KEY)));
    let head = c.head();
    assert_eq!(head.status, 101);
    assert_eq!(head_field(&head, "sec-websocket-accept"), WS_ACCEPT);
    assert!(head_field(&head, "upgrade").eq_ignore_ascii_case("websocket"));
    c
}

/// A masked, final client frame.
fn masked(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_frame(&mut frame, opcode, payload, Some(MASK));
    frame
}

/// A masked client frame whose first header byte (FIN, RSV, opcode) is `first`.
fn masked_with(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = masked(OpCode::Binary, payload);
    frame[0] = first;
    frame
}

/// A WebSocket through tungstenite, a client independent of the project's own code.
fn ws_connect(server: &Server) -> WebSocket<TcpStream> {
    let (ws, resp) = tungstenite::client(format!("ws://{}/ws", server.addr), server.connect())
        .unwrap_or_else(|e| panic!("WebSocket handshake failed: {e}"));
    assert_eq!(resp.status(), 101);
    ws
}

/// The next message that is not a heartbeat ping (tungstenite answers those itself).
fn ws_next(ws: &mut WebSocket<TcpStream>) -> Message {
    loop {
        match ws.read().expect("read a WebSocket message") {
            Message::Ping(_) => continue,
            other => return other,
        }
    }
}

fn ws_text(ws: &mut WebSocket<TcpStream>) -> String {
    match ws_next(ws) {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Starts a server with `extra`, sends `frames` after a valid handshake, and checks the server
/// answers close `code` and then closes the connection.
fn assert_ws_violation(args: &[&str], extra: &[&str], frames: &[u8], code: u16) {
    let server = start(args, extra);
    let mut c = ws_raw(&server);
    c.send(frames);
    assert_eq!(c.ws_close_code(), code);
    assert!(
        c.closes(),
        "the server closes the connection after its close frame"
    );
}

// ---- bad input ---------------------------------------------------------------------------------

/// Sends `raw` on a fresh connection; the answer must be `status`, then the server closes.
fn assert_refused(args: &[&str], raw: &[u8], status: u16) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    c.send(raw);
    let r = c.response();
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(c.closes(), "the server closes after answering {status}");
}

// ================================================================================================
// The cases. Each takes the arguments that start the model under test.
// ================================================================================================

// ---- probe and connection handling -------------------------------------------------------------

fn probe_answers_ok_and_keeps_the_connection(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    for _ in 0..2 {
        c.send(get("/"));
        assert_probe(&c.response());
    }
}

fn probe_over_http10_closes(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    // HTTP/1.0 persists only when asked to.
    for _ in 0..2 {
        c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_probe(&c.response());
    }
    c.send("GET / HTTP/1.0\r\n\r\n");
    assert_probe(&c.response());
    assert!(c.closes(), "HTTP/1.0 without keep-alive closes");
}

fn connection_close_closes(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    c.send("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_probe(&c.response());
    assert!(c.closes(), "`Connection: close` closes");
}

fn requests_and_frames_sent_a_byte_at_a_time(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    for byte in post("/publish", b"trickle") {
        c.send([byte]);
    }
    assert_eq!(published(&c.response()), (1, 0));
    let mut ws = ws_raw(&server);
    for byte in masked(OpCode::Text, "trickle ✓".as_bytes()) {
        ws.send([byte]);
    }
    assert_eq!(ws.ws_frame(), (0x81, "trickle ✓".as_bytes().to_vec()));
}

fn pipelined_request_behind_a_held_poll_waits_its_turn(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    // More waiting behind it than a request head may hold, so the server has to stop reading.
    let behind = 1000;
    let mut raw = get("/poll?after=0");
    raw.push_str(&get("/").repeat(behind));
    c.send(raw);
    server.wait_stats("the held poll", |s| count(s, "poll") == 1);
    publish(&server, "m1");
    assert_poll(&c.response(), &[1]);
    for _ in 0..behind {
        assert_probe(&c.response());
    }
}

fn pipelined_requests_are_answered_in_order(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    // All of it in one write: the server sees several requests in one read.
    let mut raw = get("/").into_bytes();
    // A body on a route that takes none is read past, not taken for the next request.
    raw.extend(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\nGET /nope HTTP");
    raw.extend(post("/publish", b"one"));
    raw.extend(get("/nope").into_bytes());
    raw.extend(post("/echo", b"echo"));
    raw.extend(get("/poll?after=0").into_bytes());
    raw.extend(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    c.send(&raw);

    assert_probe(&c.response());
    assert_probe(&c.response());
    assert_eq!(published(&c.response()), (1, 0));
    assert_eq!(c.response().status, 404);
    let echo = c.response();
    assert_eq!((echo.status, echo.body.as_slice()), (200, &b"echo"[..]));
    let poll = c.response();
    assert_eq!(poll.status, 200);
    let events = json(&poll.body);
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
    assert_eq!(events[0]["data"], "one");
    assert_probe(&c.response());
    assert!(c.closes());
}

fn unknown_path_is_404(args: &[&str]) {
    let server = start(args, &[]);
    let (_, r) = roundtrip(&server, get("/no/such/path").as_bytes());
    assert_eq!(r.status, 404);
}

fn wrong_method_is_405_with_allow(args: &[&str]) {
    let server = start(args, &[]);
    for (raw, allow) in [
        (post("/", b"x"), "GET"),
        (post("/sse", b""), "GET"),
        (post("/stats", b""), "GET"),
        (get("/publish").into_bytes(), "POST"),
        (get("/echo").into_bytes(), "POST"),
        (
            b"DELETE /stream HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            "GET",
        ),
    ] {
        let (_, r) = roundtrip(&server, &raw);
        let line = String::from_utf8_lossy(&raw[..raw.iter().position(|&b| b == b'\r').unwrap()])
            .into_owned();
        assert_eq!(r.status, 405, "{line}");
        let allowed = r
            .header("allow")
            .unwrap_or_else(|| panic!("{line}: no Allow"));
        assert!(
            allowed.split(',').any(|m| m.trim() == allow),
            "{line}: Allow: {allowed}"
        );
    }
}

fn head_is_get_without_the_content(args: &[&str]) {
    let server = start(args, &[]);
    let mut s = server.connect();
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (path, extra, status, content_type) in [
        ("/", "", 200, "text/plain"),
        ("/sse", "", 200, "text/event-stream"),
        ("/stream", "", 200, "application/x-ndjson"),
        ("/poll", "", 200, "application/json"),
        ("/stats", "", 200, "application/json"),
        // Not an upgrade: the handshake is a GET.
        ("/ws", upgrade, 426, "text/plain"),
        ("/nope", "", 404, "text/plain"),
    ] {
        let raw = format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        s.write_all(raw.as_bytes()).unwrap();
        let r = read_head_only(&mut s);
        assert_eq!(r.status, status, "HEAD {path}");
        assert_eq!(r.header("content-type"), Some(content_type), "HEAD {path}");
        assert_ne!(
            r.header("connection"),
            Some("close"),
            "HEAD {path} keeps the connection"
        );
    }
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_head_only(&mut s).header("content-length"), Some("3"));
    // Nothing but heads came before: the next answer reads cleanly.
    s.write_all(get("/").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).body, b"ok\n");
    s.write_all(b"HEAD /publish HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_head_only(&mut s);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
}

// ---- SSE ---------------------------------------------------------------------------------------

fn sse_head_and_published_events(args: &[&str]) {
    let server = start(args, &[]);
    let mut sse = Sse::open(&server, "");
    assert_eq!(head_field(&sse.head, "content-type"), "text/event-stream");
    assert_eq!(head_field(&sse.head, "cache-control"), "no-cache");
    server.wait_stats("the SSE subscription", |s| count(s, "sse") == 1);

    let texts = ["hello", "two\nlines, \"quoted\"", "ünïcödé ✓"];
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(publish(&server, text), (i as u64 + 1, 1));
    }
    for (i, text) in texts.iter().enumerate() {
        let seq = i as u64 + 1;
        let event = sse.next();
        assert_eq!(event.event_type, "message");
        assert_eq!(event.last_event_id, seq.to_string());
        assert_event(&event.data, seq, "message", Some(text));
        // And on the wire exactly as the contract spells it.
        let wire = format!("id: {seq}\nevent: message\ndata: {}\n\n", event.data);
        assert!(
            sse.raw.windows(wire.len()).any(|w| w == wire.as_bytes()),
            "{wire:?} not in {:?}",
            String::from_utf8_lossy(&sse.raw)
        );
    }
}

fn sse_heartbeat_when_nothing_is_published(args: &[&str]) {
    let server = start(args, &["--heartbeat-ms", "100"]);
    let mut sse = Sse::open(&server, "");
    // One after each interval, not just the first.
    sse.wait_raw(b": hb\n\n: hb\n\n");
    // A comment, which dispatches nothing.
    assert!(sse.ready.is_empty(), "{:?}", sse.ready);
}

fn sse_last_event_id_replays_then_goes_live(args: &[&str]) {
    let server = start(args, &[]);
    for i in 1..=5 {
        assert_eq!(publish(&server, &format!("m{i}")), (i, 0));
    }
    let mut sse = Sse::open(&server, "Last-Event-ID: 2\r\n");
    for seq in 3..=5 {
        let event = sse.next();
        assert_eq!(event.last_event_id, seq.to_string());
        assert_event(&event.data, seq, "message", Some(&format!("m{seq}")));
    }
    server.wait_stats("the SSE subscription", |s| count(s, "sse") == 1);
    assert_eq!(publish(&server, "live"), (6, 1));
    let event = sse.next();
    assert_eq!(
        event.last_event_id, "6",
        "nothing replayed twice, nothing skipped"
    );
    assert_event(&event.data, 6, "message", Some("live"));
}

fn sse_ticks_share_the_sequence_with_messages(args: &[&str]) {
    let server = start(args, &["--tick-ms", "50"]);
    let mut sse = Sse::open(&server, "");
    let mut seqs = Vec::new();
    let mut message_seq = None;
    // Two ticks, then a message, then ticks until one follows the message.
    loop {
        if seqs.len() == 2 {
            message_seq = Some(publish(&server, "between ticks").0);
        }
        let event = sse.next();
        let seq: u64 = event.last_event_id.parse().expect("numeric id");
        if Some(seq) == message_seq {
            assert_eq!(event.event_type, "message");
            assert_event(&event.data, seq, "message", Some("between ticks"));
        } else {
            assert_eq!(event.event_type, "tick");
            assert_event(&event.data, seq, "tick", None);
        }
        seqs.push(seq);
        if message_seq.is_some_and(|m| seq > m) {
            break;
        }
    }
    // One sequence, +1 per event, whoever published it.
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{seqs:?}");
    }
}

fn sse_and_poll_replay_at_least_1024_events(args: &[&str]) {
    let server = start(args, &[]);
    let total = 1100u64;
    let mut c = Client::open(&server);
    for batch in (1..=total).collect::<Vec<_>>().chunks(100) {
        // Pipelined, a hundred at a time.
        let raw: Vec<u8> = batch
            .iter()
            .flat_map(|i| post("/publish", format!("m{i}").as_bytes()))
            .collect();
        c.send(raw);
        for &i in batch {
            assert_eq!(published(&c.response()).0, i);
        }
    }
    let after = total - 1024;
    let mut sse = Sse::open(&server, &format!("Last-Event-ID: {after}\r\n"));
    for seq in after + 1..=total {
        let event = sse.next();
        assert_eq!(event.last_event_id, seq.to_string());
        assert_event(&event.data, seq, "message", Some(&format!("m{seq}")));
    }
    c.send(get(&format!("/poll?after={after}")));
    assert_poll(&c.response(), &(after + 1..=total).collect::<Vec<_>>());
}

fn replay_past_the_byte_bound_gives_what_is_left(args: &[&str]) {
    // A 64,000-byte message may cost about 256 KB retained (every encoding counted): a bound of
    // 1,000,000 bytes keeps the newest three.
    let server = start(args, &["--retain-bytes", "1000000"]);
    let big = "y".repeat(64_000);
    let mut c = Client::open(&server);
    for i in 1..=6u64 {
        c.send(post("/publish", format!("{i}{big}").as_bytes()));
        assert_eq!(published(&c.response()).0, i);
    }
    let mut sse = Sse::open(&server, "Last-Event-ID: 1\r\n");
    for seq in 4..=6u64 {
        let event = sse.next();
        assert_eq!(event.last_event_id, seq.to_string());
        assert_event(&event.data, seq, "message", Some(&format!("{seq}{big}")));
    }
    c.send(get("/poll?after=0"));
    let events = json(&c.response().body);
    let seqs: Vec<u64> = events
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
}

// ---- /stream -----------------------------------------------------------------------------------

fn stream_is_chunked_ndjson_one_line_per_chunk(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    c.send(get("/stream"));
    let head = c.head();
    assert_eq!(head.status, 200);
    assert_eq!(head_field(&head, "content-type"), "application/x-ndjson");
    assert_eq!(head.body, BodyFraming::Chunked);
    server.wait_stats("the stream subscription", |s| count(s, "stream") == 1);

    let texts = ["a", "two\nlines", &"x".repeat(10_000)];
    for text in texts {
        publish(&server, text);
    }
    for (i, text) in texts.iter().enumerate() {
        let chunk = c.chunk();
        let line = std::str::from_utf8(&chunk).expect("UTF-8 line");
        assert!(line.ends_with('\n'), "a chunk is a whole line: {line:?}");
        assert_eq!(
            line.matches('\n').count(),
            1,
            "one line per chunk: {line:?}"
        );
        assert_event(line.trim_end(), i as u64 + 1, "message", Some(text));
    }
}

/// RFC 9112 §6.1: an HTTP/1.0 client cannot take chunked framing, so `/stream` and `/echo`
/// answer it with a body that the close delimits.
fn http10_stream_and_echo_are_delimited_by_the_close(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    c.send(b"GET /stream HTTP/1.0\r\n\r\n");
    let head = c.head();
    assert_eq!(head.status, 200);
    assert_eq!(head.body, BodyFraming::UntilClose, "{head:?}");
    assert!(!head.keep_alive);
    server.wait_stats("the stream subscription", |s| count(s, "stream") == 1);
    publish(&server, "plain line");
    while !c.buf.contains(&b'\n') {
        assert!(c.fill(), "stream closed before its first line");
    }
    let end = c.buf.iter().position(|&b| b == b'\n').unwrap();
    let line = String::from_utf8(c.buf[..end].to_vec()).expect("UTF-8 line");
    assert_event(&line, 1, "message", Some("plain line"));

    let mut e = Client::open(&server);
    e.send(b"POST /echo HTTP/1.0\r\nContent-Length: 11\r\n\r\nhello again");
    let r = e.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.body, b"hello again");
}

// ---- WebSocket (tungstenite) -------------------------------------------------------------------

fn ws_handshake_and_broadcast(args: &[&str]) {
    let server = start(args, &[]);
    let mut ws = ws_connect(&server);
    server.wait_stats("the WebSocket subscription", |s| count(s, "ws") == 1);
    for (i, text) in ["first", "second"].iter().enumerate() {
        assert_eq!(publish(&server, text), (i as u64 + 1, 1));
    }
    for (i, text) in ["first", "second"].iter().enumerate() {
        assert_event(&ws_text(&mut ws), i as u64 + 1, "message", Some(text));
    }
}

fn ws_echoes_text_and_binary_and_answers_ping(args: &[&str]) {
    let server = start(args, &[]);
    let mut ws = ws_connect(&server);
    ws.send(Message::text("hello, wörld")).unwrap();
    assert_eq!(ws_next(&mut ws), Message::text("hello, wörld"));
    let bytes: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(bytes.clone())).unwrap();
    assert_eq!(ws_next(&mut ws), Message::binary(bytes));
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .unwrap();
    assert_eq!(
        ws_next(&mut ws),
        Message::Pong(Bytes::from_static(b"are you there"))
    );
    // Empty messages too.
    ws.send(Message::text("")).unwrap();
    assert_eq!(ws_next(&mut ws), Message::text(""));
}

fn ws_echoes_large_and_fragmented_messages(args: &[&str]) {
    let server = start(args, &[]);
    let mut ws = ws_connect(&server);
    let large: Vec<u8> = (0..200 * 1024).map(|i| (i * 7 + i / 251) as u8).collect();
    ws.send(Message::binary(large.clone())).unwrap();
    assert_eq!(ws_next(&mut ws), Message::binary(large));

    // "é" is split between two fragments, so the server must validate UTF-8 across them; a
    // ping between fragments is answered in the middle of the message.
    let fragments: [(&[u8], Data, bool); 3] = [
        (b"fragmented \xC3", Data::Text, false),
        (b"\xA9t\xC3\xA9 ", Data::Continue, false),
        (b"message", Data::Continue, true),
    ];
    for (i, (payload, data, fin)) in fragments.into_iter().enumerate() {
        let frame = TFrame::message(Bytes::from_static(payload), TOpCode::Data(data), fin);
        ws.send(Message::Frame(frame)).unwrap();
        if i == 0 {
            ws.send(Message::Ping(Bytes::from_static(b"mid"))).unwrap();
        }
    }
    assert_eq!(ws_next(&mut ws), Message::Pong(Bytes::from_static(b"mid")));
    assert_eq!(ws_next(&mut ws), Message::text("fragmented été message"));
}

fn ws_frames_in_the_same_write_as_the_upgrade(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    // Bytes after the upgrade request are already frames, even when they arrive with it.
    let mut raw = ws_upgrade("13", Some(WS_KEY)).into_bytes();
    raw.extend(masked(OpCode::Text, b"eager"));
    raw.extend(masked(OpCode::Ping, b"eager ping"));
    c.send(raw);
    assert_eq!(c.head().status, 101);
    assert_eq!(c.ws_frame(), (0x81, b"eager".to_vec()));
    assert_eq!(c.ws_frame(), (0x8A, b"eager ping".to_vec()));
}

fn ws_close_handshake(args: &[&str]) {
    let server = start(args, &[]);
    let mut ws = ws_connect(&server);
    server.wait_stats("the WebSocket subscription", |s| count(s, "ws") == 1);
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    match ws_next(&mut ws) {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the server's close, got {other:?}"),
    }
    assert!(closes(ws.get_mut()), "the server closes the TCP connection");
    server.wait_stats("the WebSocket to go", |s| count(s, "ws") == 0);
}

// ---- WebSocket protocol violations (hand-made frames) ------------------------------------------

fn ws_unmasked_frame_is_1002(args: &[&str]) {
    let mut frame = Vec::new();
    encode_frame(&mut frame, OpCode::Text, b"hi", None);
    assert_ws_violation(args, &[], &frame, 1002);
}

fn ws_reserved_bit_is_1002(args: &[&str]) {
    // FIN + RSV1 + text, with no extension negotiated.
    assert_ws_violation(args, &[], &masked_with(0xC1, b"hi"), 1002);
}

fn ws_reserved_opcode_is_1002(args: &[&str]) {
    assert_ws_violation(args, &[], &masked_with(0x83, b"hi"), 1002);
}

fn ws_fragmented_control_frame_is_1002(args: &[&str]) {
    // A ping without FIN.
    assert_ws_violation(args, &[], &masked_with(0x09, b"hi"), 1002);
}

fn ws_long_control_frame_is_1002(args: &[&str]) {
    assert_ws_violation(args, &[], &masked(OpCode::Ping, &[b'p'; 126]), 1002);
}

fn ws_continuation_without_start_is_1002(args: &[&str]) {
    assert_ws_violation(args, &[], &masked_with(0x80, b"orphan"), 1002);
}

fn ws_invalid_utf8_text_is_1007(args: &[&str]) {
    assert_ws_violation(args, &[], &masked(OpCode::Text, b"ok \xFF\xFE"), 1007);
}

fn ws_invalid_utf8_across_fragments_is_1007(args: &[&str]) {
    // F0 9F starts a four-byte character; the next fragment does not continue it.
    let mut frames = masked_with(0x01, b"a\xF0\x9F");
    frames.extend(masked_with(0x80, b"xyz"));
    assert_ws_violation(args, &[], &frames, 1007);
}

fn ws_invalid_utf8_close_reason_is_1007(args: &[&str]) {
    assert_ws_violation(args, &[], &masked(OpCode::Close, b"\x03\xE8bad\xFF"), 1007);
}

fn ws_message_over_limit_is_1009(args: &[&str]) {
    let server = start(args, &["--max-message", "1024"]);
    let mut c = ws_raw(&server);
    // Exactly the limit is fine.
    c.send(masked(OpCode::Binary, &[7; 1024]));
    assert_eq!(c.ws_frame(), (0x82, vec![7; 1024]));
    c.send(masked(OpCode::Binary, &[7; 1025]));
    assert_eq!(c.ws_close_code(), 1009);
    assert!(c.closes());
}

fn ws_fragmented_message_over_limit_is_1009(args: &[&str]) {
    let mut frames = masked_with(0x02, &[7; 600]);
    frames.extend(masked_with(0x80, &[7; 600]));
    assert_ws_violation(args, &["--max-message", "1024"], &frames, 1009);
}

fn ws_empty_close_is_answered_and_closed(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = ws_raw(&server);
    c.send(masked(OpCode::Close, b""));
    let (first, payload) = c.ws_frame();
    assert_eq!(first, 0x88, "a close frame answers");
    // An empty close carries no code to echo: empty, or 1000.
    assert!(
        payload.is_empty() || payload[..2] == [0x03, 0xE8],
        "{payload:?}"
    );
    assert!(c.closes());
}

fn ws_upgrade_without_valid_key_is_400(args: &[&str]) {
    let server = start(args, &[]);
    for key in [None, Some("short"), Some("not base64 at all!!!!!!!")] {
        let (_, r) = roundtrip(&server, ws_upgrade("13", key).as_bytes());
        assert_eq!(r.status, 400, "key {key:?}");
    }
}

fn ws_upgrade_with_version_8_is_426(args: &[&str]) {
    let server = start(args, &[]);
    let (_, r) = roundtrip(&server, ws_upgrade("8", Some(WS_KEY)).as_bytes());
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
}

// ---- long polling ------------------------------------------------------------------------------

/// Checks a poll answer is a JSON array of message events with these seqs, data `m{seq}`.
fn assert_poll(r: &Response, seqs: &[u64]) {
    assert_eq!(r.status, 200);
    assert_eq!(media_type(r), "application/json");
    let events = json(&r.body);
    let events = events.as_array().expect("a JSON array");
    assert_eq!(events.len(), seqs.len(), "{events:?}");
    for (event, &seq) in events.iter().zip(seqs) {
        assert_event(&event.to_string(), seq, "message", Some(&format!("m{seq}")));
    }
}

fn poll_returns_retained_events_at_once(args: &[&str]) {
    let server = start(args, &[]);
    for i in 1..=3 {
        publish(&server, &format!("m{i}"));
    }
    let mut c = Client::open(&server);
    c.send(get("/poll?after=1"));
    assert_poll(&c.response(), &[2, 3]);
    c.send(get("/poll?after=0"));
    assert_poll(&c.response(), &[1, 2, 3]);
}

fn poll_is_held_until_an_event_is_published(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    // With `after`, then without (the next event), then retained ones: one connection throughout.
    for (target, seq) in [("/poll?after=0", 1), ("/poll", 2)] {
        c.send(get(target));
        server.wait_stats("the held poll", |s| count(s, "poll") == 1);
        assert_eq!(publish(&server, &format!("m{seq}")).0, seq);
        assert_poll(&c.response(), &[seq]);
    }
    c.send(get("/poll?after=0"));
    assert_poll(&c.response(), &[1, 2]);
}

fn poll_times_out_with_an_empty_array(args: &[&str]) {
    let server = start(args, &["--poll-timeout-ms", "200"]);
    let mut c = Client::open(&server);
    for _ in 0..2 {
        c.send(get("/poll?after=0"));
        assert_poll(&c.response(), &[]);
    }
}

fn short_poll_answers_at_once(args: &[&str]) {
    // The long-poll timeout is far beyond the test's patience: only `wait=0` answers quickly.
    let server = start(args, &["--poll-timeout-ms", "600000"]);
    let mut c = Client::open(&server);
    c.send(get("/poll?after=0&wait=0"));
    assert_poll(&c.response(), &[]);
    publish(&server, "m1");
    publish(&server, "m2");
    c.send(get("/poll?wait=0&after=1"));
    assert_poll(&c.response(), &[2]);
    c.send(get("/poll?after=2&wait=0"));
    assert_poll(&c.response(), &[]);
    c.send(get("/poll?after=0&wait=maybe"));
    assert_eq!(c.response().status, 400);
}

// ---- publish -----------------------------------------------------------------------------------

fn publish_answers_seq_and_live_subscribers(args: &[&str]) {
    let server = start(args, &[]);
    assert_eq!(publish(&server, "nobody listens"), (1, 0));

    let sse = Sse::open(&server, "");
    let mut stream = Client::open(&server);
    stream.send(get("/stream"));
    assert_eq!(stream.head().status, 200);
    let ws = ws_connect(&server);
    wait_counts(&server, 1, 1, 1, 1);
    assert_eq!(publish(&server, "three listen"), (2, 3));

    drop((sse, stream, ws));
    wait_counts(&server, 1, 0, 0, 0);
    assert_eq!(publish(&server, "gone again"), (3, 0));
}

fn every_transport_carries_the_same_json(args: &[&str]) {
    let server = start(args, &[]);
    let mut sse = Sse::open(&server, "");
    let mut stream = Client::open(&server);
    stream.send(get("/stream"));
    assert_eq!(stream.head().status, 200);
    let mut ws = ws_raw(&server);
    wait_counts(&server, 1, 1, 1, 1);
    publish(&server, "same everywhere");

    let on_sse = sse.next().data;
    let on_stream = String::from_utf8(stream.chunk()).unwrap();
    // One final text frame per event.
    let (first, payload) = ws.ws_frame();
    assert_eq!(first, 0x81, "a single text frame");
    let on_ws = String::from_utf8(payload).unwrap();
    let mut c = Client::open(&server);
    c.send(get("/poll?after=0"));
    let on_poll = json(&c.response().body)[0].clone();

    assert_event(&on_sse, 1, "message", Some("same everywhere"));
    assert_eq!(on_stream, format!("{on_sse}\n"));
    assert_eq!(on_ws, on_sse);
    assert_eq!(on_poll, json(on_sse.as_bytes()));
}

fn publish_body_over_64k_is_413_and_closes(args: &[&str]) {
    let server = start(args, &[]);
    // Exactly 64 KiB is accepted.
    let mut c = Client::open(&server);
    c.send(post("/publish", &[b'a'; 64 * 1024]));
    assert_eq!(published(&c.response()), (1, 0));
    // One byte more is refused on the declared length alone.
    c.send("POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 65537\r\n\r\n");
    assert_eq!(c.response().status, 413);
    assert!(c.closes());
    assert_eq!(server.stats()["events_published"], 1);
}

fn publish_chunked_body_over_64k_is_413_and_closes(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    let mut raw =
        b"POST /publish HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend(b"6000\r\n");
        raw.extend([b'a'; 0x6000]);
        raw.extend(b"\r\n");
    }
    raw.extend(b"0\r\n\r\n");
    // The server may refuse before it has read everything; what it did read is all that counts.
    let _ = c.sock.write_all(&raw);
    assert_eq!(c.response().status, 413);
    assert!(c.closes());
    assert_eq!(server.stats()["events_published"], 0);
}

fn publish_non_utf8_is_400(args: &[&str]) {
    let server = start(args, &[]);
    let (_, r) = roundtrip(&server, &post("/publish", b"caf\xE9"));
    assert_eq!(r.status, 400);
    assert_eq!(server.stats()["events_published"], 0);
}

fn publish_chunked_with_extensions_and_trailer(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    c.send(
        "POST /publish HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;name=value\r\nhello\r\n\
         6;quoted=\"a b\";flag\r\n world\r\n\
         0\r\nX-Checksum: abc\r\n\r\n",
    );
    assert_eq!(published(&c.response()), (1, 0));
    // The same connection carries on, and the event holds the decoded body.
    c.send(get("/poll?after=0"));
    let r = c.response();
    assert_event(
        &json(&r.body)[0].to_string(),
        1,
        "message",
        Some("hello world"),
    );
}

// ---- echo --------------------------------------------------------------------------------------

fn echo_large_body_round_trips(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    let body: Vec<u8> = (0..4 << 20).map(|i: u32| (i ^ (i >> 9)) as u8).collect();
    // The echo comes back while the body is still going out: write from another thread, or
    // both sides could wait on full buffers.
    let mut writer = c.sock.try_clone().unwrap();
    let request = post("/echo", &body);
    let sender = std::thread::spawn(move || writer.write_all(&request));
    let r = c.response();
    sender.join().unwrap().expect("send the body");
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "echoed {} of {} bytes, or not the same",
        r.body.len(),
        body.len()
    );
}

fn echo_streams_before_the_body_ends(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    let head = c.head();
    assert_eq!(head.status, 200);
    assert_eq!(head.body, BodyFraming::Chunked);
    // The request body has not ended, yet its first part comes back.
    let mut echoed = Vec::new();
    while echoed.len() < 5 {
        let chunk = c.chunk();
        assert!(!chunk.is_empty(), "echo ended before the request body did");
        echoed.extend(chunk);
    }
    assert_eq!(echoed, b"hello");
    c.send("6\r\n world\r\n0\r\n\r\n");
    assert_eq!(c.chunks_to_end(), b" world");

    // A Content-Length body, every byte value, on the same connection.
    let bytes: Vec<u8> = (0..=255).collect();
    c.send(post("/echo", &bytes));
    let r = c.response();
    assert_eq!((r.status, r.body), (200, bytes));
}

fn expect_100_continue(args: &[&str]) {
    let server = start(args, &[]);
    let mut c = Client::open(&server);
    c.send(
        "POST /publish HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    // The body is sent only after the interim answer, as a real client would.
    assert_eq!(c.response().status, 100);
    c.send("hello");
    assert_eq!(published(&c.response()), (1, 0));
}

// ---- stats -------------------------------------------------------------------------------------

fn stats_has_every_key_and_live_counts(args: &[&str]) {
    let server = start(args, &[]);
    publish(&server, "one");
    publish(&server, "two");
    let _sse = Sse::open(&server, "");
    let mut stream = Client::open(&server);
    stream.send(get("/stream"));
    assert_eq!(stream.head().status, 200);
    let _ws = ws_connect(&server);
    // Earlier `/stats` connections may still be closing; wait until only the asking one is left.
    let s = server.wait_stats("one connection of each kind", |s| {
        ["http", "sse", "stream", "ws"]
            .iter()
            .all(|kind| count(s, kind) == 1)
    });
    for key in [
        "threads",
        "rss_bytes",
        "accepted",
        "rejected",
        "events_published",
    ] {
        assert!(s[key].is_u64(), "{key} is not a count in {s}");
    }
    assert_eq!(s["model"], model_name(args));
    assert!(["evented", "blocking"].contains(&s["model"].as_str().unwrap()));
    assert_eq!(s["events_published"], 2);
    assert_eq!(s["rejected"], 0);
    assert!(s["threads"].as_u64().unwrap() >= 1);
    assert!(s["rss_bytes"].as_u64().unwrap() > 0);
    // Two publishes, three subscribers and at least this `/stats` request.
    let accepted = s["accepted"].as_u64().unwrap();
    assert!(accepted >= 6, "accepted {accepted}");
    // One more connection, one more accepted.
    let mut c = Client::open(&server);
    c.send(get("/stats"));
    let r = c.response();
    assert_eq!(media_type(&r), "application/json");
    assert_eq!(json(&r.body)["accepted"].as_u64(), Some(accepted + 1));
    // The same connection again: nothing new accepted.
    c.send(get("/stats"));
    assert_eq!(
        json(&c.response().body)["accepted"].as_u64(),
        Some(accepted + 1)
    );
}

// ---- bad input ---------------------------------------------------------------------------------

fn malformed_request_line_is_400_and_closes(args: &[&str]) {
    assert_refused(args, b"GARBAGE\r\nHost: t\r\n\r\n", 400);
}

fn malformed_header_is_400_and_closes(args: &[&str]) {
    assert_refused(
        args,
        b"GET / HTTP/1.1\r\nHost: t\r\nNo Colon Here\r\n\r\n",
        400,
    );
}

fn head_over_16k_is_431_and_closes(args: &[&str]) {
    let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    raw.resize(raw.len() + 17 * 1024, b'a');
    raw.extend(b"\r\n\r\n");
    assert_refused(args, &raw, 431);
}

fn http2_request_line_is_505_and_closes(args: &[&str]) {
    assert_refused(args, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
}

fn content_length_with_transfer_encoding_is_400_and_closes(args: &[&str]) {
    assert_refused(
        args,
        b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

fn conflicting_content_lengths_is_400_and_closes(args: &[&str]) {
    assert_refused(
        args,
        b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    );
}

fn http11_without_host_is_400(args: &[&str]) {
    let server = start(args, &[]);
    let (_, r) = roundtrip(&server, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 400);
}

// ---- clients that vanish, stall or dawdle ------------------------------------------------------

/// One subscriber of every kind, plus a held poll; all counted before they vanish.
fn subscribers(server: &Server) -> Vec<TcpStream> {
    let mut sse = Client::open(server);
    sse.send(get("/sse"));
    let mut stream = Client::open(server);
    stream.send(get("/stream"));
    let ws = ws_raw(server);
    let mut poll = Client::open(server);
    poll.send(get("/poll"));
    for c in [&mut sse, &mut stream] {
        assert_eq!(c.head().status, 200);
    }
    // The held poll is a plain HTTP connection as well.
    wait_counts(server, 2, 1, 1, 1);
    server.wait_stats("the held poll", |s| count(s, "poll") == 1);
    vec![sse.sock, stream.sock, ws.sock, poll.sock]
}

fn vanished_clients_are_removed_after_fin(args: &[&str]) {
    let server = start(args, &[]);
    drop(subscribers(&server));
    wait_counts(&server, 1, 0, 0, 0);
    server.wait_stats("no held poll", |s| count(s, "poll") == 0);
    let (_, r) = roundtrip(&server, get("/").as_bytes());
    assert_probe(&r);
}

fn vanished_clients_are_removed_after_rst(args: &[&str]) {
    let server = start(args, &[]);
    for sock in subscribers(&server) {
        // SO_LINGER 0: close(2) sends RST instead of FIN.
        socket2::SockRef::from(&sock)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    wait_counts(&server, 1, 0, 0, 0);
    server.wait_stats("no held poll", |s| count(s, "poll") == 0);
    // The server is unharmed, and the publish reaches nobody.
    assert_eq!(publish(&server, "anyone?"), (1, 0));
}

fn slowloris_gets_408_and_is_closed(args: &[&str]) {
    let server = start(args, &["--header-timeout-ms", "300"]);
    let mut c = Client::open(&server);
    c.send("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    // And one that never sends a byte.
    let mut silent = Client::open(&server);
    assert_eq!(c.response().status, 408);
    assert!(c.closes());
    assert!(
        silent.closes(),
        "a connection that never sends a head is closed"
    );
    let (_, r) = roundtrip(&server, get("/").as_bytes());
    assert_probe(&r);
}

fn a_client_that_stays_after_its_408_is_let_go_after_the_linger(args: &[&str]) {
    let server = start(args, &["--header-timeout-ms", "300"]);
    let mut c = Client::open(&server);
    c.send("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    assert_eq!(c.response().status, 408);
    assert!(c.closes(), "the server's FIN follows the 408");
    // `c` keeps its side open and never closes: the server lingers (2 s), then lets it go.
    // Only the `/stats` request itself is left.
    server.wait_stats("the lingering connection closed", |s| {
        s["connections"]["http"] == 1
    });
    drop(c);
}

fn idle_connections_are_closed_but_subscribers_are_not(args: &[&str]) {
    let server = start(args, &["--idle-timeout-ms", "300"]);
    let mut sse = Sse::open(&server, "");
    let mut stream = Client::open(&server);
    stream.send(get("/stream"));
    assert_eq!(stream.head().status, 200);
    wait_counts(&server, 1, 1, 1, 0);
    let mut ws = ws_raw(&server);
    let mut c = Client::open(&server);
    c.send(get("/"));
    assert_probe(&c.response());

    // Then nothing: the server closes without sending anything more.
    let mut rest = std::mem::take(&mut c.buf);
    c.sock
        .read_to_end(&mut rest)
        .expect("the server closes the idle connection");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // A silent WebSocket is closed as well, with a close frame first.
    let code = ws.ws_close_code();
    assert!((1000..=4999).contains(&code), "close code {code}");
    assert!(ws.closes());

    // Subscribers only listen: silent for longer than the idle timeout, they are still served.
    let s = server.wait_stats("the WebSocket to go", |s| count(s, "ws") == 0);
    assert_eq!((count(&s, "sse"), count(&s, "stream")), (1, 1));
    assert_eq!(publish(&server, "still here"), (1, 2));
    assert_event(&sse.next().data, 1, "message", Some("still here"));
    let line = String::from_utf8(stream.chunk()).unwrap();
    assert_event(line.trim_end(), 1, "message", Some("still here"));
}

fn slow_consumer_is_cut_off_and_others_are_served(args: &[&str]) {
    let server = start(args, &["--max-write-queue", "65536"]);
    // A subscriber that never reads, with a small receive buffer so the kernel cannot hide that.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(8 * 1024).unwrap();
    sock.connect(&server.addr.into()).unwrap();
    let mut slow = Client::wrap(sock.into());
    slow.sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    slow.send(get("/sse"));
    server.wait_stats("the slow subscriber", |s| count(s, "sse") == 1);

    let body = "x".repeat(32 * 1024);
    let mut publisher = Client::open(&server);
    let mut prober = Client::open(&server);
    for i in 0..200 {
        publisher.send(post("/publish", body.as_bytes()));
        assert_eq!(publisher.response().status, 200);
        if i % 50 == 0 {
            prober.send(get("/"));
            assert_probe(&prober.response());
        }
    }
    server.wait_stats("the slow subscriber to be cut off", |s| {
        count(s, "sse") == 0
    });
    assert!(slow.closes(), "the slow subscriber's connection is closed");
    prober.send(get("/"));
    assert_probe(&prober.response());
}

fn a_client_that_reads_no_answers_is_not_read_either(args: &[&str]) {
    let server = start(args, &[]);
    // Pipelined probes, none of whose answers is read: once the answers back up, the server
    // must stop reading (backpressure) rather than buffer answers without bound.
    let s = server.connect();
    s.set_nonblocking(true).unwrap();
    let burst = get("/").repeat(1000);
    let limit = 256 << 20;
    let mut sent = 0usize;
    let mut stalled_since = None;
    while sent < limit {
        match (&s).write(burst.as_bytes()) {
            Ok(n) => {
                sent += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("the server gave up on the connection: {e}"),
        }
    }
    // What the kernel's buffers on both sides hold, and a few reads of the server's: megabytes,
    // not the quarter gigabyte sent before the server stopped when it kept reading.
    assert!(
        sent < 64 << 20,
        "{sent} bytes taken from a client that reads nothing"
    );
    let mut c = Client::open(&server);
    c.send(get("/"));
    assert_probe(&c.response());
}

// ---- shutdown and abuse ------------------------------------------------------------------------

fn sigterm_ends_streams_cleanly_and_exits_0(args: &[&str]) {
    let mut server = start(args, &[]);
    let mut ws = ws_connect(&server);
    let mut stream = Client::open(&server);
    stream.send(get("/stream"));
    assert_eq!(stream.head().status, 200);
    let mut sse = Sse::open(&server, "");
    wait_counts(&server, 1, 1, 1, 1);
    // Every stream is live and in step before the signal.
    publish(&server, "before");
    assert_event(&ws_text(&mut ws), 1, "message", Some("before"));
    assert_eq!(stream.chunk().last(), Some(&b'\n'));
    assert_eq!(sse.next().last_event_id, "1");

    server.send_sigterm();
    match ws_next(&mut ws) {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    // The stream ends with its last chunk, not a cut connection.
    assert!(stream.chunk().is_empty(), "the last chunk `0\\r\\n\\r\\n`");
    assert!(stream.closes());
    while sse.advance() {}
    assert!(sse.ready.is_empty(), "{:?}", sse.ready);
    // Our side of the WebSocket close handshake, then let the server go.
    let _ = ws.flush();
    drop((ws, stream, sse));

    let status = server.wait_exit();
    assert!(status.success(), "exit status {status:?}");
}

/// A small deterministic generator (xorshift64), so a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn garbage_leaves_the_server_serving(args: &[&str]) {
    let mut server = start(args, &[]);
    let mut victims = Vec::new();
    for seed in 1..=6u64 {
        let mut c = Client::open(&server);
        for piece in noise(seed, 8 * 1024).chunks(1000) {
            // The server may answer 400 and close before all of it is sent.
            if c.sock.write_all(piece).is_err() {
                break;
            }
        }
        victims.push(c);
    }
    // Garbage after a valid request head, and inside a WebSocket.
    let mut c = Client::open(&server);
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend(noise(99, 4096));
    let _ = c.sock.write_all(&raw);
    victims.push(c);
    let mut ws = ws_raw(&server);
    let _ = ws.sock.write_all(&noise(7, 4096));
    victims.push(ws);

    let (_, r) = roundtrip(&server, get("/").as_bytes());
    assert_probe(&r);
    drop(victims);
    wait_counts(&server, 1, 0, 0, 0);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "server still runs"
    );
}
