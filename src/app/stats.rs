//! The `/stats` document: live connection counts by kind, process readings and counters. The
//! load generator reads the same type back.

use serde::{Deserialize, Serialize};

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
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain integers and strings cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}
