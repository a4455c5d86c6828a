//! The five ways a client hears of events — short polling, long polling, SSE, a chunked stream,
//! a WebSocket — each as one subscriber on the experiments' blocking client, parsed with the
//! core's own decoders, handing back each event's JSON.

use std::thread;
use std::time::{Duration, Instant};

use plotters::style::RGBColor;

use super::chart;
use super::client::{self, Client};
use crate::proto::http::BodyDecoder;
use crate::proto::sse;
use crate::proto::ws::Message;

/// How a subscriber hears of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    ShortPoll,
    LongPoll,
    Sse,
    Stream,
    WebSocket,
}

pub const TRANSPORTS: [Transport; 5] = [
    Transport::ShortPoll,
    Transport::LongPoll,
    Transport::Sse,
    Transport::Stream,
    Transport::WebSocket,
];

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::ShortPoll => "short polling",
            Transport::LongPoll => "long polling",
            Transport::Sse => "SSE",
            Transport::Stream => "chunked stream",
            Transport::WebSocket => "WebSocket",
        }
    }

    pub fn color(self) -> RGBColor {
        match self {
            Transport::ShortPoll => RGBColor(0x8c, 0x56, 0x4b),
            Transport::LongPoll => RGBColor(0xff, 0x7f, 0x0e),
            Transport::Sse => chart::EVENTED,
            Transport::Stream => RGBColor(0x2c, 0xa0, 0x2c),
            Transport::WebSocket => RGBColor(0x94, 0x67, 0xbd),
        }
    }
}

/// A subscriber's state between reads.
pub struct Subscriber {
    how: How,
    /// Requests made since opening (the polls).
    pub requests: u64,
}

enum How {
    Sse {
        decoder: BodyDecoder,
        parser: sse::Parser,
        body: Vec<u8>,
    },
    Stream {
        decoder: BodyDecoder,
        body: Vec<u8>,
    },
    WebSocket(crate::proto::ws::Decoder),
    Poll {
        /// Short polling's interval; `None` for long polling.
        every: Option<Duration>,
        next_at: Instant,
        after: u64,
    },
}

impl Subscriber {
    /// Opens the transport on `c`; for polling, learns where the events stand.
    pub fn open(
        c: &mut Client,
        transport: Transport,
        every: Duration,
    ) -> Result<Subscriber, String> {
        let how = match transport {
            Transport::Sse | Transport::Stream => {
                let path = if transport == Transport::Sse {
                    "/sse"
                } else {
                    "/stream"
                };
                c.send(format!("GET {path} HTTP/1.1\r\nHost: c10k\r\n\r\n").as_bytes())?;
                let head = c.read_head()?;
                if head.status != 200 {
                    return Err(format!("GET {path} was answered {}", head.status));
                }
                let decoder = BodyDecoder::new(head.body, u64::MAX);
                if transport == Transport::Sse {
                    How::Sse {
                        decoder,
                        parser: sse::Parser::new(),
                        body: Vec::new(),
                    }
                } else {
                    How::Stream {
                        decoder,
                        body: Vec::new(),
                    }
                }
            }
            Transport::WebSocket => {
                c.upgrade("/ws")?;
                How::WebSocket(client::server_frames())
            }
            Transport::ShortPoll | Transport::LongPoll => {
                // The events retained so far are not this run's: start after the newest.
                let (status, body) = c.request(b"GET /stats HTTP/1.1\r\nHost: c10k\r\n\r\n")?;
                let stats: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| format!("GET /stats ({status}) is not JSON: {e}"))?;
                How::Poll {
                    every: (transport == Transport::ShortPoll).then_some(every),
                    next_at: Instant::now(),
                    after: stats["events_published"].as_u64().unwrap_or(0),
                }
            }
        };
        Ok(Subscriber { how, requests: 0 })
    }

    /// Takes events until `count` have come or `deadline` has passed, handing each one's JSON to
    /// `each`; how many came.
    pub fn take(
        &mut self,
        c: &mut Client,
        count: u64,
        deadline: Instant,
        mut each: impl FnMut(&[u8]),
    ) -> Result<u64, String> {
        let mut taken = 0;
        while taken < count && Instant::now() < deadline {
            for data in self.next(c)? {
                each(&data);
                taken += 1;
            }
        }
        Ok(taken)
    }

    /// Waits for the next events (perhaps none, after a short poll) and returns each one's JSON.
    pub fn next(&mut self, c: &mut Client) -> Result<Vec<Vec<u8>>, String> {
        match &mut self.how {
            How::Sse {
                decoder,
                parser,
                body,
            } => {
                read_body_part(c, decoder, body)?;
                let mut events = Vec::new();
                parser.feed(body, &mut events);
                body.clear();
                Ok(events.into_iter().map(|e| e.data.into_bytes()).collect())
            }
            How::Stream { decoder, body } => {
                read_body_part(c, decoder, body)?;
                // Whole lines only; a partial one waits for the rest.
                let whole = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let lines: Vec<u8> = body.drain(..whole).collect();
                Ok(lines
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect())
            }
            How::WebSocket(decoder) => match c.read_message(decoder)? {
                Message::Text(text) => Ok(vec![text.into_bytes()]),
                other => Err(format!("the WebSocket sent {other:?} instead of an event")),
            },
            How::Poll {
                every,
                next_at,
                after,
            } => {
                let wait = if let Some(every) = every {
                    thread::sleep(next_at.saturating_duration_since(Instant::now()));
                    *next_at += *every;
                    "&wait=0"
                } else {
                    ""
                };
                self.requests += 1;
                let (status, body) = c.request(
                    format!("GET /poll?after={after}{wait} HTTP/1.1\r\nHost: c10k\r\n\r\n")
                        .as_bytes(),
                )?;
                if status != 200 {
                    return Err(format!("a poll was answered {status}"));
                }
                let events: Vec<serde_json::Value> = serde_json::from_slice(&body)
                    .map_err(|e| format!("a poll's answer is not a JSON array: {e}"))?;
                if let Some(seq) = events.last().and_then(|e| e["seq"].as_u64()) {
                    *after = seq;
                }
                Ok(events.iter().map(|e| e.to_string().into_bytes()).collect())
            }
        }
    }
}

/// Decodes what is buffered of a streamed body onto `body`, reading first when that brings
/// nothing new (`body` may hold a partial line from before).
fn read_body_part(
    c: &mut Client,
    decoder: &mut BodyDecoder,
    body: &mut Vec<u8>,
) -> Result<(), String> {
    let had = body.len();
    c.decode_buffered(decoder, body)?;
    if body.len() == had {
        match c.fill() {
            Ok(0) => return Err("the server ended the stream".to_string()),
            Ok(_) => {}
            Err(e) => return Err(format!("the stream stopped: {e}")),
        }
        c.decode_buffered(decoder, body)?;
    }
    Ok(())
}
