//! Time in the loop: connection deadlines (header, idle, poll and linger timeouts, all decided
//! by the sessions), the tick clock, heartbeats, and the accept retry after running out of
//! descriptors.

use super::Server;
use crate::sys;

impl Server {
    pub(super) fn run_timers(&mut self) {
        while let Some(key) = self.timers.next_expired(self.now, |k| {
            self.conns.get(k).map(|c| c.session.deadline())
        }) {
            self.step(key, |s, cx, _| s.on_deadline(cx));
        }
        let live = self.conns.iter().map(|(k, c)| (k, c.session.deadline()));
        self.timers.compact(self.conns.len(), live);
        if self.cfg.tick_ms > 0 && self.now >= self.next_tick && self.shutdown_at.is_none() {
            self.hub.publish_tick(sys::now_ns());
            self.broadcast_started();
            self.next_tick = (self.next_tick + self.cfg.tick_ms).max(self.now + 1);
        }
        if self.cfg.heartbeat_ms > 0 && self.now >= self.last_broadcast + self.cfg.heartbeat_ms {
            self.subs.start_heartbeat();
            self.last_broadcast = self.now;
        }
        if self.accept_retry_at > 0 && self.now >= self.accept_retry_at {
            self.accept_retry_at = 0;
            self.accept_pending = true;
        }
    }
}
