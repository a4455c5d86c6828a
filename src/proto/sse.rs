//! Server-sent events (WHATWG HTML, "Server-sent events"): an encoder for the server and a
//! parser that follows the spec's event-stream interpretation to the letter, for the load
//! generator and the tests.
//!
//! Two things the spec leaves to the implementation are decided here:
//!
//! * **Memory bound.** A browser's stream is bounded only by the tab's memory; a load generator
//!   holding thousands of connections cannot afford that. [`Parser::with_limit`] caps both the
//!   line being read and an event's data buffer (default [`DEFAULT_LIMIT`]). A block (the lines
//!   up to the next blank line) that breaks the cap is dropped whole, never delivered truncated,
//!   and counted in [`Parser::overflows`].
//! * **Reconnection.** [`Parser::finish`] ends one stream and leaves the parser ready for the
//!   next connection, keeping the reconnection time and the last event ID, as an `EventSource`
//!   does across reconnects.

/// Default cap, in bytes, on one line and on one event's data: generous for real events, small
/// enough that a peer that never sends a newline cannot exhaust memory.
pub const DEFAULT_LIMIT: usize = 1 << 20;

const BOM: &[u8] = "\u{FEFF}".as_bytes();

/// Appends one event: `id:` (if any), `event:` (if any), then `data` split on CR, LF and CRLF into
/// one `data:` line each, then the blank line that dispatches it. Panics never; an `id` or `event`
/// containing CR/LF (or NUL for `id`) is a caller bug and is debug-asserted.
///
/// Every value is written after `: ` so that a value starting with a space survives the parser
/// removing one. Empty `data` still yields one `data:` line, so the event is dispatched (with
/// empty data) rather than silently swallowed. Line breaks inside `data` come out as LF: the
/// format cannot tell CR, LF and CRLF apart.
pub fn encode_event(out: &mut Vec<u8>, id: Option<&str>, event: Option<&str>, data: &str) {
    if let Some(id) = id {
        debug_assert!(
            !id.contains(['\r', '\n', '\0']),
            "SSE id contains CR, LF or NUL"
        );
        push_field(out, "id", id);
    }
    if let Some(event) = event {
        debug_assert!(
            !event.contains(['\r', '\n']),
            "SSE event name contains CR or LF"
        );
        push_field(out, "event", event);
    }
    for_each_line(data, |line| push_field(out, "data", line));
    out.push(b'\n');
}

/// Appends `retry: MS` and a blank line.
pub fn encode_retry(out: &mut Vec<u8>, ms: u64) {
    push_field(out, "retry", &ms.to_string());
    out.push(b'\n');
}

/// Appends a comment (`: TEXT`, one line per line of `text`) and a blank line; clients ignore it,
/// proxies see traffic.
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    for_each_line(text, |line| push_field(out, "", line));
    out.push(b'\n');
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// Calls `f` with each line of `text`, split on CRLF, lone CR and lone LF exactly as the parser
/// splits them. Always calls it at least once, and a trailing line break yields a final empty
/// line, so the parser's `data` rebuilds the text with every break as LF.
fn for_each_line(text: &str, mut f: impl FnMut(&str)) {
    let mut rest = text;
    while let Some(i) = rest.find(['\r', '\n']) {
        f(&rest[..i]);
        let brk = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + brk..];
    }
    f(rest);
}

/// A dispatched event, as the spec's `MessageEvent` would carry it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `message` unless the stream named another type.
    pub event_type: String,
    /// The block's `data` values joined by LF.
    pub data: String,
    /// The last event ID string when the event was dispatched.
    pub last_event_id: String,
}

/// Incremental event-stream parser.
///
/// Bytes are split into lines before they are decoded. That is equivalent to decoding the whole
/// stream first: CR and LF are ASCII, so they never occur inside a multibyte UTF-8 sequence, and
/// the UTF-8 decoder ends an invalid sequence at a byte that is not a continuation byte, CR and LF
/// included. So a line's bytes can be buffered across feeds and each value decoded (lossily,
/// invalid sequences becoming U+FFFD) once its line is complete, and a character split between two
/// feeds decodes as one. Field names are compared as raw bytes for the same reason: a name with
/// invalid UTF-8 decodes to something containing U+FFFD, which matches no known field anyway.
#[derive(Debug, Clone)]
pub struct Parser {
    /// Bytes of a line that has not ended yet in any feed so far.
    line: Vec<u8>,
    /// The current line outgrew `limit`: its bytes are being dropped until it ends.
    line_too_long: bool,
    /// The last byte fed was a CR, so an LF opening the next feed completes a CRLF rather than
    /// ending an empty line of its own.
    after_cr: bool,
    /// No line has ended yet on this stream: the only place a BOM may be stripped.
    first_line: bool,
    /// The current block broke the limit: ignore its lines up to the blank line, dispatch nothing.
    skipping_block: bool,
    data: String,
    event_type: String,
    /// The spec's last event ID buffer, set by `id:` fields.
    last_event_id: String,
    /// The event source's last event ID string: the buffer as of the latest blank line.
    committed_id: String,
    retry: Option<u64>,
    limit: usize,
    overflows: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Self::with_limit(DEFAULT_LIMIT)
    }
}

impl Parser {
    /// A parser with the [`DEFAULT_LIMIT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that holds at most `max_bytes` of one line and at most `max_bytes` of one event's
    /// data (decoded). A line longer than that, even a comment, or data that would grow past it,
    /// drops the whole block it belongs to: its remaining lines are ignored up to the next blank
    /// line, which then dispatches nothing, and [`overflows`](Self::overflows) counts it. Fields
    /// processed earlier in the block (`id`, `retry`) keep their effect.
    pub fn with_limit(max_bytes: usize) -> Self {
        Parser {
            line: Vec::new(),
            line_too_long: false,
            after_cr: false,
            first_line: true,
            skipping_block: false,
            data: String::new(),
            event_type: String::new(),
            last_event_id: String::new(),
            committed_id: String::new(),
            retry: None,
            limit: max_bytes,
            overflows: 0,
        }
    }

    /// Feeds the next bytes of the stream; dispatched events are pushed to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        let mut rest = bytes;
        if self.after_cr {
            if let Some((&first, tail)) = rest.split_first() {
                self.after_cr = false;
                if first == b'\n' {
                    rest = tail;
                }
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.end_line(&rest[..i], out);
            let was_cr = rest[i] == b'\r';
            rest = &rest[i + 1..];
            if was_cr {
                match rest.split_first() {
                    Some((&b'\n', tail)) => rest = tail,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.append(rest);
    }

    /// End of stream: the incomplete line and event are discarded, per the spec.
    ///
    /// The parser is then ready for the next connection's stream (which may open with its own
    /// BOM). The reconnection time is kept, and so is the last event ID as of the last blank line:
    /// an `id:` in the discarded block is rolled back, since its event was never delivered. The
    /// new stream's last event ID buffer starts from that value rather than from the empty string
    /// the spec literally prescribes, as browsers do; otherwise a reconnected stream's first event
    /// without an `id` would erase the position the reconnect just resumed from.
    pub fn finish(&mut self) {
        self.line.clear();
        self.line_too_long = false;
        self.after_cr = false;
        self.first_line = true;
        self.skipping_block = false;
        self.data.clear();
        self.event_type.clear();
        self.last_event_id.clone_from(&self.committed_id);
    }

    /// The reconnection time last set by a valid `retry:` field.
    ///
    /// A value of more digits than `u64` holds saturates to `u64::MAX`: it is still a valid field
    /// and means "longer than anyone will wait".
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry
    }

    /// The current last-event-ID buffer (what a reconnect would send as `Last-Event-ID`).
    ///
    /// Mid-block this already reflects the block's `id:` field; after [`finish`](Self::finish) it
    /// is the value as of the last blank line.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// How many blocks were dropped for breaking the size limit (see [`with_limit`](Self::with_limit)).
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Buffers part of a line that has not ended in this feed, unless the line is already too long.
    fn append(&mut self, bytes: &[u8]) {
        if self.line_too_long || bytes.is_empty() {
            return;
        }
        if self.line.len() + bytes.len() > self.limit {
            self.line_too_long = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// A line ended; `tail` is its part from this feed (the rest is in `self.line`).
    fn end_line(&mut self, tail: &[u8], out: &mut Vec<Event>) {
        if self.line.is_empty() && !self.line_too_long && tail.len() <= self.limit {
            // The whole line arrived in this feed: interpret it in place, without copying.
            self.interpret_line(tail, out);
        } else {
            self.append(tail);
            if self.line_too_long {
                self.line_too_long = false;
                self.drop_block();
            } else {
                // Move the buffer out so the line can be read while fields are updated, then put
                // it back to keep its capacity for the next split line.
                let line = std::mem::take(&mut self.line);
                self.interpret_line(&line, out);
                self.line = line;
                self.line.clear();
            }
        }
        self.first_line = false;
    }

    fn interpret_line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        // UTF-8 decode strips one BOM at the very start of the stream; it can only be on the
        // first line, since its bytes contain no CR or LF.
        let line = if self.first_line {
            line.strip_prefix(BOM).unwrap_or(line)
        } else {
            line
        };
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if self.skipping_block {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&String::from_utf8_lossy(value));
            }
            b"data" => {
                let value = String::from_utf8_lossy(value);
                // Decoded length: U+FFFD can be longer than the invalid bytes it replaces.
                if self.data.len() + value.len() + 1 > self.limit {
                    self.drop_block();
                } else {
                    self.data.push_str(&value);
                    self.data.push('\n');
                }
            }
            // NUL is ASCII, so checking the raw bytes is checking the decoded value.
            b"id" if !value.contains(&0) => {
                self.last_event_id.clear();
                self.last_event_id.push_str(&String::from_utf8_lossy(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value.iter().try_fold(0u64, |acc, &d| {
                    acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                });
                self.retry = Some(ms.unwrap_or(u64::MAX));
            }
            _ => {}
        }
    }

    /// The spec's "dispatch the event", run on every blank line.
    fn dispatch(&mut self, out: &mut Vec<Event>) {
        // Step 1: the last event ID string follows the buffer even when nothing is dispatched.
        self.committed_id.clone_from(&self.last_event_id);
        let skipped = std::mem::take(&mut self.skipping_block);
        if skipped || self.data.is_empty() {
            self.data.clear();
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event_type = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        out.push(Event {
            event_type,
            data: std::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
        });
    }

    /// The current block broke the limit: free what it holds and ignore it up to the blank line.
    fn drop_block(&mut self) {
        if !self.skipping_block {
            self.skipping_block = true;
            self.overflows += 1;
        }
        self.data.clear();
        self.event_type.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_with(parser: &mut Parser, chunks: &[&[u8]]) -> Vec<Event> {
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out);
        }
        out
    }

    fn parse(stream: &[u8]) -> Vec<Event> {
        parse_with(&mut Parser::new(), &[stream])
    }

    fn parse_bytewise(stream: &[u8]) -> Vec<Event> {
        let mut parser = Parser::new();
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        parse_with(&mut parser, &chunks)
    }

    fn ev(event_type: &str, data: &str, last_event_id: &str) -> Event {
        Event {
            event_type: event_type.into(),
            data: data.into(),
            last_event_id: last_event_id.into(),
        }
    }

    fn msg(data: &str) -> Event {
        ev("message", data, "")
    }

    fn datas(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    /// A stream written as three `data:` lines without blank lines between them, ending in
    /// `[DONE]`: one event, not three; and none at all if the stream ends before a blank line.
    #[test]
    fn overview_example_is_one_event() {
        let lines = b"data: {\"message\":\"hello\"}\ndata: {\"message\":\"world\"}\ndata: [DONE]\n";
        let mut p = Parser::new();
        let mut events = parse_with(&mut p, &[lines]);
        p.finish();
        assert!(events.is_empty(), "{events:?}");
        let mut blank = lines.to_vec();
        blank.push(b'\n');
        events = parse(&blank);
        assert_eq!(
            events,
            vec![msg(
                "{\"message\":\"hello\"}\n{\"message\":\"world\"}\n[DONE]"
            )]
        );
    }

    // --- The spec's own examples -------------------------------------------------------------

    #[test]
    fn spec_multiline_data() {
        let s = b"data: YHOO\ndata: +2\ndata: 10\n\n";
        assert_eq!(parse(s), vec![msg("YHOO\n+2\n10")]);
        assert_eq!(parse_bytewise(s), vec![msg("YHOO\n+2\n10")]);
    }

    #[test]
    fn spec_four_blocks_with_comment_and_ids() {
        let s = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n";
        let mut p = Parser::new();
        let mut events = parse_with(&mut p, &[s]);
        // The last block still needs its blank line: the end of the stream is not enough.
        assert_eq!(
            events,
            vec![ev("message", "first event", "1"), msg("second event")]
        );
        p.feed(b"\n", &mut events);
        assert_eq!(events[2], msg(" third event"));
        assert_eq!(p.last_event_id(), "");
    }

    #[test]
    fn spec_bare_data_fields() {
        // The first block fires "", the middle "\n"; the last is discarded at EOF.
        let mut p = Parser::new();
        let events = parse_with(&mut p, &[b"data\n\ndata\ndata\n\ndata:"]);
        p.finish();
        assert_eq!(datas(&events), vec!["", "\n"]);
    }

    #[test]
    fn spec_space_after_colon_is_optional() {
        assert_eq!(
            parse(b"data:test\n\ndata: test\n\n"),
            vec![msg("test"), msg("test")]
        );
    }

    #[test]
    fn spec_event_types() {
        let s = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n";
        assert_eq!(
            parse(s),
            vec![
                ev("add", "73857293", ""),
                ev("remove", "2153", ""),
                ev("add", "113411", ""),
            ]
        );
    }

    // --- Lines and fields ------------------------------------------------------------------

    #[test]
    fn only_one_leading_space_is_removed_and_later_colons_are_value() {
        assert_eq!(parse(b"data:  x\n\n"), vec![msg(" x")]);
        assert_eq!(parse(b"data: a: b:c\n\n"), vec![msg("a: b:c")]);
        assert_eq!(parse(b"data:\tx \n\n"), vec![msg("\tx ")]);
    }

    #[test]
    fn comments_are_ignored() {
        let s = b":\n: hello\n:data: no\ndata: yes\n: between\n\n";
        assert_eq!(parse(s), vec![msg("yes")]);
        // A block of only comments dispatches nothing.
        assert_eq!(parse(b": keep-alive\n\n"), vec![]);
    }

    #[test]
    fn field_without_colon_has_empty_value() {
        assert_eq!(parse(b"data\n\n"), vec![msg("")]);
        // `event` with an empty value leaves the default type.
        assert_eq!(parse(b"event: x\nevent\ndata: d\n\n"), vec![msg("d")]);
    }

    #[test]
    fn unknown_and_differently_cased_fields_are_ignored() {
        let s = b"foo: bar\nData: no\nEVENT: no\ndata : no\n data: no\ndata: yes\n\n";
        assert_eq!(parse(s), vec![msg("yes")]);
        assert_eq!(parse(b"Data: x\n\n"), vec![]);
    }

    #[test]
    fn event_type_resets_after_dispatch_and_after_empty_block() {
        assert_eq!(
            parse(b"event: a\ndata: 1\n\ndata: 2\n\n"),
            vec![ev("a", "1", ""), msg("2")]
        );
        // A blank line with no data still clears the event type.
        assert_eq!(parse(b"event: a\n\ndata: 2\n\n"), vec![msg("2")]);
    }

    #[test]
    fn empty_lines_without_data_dispatch_nothing() {
        assert_eq!(parse(b"\n\n\r\n\r\r"), vec![]);
    }

    // --- Line endings ------------------------------------------------------------------------

    #[test]
    fn cr_lf_and_crlf_all_end_lines() {
        let s = b"data: a\rdata: b\r\ndata: c\n\r\n";
        assert_eq!(parse(s), vec![msg("a\nb\nc")]);
        assert_eq!(parse_bytewise(s), vec![msg("a\nb\nc")]);
        assert_eq!(parse(b"data: x\r\r"), vec![msg("x")]);
        assert_eq!(parse(b"data: x\n\r"), vec![msg("x")]);
        // LF CR is two line endings; CR LF is one.
        assert_eq!(
            parse(b"data: x\n\rdata: y\r\n\r\n"),
            vec![msg("x"), msg("y")]
        );
    }

    #[test]
    fn crlf_split_across_feeds_is_one_line_ending() {
        let mut p = Parser::new();
        let events = parse_with(
            &mut p,
            &[
                b"data: a\r",
                b"\n",
                b"data: b\r",
                b"",
                b"\ndata: c\r\n\r",
                b"\n",
            ],
        );
        assert_eq!(events, vec![msg("a\nb\nc")]);
    }

    #[test]
    fn cr_then_cr_across_feeds_is_two_line_endings() {
        let mut p = Parser::new();
        let events = parse_with(&mut p, &[b"data: a\r", b"\r", b"data: b\r", b"x"]);
        assert_eq!(events, vec![msg("a")]);
    }

    // --- BOM -------------------------------------------------------------------------------

    #[test]
    fn leading_bom_is_stripped_even_split_byte_by_byte() {
        let s = "\u{FEFF}data: x\n\n".as_bytes();
        assert_eq!(parse(s), vec![msg("x")]);
        assert_eq!(parse_bytewise(s), vec![msg("x")]);
        // A BOM right before a blank line: the line is blank once it is stripped.
        assert_eq!(parse("\u{FEFF}\ndata: y\n\n".as_bytes()), vec![msg("y")]);
    }

    #[test]
    fn only_one_bom_is_stripped() {
        // The second BOM makes the field name "\u{FEFF}data", which is ignored.
        let s = "\u{FEFF}\u{FEFF}data:1\n\ndata:2\n\n".as_bytes();
        assert_eq!(parse(s), vec![msg("2")]);
        assert_eq!(parse_bytewise(s), vec![msg("2")]);
        // A BOM inside a value is data.
        let s = "\u{FEFF}data: \u{FEFF}x\n\n".as_bytes();
        assert_eq!(parse(s), vec![msg("\u{FEFF}x")]);
    }

    #[test]
    fn bom_after_the_start_is_not_stripped() {
        let s = "data: 1\n\n\u{FEFF}data: 2\n\n".as_bytes();
        assert_eq!(parse(s), vec![msg("1")]);
    }

    #[test]
    fn partial_or_utf16_bom_is_not_a_bom() {
        assert_eq!(parse(b"\xEF\xBBdata: x\n\ndata: y\n\n"), vec![msg("y")]);
        assert_eq!(parse(b"\xFF\xFEdata:1\n\ndata:2\n\n"), vec![msg("2")]);
    }

    // --- id, retry -------------------------------------------------------------------------

    #[test]
    fn last_event_id_persists_until_changed() {
        let s = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid\ndata: d\n\n";
        let events = parse(s);
        let ids: Vec<&str> = events.iter().map(|e| e.last_event_id.as_str()).collect();
        assert_eq!(ids, vec!["1", "1", "2", ""]);
    }

    #[test]
    fn id_without_data_still_updates_last_event_id() {
        let mut p = Parser::new();
        let events = parse_with(&mut p, &[b"id: 7\n\ndata: x\n\n"]);
        assert_eq!(events, vec![ev("message", "x", "7")]);
        assert_eq!(p.last_event_id(), "7");
    }

    #[test]
    fn id_containing_nul_is_ignored() {
        let mut p = Parser::new();
        let events = parse_with(
            &mut p,
            &[b"id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\nid: \0\n\n"],
        );
        assert_eq!(
            events,
            vec![ev("message", "a", "1"), ev("message", "b", "1")]
        );
        assert_eq!(p.last_event_id(), "1");
    }

    #[test]
    fn retry_accepts_only_ascii_digits() {
        let mut p = Parser::new();
        assert_eq!(p.retry_ms(), None);
        p.feed(b"retry: 1500\n", &mut Vec::new());
        assert_eq!(p.retry_ms(), Some(1500));
        let bad: [&[u8]; 9] = [
            b"retry: 15x\n",
            b"retry: -1\n",
            b"retry: +1\n",
            b"retry: 1.5\n",
            b"retry: 1e3\n",
            b"retry:  10\n",
            b"retry: 10 \n",
            b"retry:\n",
            b"retry\n",
        ];
        for line in bad {
            p.feed(line, &mut Vec::new());
            assert_eq!(
                p.retry_ms(),
                Some(1500),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        p.feed(b"retry: 007\n", &mut Vec::new());
        assert_eq!(p.retry_ms(), Some(7));
        p.feed(b"retry:0\n", &mut Vec::new());
        assert_eq!(p.retry_ms(), Some(0));
        // Full-width digits are not ASCII digits.
        p.feed("retry: \u{FF11}\n".as_bytes(), &mut Vec::new());
        assert_eq!(p.retry_ms(), Some(0));
    }

    #[test]
    fn retry_overflow_saturates() {
        let mut p = Parser::new();
        p.feed(b"retry: 18446744073709551615\n", &mut Vec::new());
        assert_eq!(p.retry_ms(), Some(u64::MAX));
        p.feed(b"retry: 1\n", &mut Vec::new());
        p.feed(b"retry: 99999999999999999999999999999\n", &mut Vec::new());
        assert_eq!(p.retry_ms(), Some(u64::MAX));
    }

    #[test]
    fn retry_does_not_dispatch() {
        assert_eq!(parse(b"retry: 10\n\n"), vec![]);
    }

    // --- End of stream and reuse -------------------------------------------------------------

    #[test]
    fn incomplete_event_at_eof_is_discarded() {
        let mut p = Parser::new();
        let mut out = parse_with(&mut p, &[b"data: x\n"]);
        p.finish();
        p.feed(b"\n", &mut out);
        assert_eq!(out, vec![]);
        // So is an incomplete line, and a pending CR.
        p.feed(b"data: y", &mut out);
        p.finish();
        p.feed(b"\n\n", &mut out);
        assert_eq!(out, vec![]);
        p.feed(b"data: z\r", &mut out);
        p.finish();
        p.feed(b"\ndata: w\n\n", &mut out);
        assert_eq!(out, vec![msg("w")]);
    }

    #[test]
    fn finish_keeps_retry_and_committed_id_for_reconnect() {
        let mut p = Parser::new();
        let events = parse_with(
            &mut p,
            &[b"retry: 3000\nid: 1\ndata: a\n\nid: 2\ndata: b\n"],
        );
        assert_eq!(events, vec![ev("message", "a", "1")]);
        assert_eq!(p.last_event_id(), "2");
        p.finish();
        // Event 2 never arrived, so a reconnect resumes after 1.
        assert_eq!(p.last_event_id(), "1");
        assert_eq!(p.retry_ms(), Some(3000));
        // The next stream may open with a BOM, and keeps the ID until it sends a new one.
        let events = parse_with(
            &mut p,
            &["\u{FEFF}data: c\n\nid: 3\ndata: d\n\n".as_bytes()],
        );
        assert_eq!(
            events,
            vec![ev("message", "c", "1"), ev("message", "d", "3")]
        );
    }

    // --- UTF-8 -------------------------------------------------------------------------------

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(parse(b"data: a\xFFb\n\n"), vec![msg("a\u{FFFD}b")]);
        // A truncated sequence ended by the line break is one U+FFFD; the break still counts.
        assert_eq!(parse(b"data: \xE2\x82\n\n"), vec![msg("\u{FFFD}")]);
        assert_eq!(
            parse(b"data: \xE2\x82\rdata: x\r\n\r\n"),
            vec![msg("\u{FFFD}\nx")]
        );
        assert_eq!(
            parse(b"event: \xC0\xAF\ndata: x\n\n"),
            vec![ev("\u{FFFD}\u{FFFD}", "x", "")]
        );
        assert_eq!(
            parse(b"id: \xFF\ndata: x\n\n"),
            vec![ev("message", "x", "\u{FFFD}")]
        );
    }

    #[test]
    fn multibyte_character_split_across_feeds() {
        let s = "data: é€😀\n\n".as_bytes();
        for cut in 0..s.len() {
            let mut p = Parser::new();
            let events = parse_with(&mut p, &[&s[..cut], &s[cut..]]);
            assert_eq!(events, vec![msg("é€😀")], "cut at {cut}");
        }
        assert_eq!(parse_bytewise(s), vec![msg("é€😀")]);
    }

    // --- Limits ------------------------------------------------------------------------------

    #[test]
    fn endless_line_stays_bounded() {
        let mut p = Parser::with_limit(64);
        let mut out = Vec::new();
        p.feed(b"data: ", &mut out);
        for _ in 0..10_000 {
            p.feed(&[b'a'; 100], &mut out);
            assert!(p.line.capacity() <= 128);
        }
        p.feed(b"\n\ndata: ok\n\n", &mut out);
        assert_eq!(out, vec![msg("ok")]);
        assert_eq!(p.overflows(), 1);
    }

    #[test]
    fn over_long_line_drops_its_whole_block() {
        let long = format!("data: {}\n", "x".repeat(40));
        let s = format!(
            "event: e\ndata: a\n{long}data: b\n: {}\n\ndata: next\n\n",
            "c".repeat(40)
        );
        for events in [
            parse_with(&mut Parser::with_limit(32), &[s.as_bytes()]),
            parse_with(
                &mut Parser::with_limit(32),
                &s.as_bytes().chunks(1).collect::<Vec<_>>(),
            ),
        ] {
            assert_eq!(events, vec![msg("next")]);
        }
        let mut p = Parser::with_limit(32);
        parse_with(&mut p, &[s.as_bytes()]);
        assert_eq!(p.overflows(), 1);
        // Exactly at the limit is fine.
        let line = format!("data: {}\n\n", "y".repeat(26));
        let events = parse_with(&mut Parser::with_limit(32), &[line.as_bytes()]);
        assert_eq!(datas(&events), vec!["y".repeat(26)]);
    }

    #[test]
    fn endless_event_stays_bounded() {
        let mut p = Parser::with_limit(64);
        let mut out = Vec::new();
        for _ in 0..10_000 {
            p.feed(b"data: 0123456789\n", &mut out);
            assert!(p.data.len() <= 64);
        }
        p.feed(b"\ndata: ok\n\n", &mut out);
        assert_eq!(out, vec![msg("ok")]);
        assert_eq!(p.overflows(), 1);
    }

    #[test]
    fn id_before_overflow_in_block_is_kept() {
        let mut p = Parser::with_limit(16);
        let events = parse_with(&mut p, &[b"id: 5\ndata: 0123456789abcdef\nid: 6\n\n"]);
        assert_eq!(events, vec![]);
        assert_eq!(p.last_event_id(), "5");
    }

    // --- Encoder -----------------------------------------------------------------------------

    fn encoded(id: Option<&str>, event: Option<&str>, data: &str) -> String {
        let mut out = Vec::new();
        encode_event(&mut out, id, event, data);
        String::from_utf8(out).expect("encoder writes UTF-8")
    }

    #[test]
    fn encode_event_layout() {
        assert_eq!(
            encoded(Some("42"), Some("tick"), "a\nb"),
            "id: 42\nevent: tick\ndata: a\ndata: b\n\n"
        );
        assert_eq!(encoded(None, None, "x"), "data: x\n\n");
        assert_eq!(encoded(None, None, ""), "data: \n\n");
        assert_eq!(encoded(None, None, "a\n"), "data: a\ndata: \n\n");
        assert_eq!(
            encoded(None, None, "a\r\nb\rc\n\rd"),
            "data: a\ndata: b\ndata: c\ndata: \ndata: d\n\n"
        );
        assert_eq!(encoded(None, None, " lead"), "data:  lead\n\n");
    }

    #[test]
    fn encode_event_edge_data_round_trips() {
        for data in [
            "", "\n", "a\n", "\na", "\n\n", " x", "  ", ":", ": x", "\u{FEFF}", "\0",
        ] {
            let bytes = encoded(Some(" id"), Some(" ev"), data);
            assert_eq!(
                parse(bytes.as_bytes()),
                vec![ev(" ev", data, " id")],
                "{data:?}"
            );
        }
    }

    #[test]
    fn encode_retry_and_comment() {
        let mut out = Vec::new();
        encode_retry(&mut out, 2500);
        encode_comment(&mut out, "hello\nworld");
        encode_comment(&mut out, "");
        assert_eq!(out, b"retry: 2500\n\n: hello\n: world\n\n: \n\n");
        let mut p = Parser::new();
        assert_eq!(parse_with(&mut p, &[&out]), vec![]);
        assert_eq!(p.retry_ms(), Some(2500));
    }

    // --- Properties --------------------------------------------------------------------------

    /// Streams built from the pieces that matter: fields, separators, BOMs, invalid bytes.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let pieces: Vec<&'static [u8]> = vec![
            b"data",
            b"data:",
            b"data: ",
            b"event:",
            b"id: ",
            b"id",
            b"retry: ",
            b":",
            b" ",
            b"x",
            b"7",
            b"\n",
            b"\r",
            b"\r\n",
            b"\0",
            b"\xFF",
            b"\xE2\x82",
            b"\xE2\x82\xAC",
            "é".as_bytes(),
            BOM,
            b"retry: 99999999999999999999999\n",
        ];
        prop::collection::vec(prop::sample::select(pieces), 0..80).prop_map(|ps| ps.concat())
    }

    fn run_split(
        limit: usize,
        bytes: &[u8],
        cuts: &[prop::sample::Index],
    ) -> (Vec<Event>, String, Option<u64>, u64) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut p = Parser::with_limit(limit);
        let mut out = Vec::new();
        let mut start = 0;
        for cut in cuts {
            p.feed(&bytes[start..cut], &mut out);
            start = cut;
        }
        p.feed(&bytes[start..], &mut out);
        (
            out,
            p.last_event_id().to_owned(),
            p.retry_ms(),
            p.overflows(),
        )
    }

    fn crlf_to_lf(s: &str) -> String {
        s.replace("\r\n", "\n").replace('\r', "\n")
    }

    fn text(special: &'static [char]) -> impl Strategy<Value = String> {
        let ch = prop_oneof![prop::sample::select(special), any::<char>()];
        prop::collection::vec(ch, 0..40).prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_events(
            bytes in stream(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            limit in prop_oneof![Just(DEFAULT_LIMIT), 0usize..24],
        ) {
            let whole = run_split(limit, &bytes, &[]);
            prop_assert_eq!(&run_split(limit, &bytes, &cuts), &whole);
            let mut p = Parser::with_limit(limit);
            let mut out = Vec::new();
            for b in &bytes {
                p.feed(std::slice::from_ref(b), &mut out);
            }
            prop_assert_eq!(&(out, p.last_event_id().to_owned(), p.retry_ms(), p.overflows()), &whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            bytes in prop::collection::vec(any::<u8>(), 0..400),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            limit in 0usize..32,
        ) {
            let whole = run_split(limit, &bytes, &[]);
            prop_assert_eq!(run_split(limit, &bytes, &cuts), whole);
            let mut p = Parser::with_limit(limit);
            let mut out = Vec::new();
            for chunk in bytes.chunks(7) {
                p.feed(chunk, &mut out);
                prop_assert!(p.line.len() <= limit);
                prop_assert!(p.data.len() <= limit);
            }
            for e in &out {
                prop_assert!(e.data.len() <= limit);
            }
            p.finish();
        }

        #[test]
        fn encoded_events_round_trip(
            events in prop::collection::vec(
                (
                    prop::option::of(text(&[' ', ':', '\u{FEFF}']).prop_map(|s| s.replace(['\r', '\n', '\0'], ""))),
                    prop::option::of(text(&[' ', ':', '\0']).prop_map(|s| s.replace(['\r', '\n'], ""))),
                    text(&['\r', '\n', ' ', ':', '\0', '\u{FEFF}']),
                ),
                1..6,
            ),
            retry in prop::option::of(any::<u64>()),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            let mut last_id = String::new();
            for (id, event, data) in &events {
                encode_comment(&mut bytes, "keep-alive\nping");
                encode_event(&mut bytes, id.as_deref(), event.as_deref(), data);
                if let Some(id) = id {
                    last_id.clone_from(id);
                }
                let event_type = match event.as_deref() {
                    None | Some("") => "message",
                    Some(name) => name,
                };
                expected.push(ev(event_type, &crlf_to_lf(data), &last_id));
            }
            if let Some(ms) = retry {
                encode_retry(&mut bytes, ms);
            }
            let (out, id, got_retry, overflows) = run_split(DEFAULT_LIMIT, &bytes, &cuts);
            prop_assert_eq!(out, expected);
            prop_assert_eq!(id, last_id);
            prop_assert_eq!(got_retry, retry);
            prop_assert_eq!(overflows, 0);
        }

        #[test]
        fn data_without_cr_round_trips_exactly(data in text(&['\n', ' ', ':'])) {
            let data = data.replace('\r', "");
            let mut bytes = Vec::new();
            encode_event(&mut bytes, None, None, &data);
            prop_assert_eq!(parse(&bytes), vec![msg(&data)]);
        }
    }
}
