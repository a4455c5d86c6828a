//! The one clock thread: publishes a `tick` every `--tick-ms` and, after `--heartbeat-ms`
//! without a broadcast, queues a heartbeat (SSE comment, WebSocket ping) for every SSE and
//! WebSocket subscriber. Connection threads never keep timers of their own for these.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{millis, service_thread, Shared};

/// Starts the clock thread, unless ticks and heartbeats are both off.
pub(crate) fn start(shared: &Arc<Shared>) -> io::Result<()> {
    if shared.cfg.tick_ms == 0 && shared.cfg.heartbeat_ms == 0 {
        return Ok(());
    }
    let shared = Arc::clone(shared);
    service_thread("ticker", move || run(&shared))?;
    Ok(())
}

fn run(shared: &Shared) {
    let tick = (shared.cfg.tick_ms > 0).then(|| millis(shared.cfg.tick_ms));
    let heartbeat = (shared.cfg.heartbeat_ms > 0).then(|| millis(shared.cfg.heartbeat_ms));
    let mut next_tick = tick.map(|t| Instant::now() + t);
    loop {
        let now = Instant::now();
        if let (Some(tick), Some(due)) = (tick, next_tick) {
            if now >= due {
                shared.bcast.publish_tick();
                // A late wake-up does not cause a burst of catch-up ticks.
                next_tick = Some((due + tick).max(now + Duration::from_millis(1)));
            }
        }
        let heartbeat_due = heartbeat.map(|every| shared.bcast.heartbeat(every));
        let wake = match (next_tick, heartbeat_due) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        if shared.stop.sleep_until(wake) {
            return;
        }
    }
}
