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

impl Connections {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Connections) {
        self.http += other.http;
        self.sse += other.sse;
        self.stream += other.stream;
        self.ws += other.ws;
        self.poll += other.poll;
    }
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
    /// The process that answered: the supervisor's with `--workers`.
    #[serde(default)]
    pub pid: u32,
    /// With `--workers`: which worker took the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// With `--workers`: each worker's own document (the totals above add them up, and the
    /// supervisor's process).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<Stats>,
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
            pid: std::process::id(),
            worker: None,
            workers: Vec::new(),
        }
    }

    /// The server's document from its workers' and the supervisor's own `process` reading.
    pub fn total(workers: Vec<Stats>, events_published: u64, process: ProcReading) -> Stats {
        let mut total = Stats::new(
            "evented",
            0,
            [0; KIND_COUNT],
            0,
            0,
            events_published,
            process,
        );
        for w in &workers {
            total.connections.add(&w.connections);
            total.threads += w.threads;
            total.rss_bytes += w.rss_bytes;
            total.fds += w.fds;
            total.accepted += w.accepted;
            total.rejected += w.rejected;
        }
        total.workers = workers;
        total
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain integers and strings cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}
