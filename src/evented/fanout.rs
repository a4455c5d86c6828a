//! Broadcasting: a published event starts a sweep over every subscriber list, and each loop turn
//! delivers to one bounded batch of subscribers, so a newcomer is answered between batches
//! however many subscribers there are. Each subscriber's session turns the shared event into
//! its own wire encoding (a reference, not a copy) and its own rules (a poll is answered).

use super::subscribers::Visit;
use super::Server;
use crate::app::hub::Kind;

impl Server {
    pub(super) fn broadcast_started(&mut self) {
        self.subs.start_events();
        self.last_broadcast = self.now;
    }

    /// Delivers to at most one batch of subscribers, then lets the loop serve everyone else.
    pub(super) fn fanout_step(&mut self) {
        for _ in 0..self.cfg.fanout_batch.max(1) {
            let Some((kind, key, visit)) = self.subs.next_visit() else {
                return;
            };
            self.deliver(kind, key, visit);
        }
    }

    fn deliver(&mut self, kind: Kind, key: usize, visit: Visit) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if conn.session.subscription() != Some(kind) {
            return;
        }
        match visit {
            Visit::Heartbeat => self.step(key, |s, cx, _| s.on_heartbeat(cx)),
            Visit::Events => {
                let from = conn.session.delivered();
                if from >= self.hub.last_seq() {
                    return;
                }
                if self.hub.has_dropped_after(from) {
                    // So far behind that the ring no longer has what it missed.
                    return self.close(key);
                }
                self.step(key, |s, cx, hub| s.on_events(cx, hub.since(from)));
            }
        }
    }
}
