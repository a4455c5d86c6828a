//! c10k-lab: one application contract served by two I/O models (a single-threaded epoll loop
//! and a thread-per-connection server), a load generator that measures them, and the
//! experiments that show the difference.

pub mod app;
pub mod blocking;
pub mod capacity;
pub mod dashboard;
pub mod doctor;
pub mod evented;
#[path = "../experiments/mod.rs"]
pub mod experiments;
pub mod floor;
pub mod load;
pub mod proto;
pub mod sys;
pub mod timers;
pub mod workers;
