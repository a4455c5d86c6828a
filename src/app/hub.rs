//! The broadcast hub: one sequence for every event, a ring of retained events for replay, and
//! each event encoded once per wire encoding. Subscribers hold a reference to the shared encoding, so
//! a fan-out to N clients costs N writes and no copies. Who the subscribers are is the I/O model's
//! business; the hub only numbers, encodes and retains.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use crate::proto::{http, sse, ws};

/// An event's wire encoding: how its bytes look on one kind of connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `id: SEQ\nevent: NAME\ndata: JSON\n\n`
    Sse,
    /// One chunk holding `JSON\n`.
    Chunk,
    /// `JSON\n` unframed: the stream for an HTTP/1.0 client, which cannot take chunks.
    Line,
    /// One text frame holding the JSON.
    Ws,
    /// The bare JSON, for `/poll` bodies.
    Json,
}

impl Encoding {
    /// The `/stream` framing: chunks, or plain lines for an HTTP/1.0 client.
    pub fn stream(chunked: bool) -> Encoding {
        if chunked {
            Encoding::Chunk
        } else {
            Encoding::Line
        }
    }
}

/// One broadcast event and its encodings, shared by every subscriber. The JSON is made when the
/// event is published; every other encoding the first time a subscriber needs it, so an event
/// nobody streams costs its JSON and no more. `Json` and `Line` share one buffer.
#[derive(Debug)]
pub struct Event {
    pub seq: u64,
    pub sent_ns: u64,
    name: &'static str,
    /// The JSON and a newline.
    line: Box<[u8]>,
    sse: OnceLock<Box<[u8]>>,
    chunk: OnceLock<Box<[u8]>>,
    ws: OnceLock<Box<[u8]>>,
}

impl Event {
    fn new(seq: u64, name: &'static str, sent_ns: u64, data: Option<&str>) -> Event {
        let mut line = match data {
            Some(text) => format!(
                "{{\"seq\":{seq},\"event\":\"{name}\",\"sent_ns\":{sent_ns},\"data\":{}}}",
                serde_json::Value::from(text)
            ),
            None => format!("{{\"seq\":{seq},\"event\":\"{name}\",\"sent_ns\":{sent_ns}}}"),
        }
        .into_bytes();
        line.push(b'\n');
        Event {
            seq,
            sent_ns,
            name,
            line: line.into(),
            sse: OnceLock::new(),
            chunk: OnceLock::new(),
            ws: OnceLock::new(),
        }
    }

    /// An event numbered and encoded elsewhere (by the supervisor of `--workers`): `line` is its
    /// JSON and a newline, as [`Event::line`] gives it.
    pub fn received(seq: u64, name: &'static str, sent_ns: u64, line: Box<[u8]>) -> Event {
        Event {
            seq,
            sent_ns,
            name,
            line,
            sse: OnceLock::new(),
            chunk: OnceLock::new(),
            ws: OnceLock::new(),
        }
    }

    /// `tick` or `message`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The JSON and a newline: what every other encoding is made from.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    fn json(&self) -> &[u8] {
        &self.line[..self.line.len() - 1]
    }

    /// The event in `encoding`.
    pub fn bytes(&self, encoding: Encoding) -> &[u8] {
        match encoding {
            Encoding::Json => self.json(),
            Encoding::Line => &self.line,
            Encoding::Sse => self.sse.get_or_init(|| {
                // Serialized JSON has no line breaks: it fits one `data:` line.
                let json = std::str::from_utf8(self.json()).unwrap_or_default();
                let mut out = Vec::with_capacity(json.len() + 48);
                sse::encode_event(&mut out, Some(&self.seq.to_string()), Some(self.name), json);
                out.into()
            }),
            Encoding::Chunk => self.chunk.get_or_init(|| {
                let mut out = Vec::with_capacity(self.line.len() + 12);
                http::write_chunk(&mut out, &self.line);
                out.into()
            }),
            Encoding::Ws => self.ws.get_or_init(|| {
                let mut out = Vec::with_capacity(self.line.len() + 10);
                ws::encode_frame(&mut out, ws::OpCode::Text, self.json(), None);
                out.into()
            }),
        }
    }

    /// What keeping the event may cost once every encoding is made: what the history's byte
    /// bound counts, so the bound holds whoever subscribes later.
    fn retained_cost(&self) -> usize {
        // Four buffers (line, SSE, chunk, frame), each the JSON plus a little framing, plus the
        // event itself.
        4 * (self.line.len() + 48) + std::mem::size_of::<Event>()
    }
}

/// Numbers, encodes and retains events: the newest `retain` of them, and no more than
/// `retain_bytes` in all (the newest one is kept whatever its size).
#[derive(Debug)]
pub struct Hub {
    last_seq: u64,
    ring: VecDeque<Arc<Event>>,
    retain: usize,
    retain_bytes: usize,
    /// What the ring's events may cost (`Event::retained_cost`), in bytes.
    retained: usize,
}

impl Hub {
    /// A hub that keeps the last `retain` events (at least one) within `retain_bytes`.
    pub fn new(retain: usize, retain_bytes: usize) -> Hub {
        let retain = retain.max(1);
        Hub {
            last_seq: 0,
            ring: VecDeque::new(),
            retain,
            retain_bytes,
            retained: 0,
        }
    }

    /// Publishes a `tick` stamped with `now_ns` (Unix epoch nanoseconds).
    pub fn publish_tick(&mut self, now_ns: u64) -> Arc<Event> {
        self.publish("tick", now_ns, None)
    }

    /// Publishes a `message` carrying `text`.
    pub fn publish_message(&mut self, text: &str, now_ns: u64) -> Arc<Event> {
        self.publish("message", now_ns, Some(text))
    }

    fn publish(&mut self, name: &'static str, now_ns: u64, data: Option<&str>) -> Arc<Event> {
        let event = Arc::new(Event::new(self.last_seq + 1, name, now_ns, data));
        self.insert(Arc::clone(&event));
        event
    }

    /// Takes an event numbered elsewhere, the next in sequence or any later one (a worker that
    /// starts late gets the retained history, which begins past 1); an older one is ignored.
    pub fn insert(&mut self, event: Arc<Event>) {
        if event.seq <= self.last_seq {
            return;
        }
        if event.seq != self.last_seq + 1 {
            // `since` counts on consecutive numbers: what came before a gap cannot be replayed.
            self.ring.clear();
            self.retained = 0;
        }
        self.last_seq = event.seq;
        self.retained += event.retained_cost();
        self.ring.push_back(event);
        while self.ring.len() > self.retain
            || (self.retained > self.retain_bytes && self.ring.len() > 1)
        {
            if let Some(old) = self.ring.pop_front() {
                self.retained -= old.retained_cost();
            }
        }
    }

    /// The sequence number of the newest event, 0 before the first.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Retained events with `seq > after`, oldest first.
    pub fn since(&self, after: u64) -> impl Iterator<Item = &Arc<Event>> {
        let first = self.ring.front().map_or(self.last_seq + 1, |e| e.seq);
        let skip = after.saturating_add(1).saturating_sub(first);
        self.ring
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }

    /// Whether events after `after` have already left the ring (a subscriber that far behind
    /// cannot be caught up).
    pub fn has_dropped_after(&self, after: u64) -> bool {
        self.ring.front().is_some_and(|e| e.seq > after + 1)
    }

    /// Where a subscriber that asks for events after `after` starts: there, or at the newest
    /// event when it asks for none (`None`) or for more than there is (a server restarted under
    /// it), so it waits for the next one.
    pub fn resume_point(&self, after: Option<u64>) -> u64 {
        after.map_or(self.last_seq, |a| a.min(self.last_seq))
    }
}

/// A `/poll` body from any run of events.
pub fn poll_body<'a>(events: impl Iterator<Item = &'a Arc<Event>>) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    body.push(b'[');
    for (i, event) in events.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event.bytes(Encoding::Json));
    }
    body.push(b']');
    body
}

/// The SSE heartbeat comment, the same bytes for every subscriber.
pub const SSE_HEARTBEAT: &[u8] = b": hb\n\n";
/// An unmasked WebSocket ping with no payload: the WebSocket heartbeat.
pub const WS_PING: &[u8] = &[0x89, 0x00];

/// What a connection subscribes as. Both models keep one subscriber list per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse = 0,
    Stream = 1,
    Ws = 2,
    Poll = 3,
}

/// How many kinds of subscriber there are: per-kind tables are this long, indexed by `Kind`.
pub const KIND_COUNT: usize = 4;
pub const KINDS: [Kind; KIND_COUNT] = [Kind::Sse, Kind::Stream, Kind::Ws, Kind::Poll];

impl Kind {
    /// How events are encoded for this kind (an HTTP/1.0 stream takes `Encoding::Line`).
    pub fn encoding(self) -> Encoding {
        match self {
            Kind::Sse => Encoding::Sse,
            Kind::Stream => Encoding::Chunk,
            Kind::Ws => Encoding::Ws,
            Kind::Poll => Encoding::Json,
        }
    }

    /// What a subscriber of this kind is sent after a heartbeat interval without a broadcast.
    pub fn heartbeat(self) -> Option<&'static [u8]> {
        match self {
            Kind::Sse => Some(SSE_HEARTBEAT),
            Kind::Ws => Some(WS_PING),
            Kind::Stream | Kind::Poll => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_fed_another_hubs_events_replays_the_same_bytes() {
        let mut origin = Hub::new(4, usize::MAX);
        let mut copy = Hub::new(4, usize::MAX);
        let received =
            |e: &Event| Arc::new(Event::received(e.seq, e.name(), e.sent_ns, e.line().into()));
        // A copy that starts late gets the history from past 1 on, then the live events.
        for i in 0..6 {
            origin.publish_message(&format!("m{i}"), i);
        }
        for e in origin.since(0) {
            copy.insert(received(e));
        }
        let tick = origin.publish_tick(99);
        copy.insert(received(&tick));
        copy.insert(received(&tick)); // a repeat is ignored
        assert_eq!(copy.last_seq(), 7);
        for encoding in [Encoding::Sse, Encoding::Chunk, Encoding::Ws, Encoding::Json] {
            let a: Vec<&[u8]> = origin.since(2).map(|e| e.bytes(encoding)).collect();
            let b: Vec<&[u8]> = copy.since(2).map(|e| e.bytes(encoding)).collect();
            assert_eq!(a, b);
            assert_eq!(a.len(), 4);
        }
        assert_eq!(copy.has_dropped_after(2), origin.has_dropped_after(2));
    }

    #[test]
    fn sequence_is_shared_and_ring_is_bounded() {
        let mut hub = Hub::new(3, usize::MAX);
        for i in 0..5 {
            hub.publish_tick(i);
        }
        hub.publish_message("hi", 9);
        assert_eq!(hub.last_seq(), 6);
        let seqs: Vec<u64> = hub.since(0).map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5, 6]);
        let seqs: Vec<u64> = hub.since(4).map(|e| e.seq).collect();
        assert_eq!(seqs, vec![5, 6]);
        assert_eq!(hub.since(6).count(), 0);
        assert_eq!(hub.since(100).count(), 0);
        assert!(hub.has_dropped_after(0));
        assert!(!hub.has_dropped_after(3));
    }

    #[test]
    fn encodings_carry_the_same_json() {
        let mut hub = Hub::new(4, usize::MAX);
        let e = hub.publish_message("a \"quoted\"\nline", 42);
        let json = std::str::from_utf8(e.bytes(Encoding::Json)).unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["event"], "message");
        assert_eq!(v["sent_ns"], 42);
        assert_eq!(v["data"], "a \"quoted\"\nline");

        let mut parser = sse::Parser::new();
        let mut events = Vec::new();
        parser.feed(e.bytes(Encoding::Sse), &mut events);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, json);
        assert_eq!(events[0].event_type, "message");
        assert_eq!(events[0].last_event_id, "1");

        let mut body = Vec::new();
        let mut dec = http::BodyDecoder::new(http::BodyFraming::Chunked, 1 << 20);
        dec.decode(e.bytes(Encoding::Chunk), &mut body).unwrap();
        assert_eq!(body, format!("{json}\n").as_bytes());
        assert_eq!(e.bytes(Encoding::Line), body);

        let mut wsdec = ws::Decoder::new(ws::Role::Client, 1 << 20);
        let (_, msg) = wsdec.decode(e.bytes(Encoding::Ws)).unwrap();
        assert_eq!(msg, Some(ws::Message::Text(json.to_string())));
    }

    #[test]
    fn a_subscriber_resumes_where_it_asks_or_at_the_newest() {
        let mut hub = Hub::new(8, usize::MAX);
        assert_eq!(hub.resume_point(None), 0);
        hub.publish_tick(1);
        hub.publish_tick(2);
        assert_eq!(hub.resume_point(None), 2);
        assert_eq!(hub.resume_point(Some(99)), 2);
        assert_eq!(hub.resume_point(Some(1)), 1);
    }

    #[test]
    fn the_history_is_bounded_in_bytes_and_keeps_the_newest() {
        let big = "x".repeat(10_000);
        let cost = {
            let mut hub = Hub::new(8, usize::MAX);
            hub.publish_message(&big, 0).retained_cost()
        };
        let mut hub = Hub::new(1024, 3 * cost + cost / 2);
        for i in 0..10 {
            hub.publish_message(&big, i);
        }
        assert_eq!(
            hub.since(0).map(|e| e.seq).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        assert!(hub.has_dropped_after(0));
        // One event over the bound is still kept: the newest is always there.
        let mut tiny = Hub::new(1024, 1);
        tiny.publish_message(&big, 0);
        tiny.publish_tick(1);
        assert_eq!(tiny.since(0).map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
        assert_eq!(tiny.last_seq(), 2);
    }

    #[test]
    fn encodings_are_made_when_first_needed() {
        let mut hub = Hub::new(8, usize::MAX);
        let e = hub.publish_tick(5);
        assert!(e.sse.get().is_none() && e.chunk.get().is_none() && e.ws.get().is_none());
        assert_eq!(
            e.bytes(Encoding::Line),
            [e.bytes(Encoding::Json), b"\n"].concat()
        );
        let first = e.bytes(Encoding::Sse).as_ptr();
        assert_eq!(e.bytes(Encoding::Sse).as_ptr(), first, "made once");
        assert!(e.chunk.get().is_none());
    }

    #[test]
    fn poll_body_is_a_json_array() {
        let mut hub = Hub::new(8, usize::MAX);
        assert_eq!(poll_body(hub.since(0)), b"[]");
        hub.publish_tick(1);
        hub.publish_tick(2);
        let v: serde_json::Value = serde_json::from_slice(&poll_body(hub.since(0))).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2));
        let v: serde_json::Value = serde_json::from_slice(&poll_body(hub.since(1))).unwrap();
        assert_eq!(v[0]["seq"], 2);
    }
}
