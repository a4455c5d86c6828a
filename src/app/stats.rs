//! The `/stats` document: live connection counts by kind, process readings and counters. The
//! load generator reads the same type back.

use serde::{Deserialize, Serialize};

use crate::app::hub::{KINDS, KIND_COUNT};
use crate::sys::ProcReading;

/// Open connections by what they are doing now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    /// Plain HTTP connections (between requests, or in a short request).
    pub http: u64,
    pub sse: u64,
    pub stream: u64,
    pub ws: u64,
    /// Long polls being held (also counted in `http`).
    #[serde(default)]
    pub poll: u64,
}

/// What `GET /stats` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub model: String,
    pub connections: Connections,
    pub threads: u64,
    pub rss_bytes: u64,
    #[serde(default)]
    pub fds: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub events_published: u64,
}

impl Stats {
    /// The document for a model with `open` connections, `subscribers` per [`Kind`] (indexed by
    /// it), its counters, and a reading of its process.
    pub fn new(
        model: &str,
        open: u64,
        subscribers: [u64; KIND_COUNT],
        accepted: u64,
        rejected: u64,
        events_published: u64,
        process: ProcReading,
    ) -> Stats {
        let [sse, stream, ws, poll] = KINDS.map(|k| subscribers[k as usize]);
        Stats {
            model: model.to_string(),
            connections: Connections {
                // A held poll is a plain HTTP connection too.
                http: open.saturating_sub(sse + stream + ws),
                sse,
                stream,
                ws,
                poll,
            },
            threads: process.threads,
            rss_bytes: process.rss_bytes,
            fds: process.fds,
            accepted,
            rejected,
            events_published,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain integers and strings cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}
