//! What the server does, whatever the I/O model: a connection's life (`session`), routing, the
//! broadcast hub, replies, the bounded write queue and the counters. Like `proto`, nothing here does I/O or reads a clock:
//! times come in as arguments.

pub mod config;
pub mod hub;
pub mod outq;
pub mod reply;
pub mod route;
pub mod session;
pub mod stats;
