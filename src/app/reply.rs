//! Every response head and small response body the contract defines, as bytes, so both server
//! models answer byte for byte the same.

use crate::proto::http::{self, write_full_response, write_head};
use crate::proto::ws;

/// `100 Continue`, for a client that waits on `Expect: 100-continue` before sending its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The probe's answer.
pub fn probe(out: &mut Vec<u8>, keep_alive: bool) {
    write_full_response(out, 200, "text/plain", b"ok\n", keep_alive, &[]);
}

/// An error answer with a one-line plain-text body.
pub fn error(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)], keep_alive: bool) {
    let body = format!("{}\n", http::reason(status));
    write_full_response(
        out,
        status,
        "text/plain",
        body.as_bytes(),
        keep_alive,
        headers,
    );
}

/// The head of an SSE response. The body runs until the connection closes (RFC 9112 §6.3),
/// which suits a stream that has no end and keeps every event's bytes exactly as encoded; only
/// the answer to a HEAD, which has no body, may keep the connection (`keep_alive`).
pub fn sse_head(out: &mut Vec<u8>, keep_alive: bool) {
    // Tells nginx-style proxies not to buffer the stream.
    uncached_head(
        out,
        "text/event-stream",
        keep_alive,
        &[("X-Accel-Buffering", "no")],
    );
}

/// A `200` head of a `Content-Type` that must not be cached, without a length, then `extra`.
fn uncached_head(out: &mut Vec<u8>, content_type: &str, keep_alive: bool, extra: &[(&str, &str)]) {
    let mut fields = vec![
        ("Content-Type", content_type),
        ("Cache-Control", "no-cache"),
    ];
    if !keep_alive {
        fields.push(("Connection", "close"));
    }
    fields.extend_from_slice(extra);
    write_head(out, 200, &fields);
}

/// The head of the NDJSON stream: chunked, or for an HTTP/1.0 client delimited by the close.
pub fn stream_head(out: &mut Vec<u8>, chunked: bool) {
    let framing = if chunked {
        ("Transfer-Encoding", "chunked")
    } else {
        ("Connection", "close")
    };
    write_head(
        out,
        200,
        &[
            ("Content-Type", "application/x-ndjson"),
            ("Cache-Control", "no-cache"),
            framing,
            ("X-Accel-Buffering", "no"),
        ],
    );
}

/// The head of the echo response: chunked, so it can start before the request body ends (for an
/// HTTP/1.0 client, which cannot take chunks, delimited by the close instead).
pub fn echo_head(out: &mut Vec<u8>, keep_alive: bool, chunked: bool) {
    let mut fields = vec![("Content-Type", "application/octet-stream")];
    if chunked {
        fields.push(("Transfer-Encoding", "chunked"));
    }
    if !keep_alive || !chunked {
        fields.push(("Connection", "close"));
    }
    write_head(out, 200, &fields);
}

/// Ends an echo once the request body is in: the last chunk, or, without chunks, nothing, since
/// closing the connection is what ends that body. Returns whether the connection stays open.
pub fn echo_end(out: &mut Vec<u8>, keep_alive: bool, chunked: bool) -> bool {
    if chunked {
        out.extend_from_slice(http::LAST_CHUNK);
    }
    keep_alive && chunked
}

/// Appends echoed body bytes in the response's framing.
pub fn echo_data(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if chunked {
        http::write_chunk(out, data);
    } else {
        out.extend_from_slice(data);
    }
}

/// `101 Switching Protocols` for a WebSocket upgrade.
pub fn ws_accept(out: &mut Vec<u8>, accept: &str) {
    write_head(
        out,
        101,
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept),
        ],
    );
}

/// A `/poll` answer carrying a JSON array.
pub fn poll(out: &mut Vec<u8>, body: &[u8], keep_alive: bool) {
    write_full_response(
        out,
        200,
        "application/json",
        body,
        keep_alive,
        &[("Cache-Control", "no-cache")],
    );
}

/// The head a `/poll` answer has, for a HEAD request: no length, since the body GET would get
/// depends on when it is answered.
pub fn poll_head(out: &mut Vec<u8>, keep_alive: bool) {
    uncached_head(out, "application/json", keep_alive, &[]);
}

/// Cuts a complete response down to its head: the answer to a HEAD (RFC 9110 §9.3.2) has the
/// status and header fields GET would have, `Content-Length` included, and no content.
pub fn strip_body(out: &mut Vec<u8>) {
    if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
        out.truncate(end + 4);
    }
}

/// The `/publish` answer.
pub fn published(out: &mut Vec<u8>, seq: u64, subscribers: u64, keep_alive: bool) {
    let body = format!("{{\"seq\":{seq},\"subscribers\":{subscribers}}}");
    write_full_response(
        out,
        200,
        "application/json",
        body.as_bytes(),
        keep_alive,
        &[],
    );
}

/// The `/stats` answer.
pub fn stats(out: &mut Vec<u8>, json: &[u8], keep_alive: bool) {
    write_full_response(
        out,
        200,
        "application/json",
        json,
        keep_alive,
        &[("Cache-Control", "no-cache")],
    );
}

/// The server's answer to what a WebSocket client sent: an echo with the same opcode, a pong
/// with the ping's payload, the reply that completes a closing handshake (echoing its code, as
/// RFC 6455 §5.5.1 suggests; an empty close gets an empty close), or the close code of a
/// protocol error. Appends the frame, if any, to `out`; returns whether the connection closes
/// after it.
fn ws_answer(out: &mut Vec<u8>, received: Result<ws::Message, ws::WsError>) -> bool {
    match received {
        Ok(ws::Message::Text(t)) => ws::encode_frame(out, ws::OpCode::Text, t.as_bytes(), None),
        Ok(ws::Message::Binary(b)) => ws::encode_frame(out, ws::OpCode::Binary, &b, None),
        Ok(ws::Message::Ping(p)) => ws::encode_frame(out, ws::OpCode::Pong, &p, None),
        Ok(ws::Message::Pong(_)) => {}
        Ok(ws::Message::Close(Some((code, _)))) => {
            ws::encode_close(out, code, "", None);
            return true;
        }
        Ok(ws::Message::Close(None)) => {
            ws::encode_frame(out, ws::OpCode::Close, &[], None);
            return true;
        }
        Err(e) => {
            ws::encode_close(out, e.code, e.reason, None);
            return true;
        }
    }
    false
}

/// What one step of reading WebSocket input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsStep {
    /// Used this many bytes; the message (or frame) is not complete yet.
    Partial(usize),
    /// Used this many bytes and answered a complete message (a pong is answered with nothing).
    Answered(usize),
    /// Answered with a close frame: the connection ends after it, whatever input follows.
    Closing,
}

/// Decodes the next message from `input` and appends the server's answer to `out`.
pub fn ws_step(dec: &mut ws::Decoder, input: &[u8], out: &mut Vec<u8>) -> WsStep {
    match dec.decode(input) {
        Ok((n, None)) => WsStep::Partial(n),
        Ok((n, Some(msg))) => {
            if ws_answer(out, Ok(msg)) {
                WsStep::Closing
            } else {
                WsStep::Answered(n)
            }
        }
        Err(e) => {
            ws_answer(out, Err(e));
            WsStep::Closing
        }
    }
}
