//! One load connection as a sans-IO state machine: it writes its request into a buffer, takes the
//! bytes the server sends, and says what happened — established, an answered poll, events
//! received (with their `seq` and `sent_ns`), or a failure and its cause. No sockets, no clocks:
//! the connection set in `conns.rs` does the I/O, and the tests below drive it with bytes.
//!
//! Every kind parses with the project's own protocol code: response heads with
//! `http::parse_response_head`, bodies with `http::BodyDecoder`, SSE with `sse::Parser`,
//! WebSocket frames with `ws::Decoder` in the client role.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;

use crate::proto::http::{self, BodyDecoder, BodyFraming, ResponseHead};
use crate::proto::{sse, ws};

use super::endpoint::{Request, Timestamp};
use super::net::Cause;
use super::Kind;

/// Largest WebSocket message, SSE event or NDJSON line accepted from the server.
const MAX_MESSAGE: usize = 1 << 20;
/// Largest long-poll answer accepted (1024 retained events are far smaller).
const MAX_POLL_BODY: u64 = 8 << 20;

/// A failure: its cause, and for `Other` a word on what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub cause: Cause,
    pub why: String,
}

impl Fail {
    pub fn new(cause: Cause, why: impl Into<String>) -> Fail {
        Fail {
            cause,
            why: why.into(),
        }
    }
}

/// The part of an event the load generator measures: its `seq` and its send time (ns since the
/// epoch), each when the event carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Delivered {
    pub seq: Option<u64>,
    pub sent_ns: Option<u64>,
}

/// What one `on_data` call changed, besides events and bytes to send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// The connection just got its successful response.
    pub established: bool,
    /// A long poll was answered and the next one queued: its response timer starts over.
    pub polled: bool,
}

/// Where a session's output goes during one call.
pub struct Io<'a> {
    /// Bytes to send to the server (the next poll, WebSocket pongs).
    pub out: &'a mut Vec<u8>,
    /// Events received.
    pub events: &'a mut Vec<Delivered>,
    /// Send times (ns since the epoch) in the markers of echoed `--ws-send` messages.
    pub echoes: &'a mut Vec<u64>,
    /// Masking keys for client frames.
    pub rng: &'a mut Rng,
    /// What every request asks for (a long poll writes the next one from it).
    pub request: &'a Request,
    /// Where an event's send time is.
    pub timestamp: &'a Timestamp,
}

enum Phase {
    /// Waiting for (the rest of) a response head; holds what has arrived of it.
    Head(Vec<u8>),
    /// SSE: the body (which runs until close) through the event-stream parser.
    Sse(BodyDecoder, Box<sse::Parser>),
    /// Chunked NDJSON: decoded body bytes are split into lines.
    Stream(BodyDecoder, Vec<u8>),
    /// Upgraded to WebSocket.
    Ws(Box<ws::Decoder>),
    /// A long-poll answer's body, collected until complete.
    PollBody(BodyDecoder, Vec<u8>),
}

/// A connection's protocol state.
pub struct Session {
    kind: Kind,
    phase: Phase,
    established: bool,
    /// The `Sec-WebSocket-Key` sent, until the handshake is checked.
    ws_key: Option<Box<str>>,
    /// Long poll: the highest `seq` received so far.
    after: Option<u64>,
}

/// A small, fast generator for WebSocket keys and masks (they must be unpredictable to
/// intermediaries, not cryptographically strong). Seeded from the OS.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let mut seed = [0u8; 8];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .is_ok();
        let mut s = u64::from_ne_bytes(seed);
        if !ok || s == 0 {
            s = crate::sys::now_ns() ^ (u64::from(std::process::id()) << 32) | 1;
        }
        Rng(s)
    }

    /// xorshift64*.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

impl Session {
    /// A session for `kind`; appends its request (sent once the TCP connect completes) to `out`.
    pub fn new(kind: Kind, request: &Request, rng: &mut Rng, out: &mut Vec<u8>) -> Session {
        let mut ws_key = None;
        let path = &request.path;
        match kind {
            Kind::Sse => request.write_get(
                path,
                "Accept: text/event-stream\r\nCache-Control: no-cache\r\n",
                out,
            ),
            Kind::Stream => request.write_get(path, "", out),
            Kind::Ws => {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
                nonce[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
                let key = BASE64.encode(nonce);
                request.write_get(
                    path,
                    &format!(
                        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{}",
                        request
                            .ws_protocol
                            .as_ref()
                            .map_or_else(String::new, |p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
                    ),
                    out,
                );
                ws_key = Some(key.into_boxed_str());
            }
            Kind::Poll => request.write_get(&request.poll_path(None), "", out),
        }
        Session {
            kind,
            phase: Phase::Head(Vec::new()),
            established: false,
            ws_key,
            after: None,
        }
    }

    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Whether this is a WebSocket that completed its handshake (it may send keep-alive pings).
    pub fn is_open_ws(&self) -> bool {
        matches!(self.phase, Phase::Ws(_))
    }

    /// Takes bytes received from the server.
    pub fn on_data(&mut self, data: &[u8], io: &mut Io<'_>) -> Result<Step, Fail> {
        let mut step = Step::default();
        // Bytes that arrived behind a response head, owned once the head's buffer is gone.
        let mut carried: Vec<u8>;
        let mut rest = data;
        while !rest.is_empty() {
            let Phase::Head(buf) = &mut self.phase else {
                let used = self.feed_body(rest, &mut step, io)?;
                rest = &rest[used..];
                continue;
            };
            let parsed = if buf.is_empty() {
                http::parse_response_head(rest)
            } else {
                buf.extend_from_slice(rest);
                http::parse_response_head(buf)
            };
            match parsed {
                Ok(Some((head, used))) => {
                    // A refusal is told by its head, which the failure carries for the report.
                    let expected = if self.kind == Kind::Ws { 101 } else { 200 };
                    let interim = (100..200).contains(&head.status) && head.status != 101;
                    let shown = (head.status != expected && !interim).then(|| {
                        describe_head(if buf.is_empty() {
                            &rest[..used]
                        } else {
                            &buf[..used]
                        })
                    });
                    carried = if buf.is_empty() {
                        rest[used..].to_vec()
                    } else {
                        buf.split_off(used)
                    };
                    rest = &carried;
                    if let Err(mut fail) = self.on_head(head, &mut step, io.request) {
                        if let Some(shown) = shown {
                            fail.why = shown;
                        }
                        return Err(fail);
                    }
                    // A body-less poll answer is complete with its head.
                    self.finish_poll(&mut step, io)?;
                }
                Ok(None) => {
                    if buf.is_empty() {
                        buf.extend_from_slice(rest);
                    }
                    break;
                }
                Err(_) => return Err(Fail::new(Cause::Other, "malformed response head")),
            }
        }
        Ok(step)
    }

    /// Feeds body bytes to the current phase; returns how many it used (all of them, except
    /// when a poll answer ends and what follows belongs to the next answer).
    fn feed_body(&mut self, data: &[u8], step: &mut Step, io: &mut Io<'_>) -> Result<usize, Fail> {
        match &mut self.phase {
            Phase::Head(_) => Ok(0),
            Phase::Sse(body, parser) => {
                let mut decoded = Vec::new();
                body.decode(data, &mut decoded)
                    .map_err(|_| Fail::new(Cause::Other, "malformed SSE body"))?;
                let mut events = Vec::new();
                parser.feed(&decoded, &mut events);
                if parser.overflows() > 0 {
                    return Err(Fail::new(Cause::Other, "SSE event over 1 MiB"));
                }
                for event in events {
                    io.events
                        .push(parse_event(event.data.as_bytes(), io.timestamp));
                }
                Ok(data.len())
            }
            Phase::Stream(body, line) => {
                let used = body
                    .decode(data, line)
                    .map_err(|_| Fail::new(Cause::Other, "malformed chunked body"))?;
                while let Some(end) = line.iter().position(|&b| b == b'\n') {
                    io.events.push(parse_event(&line[..end], io.timestamp));
                    line.drain(..=end);
                }
                if line.len() > MAX_MESSAGE {
                    return Err(Fail::new(Cause::Other, "NDJSON line over 1 MiB"));
                }
                if body.is_done() || used < data.len() {
                    return Err(Fail::new(Cause::ClosedByServer, "stream ended"));
                }
                Ok(data.len())
            }
            Phase::Ws(decoder) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let (used, message) = decoder
                        .decode(rest)
                        .map_err(|e| Fail::new(Cause::Other, format!("WebSocket: {}", e.reason)))?;
                    rest = &rest[used..];
                    match message {
                        None => {}
                        Some(ws::Message::Text(text)) => match marker_ns(&text) {
                            Some(sent_ns) => io.echoes.push(sent_ns),
                            None => io.events.push(parse_event(text.as_bytes(), io.timestamp)),
                        },
                        Some(ws::Message::Binary(_)) | Some(ws::Message::Pong(_)) => {}
                        Some(ws::Message::Ping(payload)) => {
                            let mask = io.rng.mask();
                            ws::encode_frame(io.out, ws::OpCode::Pong, &payload, Some(mask));
                        }
                        Some(ws::Message::Close(code)) => {
                            // Complete the close handshake, then count the connection as lost.
                            let mask = io.rng.mask();
                            match code {
                                Some((code, _)) => ws::encode_close(io.out, code, "", Some(mask)),
                                None => {
                                    ws::encode_frame(io.out, ws::OpCode::Close, &[], Some(mask))
                                }
                            }
                            return Err(Fail::new(
                                Cause::ClosedByServer,
                                "WebSocket closed by the server",
                            ));
                        }
                    }
                }
                Ok(data.len())
            }
            Phase::PollBody(body, buf) => {
                let used = body
                    .decode(data, buf)
                    .map_err(|_| Fail::new(Cause::Other, "malformed poll body"))?;
                self.finish_poll(step, io)?;
                Ok(used)
            }
        }
    }

    /// When a poll answer's body is complete: takes its events and asks for the next ones.
    fn finish_poll(&mut self, step: &mut Step, io: &mut Io<'_>) -> Result<(), Fail> {
        let Phase::PollBody(body, buf) = &self.phase else {
            return Ok(());
        };
        if !body.is_done() {
            return Ok(());
        }
        let not_json = |_| Fail::new(Cause::Other, "poll answer is not a JSON array");
        let events: Vec<Delivered> = if buf.is_empty() {
            Vec::new()
        } else if io.timestamp.is_contract() {
            serde_json::from_slice(buf).map_err(not_json)?
        } else {
            let values: Vec<serde_json::Value> = serde_json::from_slice(buf).map_err(not_json)?;
            values
                .iter()
                .map(|json| {
                    let (sent_ns, seq) = io.timestamp.read(json);
                    Delivered { seq, sent_ns }
                })
                .collect()
        };
        for e in events {
            io.events.push(e);
            if let Some(seq) = e.seq {
                self.after = Some(self.after.map_or(seq, |a| a.max(seq)));
            }
        }
        io.request
            .write_get(&io.request.poll_path(self.after), "", io.out);
        self.phase = Phase::Head(Vec::new());
        step.polled = true;
        Ok(())
    }

    /// A complete response head: check it and move to the body's phase.
    fn on_head(
        &mut self,
        head: ResponseHead,
        step: &mut Step,
        request: &Request,
    ) -> Result<(), Fail> {
        let expected = if self.kind == Kind::Ws { 101 } else { 200 };
        if head.status != expected {
            if (100..200).contains(&head.status) && head.status != 101 {
                // An interim answer: the real one follows.
                self.phase = Phase::Head(Vec::new());
                return Ok(());
            }
            return Err(Fail::new(
                Cause::HttpError,
                format!("status {}", head.status),
            ));
        }
        let phase = match self.kind {
            Kind::Sse => {
                let media = head.header("content-type").unwrap_or_default();
                let media = String::from_utf8_lossy(media);
                let essence = media.split(';').next().unwrap_or("").trim();
                if !essence.eq_ignore_ascii_case("text/event-stream") {
                    return Err(Fail::new(
                        Cause::Other,
                        format!("the answer is not an event stream (Content-Type: {media:?})"),
                    ));
                }
                Phase::Sse(
                    BodyDecoder::new(head.body, u64::MAX),
                    Box::new(sse::Parser::with_limit(MAX_MESSAGE)),
                )
            }
            Kind::Stream => {
                if head.body != BodyFraming::Chunked {
                    return Err(Fail::new(Cause::Other, "stream answer is not chunked"));
                }
                Phase::Stream(BodyDecoder::new(head.body, u64::MAX), Vec::new())
            }
            Kind::Ws => {
                let key = self.ws_key.take().unwrap_or_default();
                let accept = head.header("sec-websocket-accept").unwrap_or_default();
                if !head.has_token("upgrade", "websocket")
                    || !head.has_token("connection", "upgrade")
                    || accept != ws::accept_key(key.as_bytes()).as_bytes()
                {
                    return Err(Fail::new(Cause::Other, "bad WebSocket handshake answer"));
                }
                // RFC 6455 §4.1: a subprotocol the client did not offer fails the connection.
                if let Some(chosen) = head.header("sec-websocket-protocol") {
                    let offered = request.ws_protocol.as_deref().unwrap_or("");
                    let chosen = String::from_utf8_lossy(chosen);
                    if !offered.split(',').any(|p| p.trim() == chosen.trim()) {
                        return Err(Fail::new(
                            Cause::Other,
                            format!("the server chose the subprotocol {chosen:?}, which was not offered"),
                        ));
                    }
                }
                Phase::Ws(Box::new(ws::Decoder::new(ws::Role::Client, MAX_MESSAGE)))
            }
            Kind::Poll => match head.body {
                // No body at all: nothing new, poll again.
                BodyFraming::None => Phase::PollBody(BodyDecoder::new(head.body, 0), Vec::new()),
                BodyFraming::UntilClose => {
                    return Err(Fail::new(Cause::Other, "poll answer without a length"));
                }
                framing => Phase::PollBody(BodyDecoder::new(framing, MAX_POLL_BODY), Vec::new()),
            },
        };
        // Established only once the answer has passed every check above.
        if !self.established {
            self.established = true;
            step.established = true;
        }
        self.phase = phase;
        Ok(())
    }

    /// The server closed the connection.
    pub fn on_eof(&self) -> Fail {
        Fail::new(Cause::ClosedByServer, "closed by the server")
    }

    /// A text message (`--ws-send`): `text` with a marker holding the send time in place of
    /// `{marker}`, or after it.
    pub fn send_text(&self, text: &str, sent_ns: u64, out: &mut Vec<u8>, rng: &mut Rng) {
        if !self.is_open_ws() {
            return;
        }
        let marker = format!("{MARKER}{sent_ns}#");
        let message = if text.contains("{marker}") {
            text.replace("{marker}", &marker)
        } else {
            format!("{text}{marker}")
        };
        ws::encode_frame(out, ws::OpCode::Text, message.as_bytes(), Some(rng.mask()));
    }

    /// A masked ping, to keep an otherwise silent WebSocket from looking idle to the server.
    pub fn keepalive(&self, io_out: &mut Vec<u8>, rng: &mut Rng) {
        if self.is_open_ws() {
            ws::encode_frame(io_out, ws::OpCode::Ping, b"", Some(rng.mask()));
        }
    }
}

/// A response head on one line, `HTTP/1.1 401 Unauthorized | WWW-Authenticate: …`, at most
/// 300 characters.
fn describe_head(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let line = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// Marks a message the load generator sent: `#c10k:NANOSECONDS#`.
const MARKER: &str = "#c10k:";

/// The send time in a message's marker, when it is one of ours coming back.
fn marker_ns(text: &str) -> Option<u64> {
    let at = text.find(MARKER)? + MARKER.len();
    let digits = &text[at..];
    let end = digits.find('#')?;
    digits[..end].parse().ok()
}

/// What an event's data says of its `seq` and send time. Data that is not JSON, or JSON
/// without the field, is still an event, only one whose delivery cannot be timed.
pub fn parse_event(data: &[u8], timestamp: &Timestamp) -> Delivered {
    if timestamp.is_contract() {
        // The contract's events: read the two fields without building a tree.
        return serde_json::from_slice(data).unwrap_or_default();
    }
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(json) => {
            let (sent_ns, seq) = timestamp.read(&json);
            Delivered { seq, sent_ns }
        }
        Err(_) => Delivered::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Harness {
        session: Session,
        request: Vec<u8>,
        out: Vec<u8>,
        events: Vec<Delivered>,
        rng: Rng,
        asks: Request,
        timestamp: Timestamp,
        echoes: Vec<u64>,
    }

    impl Harness {
        fn new(kind: Kind) -> Harness {
            Harness::with(kind, Request::contract(kind, "h"), Timestamp::default())
        }

        fn with(kind: Kind, asks: Request, timestamp: Timestamp) -> Harness {
            let mut rng = Rng::new();
            let mut request = Vec::new();
            let session = Session::new(kind, &asks, &mut rng, &mut request);
            Harness {
                session,
                request,
                out: Vec::new(),
                events: Vec::new(),
                rng,
                asks,
                timestamp,
                echoes: Vec::new(),
            }
        }

        fn feed(&mut self, bytes: &[u8]) -> Result<Step, Fail> {
            let mut io = Io {
                out: &mut self.out,
                events: &mut self.events,
                echoes: &mut self.echoes,
                rng: &mut self.rng,
                request: &self.asks,
                timestamp: &self.timestamp,
            };
            self.session.on_data(bytes, &mut io)
        }

        /// Feeds `bytes` one at a time, merging the steps.
        fn feed_bytewise(&mut self, bytes: &[u8]) -> Result<Step, Fail> {
            let mut step = Step::default();
            for b in bytes {
                let s = self.feed(std::slice::from_ref(b))?;
                step.established |= s.established;
                step.polled |= s.polled;
            }
            Ok(step)
        }
    }

    fn event_json(seq: u64) -> String {
        format!(
            "{{\"seq\":{seq},\"event\":\"tick\",\"sent_ns\":{}}}",
            seq * 10
        )
    }

    fn sse_bytes() -> Vec<u8> {
        let mut b =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                .to_vec();
        b.extend_from_slice(b": hb\n\n");
        for seq in 1..=3 {
            sse::encode_event(
                &mut b,
                Some(&seq.to_string()),
                Some("tick"),
                &event_json(seq),
            );
        }
        b
    }

    fn delivered(seqs: &[u64]) -> Vec<Delivered> {
        seqs.iter()
            .map(|&seq| Delivered {
                seq: Some(seq),
                sent_ns: Some(seq * 10),
            })
            .collect()
    }

    #[test]
    fn sse_whole_and_bytewise() {
        for bytewise in [false, true] {
            let mut h = Harness::new(Kind::Sse);
            assert!(String::from_utf8_lossy(&h.request).starts_with("GET /sse HTTP/1.1\r\n"));
            let bytes = sse_bytes();
            let step = if bytewise {
                h.feed_bytewise(&bytes)
            } else {
                h.feed(&bytes)
            }
            .unwrap();
            assert!(step.established);
            assert!(h.session.is_established());
            assert_eq!(h.events, delivered(&[1, 2, 3]));
        }
    }

    #[test]
    fn stream_lines_from_chunks() {
        for bytewise in [false, true] {
            let mut h = Harness::new(Kind::Stream);
            let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for seq in 1..=2 {
                http::write_chunk(&mut bytes, format!("{}\n", event_json(seq)).as_bytes());
            }
            let step = if bytewise {
                h.feed_bytewise(&bytes)
            } else {
                h.feed(&bytes)
            }
            .unwrap();
            assert!(step.established);
            assert_eq!(h.events, delivered(&[1, 2]));
            let end = h.feed(http::LAST_CHUNK).unwrap_err();
            assert_eq!(end.cause, Cause::ClosedByServer);
        }
    }

    fn ws_accept_for(request: &[u8]) -> String {
        let text = String::from_utf8_lossy(request);
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim()
            .to_string();
        assert!(ws::is_valid_client_key(key.as_bytes()));
        ws::accept_key(key.as_bytes())
    }

    #[test]
    fn websocket_handshake_events_ping_and_close() {
        let mut h = Harness::new(Kind::Ws);
        let accept = ws_accept_for(&h.request);
        let mut bytes = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        ws::encode_frame(&mut bytes, ws::OpCode::Text, event_json(7).as_bytes(), None);
        ws::encode_frame(&mut bytes, ws::OpCode::Ping, b"hi", None);
        let step = h.feed_bytewise(&bytes).unwrap();
        assert!(step.established);
        assert_eq!(h.events, delivered(&[7]));
        // The pong is masked and carries the ping's payload.
        let mut server = ws::Decoder::new(ws::Role::Server, 1024);
        assert_eq!(
            server.decode(&h.out).unwrap(),
            (h.out.len(), Some(ws::Message::Pong(b"hi".to_vec())))
        );
        h.out.clear();
        let mut close = Vec::new();
        ws::encode_close(&mut close, 1001, "bye", None);
        let fail = h.feed(&close).unwrap_err();
        assert_eq!(fail.cause, Cause::ClosedByServer);
        assert_eq!(
            server.decode(&h.out).unwrap().1,
            Some(ws::Message::Close(Some((1001, String::new()))))
        );
    }

    #[test]
    fn websocket_subprotocols_offered_and_checked() {
        let asks = Request {
            ws_protocol: Some("chat.v1, chat.v2".into()),
            ..Request::contract(Kind::Ws, "h")
        };
        for (chosen, ok) in [("", true), ("chat.v2", true), ("other", false)] {
            let mut h = Harness::with(Kind::Ws, asks.clone(), Timestamp::default());
            assert!(String::from_utf8_lossy(&h.request)
                .contains("\r\nSec-WebSocket-Protocol: chat.v1, chat.v2\r\n"));
            let accept = ws_accept_for(&h.request);
            let field = match chosen {
                "" => String::new(),
                p => format!("Sec-WebSocket-Protocol: {p}\r\n"),
            };
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{field}\r\n"
            );
            assert_eq!(h.feed(answer.as_bytes()).is_ok(), ok, "{chosen}");
        }
    }

    #[test]
    fn websocket_echoes_of_marked_messages_are_round_trips() {
        let mut h = Harness::new(Kind::Ws);
        let accept = ws_accept_for(&h.request);
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        h.feed(head.as_bytes()).unwrap();
        let mut sent = Vec::new();
        h.session
            .send_text("{\"m\":\"{marker}\"}", 42, &mut sent, &mut h.rng);
        let mut server = ws::Decoder::new(ws::Role::Server, 1 << 20);
        let (_, message) = server.decode(&sent).unwrap();
        let Some(ws::Message::Text(text)) = message else {
            panic!("a text frame: {message:?}")
        };
        assert_eq!(text, "{\"m\":\"#c10k:42#\"}");
        let mut echo = Vec::new();
        ws::encode_frame(&mut echo, ws::OpCode::Text, text.as_bytes(), None);
        ws::encode_frame(&mut echo, ws::OpCode::Text, event_json(3).as_bytes(), None);
        h.feed(&echo).unwrap();
        assert_eq!(h.echoes, vec![42]);
        assert_eq!(h.events, delivered(&[3]));
    }

    #[test]
    fn websocket_wrong_accept_is_refused() {
        let mut h = Harness::new(Kind::Ws);
        let bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
        assert_eq!(h.feed(bytes).unwrap_err().cause, Cause::Other);
    }

    #[test]
    fn long_poll_repolls_after_the_highest_seq() {
        let mut h = Harness::new(Kind::Poll);
        assert!(String::from_utf8_lossy(&h.request).starts_with("GET /poll HTTP/1.1\r\n"));
        let body = format!("[{},{}]", event_json(4), event_json(5));
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        // A second answer in the same read: an empty one.
        bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]");
        let step = h.feed_bytewise(&bytes).unwrap();
        assert!(step.established && step.polled);
        assert_eq!(h.events, delivered(&[4, 5]));
        let sent = String::from_utf8_lossy(&h.out).into_owned();
        assert_eq!(sent.matches("GET /poll?after=5 HTTP/1.1\r\n").count(), 2);
    }

    #[test]
    fn error_statuses_and_garbage() {
        let mut h = Harness::new(Kind::Sse);
        let fail = h
            .feed(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            .unwrap_err();
        assert_eq!(fail.cause, Cause::HttpError);
        assert_eq!(
            fail.why,
            "HTTP/1.1 503 Service Unavailable | Content-Length: 0"
        );
        let mut h = Harness::new(Kind::Ws);
        let fail = h.feed(b"HTTP/1.1 200 OK\r\n\r\n").unwrap_err();
        assert_eq!(fail.cause, Cause::HttpError);
        let mut h = Harness::new(Kind::Stream);
        assert_eq!(
            h.feed(b"SSH-2.0-x\r\n\r\n").unwrap_err().cause,
            Cause::Other
        );
        assert_eq!(h.session.on_eof().cause, Cause::ClosedByServer);
        let mut h = Harness::new(Kind::Sse);
        let fail = h
            .feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi")
            .unwrap_err();
        assert_eq!(fail.cause, Cause::Other);
        assert!(fail.why.contains("not an event stream"), "{}", fail.why);
    }

    #[test]
    fn events_without_a_timestamp_are_events_still() {
        let mut h = Harness::new(Kind::Sse);
        let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec();
        bytes.extend_from_slice(b"data: not json\n\ndata: {\"x\":1}\n\n");
        h.feed(&bytes).unwrap();
        assert_eq!(h.events, vec![Delivered::default(); 2]);
    }

    #[test]
    fn a_foreign_endpoint_with_fields_and_a_millisecond_timestamp() {
        let asks = Request {
            path: "/events?room=1".into(),
            host: "example:8000".into(),
            headers: vec!["Authorization: Bearer t".into()],
            ws_protocol: None,
        };
        let timestamp = Timestamp {
            field: "ts".into(),
            unit: crate::load::endpoint::TimeUnit::Auto,
        };
        let mut h = Harness::with(Kind::Poll, asks, timestamp);
        assert_eq!(
            String::from_utf8_lossy(&h.request),
            "GET /events?room=1 HTTP/1.1\r\nHost: example:8000\r\nAuthorization: Bearer t\r\n\r\n"
        );
        let body = r#"[{"seq":9,"ts":1764000000123},{"ts":"1764000000124"}]"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        h.feed(answer.as_bytes()).unwrap();
        let ms = |v: u64| Some(v * 1_000_000);
        assert_eq!(
            h.events,
            vec![
                Delivered {
                    seq: Some(9),
                    sent_ns: ms(1_764_000_000_123)
                },
                Delivered {
                    seq: None,
                    sent_ns: ms(1_764_000_000_124)
                },
            ]
        );
        assert!(
            String::from_utf8_lossy(&h.out).starts_with("GET /events?room=1&after=9 HTTP/1.1\r\n")
        );
    }

    #[test]
    fn interim_answers_are_skipped() {
        let mut h = Harness::new(Kind::Sse);
        let mut bytes = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        bytes.extend_from_slice(&sse_bytes());
        assert!(h.feed(&bytes).unwrap().established);
        assert_eq!(h.events.len(), 3);
    }
}
