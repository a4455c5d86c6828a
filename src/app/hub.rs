//! The broadcast hub: one sequence for every event, a ring of retained events for replay, and
//! each event encoded once per wire encoding. Subscribers hold a reference to the shared encoding, so
//! a fan-out to N clients costs N writes and no copies. Who the subscribers are is the I/O model's
//! business; the hub only numbers, encodes and retains.

use std::collections::VecDeque;
use std::sync::Arc;

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

/// One broadcast event and its encodings, shared by every subscriber.
#[derive(Debug)]
pub struct Event {
    pub seq: u64,
    pub sent_ns: u64,
    json: Box<[u8]>,
    sse: Box<[u8]>,
    chunk: Box<[u8]>,
    line: Box<[u8]>,
    ws: Box<[u8]>,
}

impl Event {
    fn new(seq: u64, name: &str, sent_ns: u64, data: Option<&str>) -> Event {
        let json = match data {
            Some(text) => format!(
                "{{\"seq\":{seq},\"event\":\"{name}\",\"sent_ns\":{sent_ns},\"data\":{}}}",
                serde_json::Value::from(text)
            ),
            None => format!("{{\"seq\":{seq},\"event\":\"{name}\",\"sent_ns\":{sent_ns}}}"),
        };
        let mut sse_bytes = Vec::with_capacity(json.len() + 48);
        sse::encode_event(&mut sse_bytes, Some(&seq.to_string()), Some(name), &json);
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
        let mut chunk = Vec::with_capacity(line.len() + 12);
        http::write_chunk(&mut chunk, &line);
        let line = line.into_boxed_slice();
        let mut frame = Vec::with_capacity(json.len() + 10);
        ws::encode_frame(&mut frame, ws::OpCode::Text, json.as_bytes(), None);
        Event {
            seq,
            sent_ns,
            json: json.into_bytes().into(),
            sse: sse_bytes.into(),
            chunk: chunk.into(),
            line,
            ws: frame.into(),
        }
    }

    /// The event in `encoding`.
    pub fn bytes(&self, encoding: Encoding) -> &[u8] {
        match encoding {
            Encoding::Sse => &self.sse,
            Encoding::Chunk => &self.chunk,
            Encoding::Line => &self.line,
            Encoding::Ws => &self.ws,
            Encoding::Json => &self.json,
        }
    }
}

/// Numbers, encodes and retains events.
#[derive(Debug)]
pub struct Hub {
    last_seq: u64,
    ring: VecDeque<Arc<Event>>,
    retain: usize,
}

impl Hub {
    /// A hub that keeps the last `retain` events (at least one).
    pub fn new(retain: usize) -> Hub {
        let retain = retain.max(1);
        Hub {
            last_seq: 0,
            ring: VecDeque::with_capacity(retain),
            retain,
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

    fn publish(&mut self, name: &str, now_ns: u64, data: Option<&str>) -> Arc<Event> {
        self.last_seq += 1;
        let event = Arc::new(Event::new(self.last_seq, name, now_ns, data));
        if self.ring.len() == self.retain {
            self.ring.pop_front();
        }
        self.ring.push_back(Arc::clone(&event));
        event
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

    /// The JSON array `/poll` answers with: retained events with `seq > after`.
    pub fn poll_body(&self, after: u64) -> Vec<u8> {
        poll_body(self.since(after))
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
    fn sequence_is_shared_and_ring_is_bounded() {
        let mut hub = Hub::new(3);
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
        let mut hub = Hub::new(4);
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
        let mut hub = Hub::new(8);
        assert_eq!(hub.resume_point(None), 0);
        hub.publish_tick(1);
        hub.publish_tick(2);
        assert_eq!(hub.resume_point(None), 2);
        assert_eq!(hub.resume_point(Some(99)), 2);
        assert_eq!(hub.resume_point(Some(1)), 1);
    }

    #[test]
    fn poll_body_is_a_json_array() {
        let mut hub = Hub::new(8);
        assert_eq!(hub.poll_body(0), b"[]");
        hub.publish_tick(1);
        hub.publish_tick(2);
        let v: serde_json::Value = serde_json::from_slice(&hub.poll_body(0)).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2));
        let v: serde_json::Value = serde_json::from_slice(&hub.poll_body(1)).unwrap();
        assert_eq!(v[0]["seq"], 2);
    }
}
