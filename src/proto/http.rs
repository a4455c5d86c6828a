//! HTTP/1.x framing (RFC 9112): request and response heads through httparse, body framing
//! (Content-Length and chunked, both directions), response heads and the chunked encoder.

use std::io::Write as _;

/// Largest request head accepted; past it the answer is `431`.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields parsed in one head; more is answered `431` as well.
pub const MAX_HEADERS: usize = 64;

/// Longest chunk-size line (size, extensions, CRLF) accepted. No extension means anything here,
/// so a long line only ever serves to keep the decoder busy without producing body bytes.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section accepted: the same budget as a head.
const MAX_TRAILER_BYTES: usize = MAX_HEAD_BYTES;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all.
    None,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Responses only: the body runs until the server closes the connection.
    UntilClose,
}

/// Why a head was refused; `status()` is the answer the contract gives.
///
/// Every one of these leaves the message framing unknown, so the connection must be closed after
/// answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed request line or header field: 400.
    Malformed,
    /// Head longer than `MAX_HEAD_BYTES` or more than `MAX_HEADERS` fields: 431.
    TooLarge,
    /// An HTTP version other than 1.0 / 1.1: 505.
    UnsupportedVersion,
    /// Both Content-Length and Transfer-Encoding, or conflicting/invalid Content-Length: 400.
    ConflictingFraming,
    /// A transfer coding other than `chunked`: 501.
    UnsupportedTransferCoding,
}

impl HeadError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed | HeadError::ConflictingFraming => 400,
            HeadError::TooLarge => 431,
            HeadError::UnsupportedVersion => 505,
            HeadError::UnsupportedTransferCoding => 501,
        }
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method token as sent, e.g. `GET`.
    pub method: String,
    /// The raw request-target, e.g. `/poll?after=3`.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Fields in the order received, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// `None` when no body follows, including `Content-Length: 0`, so that `None` is the one
    /// way of saying "no body bytes".
    pub body: BodyFraming,
    /// Whether the connection may carry another request after this one (RFC 9112 §9.3).
    pub keep_alive: bool,
}

impl RequestHead {
    /// The target's path, without the query.
    /// The absolute form (`http://host/path?q`, RFC 9112 §3.2.2), which a server must accept,
    /// yields the same path as the origin form.
    pub fn path(&self) -> &str {
        let target = self.origin_form();
        match target.split_once('?').map_or(target, |(path, _)| path) {
            "" => "/",
            path => path,
        }
    }

    /// The target with any `scheme://authority` prefix removed.
    fn origin_form(&self) -> &str {
        let t = self.target.as_str();
        let Some(scheme_end) = t.find("://") else {
            return t;
        };
        if !t[..scheme_end]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return t;
        }
        let rest = &t[scheme_end + 3..];
        rest.find(['/', '?']).map_or("/", |i| &rest[i..])
    }

    /// The target's query (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.origin_form().split_once('?').map(|(_, query)| query)
    }

    /// The value of the first `name=value` pair of the query (no percent-decoding).
    /// A bare `name` without `=` yields `Some("")`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .find_map(|pair| match pair.split_once('=') {
                Some((key, value)) => (key == name).then_some(value),
                None => (pair == name).then_some(""),
            })
    }

    /// The first field with this name (case-insensitive), trimmed of surrounding whitespace.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_value(&self.headers, name)
    }

    /// `header` as UTF-8, `None` if absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.header(name)?).ok()
    }

    /// Whether any field named `name` holds `token` in its comma-separated list (case-insensitive),
    /// e.g. `has_token("connection", "upgrade")`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        has_token(&self.headers, name, token)
    }
}

/// Parses a request head from the start of `buf`.
/// `Ok(None)`: incomplete, read more (unless `buf.len() > MAX_HEAD_BYTES`, which is `TooLarge`).
/// `Ok(Some((head, n)))`: the head took the first `n` bytes; the body (if any) and pipelined
/// requests follow.
///
/// Empty lines before the request line are skipped (RFC 9112 §2.2) and count towards `n`.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let n = match req.parse(head_window(buf)) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return incomplete(buf),
        Err(httparse::Error::Version) => {
            // httparse accepted method and target, each followed by exactly one SP.
            let line = skip_empty_lines(head_window(buf));
            let rest = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or_default();
            return refused_version(rest).map_or_else(|| incomplete(buf), Err);
        }
        Err(e) => return Err(head_error(e)),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    let fields: &[httparse::Header] = req.headers;
    let body = body_framing(fields, minor)?.unwrap_or(BodyFraming::None);
    let head = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version: minor,
        headers: owned_fields(fields),
        body,
        keep_alive: keep_alive(fields, minor),
    };
    Ok(Some((head, n)))
}

/// A parsed response head (used by the load generator and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code, e.g. 200.
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Fields in the order received, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// None for 1xx, 204, 304; else from the fields, `UntilClose` when neither is present.
    /// As for requests, `Content-Length: 0` is `None`. A response to `HEAD` has no body either,
    /// which only the caller knows.
    pub body: BodyFraming,
    /// Whether the server lets the connection carry another request; never with `UntilClose`.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// The first field with this name (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_value(&self.headers, name)
    }

    /// Whether any field named `name` holds `token` in its comma-separated list (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        has_token(&self.headers, name, token)
    }
}

/// Parses a response head from the start of `buf`; same contract as `parse_request_head`.
///
/// Framing is checked as strictly as for requests: a client is where a server's framing bugs
/// should surface.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let n = match resp.parse(head_window(buf)) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return incomplete(buf),
        Err(httparse::Error::Version) => {
            let line = skip_empty_lines(head_window(buf));
            return refused_version(line).map_or_else(|| incomplete(buf), Err);
        }
        Err(e) => return Err(head_error(e)),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed);
    };
    let fields: &[httparse::Header] = resp.headers;
    // RFC 9112 §6.3: these never carry content, whatever their fields say.
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        BodyFraming::None
    } else {
        body_framing(fields, minor)?.unwrap_or(BodyFraming::UntilClose)
    };
    let head = ResponseHead {
        status,
        minor_version: minor,
        headers: owned_fields(fields),
        body,
        keep_alive: body != BodyFraming::UntilClose && keep_alive(fields, minor),
    };
    Ok(Some((head, n)))
}

/// Only the first `MAX_HEAD_BYTES` can hold an acceptable head, so a long buffer is never
/// scanned past them, and a complete head found there is within the limit by construction.
fn head_window(buf: &[u8]) -> &[u8] {
    &buf[..buf.len().min(MAX_HEAD_BYTES)]
}

fn incomplete<T>(buf: &[u8]) -> Result<Option<T>, HeadError> {
    if buf.len() > MAX_HEAD_BYTES {
        Err(HeadError::TooLarge)
    } else {
        Ok(None)
    }
}

fn head_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        _ => HeadError::Malformed,
    }
}

/// Mirrors httparse, which skips CRLF or LF lines before the start-line.
fn skip_empty_lines(mut buf: &[u8]) -> &[u8] {
    loop {
        buf = match buf {
            [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] => rest,
            _ => return buf,
        }
    }
}

/// Classifies a version httparse refused, given the bytes where the version starts: a
/// well-formed `HTTP/x.y` or `HTTP/x` other than 1.0 and 1.1 is a version this server does not
/// speak (505); anything else is not HTTP (400). httparse gives up on the first unexpected byte,
/// so `None` means the token is still unterminated and could grow into either answer.
fn refused_version(rest: &[u8]) -> Option<HeadError> {
    const SHAPE: &[u8] = b"HTTP/#.#";
    let end = rest.iter().position(|&b| matches!(b, b' ' | b'\r' | b'\n'));
    let token = &rest[..end.unwrap_or(rest.len())];
    let fits_shape = token.len() <= SHAPE.len()
        && token.iter().zip(SHAPE).all(|(&b, &s)| match s {
            b'#' => b.is_ascii_digit(),
            _ => b == s,
        });
    match end {
        None if fits_shape => None,
        Some(_)
            if fits_shape
                && matches!(token.len(), 6 | 8)
                && token != b"HTTP/1.0"
                && token != b"HTTP/1.1" =>
        {
            Some(HeadError::UnsupportedVersion)
        }
        _ => Some(HeadError::Malformed),
    }
}

fn owned_fields(fields: &[httparse::Header]) -> Vec<(String, Vec<u8>)> {
    fields
        .iter()
        .map(|f| (f.name.to_owned(), f.value.to_vec()))
        .collect()
}

/// A header field, borrowed from httparse or owned by a parsed head, so the same field logic
/// serves framing decisions (before anything is copied) and the accessors.
trait Field {
    fn name(&self) -> &str;
    fn value(&self) -> &[u8];
}

impl Field for httparse::Header<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn value(&self) -> &[u8] {
        self.value
    }
}

impl Field for (String, Vec<u8>) {
    fn name(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &[u8] {
        &self.1
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The trimmed value of the first field named `name`.
fn first_value<'a, F: Field>(fields: &'a [F], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|f| f.name().eq_ignore_ascii_case(name))
        .map(|f| trim_ows(f.value()))
}

/// The trimmed values of every field named `name`, in order.
fn field_values<'a, F: Field>(fields: &'a [F], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    fields
        .iter()
        .filter(move |f| f.name().eq_ignore_ascii_case(name))
        .map(|f| trim_ows(f.value()))
}

/// The elements of every `name` field read as a comma-separated list; empty elements are
/// dropped, as RFC 9110 §5.6.1 asks of recipients.
fn list_items<'a, F: Field>(fields: &'a [F], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    field_values(fields, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

fn has_token<F: Field>(fields: &[F], name: &str, token: &str) -> bool {
    list_items(fields, name).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

/// RFC 9112 §9.3: HTTP/1.1 persists unless told `close`, HTTP/1.0 only when told `keep-alive`.
/// `close` wins over `keep-alive` if a confused peer sends both.
fn keep_alive<F: Field>(fields: &[F], minor: u8) -> bool {
    if has_token(fields, "connection", "close") {
        false
    } else {
        minor >= 1 || has_token(fields, "connection", "keep-alive")
    }
}

/// The framing the fields declare; `None` when they declare none, which means no body for a
/// request and a body until close for a response.
///
/// Anything ambiguous is refused rather than resolved, since two hops resolving it differently
/// is how request smuggling works:
/// - Transfer-Encoding with Content-Length: `ConflictingFraming` (RFC 9112 §6.3 lets a recipient
///   prefer Transfer-Encoding, but also says such a message "ought to be handled as an error").
/// - Transfer-Encoding in HTTP/1.0, which predates it: `Malformed` (§6.1: the framing is faulty).
/// - Transfer-Encoding must be exactly `chunked` (case-insensitive), the one coding implemented.
///   Any other coding, wherever it sits in the list, is `UnsupportedTransferCoding` (501, as
///   §6.1 suggests for codings a server does not understand). §6.3 asks for 400 when `chunked`
///   is not the final coding; 501 is preferred as the more telling answer, and either way the
///   connection closes because the body length is unknown. `chunked` twice is `Malformed`
///   (§7.1 forbids it), as is a Transfer-Encoding with no coding at all.
fn body_framing<F: Field>(fields: &[F], minor: u8) -> Result<Option<BodyFraming>, HeadError> {
    let length = content_length(fields)?;
    if !fields
        .iter()
        .any(|f| f.name().eq_ignore_ascii_case("transfer-encoding"))
    {
        return Ok(length.map(|n| match n {
            0 => BodyFraming::None,
            n => BodyFraming::Length(n),
        }));
    }
    if length.is_some() {
        return Err(HeadError::ConflictingFraming);
    }
    if minor == 0 {
        return Err(HeadError::Malformed);
    }
    let (mut chunked, mut other) = (0usize, false);
    for coding in list_items(fields, "transfer-encoding") {
        if coding.eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        } else {
            other = true;
        }
    }
    match (chunked, other) {
        (_, true) => Err(HeadError::UnsupportedTransferCoding),
        (1, false) => Ok(Some(BodyFraming::Chunked)),
        _ => Err(HeadError::Malformed),
    }
}

/// The Content-Length, if any field declares one. Repeated fields and lists are fine as long as
/// every element is the same number (RFC 9110 §8.6); anything but plain digits that fit a `u64`
/// is refused, since a lenient reading here is a classic smuggling vector.
fn content_length<F: Field>(fields: &[F]) -> Result<Option<u64>, HeadError> {
    let mut found = None;
    for value in field_values(fields, "content-length") {
        for item in value.split(|&b| b == b',') {
            let n = parse_decimal(trim_ows(item)).ok_or(HeadError::ConflictingFraming)?;
            if found.is_some_and(|f| f != n) {
                return Err(HeadError::ConflictingFraming);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit: 413.
    TooLarge,
    /// Bad chunk size line, missing CRLF, ...: 400.
    Malformed,
}

impl BodyError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            BodyError::TooLarge => 413,
            BodyError::Malformed => 400,
        }
    }
}

/// Incremental body decoder: feed it whatever arrived, it hands out body bytes as they come.
///
/// It keeps its own parse state (never any input bytes), so the caller never has to hold on to
/// input: everything up to the end of the body is consumed.
///
/// Chunked framing requires CRLF after every line and after chunk data. RFC 9112 §2.2 lets a
/// recipient accept a bare LF in the start-line and fields, but this decoder does not extend
/// that to chunk framing: hops that disagree on where a chunk line ends are a known smuggling
/// vector, and no real client sends bare LFs there. A bare LF, or a CR not followed by LF, is
/// `Malformed`.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    /// Body bytes still allowed by `max_len`.
    budget: u64,
    /// Bytes of the current chunk-size line, or of the trailer section so far.
    line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Content-Length bytes still to come.
    Length(u64),
    UntilClose,
    /// Chunk-size hex digits so far; `None` before the first.
    SizeDigits(Option<u64>),
    /// Past the digits: whitespace, then (once `ext`) chunk extensions, until CR.
    SizeExt {
        size: u64,
        ext: bool,
    },
    /// CR of the chunk-size line seen.
    SizeLf(u64),
    /// Chunk data bytes still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// In the trailer section; at `line_start` a CR begins the final blank line.
    Trailer {
        line_start: bool,
    },
    TrailerLf {
        last: bool,
    },
    Done,
    Failed(BodyError),
}

impl BodyDecoder {
    /// `max_len` bounds the decoded body (not counting chunk framing).
    pub fn new(framing: BodyFraming, max_len: u64) -> Self {
        let state = match framing {
            BodyFraming::None | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) if n > max_len => State::Failed(BodyError::TooLarge),
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::SizeDigits(None),
            BodyFraming::UntilClose => State::UntilClose,
        };
        BodyDecoder {
            state,
            budget: max_len,
            line: 0,
        }
    }

    /// Consumes from `input` at most up to the end of the body, appends decoded body bytes to
    /// `out`, returns how many input bytes were consumed. Chunk extensions and trailer fields are
    /// accepted and skipped.
    ///
    /// Until the body is done every byte is consumed; once done, nothing is (what follows
    /// belongs to the next message). Errors are sticky and reported as soon as the offending
    /// byte (or, for `TooLarge`, the declared size) is seen; `out` may by then hold part of the
    /// body, and the connection should be closed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, BodyError> {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            match self.state {
                State::Done | State::Failed(_) => break,
                State::Length(left) => {
                    let n = pass_through(rest, left, out);
                    used += n;
                    self.state = match left - n as u64 {
                        0 => State::Done,
                        left => State::Length(left),
                    };
                }
                State::Data(left) => {
                    let n = pass_through(rest, left, out);
                    used += n;
                    self.state = match left - n as u64 {
                        0 => State::DataCr,
                        left => State::Data(left),
                    };
                }
                State::UntilClose => {
                    let n = rest.len() as u64;
                    if n > self.budget {
                        self.state = State::Failed(BodyError::TooLarge);
                        break;
                    }
                    self.budget -= n;
                    out.extend_from_slice(rest);
                    used = input.len();
                }
                _ => {
                    self.state = self.step(rest[0]).unwrap_or_else(State::Failed);
                    used += 1;
                }
            }
        }
        match self.state {
            State::Failed(e) => Err(e),
            _ => Ok(used),
        }
    }

    /// Whether the whole body (including the chunked trailer section) has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// One byte of chunk framing.
    fn step(&mut self, b: u8) -> Result<State, BodyError> {
        match self.state {
            State::SizeDigits(_) | State::SizeExt { .. } | State::SizeLf(_) => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(BodyError::Malformed);
                }
            }
            State::Trailer { .. } | State::TrailerLf { .. } => {
                self.line += 1;
                if self.line > MAX_TRAILER_BYTES {
                    return Err(BodyError::TooLarge);
                }
            }
            _ => {}
        }
        Ok(match self.state {
            State::SizeDigits(size) => match (hex_digit(b), size) {
                (Some(d), _) => {
                    let size = size
                        .unwrap_or(0)
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(d))
                        .ok_or(BodyError::Malformed)?;
                    // Refuse an oversized chunk on its size line, before any of its data.
                    if size > self.budget {
                        return Err(BodyError::TooLarge);
                    }
                    State::SizeDigits(Some(size))
                }
                (None, Some(size)) => after_size(size, false, b)?,
                (None, None) => return Err(BodyError::Malformed),
            },
            State::SizeExt { size, ext } => after_size(size, ext, b)?,
            State::SizeLf(size) => match (b, size) {
                (b'\n', 0) => {
                    self.line = 0;
                    State::Trailer { line_start: true }
                }
                (b'\n', size) => {
                    self.budget -= size;
                    State::Data(size)
                }
                _ => return Err(BodyError::Malformed),
            },
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => {
                self.line = 0;
                State::SizeDigits(None)
            }
            State::Trailer { line_start } => match b {
                b'\r' => State::TrailerLf { last: line_start },
                b'\n' => return Err(BodyError::Malformed),
                _ => State::Trailer { line_start: false },
            },
            State::TrailerLf { last: true } if b == b'\n' => State::Done,
            State::TrailerLf { last: false } if b == b'\n' => State::Trailer { line_start: true },
            State::DataCr | State::DataLf | State::TrailerLf { .. } => {
                return Err(BodyError::Malformed)
            }
            // Not framing states; `decode` never steps them.
            other => other,
        })
    }
}

/// Appends up to `left` bytes of `input` to `out`; returns how many.
fn pass_through(input: &[u8], left: u64, out: &mut Vec<u8>) -> usize {
    let n = usize::try_from(left).map_or(input.len(), |left| left.min(input.len()));
    out.extend_from_slice(&input[..n]);
    n
}

fn hex_digit(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

/// A byte after the chunk size: optional whitespace, then `;` and extensions, then CR.
/// Extensions (`;name=value`, quoted strings included) are skipped without being interpreted:
/// they cannot contain CR, LF or other controls, so the line end is unambiguous.
fn after_size(size: u64, ext: bool, b: u8) -> Result<State, BodyError> {
    match b {
        b'\r' => Ok(State::SizeLf(size)),
        b';' => Ok(State::SizeExt { size, ext: true }),
        b' ' | b'\t' => Ok(State::SizeExt { size, ext }),
        _ if ext && !b.is_ascii_control() => Ok(State::SizeExt { size, ext }),
        _ => Err(BodyError::Malformed),
    }
}

/// The reason phrase for a status code this project sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

// Writing into a `Vec<u8>` cannot fail, so the `io::Result`s of `write!` below carry nothing.

fn write_status_line(out: &mut Vec<u8>, status: u16) {
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
}

fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `HTTP/1.1 STATUS REASON\r\n`, each `name: value\r\n`, and the blank line.
pub fn write_head(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    write_status_line(out, status);
    for &(name, value) in headers {
        write_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete response with `Content-Type`, `Content-Length` and, when `!keep_alive`,
/// `Connection: close`, plus `extra` fields, then `body`.
pub fn write_full_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    extra: &[(&str, &str)],
) {
    out.reserve(128 + body.len());
    write_status_line(out, status);
    write_field(out, "Content-Type", content_type);
    let _ = write!(out, "Content-Length: {}\r\n", body.len());
    if !keep_alive {
        write_field(out, "Connection", "close");
    }
    for &(name, value) in extra {
        write_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Appends `data` as one chunk (`SIZE-HEX\r\nDATA\r\n`); empty data appends nothing, since an
/// empty chunk would end the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with an empty trailer section: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    #[test]
    fn absolute_form_targets_route_like_origin_form() {
        let raw = b"GET http://example.com:8080/poll?after=3 HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let (head, _) = parse_request_head(raw).unwrap().unwrap();
        assert_eq!(head.path(), "/poll");
        assert_eq!(head.query_param("after"), Some("3"));
        let raw = b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let (head, _) = parse_request_head(raw).unwrap().unwrap();
        assert_eq!(head.path(), "/");
        let raw = b"GET http://example.com?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let (head, _) = parse_request_head(raw).unwrap().unwrap();
        assert_eq!((head.path(), head.query()), ("/", Some("x=1")));
    }

    use super::*;
    use proptest::prelude::*;

    fn req(raw: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request_head(raw)
    }

    fn req_ok(raw: &[u8]) -> RequestHead {
        match req(raw) {
            Ok(Some((head, n))) => {
                assert_eq!(n, raw.len(), "head length");
                head
            }
            other => panic!("expected a head, got {other:?}"),
        }
    }

    fn req_err(raw: &[u8]) -> HeadError {
        match req(raw) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn resp_ok(raw: &[u8]) -> (ResponseHead, usize) {
        match parse_response_head(raw) {
            Ok(Some(parsed)) => parsed,
            other => panic!("expected a response head, got {other:?}"),
        }
    }

    /// Decodes `input` in one call.
    fn decode_all(
        framing: BodyFraming,
        max: u64,
        input: &[u8],
    ) -> (Result<usize, BodyError>, Vec<u8>, bool) {
        let mut dec = BodyDecoder::new(framing, max);
        let mut out = Vec::new();
        let res = dec.decode(input, &mut out);
        (res, out, dec.is_done())
    }

    fn chunked(input: &[u8]) -> Result<Vec<u8>, BodyError> {
        match decode_all(BodyFraming::Chunked, 1 << 20, input) {
            (Ok(n), out, true) => {
                assert_eq!(n, input.len(), "consumed");
                Ok(out)
            }
            (Ok(_), _, false) => panic!("body not done"),
            (Err(e), _, _) => Err(e),
        }
    }

    fn with_header(name: &str, value: &str) -> Vec<u8> {
        format!("POST /x HTTP/1.1\r\nHost: a\r\n{name}: {value}\r\n\r\n").into_bytes()
    }

    #[test]
    fn statuses() {
        use HeadError::*;
        let heads = [
            Malformed,
            TooLarge,
            UnsupportedVersion,
            ConflictingFraming,
            UnsupportedTransferCoding,
        ];
        let codes: Vec<u16> = heads.iter().map(|e| e.status()).collect();
        assert_eq!(codes, [400, 431, 505, 400, 501]);
        assert_eq!(BodyError::TooLarge.status(), 413);
        assert_eq!(BodyError::Malformed.status(), 400);
    }

    #[test]
    fn simple_get() {
        let head =
            req_ok(b"GET /poll?after=3 HTTP/1.1\r\nHost: example\r\nX-Trace:  a b \t\r\n\r\n");
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/poll?after=3");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.headers[0], ("Host".to_owned(), b"example".to_vec()));
        assert_eq!(head.body, BodyFraming::None);
        assert!(head.keep_alive);
        assert_eq!(head.header("x-trace"), Some(&b"a b"[..]));
        assert_eq!(head.header_str("HOST"), Some("example"));
        assert_eq!(head.header("missing"), None);
    }

    #[test]
    fn target_accessors() {
        let head = req_ok(b"GET /a/b?x=1&flag&y=&x=2&z=a=b HTTP/1.1\r\n\r\n");
        assert_eq!(head.path(), "/a/b");
        assert_eq!(head.query(), Some("x=1&flag&y=&x=2&z=a=b"));
        assert_eq!(head.query_param("x"), Some("1"));
        assert_eq!(head.query_param("flag"), Some(""));
        assert_eq!(head.query_param("y"), Some(""));
        assert_eq!(head.query_param("z"), Some("a=b"));
        assert_eq!(head.query_param("fla"), None);
        assert_eq!(head.query_param("w"), None);

        let head = req_ok(b"GET /plain HTTP/1.1\r\n\r\n");
        assert_eq!(head.path(), "/plain");
        assert_eq!(head.query(), None);
        assert_eq!(head.query_param("x"), None);

        let head = req_ok(b"GET /e? HTTP/1.1\r\n\r\n");
        assert_eq!(head.path(), "/e");
        assert_eq!(head.query(), Some(""));
    }

    #[test]
    fn header_lookup() {
        let head = req_ok(
            b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nconnection:foo\r\n\
              Upgrade: websocket\r\nX-Bin: \xff\r\n\r\n",
        );
        assert!(head.has_token("Connection", "upgrade"));
        assert!(head.has_token("connection", "FOO"));
        assert!(!head.has_token("connection", "up"));
        assert!(!head.has_token("x-none", "a"));
        assert_eq!(head.header("connection"), Some(&b"keep-alive, Upgrade"[..]));
        assert_eq!(head.header("x-bin"), Some(&b"\xff"[..]));
        assert_eq!(head.header_str("x-bin"), None);
    }

    #[test]
    fn partial_heads_wait() {
        let raw = b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
        for end in 0..raw.len() {
            assert_eq!(req(&raw[..end]), Ok(None), "prefix {end}");
        }
        assert_eq!(req_ok(raw).body, BodyFraming::Length(3));
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let raw = b"\r\n\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(req_ok(raw).target, "/");
        assert_eq!(req(b"\r\n\r\n"), Ok(None));
    }

    #[test]
    fn bare_lf_heads_are_accepted() {
        let head = req_ok(b"GET / HTTP/1.1\nHost: a\n\n");
        assert_eq!(head.header("host"), Some(&b"a"[..]));
    }

    #[test]
    fn malformed_heads() {
        let bad: &[&[u8]] = &[
            b"GET\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / HTTP/1.1x\r\n\r\n",
            b"GET / HTTP/2.0x\r\n\r\n",
            b"GET / HTTP/22\r\n\r\n",
            b"GET / HTTP/\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\rX\n\r\n",
            b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for raw in bad {
            assert_eq!(
                req(raw),
                Err(HeadError::Malformed),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // A version that can no longer become `HTTP/x.y` is refused without waiting.
        assert_eq!(req(b"GET / HTTP/x"), Err(HeadError::Malformed));
    }

    #[test]
    fn unsupported_versions() {
        for version in ["HTTP/2.0", "HTTP/2", "HTTP/0.9", "HTTP/1.2", "HTTP/3.0"] {
            let raw = format!("GET / {version}\r\nHost: a\r\n\r\n");
            assert_eq!(
                req(raw.as_bytes()),
                Err(HeadError::UnsupportedVersion),
                "{version}"
            );
            assert_eq!(HeadError::UnsupportedVersion.status(), 505);
        }
        // Until the token ends it might still turn out malformed: wait.
        assert_eq!(req(b"GET / HTTP/2"), Ok(None));
        assert_eq!(req(b"GET / HTTP/2.0"), Ok(None));
        assert_eq!(req(b"GET / HTTP/2.0\r"), Err(HeadError::UnsupportedVersion));
        assert_eq!(req(b"GET / HTTP/2.0x"), Err(HeadError::Malformed));
        // The HTTP/2 connection preface is not an HTTP/1 request with an odd version.
        assert_eq!(
            req(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(HeadError::UnsupportedVersion)
        );
    }

    #[test]
    fn head_too_large() {
        // No end of head within the limit.
        let mut raw = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        raw.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(req(&raw), Ok(None));
        raw.push(b'a');
        assert_eq!(req(&raw), Err(HeadError::TooLarge));

        // A complete head just over the limit, and one exactly at it.
        let mut raw = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        raw.resize(MAX_HEAD_BYTES - 3, b'a');
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(raw.len(), MAX_HEAD_BYTES + 1);
        assert_eq!(req(&raw), Err(HeadError::TooLarge));
        raw.remove(20);
        assert_eq!(req_ok(&raw).headers.len(), 1);

        // Endless empty lines before the request line.
        assert_eq!(
            req(&b"\r\n".repeat(MAX_HEAD_BYTES)),
            Err(HeadError::TooLarge)
        );
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn too_many_headers() {
        let head_with = |count: usize| {
            let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..count {
                raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            raw.extend_from_slice(b"\r\n");
            raw
        };
        assert_eq!(req_ok(&head_with(MAX_HEADERS)).headers.len(), MAX_HEADERS);
        assert_eq!(req(&head_with(MAX_HEADERS + 1)), Err(HeadError::TooLarge));
    }

    #[test]
    fn content_length_framing() {
        let framing = |value: &str| {
            req(&with_header("Content-Length", value)).map(|r| r.map(|(h, _)| h.body))
        };
        assert_eq!(framing("5"), Ok(Some(BodyFraming::Length(5))));
        assert_eq!(framing("  42 "), Ok(Some(BodyFraming::Length(42))));
        assert_eq!(framing("0"), Ok(Some(BodyFraming::None)));
        assert_eq!(framing("7, 7,7"), Ok(Some(BodyFraming::Length(7))));
        assert_eq!(
            framing("18446744073709551615"),
            Ok(Some(BodyFraming::Length(u64::MAX)))
        );
        for bad in [
            "",
            "+5",
            "-1",
            "5 5",
            "0x10",
            "5;",
            "1e3",
            "5,6",
            "5,,5",
            "5,",
            "18446744073709551616",
        ] {
            assert_eq!(framing(bad), Err(HeadError::ConflictingFraming), "{bad:?}");
        }

        let two = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(req_err(two), HeadError::ConflictingFraming);
        let same = b"POST / HTTP/1.1\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(req_ok(same).body, BodyFraming::Length(5));
    }

    #[test]
    fn transfer_encoding_framing() {
        let framing = |value: &str| {
            req(&with_header("Transfer-Encoding", value)).map(|r| r.map(|(h, _)| h.body))
        };
        assert_eq!(framing("chunked"), Ok(Some(BodyFraming::Chunked)));
        assert_eq!(framing("Chunked"), Ok(Some(BodyFraming::Chunked)));
        assert_eq!(framing(" chunked ,"), Ok(Some(BodyFraming::Chunked)));
        for unsupported in [
            "gzip",
            "gzip, chunked",
            "chunked, gzip",
            "chunked;x=1",
            "identity",
        ] {
            assert_eq!(
                framing(unsupported),
                Err(HeadError::UnsupportedTransferCoding),
                "{unsupported}"
            );
        }
        assert_eq!(HeadError::UnsupportedTransferCoding.status(), 501);
        assert_eq!(framing("chunked, chunked"), Err(HeadError::Malformed));
        assert_eq!(framing(""), Err(HeadError::Malformed));
        assert_eq!(framing(" , "), Err(HeadError::Malformed));

        // Split over two fields, the codings still form one list.
        let split =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(req_err(split), HeadError::UnsupportedTransferCoding);

        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(req_err(both), HeadError::ConflictingFraming);
        let both = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(req_err(both), HeadError::ConflictingFraming);

        let old = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(req_err(old), HeadError::Malformed);
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("1.1", "", true),
            ("1.1", "Connection: close\r\n", false),
            ("1.1", "Connection: CLOSE\r\n", false),
            ("1.1", "Connection: Keep-Alive, close\r\n", false),
            ("1.1", "Connection: upgrade\r\nConnection: close\r\n", false),
            ("1.1", "Connection: closed\r\n", true),
            ("1.1", "Connection: keep-alive\r\n", true),
            ("1.0", "", false),
            ("1.0", "Connection: keep-alive\r\n", true),
            ("1.0", "Connection: Keep-Alive\r\n", true),
            ("1.0", "Connection: upgrade,  keep-alive \r\n", true),
            ("1.0", "Connection: te\r\nconnection: keep-alive\r\n", true),
            ("1.0", "Connection: keep-alive, close\r\n", false),
            ("1.0", "Connection: keep-alived\r\n", false),
        ];
        for &(version, fields, expected) in cases {
            let raw = format!("GET / HTTP/{version}\r\n{fields}\r\n");
            let head = req_ok(raw.as_bytes());
            assert_eq!(head.keep_alive, expected, "{raw:?}");
            assert_eq!(head.minor_version, u8::from(version == "1.1"));
        }
    }

    #[test]
    fn pipelined_requests_with_bodies() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
            GET /c HTTP/1.1\r\n\r\n";
        let mut at = 0;
        let mut seen = Vec::new();
        while at < stream.len() {
            let Ok(Some((head, n))) = parse_request_head(&stream[at..]) else {
                panic!("no head at {at}");
            };
            at += n;
            let mut dec = BodyDecoder::new(head.body, 1024);
            let mut body = Vec::new();
            // Everything left is offered; the decoder takes only this request's body.
            at += dec.decode(&stream[at..], &mut body).expect("body");
            assert!(dec.is_done());
            assert_eq!(dec.decode(&stream[at..], &mut body), Ok(0));
            seen.push((head.target, body));
        }
        assert_eq!(
            seen,
            [
                ("/a".to_owned(), b"hello".to_vec()),
                ("/b".to_owned(), b"abcde".to_vec()),
                ("/c".to_owned(), Vec::new()),
            ]
        );
    }

    #[test]
    fn length_body() {
        let mut dec = BodyDecoder::new(BodyFraming::Length(5), 10);
        let mut out = Vec::new();
        assert_eq!(dec.decode(b"he", &mut out), Ok(2));
        assert!(!dec.is_done());
        assert_eq!(dec.decode(b"", &mut out), Ok(0));
        assert_eq!(dec.decode(b"lloGET", &mut out), Ok(3));
        assert!(dec.is_done());
        assert_eq!(dec.decode(b"GET", &mut out), Ok(0));
        assert_eq!(out, b"hello");

        // Over the limit: refused on the first call, before any byte arrives, and for good.
        let mut dec = BodyDecoder::new(BodyFraming::Length(11), 10);
        assert_eq!(dec.decode(b"", &mut out), Err(BodyError::TooLarge));
        assert_eq!(dec.decode(b"abc", &mut out), Err(BodyError::TooLarge));
        assert!(!dec.is_done());
        assert_eq!(
            decode_all(BodyFraming::Length(10), 10, b"0123456789").0,
            Ok(10)
        );
    }

    #[test]
    fn empty_bodies_are_done_at_once() {
        for framing in [BodyFraming::None, BodyFraming::Length(0)] {
            let (res, out, done) = decode_all(framing, 0, b"GET / HTTP/1.1\r\n");
            assert_eq!((res, out.len(), done), (Ok(0), 0, true));
            assert!(BodyDecoder::new(framing, 0).is_done());
        }
    }

    #[test]
    fn until_close_body() {
        let mut dec = BodyDecoder::new(BodyFraming::UntilClose, 8);
        let mut out = Vec::new();
        assert_eq!(dec.decode(b"abc", &mut out), Ok(3));
        assert_eq!(dec.decode(b"defgh", &mut out), Ok(5));
        assert!(!dec.is_done());
        assert_eq!(out, b"abcdefgh");
        assert_eq!(dec.decode(b"i", &mut out), Err(BodyError::TooLarge));
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(chunked(b"0\r\n\r\n"), Ok(Vec::new()));
        assert_eq!(chunked(b"5\r\nhello\r\n0\r\n\r\n"), Ok(b"hello".to_vec()));
        assert_eq!(
            chunked(b"A\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n"),
            Ok(b"0123456789!".to_vec())
        );
        assert_eq!(chunked(b"000003\r\nabc\r\n00\r\n\r\n"), Ok(b"abc".to_vec()));
        let big = vec![b'x'; 0x1ab];
        let mut raw = b"1aB\r\n".to_vec();
        raw.extend_from_slice(&big);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(chunked(&raw), Ok(big));
    }

    #[test]
    fn chunk_extensions_are_skipped() {
        let raw: &[u8] = b"3;name=value\r\nabc\r\n\
            2 ; a = b;flag;q=\"semi;colon \\\" \xe9\"\r\nde\r\n\
            0;last\r\n\r\n";
        assert_eq!(chunked(raw), Ok(b"abcde".to_vec()));
        assert_eq!(chunked(b"3 \r\nabc\r\n0\r\n\r\n"), Ok(b"abc".to_vec()));
    }

    #[test]
    fn trailers_are_skipped() {
        let raw = b"2\r\nhi\r\n0\r\nExpires: never\r\nX-Sum: 1, 2\r\n\r\nGET";
        let (res, out, done) = decode_all(BodyFraming::Chunked, 100, raw);
        assert_eq!(res, Ok(raw.len() - 3));
        assert_eq!(out, b"hi");
        assert!(done);
    }

    #[test]
    fn chunked_malformations() {
        let bad: &[&[u8]] = &[
            b"\r\n",
            b";ext\r\n",
            b" 5\r\nhello\r\n",
            b"-5\r\n",
            b"+5\r\n",
            b"0x5\r\n",
            b"g\r\n",
            b"5x\r\n",
            b"5 x\r\n",
            b"5\rX",
            b"5\n",
            b"5;a\n",
            b"5;a\x00\r\n",
            b"5;a\rb\r\n",
            b"3\r\nabcX",
            b"3\r\nabc\n",
            b"3\r\nabc\r\r",
            b"3\r\nabc\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n",
            b"0\r\nX: y\rz",
            b"0\r\n\rX",
            b"10000000000000000\r\n",
        ];
        for raw in bad {
            assert_eq!(
                decode_all(BodyFraming::Chunked, u64::MAX, raw).0,
                Err(BodyError::Malformed),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // The largest size that fits is still only refused by the limit.
        assert_eq!(
            decode_all(BodyFraming::Chunked, u64::MAX, b"ffffffffffffffff\r\nab").0,
            Ok(20)
        );
    }

    #[test]
    fn chunked_errors_are_sticky() {
        let mut dec = BodyDecoder::new(BodyFraming::Chunked, 100);
        let mut out = Vec::new();
        assert_eq!(dec.decode(b"zz", &mut out), Err(BodyError::Malformed));
        assert_eq!(
            dec.decode(b"0\r\n\r\n", &mut out),
            Err(BodyError::Malformed)
        );
        assert!(!dec.is_done());
    }

    #[test]
    fn chunked_framing_is_bounded() {
        // An endless extension or run of leading zeros is cut off at the line limit.
        let mut long_ext = b"1;x=".to_vec();
        long_ext.resize(MAX_CHUNK_LINE + 10, b'a');
        let (res, out, _) = decode_all(BodyFraming::Chunked, 100, &long_ext);
        assert_eq!((res, out.len()), (Err(BodyError::Malformed), 0));
        let zeros = vec![b'0'; MAX_CHUNK_LINE + 1];
        assert_eq!(
            decode_all(BodyFraming::Chunked, 100, &zeros).0,
            Err(BodyError::Malformed)
        );
        let mut fits = b"1;x=".to_vec();
        fits.resize(MAX_CHUNK_LINE - 2, b'a');
        fits.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert_eq!(chunked(&fits), Ok(b"z".to_vec()));

        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() <= MAX_TRAILER_BYTES {
            trailers.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(
            decode_all(BodyFraming::Chunked, 100, &trailers).0,
            Err(BodyError::TooLarge)
        );
    }

    #[test]
    fn chunked_body_limit() {
        // One chunk over the limit is refused on its size line, before its data.
        let (res, out, _) = decode_all(BodyFraming::Chunked, 4, b"5\r\n");
        assert_eq!((res, out.len()), (Err(BodyError::TooLarge), 0));
        // Refused as soon as the digits exceed it, whatever follows.
        assert_eq!(
            decode_all(BodyFraming::Chunked, 100, b"fffffffffff").0,
            Err(BodyError::TooLarge)
        );
        // Several chunks adding up past it.
        assert_eq!(
            decode_all(BodyFraming::Chunked, 4, b"2\r\nab\r\n3\r\n").0,
            Err(BodyError::TooLarge)
        );
        // Exactly at the limit is fine.
        assert_eq!(
            decode_all(BodyFraming::Chunked, 4, b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n").1,
            b"abcd"
        );
    }

    #[test]
    fn responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
        let (head, n) = resp_ok(raw);
        assert_eq!((head.status, head.minor_version), (200, 1));
        assert_eq!(head.body, BodyFraming::Length(2));
        assert!(head.keep_alive);
        assert_eq!(head.header("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(&raw[n..], b"hi");

        let chunked = resp_ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").0;
        assert_eq!(chunked.body, BodyFraming::Chunked);

        let until_close = resp_ok(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n").0;
        assert_eq!(until_close.body, BodyFraming::UntilClose);
        assert!(!until_close.keep_alive);

        let empty = resp_ok(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").0;
        assert_eq!(empty.body, BodyFraming::None);
        assert!(empty.keep_alive);

        for status in [
            "101 Switching Protocols",
            "204 No Content",
            "304 Not Modified",
            "100 Continue",
        ] {
            let raw = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            let head = resp_ok(raw.as_bytes()).0;
            assert_eq!(head.body, BodyFraming::None, "{status}");
            assert!(head.keep_alive);
        }

        let closing =
            resp_ok(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n").0;
        assert!(!closing.keep_alive);
        let old = resp_ok(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").0;
        assert!(!old.keep_alive);
        let old_kept =
            resp_ok(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n").0;
        assert!(old_kept.keep_alive);
        assert_eq!(resp_ok(b"HTTP/1.1 404 \r\n\r\n").0.status, 404);
    }

    #[test]
    fn bad_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        for end in 0..raw.len() {
            assert_eq!(parse_response_head(&raw[..end]), Ok(None), "prefix {end}");
        }
        let err = |raw: &[u8]| parse_response_head(raw).err();
        assert_eq!(
            err(b"HTTP/2 200 OK\r\n\r\n"),
            Some(HeadError::UnsupportedVersion)
        );
        assert_eq!(
            err(b"HTTP/2.0 200\r\n\r\n"),
            Some(HeadError::UnsupportedVersion)
        );
        assert_eq!(err(b"HTTP/1.1\r\n\r\n"), Some(HeadError::Malformed));
        assert_eq!(err(b"HTTP/1.1x 200\r\n\r\n"), Some(HeadError::Malformed));
        assert_eq!(err(b"ICY 200 OK\r\n\r\n"), Some(HeadError::Malformed));
        assert_eq!(err(b"HTTP/1.1 20 OK\r\n\r\n"), Some(HeadError::Malformed));
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Some(HeadError::ConflictingFraming)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(HeadError::ConflictingFraming)
        );
        assert_eq!(parse_response_head(b"HTTP/2"), Ok(None));
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(parse_response_head(&long), Err(HeadError::TooLarge));
    }

    #[test]
    fn writers() {
        let mut out = Vec::new();
        write_head(
            &mut out,
            101,
            &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        );
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        );

        let mut out = Vec::new();
        write_full_response(&mut out, 404, "text/plain", b"nope", false, &[("X-A", "1")]);
        assert_eq!(
            out,
            &b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\
               Connection: close\r\nX-A: 1\r\n\r\nnope"[..]
        );

        let mut out = Vec::new();
        write_full_response(&mut out, 200, "application/json", b"{}", true, &[]);
        let (head, n) = resp_ok(&out);
        assert_eq!(
            (head.status, head.body, head.keep_alive),
            (200, BodyFraming::Length(2), true)
        );
        assert_eq!(&out[n..], b"{}");

        let mut out = Vec::new();
        write_chunk(&mut out, b"");
        assert!(out.is_empty());
        write_chunk(&mut out, &[b'z'; 26]);
        write_chunk(&mut out, b"!");
        assert!(out.starts_with(b"1a\r\nzzzz"));
        out.extend_from_slice(LAST_CHUNK);
        let mut expected = vec![b'z'; 26];
        expected.push(b'!');
        assert_eq!(chunked(&out), Ok(expected));
    }

    #[test]
    fn reasons() {
        assert_eq!(reason(200), "OK");
        assert_eq!(reason(413), "Content Too Large");
        assert_eq!(reason(431), "Request Header Fields Too Large");
        assert_eq!(reason(505), "HTTP Version Not Supported");
        assert_eq!(reason(299), "Unknown");
    }

    /// Feeds `pieces` one after another, as reads would deliver them.
    fn decode_pieces(
        framing: BodyFraming,
        max: u64,
        input: &[u8],
        cuts: &[usize],
    ) -> (Result<usize, BodyError>, Vec<u8>, bool) {
        let mut dec = BodyDecoder::new(framing, max);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut start = 0;
        for end in cuts.iter().copied().chain([input.len()]) {
            let piece = &input[start..end];
            start = end;
            match dec.decode(piece, &mut out) {
                Ok(n) => {
                    // Every byte is taken until the body ends.
                    assert!(n == piece.len() || dec.is_done());
                    consumed += n;
                }
                Err(e) => return (Err(e), out, dec.is_done()),
            }
        }
        (Ok(consumed), out, dec.is_done())
    }

    fn cut_points(len: usize, raw: Vec<usize>) -> Vec<usize> {
        let mut cuts: Vec<usize> = raw.into_iter().map(|c| c % (len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    fn arb_request() -> impl Strategy<Value = (Vec<u8>, usize)> {
        let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "OPTIONS"]);
        let target = "/[a-z0-9/._-]{0,20}(\\?[a-z0-9=&]{0,20})?";
        let fields = prop::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[ -~]{0,30}"), 0..8);
        let connection = prop::option::of(prop::sample::select(vec![
            "close",
            "keep-alive",
            "Upgrade, Keep-Alive",
        ]));
        let body = prop::option::of(prop::collection::vec(any::<u8>(), 0..40));
        (
            method,
            target,
            any::<bool>(),
            fields,
            connection,
            body,
            "\r?\n",
        )
            .prop_map(|(method, target, v11, fields, connection, body, eol)| {
                let mut raw = format!("{method} {target} HTTP/1.{}{eol}", u8::from(v11));
                for (name, value) in fields {
                    raw.push_str(&format!("{name}:{value}{eol}"));
                }
                if let Some(c) = connection {
                    raw.push_str(&format!("Connection: {c}{eol}"));
                }
                if let Some(body) = &body {
                    raw.push_str(&format!("Content-Length: {}{eol}", body.len()));
                }
                raw.push_str(&eol);
                let head_len = raw.len();
                let mut raw = raw.into_bytes();
                // The start of a pipelined follower must not disturb the first head.
                raw.extend_from_slice(&body.unwrap_or_default());
                raw.extend_from_slice(b"GET /next HTTP/1.1\r\n");
                (raw, head_len)
            })
    }

    fn arb_chunked() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        let chunk = (
            prop::collection::vec(any::<u8>(), 1..300),
            prop::option::of("(;[a-z]{1,5}(=([a-z0-9]{1,5}|\"[ -!#-~]{0,8}\"))?){1,3}"),
        );
        let trailers = prop::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..3);
        (prop::collection::vec(chunk, 0..6), any::<bool>(), trailers).prop_map(
            |(chunks, upper, trailers)| {
                let mut raw = Vec::new();
                let mut body = Vec::new();
                for (data, ext) in chunks {
                    let size = if upper {
                        format!("{:X}", data.len())
                    } else {
                        format!("{:x}", data.len())
                    };
                    raw.extend_from_slice(size.as_bytes());
                    raw.extend_from_slice(ext.unwrap_or_default().as_bytes());
                    raw.extend_from_slice(b"\r\n");
                    raw.extend_from_slice(&data);
                    raw.extend_from_slice(b"\r\n");
                    body.extend_from_slice(&data);
                }
                raw.extend_from_slice(b"0\r\n");
                for t in trailers {
                    raw.extend_from_slice(t.as_bytes());
                    raw.extend_from_slice(b"\r\n");
                }
                raw.extend_from_slice(b"\r\n");
                (raw, body)
            },
        )
    }

    proptest! {
        #[test]
        fn request_head_prefixes((raw, head_len) in arb_request()) {
            let whole = parse_request_head(&raw);
            let Ok(Some((ref head, n))) = whole else {
                return Err(TestCaseError::fail(format!("{whole:?}")));
            };
            prop_assert_eq!(n, head_len);
            // Every prefix, so every way reads could split the head.
            for end in 0..=raw.len() {
                let got = parse_request_head(&raw[..end]);
                if end < head_len {
                    prop_assert_eq!(got, Ok(None));
                } else {
                    prop_assert_eq!(got, Ok(Some((head.clone(), n))));
                }
            }
        }

        #[test]
        fn version_verdict_never_changes(
            version in "HTTP/[0-9](\\.[0-9])?|HTTP/[0-9.x]{1,3}|[HTPS/0-9.x]{1,10}",
        ) {
            let raw = format!("GET / {version}\r\n\r\n");
            let minor = |buf: &[u8]| parse_request_head(buf).map(|r| r.map(|(h, _)| h.minor_version));
            let whole = minor(raw.as_bytes());
            let expected = match version.strip_prefix("HTTP/").map(str::as_bytes) {
                Some(b"1.0") => Ok(Some(0)),
                Some(b"1.1") => Ok(Some(1)),
                Some([major]) | Some([major, b'.', _]) if major.is_ascii_digit()
                    && version.bytes().last().is_some_and(|b| b.is_ascii_digit()) =>
                {
                    Err(HeadError::UnsupportedVersion)
                }
                _ => Err(HeadError::Malformed),
            };
            prop_assert_eq!(whole, expected);
            // A prefix either waits or already gives the final answer.
            for end in 0..raw.len() {
                let got = minor(&raw.as_bytes()[..end]);
                prop_assert!(got == Ok(None) || got == whole, "prefix {end}: {got:?}");
            }
        }

        #[test]
        fn chunked_any_split((raw, body) in arb_chunked(), raw_cuts in prop::collection::vec(any::<usize>(), 0..16)) {
            let mut input = raw.clone();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let whole = decode_all(BodyFraming::Chunked, u64::MAX, &input);
            prop_assert_eq!(&whole, &(Ok(raw.len()), body, true));
            let cuts = cut_points(input.len(), raw_cuts);
            prop_assert_eq!(decode_pieces(BodyFraming::Chunked, u64::MAX, &input, &cuts), whole);
        }

        #[test]
        fn decoder_any_bytes_any_split(
            input in prop::collection::vec(prop_oneof![
                Just(b'\r'), Just(b'\n'), Just(b';'), Just(b' '), b'0'..=b'9', b'a'..=b'g', any::<u8>()
            ], 0..200),
            raw_cuts in prop::collection::vec(any::<usize>(), 0..16),
            max in 0u64..64,
        ) {
            let cuts = cut_points(input.len(), raw_cuts);
            for framing in [BodyFraming::Chunked, BodyFraming::Length(max / 2), BodyFraming::UntilClose] {
                let whole = decode_all(framing, max, &input);
                let (res, out, _) = &whole;
                if res.is_ok() {
                    prop_assert!(out.len() as u64 <= max);
                }
                let split = decode_pieces(framing, max, &input, &cuts);
                // An error may surface in an earlier piece, with less output so far, but it is
                // the same error; without one, everything matches.
                match (res, &split.0) {
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    _ => prop_assert_eq!(&split, &whole),
                }
            }
        }

        #[test]
        fn heads_never_panic(raw in prop::collection::vec(any::<u8>(), 0..300)) {
            for parsed in [parse_request_head(&raw).map(|r| r.map(|(_, n)| n)), parse_response_head(&raw).map(|r| r.map(|(_, n)| n))] {
                if let Ok(Some(n)) = parsed {
                    prop_assert!(n <= raw.len());
                }
            }
        }
    }
}
