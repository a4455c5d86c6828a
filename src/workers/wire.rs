//! The messages between the supervisor of `serve --workers N` and its workers, and how they are
//! framed on the Unix socket between them. Sans-IO: messages in, bytes out, and back.
//!
//! A frame is a little-endian `u32` length, then that many bytes: a tag and the fields, numbers
//! as little-endian `u64`, byte strings last (they run to the end of the frame).

use std::fmt;
use std::sync::Arc;

use crate::app::hub::Event;

/// The largest frame either side accepts: a published message is at most 64 KiB and a `/stats`
/// document a few hundred bytes per worker, so anything larger is a broken peer.
pub const MAX_FRAME: usize = 4 << 20;

#[derive(Debug, Clone)]
pub enum Msg {
    // Supervisor → worker.
    /// An event of the one stream: numbered and encoded by the supervisor.
    Event(Arc<Event>),
    /// The retained history has been sent: start accepting.
    Start,
    /// The answer to `Publish`: its `seq` and the subscribers of every worker.
    Published {
        req: u64,
        seq: u64,
        subscribers: u64,
    },
    /// Send your `/stats` document.
    StatsQuery { id: u64 },
    /// The answer to `StatsRequest`: the server's `/stats` document.
    StatsAnswer { req: u64, json: Vec<u8> },

    // Worker → supervisor.
    /// Accepting connections.
    Ready,
    /// A client published `text`; `req` names the answer.
    Publish { req: u64, text: Vec<u8> },
    /// The worker has event `seq` and is delivering it to `subscribers`.
    Ack { seq: u64, subscribers: u64 },
    /// A client asked for `/stats`.
    StatsRequest { req: u64 },
    /// The worker's own `/stats` document, for `StatsQuery { id }`.
    StatsReport { id: u64, json: Vec<u8> },
}

/// The event names that cross the wire, by their tag.
const EVENT_NAMES: [&str; 2] = ["tick", "message"];

mod tag {
    pub const EVENT: u8 = 1;
    pub const START: u8 = 2;
    pub const PUBLISHED: u8 = 3;
    pub const STATS_QUERY: u8 = 4;
    pub const STATS_ANSWER: u8 = 5;
    pub const READY: u8 = 16;
    pub const PUBLISH: u8 = 17;
    pub const ACK: u8 = 18;
    pub const STATS_REQUEST: u8 = 19;
    pub const STATS_REPORT: u8 = 20;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(&'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad frame from the other process: {}", self.0)
    }
}

impl std::error::Error for WireError {}

impl Msg {
    /// Appends the message's frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut nums = |tag: u8, nums: &[u64]| {
            out.push(tag);
            for n in nums {
                out.extend_from_slice(&n.to_le_bytes());
            }
        };
        let tail: &[u8] = match self {
            Msg::Event(event) => {
                let name = EVENT_NAMES.iter().position(|&n| n == event.name());
                nums(
                    tag::EVENT,
                    &[event.seq, event.sent_ns, name.unwrap_or(0) as u64],
                );
                event.line()
            }
            Msg::Start => {
                nums(tag::START, &[]);
                &[]
            }
            Msg::Published {
                req,
                seq,
                subscribers,
            } => {
                nums(tag::PUBLISHED, &[*req, *seq, *subscribers]);
                &[]
            }
            Msg::StatsQuery { id } => {
                nums(tag::STATS_QUERY, &[*id]);
                &[]
            }
            Msg::StatsAnswer { req, json } => {
                nums(tag::STATS_ANSWER, &[*req]);
                json
            }
            Msg::Ready => {
                nums(tag::READY, &[]);
                &[]
            }
            Msg::Publish { req, text } => {
                nums(tag::PUBLISH, &[*req]);
                text
            }
            Msg::Ack { seq, subscribers } => {
                nums(tag::ACK, &[*seq, *subscribers]);
                &[]
            }
            Msg::StatsRequest { req } => {
                nums(tag::STATS_REQUEST, &[*req]);
                &[]
            }
            Msg::StatsReport { id, json } => {
                nums(tag::STATS_REPORT, &[*id]);
                json
            }
        };
        out.extend_from_slice(tail);
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Parses one frame's body (what follows the length).
    fn decode(frame: &[u8]) -> Result<Msg, WireError> {
        let (&tag, mut rest) = frame.split_first().ok_or(WireError("empty frame"))?;
        let mut num = || -> Result<u64, WireError> {
            let (n, tail) = rest
                .split_first_chunk::<8>()
                .ok_or(WireError("frame too short"))?;
            rest = tail;
            Ok(u64::from_le_bytes(*n))
        };
        let msg = match tag {
            tag::EVENT => {
                let (seq, sent_ns, name) = (num()?, num()?, num()?);
                let name = usize::try_from(name)
                    .ok()
                    .and_then(|i| EVENT_NAMES.get(i))
                    .ok_or(WireError("unknown event name"))?;
                Msg::Event(Arc::new(Event::received(seq, name, sent_ns, rest.into())))
            }
            tag::START => Msg::Start,
            tag::PUBLISHED => Msg::Published {
                req: num()?,
                seq: num()?,
                subscribers: num()?,
            },
            tag::STATS_QUERY => Msg::StatsQuery { id: num()? },
            tag::STATS_ANSWER => Msg::StatsAnswer {
                req: num()?,
                json: rest.to_vec(),
            },
            tag::READY => Msg::Ready,
            tag::PUBLISH => Msg::Publish {
                req: num()?,
                text: rest.to_vec(),
            },
            tag::ACK => Msg::Ack {
                seq: num()?,
                subscribers: num()?,
            },
            tag::STATS_REQUEST => Msg::StatsRequest { req: num()? },
            tag::STATS_REPORT => Msg::StatsReport {
                id: num()?,
                json: rest.to_vec(),
            },
            _ => return Err(WireError("unknown message")),
        };
        Ok(msg)
    }
}

/// Cuts a byte stream into messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `None` until one has arrived in full.
    pub fn next_msg(&mut self) -> Result<Option<Msg>, WireError> {
        let pending = &self.buf[self.start..];
        let Some(len) = pending.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_FRAME {
            return Err(WireError("frame too large"));
        }
        let Some(frame) = pending.get(4..4 + len) else {
            if self.start > 0 {
                // Keep the buffer no larger than one frame plus what one read adds.
                self.buf.drain(..self.start);
                self.start = 0;
            }
            return Ok(None);
        };
        let msg = Msg::decode(frame)?;
        self.start += 4 + len;
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, sent_ns: u64, name: &'static str, line: &[u8]) -> Msg {
        Msg::Event(Arc::new(Event::received(seq, name, sent_ns, line.into())))
    }

    fn all() -> Vec<Msg> {
        vec![
            event(7, 1_700_000_000_000_000_000, "message", b"{\"seq\":7}\n"),
            event(8, 1, "tick", b"{}\n"),
            Msg::Start,
            Msg::Published {
                req: 1,
                seq: 7,
                subscribers: 1_000_000,
            },
            Msg::StatsQuery { id: 3 },
            Msg::StatsAnswer {
                req: 2,
                json: b"{}".to_vec(),
            },
            Msg::Ready,
            Msg::Publish {
                req: u64::MAX,
                text: "héllo".as_bytes().to_vec(),
            },
            Msg::Ack {
                seq: 7,
                subscribers: 0,
            },
            Msg::StatsRequest { req: 9 },
            Msg::StatsReport {
                id: 3,
                json: b"{\"model\":\"evented\"}".to_vec(),
            },
        ]
    }

    #[test]
    fn every_message_survives_the_trip_byte_by_byte() {
        let mut bytes = Vec::new();
        for msg in all() {
            msg.encode(&mut bytes);
        }
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for b in &bytes {
            decoder.feed(std::slice::from_ref(b));
            while let Some(msg) = decoder.next_msg().unwrap() {
                got.push(msg);
            }
        }
        // Every field is in the frame, so the same frames again mean the same messages.
        let mut again = Vec::new();
        for msg in &got {
            msg.encode(&mut again);
        }
        assert_eq!((got.len(), again), (all().len(), bytes));
        assert!(decoder.buf.len() - decoder.start == 0);
    }

    #[test]
    fn broken_frames_are_errors_not_panics() {
        for bad in [
            &[0u8, 0, 0, 0][..],                       // no tag
            &[1, 0, 0, 0, 99],                         // unknown tag
            &[5, 0, 0, 0, tag::PUBLISHED, 1, 2, 3, 4], // numbers cut short
            &[0xff, 0xff, 0xff, 0xff],                 // larger than any frame
        ] {
            let mut decoder = Decoder::default();
            decoder.feed(bad);
            assert!(decoder.next_msg().is_err(), "{bad:?}");
        }
        let mut unknown_name = Vec::new();
        event(1, 1, "tick", b"").encode(&mut unknown_name);
        unknown_name[4 + 1 + 16] = 9;
        let mut decoder = Decoder::default();
        decoder.feed(&unknown_name);
        assert!(decoder.next_msg().is_err());
    }
}
