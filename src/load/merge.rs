//! The parent's merger: per-second records from every process that holds connections (its own
//! connections, or worker processes), plus the parent's own probe and server readings, become one
//! [`Second`] per second and, at the end, the [`Report`] totals.
//!
//! Second `k` is emitted once the parent has finished it and every source has reported it — or,
//! for a source that lags, 1.5 s after the second ended, with that source's latest counters (its
//! late window data then goes into the next second not yet emitted). Seconds come out in order.

use std::collections::{BTreeMap, VecDeque};

use hdrhistogram::Histogram;

use super::record::{self, Counts, WorkerRecord};
use super::report::{Delivery, Failures, Second, ServerSample, Totals};

/// How long after a second ends the merger waits for a lagging source.
const LAG_US: u64 = 1_500_000;
/// Sequence numbers tracked for delivery fractions.
const MAX_SEQS: usize = 1024;
/// Open-connection timelines are kept this far back (ms) behind the newest settled second.
/// The longest run of untracked seqs between two delivered ones still counted as lost.
const MAX_LOST_RUN: u64 = 64;
const TIMELINE_KEEP_MS: u64 = 30_000;

/// The parent's own part of a second: its probes and the server reading.
#[derive(Debug, Clone, Default)]
pub struct ParentWindow {
    /// Cumulative probe counters at the end of the window.
    pub probes_sent: u64,
    pub probes_answered: u64,
    pub probe_timeouts: u64,
    pub probe_errors: u64,
    /// When the first probe that timed out was sent (µs since the start), once one has.
    pub first_timeout_sent_us: Option<u64>,
    /// Probe latency buckets of the window.
    pub probe_hist: Vec<(u64, u64)>,
    pub server: Option<ServerSample>,
    /// Connections this machine's listening sockets dropped since the start (server on
    /// loopback only).
    pub listen_drops: Option<u64>,
    /// End of the window, µs since the start.
    pub end_us: u64,
}

#[derive(Default)]
struct Pending {
    events: u64,
    event_hist: Vec<(u64, u64)>,
    echo_hist: Vec<(u64, u64)>,
    parent: Option<ParentWindow>,
    /// The parent's last window: emitted only once every source is done.
    last: bool,
}

#[derive(Default)]
struct Source {
    /// Counters reported for windows not emitted yet, oldest first.
    queue: VecDeque<(u64, Counts)>,
    /// Counters as of the last emitted window (or the newest known, for a lagging source).
    latest: Counts,
    /// Highest window reported.
    reported: Option<u64>,
    /// Sent its last record, or is gone.
    done: bool,
    /// `(ms, open)` change points.
    timeline: VecDeque<(u64, u64)>,
    /// When its ramp was over (µs since the start), once it said so.
    ramp_done_us: Option<u64>,
}

impl Source {
    fn open_at(&self, ms: u64) -> u64 {
        // The last change at or before `ms`; before the first, nothing was open.
        let i = self.timeline.partition_point(|&(t, _)| t <= ms);
        if i == 0 {
            0
        } else {
            self.timeline[i - 1].1
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SeqStat {
    sent_ns: u64,
    received: u64,
    /// Connections open when it was published; set once every source's timeline covers that
    /// moment.
    expected: Option<u64>,
}

/// Merges sources into seconds and totals.
pub struct Merger {
    start_ns: u64,
    sources: Vec<Source>,
    pending: BTreeMap<u64, Pending>,
    next_emit: u64,
    /// Index of the parent's last window, once it closed.
    final_idx: Option<u64>,
    seqs: BTreeMap<u64, SeqStat>,
    /// Seqs are settled up to this publication time (ms since the start).
    settled_ms: u64,
    window_hist: Histogram<u64>,
    probe_window: Histogram<u64>,
    event_total: Histogram<u64>,
    probe_total: Histogram<u64>,
    /// Probes of the windows that began once the ramp was over: the server holding them all.
    probe_held: Histogram<u64>,
    /// Event latency of the same windows.
    event_held: Histogram<u64>,
    echo_window: Histogram<u64>,
    echo_total: Histogram<u64>,
    gap_total: Histogram<u64>,
    first_failures: BTreeMap<String, String>,
    events_total: u64,
    peak_open: u64,
    held_at_first_probe_timeout: Option<u64>,
    server_peak: Option<ServerSample>,
    last_parent: ParentWindow,
    seconds: Vec<Second>,
}

impl Merger {
    /// A merger for `sources` processes holding connections, started at `start_ns` (wall clock).
    pub fn new(sources: usize, start_ns: u64) -> Merger {
        Merger {
            start_ns,
            sources: (0..sources).map(|_| Source::default()).collect(),
            pending: BTreeMap::new(),
            next_emit: 0,
            final_idx: None,
            seqs: BTreeMap::new(),
            settled_ms: 0,
            window_hist: record::new_hist(),
            probe_window: record::new_hist(),
            event_total: record::new_hist(),
            probe_total: record::new_hist(),
            probe_held: record::new_hist(),
            event_held: record::new_hist(),
            echo_window: record::new_hist(),
            echo_total: record::new_hist(),
            gap_total: record::new_hist(),
            first_failures: BTreeMap::new(),
            events_total: 0,
            peak_open: 0,
            held_at_first_probe_timeout: None,
            server_peak: None,
            last_parent: ParentWindow::default(),
            seconds: Vec::new(),
        }
    }

    /// The window a record for `idx` goes into: its own if not emitted yet, else the next one
    /// (and never past the parent's last).
    fn slot(&self, idx: u64) -> u64 {
        let idx = idx.max(self.next_emit);
        self.final_idx
            .map_or(idx, |f| idx.min(f.max(self.next_emit)))
    }

    /// A record from source `src`.
    pub fn source_record(&mut self, src: usize, rec: WorkerRecord) {
        let slot = self.slot(rec.idx);
        let pending = self.pending.entry(slot).or_default();
        pending.events += rec.events;
        pending.event_hist.extend_from_slice(&rec.hist);
        pending.echo_hist.extend_from_slice(&rec.echo_hist);
        // Gaps are reported over the whole run only: merged as they come.
        record::add_buckets(&mut self.gap_total, &rec.gap_hist);
        for (cause, why) in rec.first_failures {
            self.first_failures.entry(cause).or_insert(why);
        }
        for &(seq, sent_ns, count) in &rec.seqs {
            self.add_seq(seq, sent_ns, count);
        }
        let Some(source) = self.sources.get_mut(src) else {
            return;
        };
        for &(ms, open) in &rec.timeline {
            match source.timeline.back_mut() {
                Some(last) if last.0 >= ms => last.1 = open,
                _ => source.timeline.push_back((ms, open)),
            }
        }
        source.queue.push_back((rec.idx, rec.counts));
        source.reported = Some(rec.idx);
        source.ramp_done_us = source.ramp_done_us.or(rec.ramp_done_us);
        if rec.last {
            source.done = true;
        }
        // A seq first seen after its second was settled is settled now.
        self.settle(self.settled_ms);
    }

    /// Source `src` will send nothing more (it exited or was stopped).
    pub fn source_gone(&mut self, src: usize) {
        if let Some(source) = self.sources.get_mut(src) {
            source.done = true;
        }
    }

    /// When a second waiting on a lagging source is emitted anyway (µs since the start).
    pub fn next_wakeup(&self) -> Option<u64> {
        let pending = self.pending.get(&self.next_emit)?;
        if pending.last {
            return None;
        }
        pending.parent.as_ref().map(|p| p.end_us + LAG_US)
    }

    /// When the whole run's ramp was over (µs since the start), once every source's was (a
    /// source that is gone counts as over).
    pub fn ramp_done_us(&self) -> Option<u64> {
        self.sources
            .iter()
            .try_fold(0, |latest, s| match s.ramp_done_us {
                Some(at) => Some(latest.max(at)),
                None if s.done => Some(latest),
                None => None,
            })
    }

    /// Whether every source sent its last record or is gone.
    pub fn sources_done(&self) -> bool {
        self.sources.iter().all(|s| s.done)
    }

    fn add_seq(&mut self, seq: u64, sent_ns: u64, count: u64) {
        if let Some(stat) = self.seqs.get_mut(&seq) {
            stat.received += count;
            return;
        }
        if self.seqs.len() >= MAX_SEQS && self.seqs.first_key_value().is_some_and(|(&f, _)| seq < f)
        {
            return;
        }
        self.seqs.insert(
            seq,
            SeqStat {
                sent_ns,
                received: count,
                expected: None,
            },
        );
        while self.seqs.len() > MAX_SEQS {
            self.seqs.pop_first();
        }
    }

    fn sent_ms(&self, sent_ns: u64) -> u64 {
        sent_ns.saturating_sub(self.start_ns) / 1_000_000
    }

    /// Fixes the expected receivers of every seq published before `through_ms`.
    fn settle(&mut self, through_ms: u64) {
        self.settled_ms = self.settled_ms.max(through_ms);
        let start_ns = self.start_ns;
        for stat in self.seqs.values_mut() {
            if stat.expected.is_some() {
                continue;
            }
            let ms = stat.sent_ns.saturating_sub(start_ns) / 1_000_000;
            if ms < self.settled_ms {
                stat.expected = Some(self.sources.iter().map(|s| s.open_at(ms)).sum());
            }
        }
        let keep_from = self.settled_ms.saturating_sub(TIMELINE_KEEP_MS);
        for source in &mut self.sources {
            // Keep the last point before `keep_from`: it says what was open from then on.
            while source.timeline.len() > 1 && source.timeline[1].0 <= keep_from {
                source.timeline.pop_front();
            }
        }
    }

    /// The parent finished window `idx` (its probes and server reading); `last` for its final
    /// window, at the close.
    pub fn parent_window(&mut self, idx: u64, window: ParentWindow, last: bool) {
        let slot = self.slot(idx);
        let pending = self.pending.entry(slot).or_default();
        pending.parent = Some(window);
        if last {
            pending.last = true;
            self.final_idx = Some(slot);
            // Anything already queued past the close belongs to the last window.
            let later: Vec<u64> = self.pending.range(slot + 1..).map(|(&k, _)| k).collect();
            for k in later {
                if let Some(p) = self.pending.remove(&k) {
                    let target = self.pending.entry(slot).or_default();
                    target.events += p.events;
                    target.event_hist.extend(p.event_hist);
                    target.echo_hist.extend(p.echo_hist);
                }
            }
        }
    }

    /// Emits every second that is ready at `now_us` (µs since the start); `force` emits whatever
    /// the parent has finished, ready or not (the end of the run).
    pub fn emit_ready(&mut self, now_us: u64, force: bool, out: &mut dyn FnMut(&Second)) {
        loop {
            let idx = self.next_emit;
            let Some(pending) = self.pending.get(&idx) else {
                return;
            };
            let Some(parent) = &pending.parent else {
                return;
            };
            let waited_out = now_us >= parent.end_us + LAG_US;
            let ready = if pending.last {
                force || self.sources_done()
            } else {
                force
                    || waited_out
                    || self
                        .sources
                        .iter()
                        .all(|s| s.done || s.reported.is_some_and(|r| r >= idx))
            };
            if !ready {
                return;
            }
            let Some(pending) = self.pending.remove(&idx) else {
                return;
            };
            let last = pending.last;
            self.emit(idx, pending, out);
            if last {
                return;
            }
        }
    }

    fn emit(&mut self, idx: u64, pending: Pending, out: &mut dyn FnMut(&Second)) {
        self.next_emit = idx + 1;
        let parent = pending.parent.unwrap_or_default();
        let mut counts = Counts::default();
        for source in &mut self.sources {
            while let Some(&(i, c)) = source.queue.front() {
                if i > idx && !pending.last {
                    break;
                }
                source.latest = c;
                source.queue.pop_front();
            }
            counts.add(&source.latest);
        }
        self.window_hist.reset();
        record::add_buckets(&mut self.window_hist, &pending.event_hist);
        let _ = self.event_total.add(&self.window_hist);
        self.events_total += pending.events;
        self.probe_window.reset();
        record::add_buckets(&mut self.probe_window, &parent.probe_hist);
        let _ = self.probe_total.add(&self.probe_window);
        // Every source's record of this window is in, so a ramp that ended by its start is
        // known.
        let window_start_us = parent.end_us.saturating_sub(1_000_000);
        if self
            .ramp_done_us()
            .is_some_and(|done| done <= window_start_us)
        {
            let _ = self.probe_held.add(&self.probe_window);
            let _ = self.event_held.add(&self.window_hist);
        }
        self.echo_window.reset();
        record::add_buckets(&mut self.echo_window, &pending.echo_hist);
        let _ = self.echo_total.add(&self.echo_window);
        self.peak_open = self.peak_open.max(counts.open);
        if self.held_at_first_probe_timeout.is_none() {
            // Every source has reported through this window, so their timelines cover the
            // moment that probe was sent.
            self.held_at_first_probe_timeout = parent
                .first_timeout_sent_us
                .map(|us| self.sources.iter().map(|s| s.open_at(us / 1000)).sum());
        }
        if let Some(s) = parent.server {
            let peak = self.server_peak.get_or_insert(s);
            peak.rss_bytes = peak.rss_bytes.max(s.rss_bytes);
            peak.threads = peak.threads.max(s.threads);
            peak.fds = peak.fds.max(s.fds);
            peak.pss_bytes = peak.pss_bytes.max(s.pss_bytes);
            peak.pss_anon_bytes = peak.pss_anon_bytes.max(s.pss_anon_bytes);
            peak.processes = peak.processes.max(s.processes);
        }
        let second = Second {
            t_s: parent.end_us as f64 / 1e6,
            attempted: counts.attempted,
            established: counts.established,
            open: counts.open,
            failed: counts.failed,
            events: pending.events,
            event_p50_us: record::quantile(&self.window_hist, 0.5),
            event_p99_us: record::quantile(&self.window_hist, 0.99),
            event_max_us: record::max(&self.window_hist),
            probes_sent: parent.probes_sent,
            probes_answered: parent.probes_answered,
            probe_timeouts: parent.probe_timeouts,
            probe_p50_us: record::quantile(&self.probe_window, 0.5),
            probe_p99_us: record::quantile(&self.probe_window, 0.99),
            probe_max_us: record::max(&self.probe_window),
            server: parent.server,
            connecting: counts.connecting,
            probe_errors: parent.probe_errors,
            held_at_first_probe_timeout: self.held_at_first_probe_timeout,
            echoes: self.echo_window.len(),
            echo_p50_us: record::quantile(&self.echo_window, 0.5),
            echo_p99_us: record::quantile(&self.echo_window, 0.99),
            listen_drops: parent.listen_drops,
        };
        self.settle(parent.end_us / 1000);
        self.last_parent = parent;
        out(&second);
        self.seconds.push(second);
    }

    /// Every second emitted so far, and the totals. `ramp_end_ms` and `close_ms` (since the
    /// start) bound the events the delivery fractions are computed over.
    pub fn finish(mut self, ramp_end_ms: u64, close_ms: u64) -> (Vec<Second>, Totals) {
        self.settle(u64::MAX);
        let delivery = self.delivery(ramp_end_ms, close_ms);
        let last = self.seconds.last().cloned().unwrap_or_default();
        let failed: Failures = last.failed;
        let ramp_s = ramp_end_ms as f64 / 1e3;
        let mut peak_accepted = 0;
        let mut before = 0;
        for sec in &self.seconds {
            peak_accepted = peak_accepted.max(sec.established.saturating_sub(before));
            before = sec.established;
        }
        let totals = Totals {
            ramp_s,
            accepted_per_sec: (ramp_s > 0.0).then(|| last.established as f64 / ramp_s),
            peak_accepted_per_sec: peak_accepted,
            listen_drops: last.listen_drops,
            attempted: last.attempted,
            established: last.established,
            peak_open: self.peak_open,
            failed,
            failed_total: failed.total(),
            events: self.events_total,
            event_p50_us: record::quantile(&self.event_total, 0.5),
            event_p99_us: record::quantile(&self.event_total, 0.99),
            event_p999_us: record::quantile(&self.event_total, 0.999),
            event_max_us: record::max(&self.event_total),
            delivery,
            probes_sent: self.last_parent.probes_sent,
            probes_answered: self.last_parent.probes_answered,
            probe_timeouts: self.last_parent.probe_timeouts,
            probe_errors: self.last_parent.probe_errors,
            probe_p50_us: record::quantile(&self.probe_total, 0.5),
            probe_p99_us: record::quantile(&self.probe_total, 0.99),
            probe_p999_us: record::quantile(&self.probe_total, 0.999),
            probe_max_us: record::max(&self.probe_total),
            held_probes: self.probe_held.len(),
            held_probe_p50_us: record::quantile(&self.probe_held, 0.5),
            held_probe_p99_us: record::quantile(&self.probe_held, 0.99),
            held_probe_max_us: record::max(&self.probe_held),
            held_events: self.event_held.len(),
            held_event_p50_us: record::quantile(&self.event_held, 0.5),
            held_event_p99_us: record::quantile(&self.event_held, 0.99),
            held_event_max_us: record::max(&self.event_held),
            held_at_first_probe_timeout: self.held_at_first_probe_timeout,
            server_peak: self.server_peak,
            echoes: self.echo_total.len(),
            echo_p50_us: record::quantile(&self.echo_total, 0.5),
            echo_p99_us: record::quantile(&self.echo_total, 0.99),
            echo_max_us: record::max(&self.echo_total),
            first_failures: self.first_failures,
            gap_p50_us: record::quantile(&self.gap_total, 0.5),
            gap_p99_us: record::quantile(&self.gap_total, 0.99),
            gap_max_us: record::max(&self.gap_total),
        };
        (self.seconds, totals)
    }

    /// Delivery fractions over seqs published from the end of the ramp until a second (at most
    /// half the hold) before the close: later ones may still have been on their way.
    fn delivery(&self, ramp_end_ms: u64, close_ms: u64) -> Delivery {
        let margin = 1_000.min(close_ms.saturating_sub(ramp_end_ms) / 2);
        let (from, to) = (ramp_end_ms, close_ms.saturating_sub(margin));
        let mut fractions = Vec::new();
        let mut prev: Option<(u64, SeqStat)> = None;
        for (&seq, &stat) in &self.seqs {
            let ms = self.sent_ms(stat.sent_ns);
            if ms < from || ms >= to {
                prev = None;
                continue;
            }
            let expected = stat.expected.unwrap_or(0);
            if let Some((p, pstat)) = prev {
                // A few seqs missing between two delivered ones reached nobody. A long run of
                // them is not evidence of loss: past `MAX_WINDOW_SEQS` a window stops tracking,
                // and a server may jump its sequence; such a gap is left out.
                let gap = seq - p - 1;
                if pstat.expected.unwrap_or(0) > 0 && expected > 0 && gap <= MAX_LOST_RUN {
                    fractions.extend(std::iter::repeat_n(0.0, gap as usize));
                }
            }
            if expected > 0 {
                fractions.push((stat.received as f64 / expected as f64).min(1.0));
            }
            prev = Some((seq, stat));
        }
        let n = fractions.len();
        Delivery {
            seqs: n as u64,
            mean_fraction: (n > 0).then(|| fractions.iter().sum::<f64>() / n as f64),
            min_fraction: fractions.iter().copied().reduce(f64::min),
            from_s: from as f64 / 1e3,
            to_s: to as f64 / 1e3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_000_000_000_000;

    #[test]
    fn the_ramp_is_over_when_every_source_says_so() {
        let mut m = Merger::new(3, START);
        m.source_record(
            0,
            WorkerRecord {
                ramp_done_us: Some(2_500_000),
                ..rec(2, 5, &[], false)
            },
        );
        m.source_record(1, rec(2, 5, &[], false));
        assert_eq!(m.ramp_done_us(), None);
        m.source_record(
            1,
            WorkerRecord {
                ramp_done_us: Some(3_100_000),
                ..rec(3, 5, &[], false)
            },
        );
        assert_eq!(m.ramp_done_us(), None, "source 2 has not said");
        m.source_gone(2);
        assert_eq!(m.ramp_done_us(), Some(3_100_000));
    }

    #[test]
    fn probes_while_held_are_those_of_the_seconds_after_the_ramp() {
        let mut m = Merger::new(1, START);
        let mut out = |_: &Second| {};
        for idx in 0..4 {
            m.source_record(
                0,
                WorkerRecord {
                    ramp_done_us: (idx >= 1).then_some(1_500_000),
                    hist: vec![(1000 * (idx + 1), 2)],
                    ..rec(idx, 5, &[(idx + 1, 2)], idx == 3)
                },
            );
            let window = ParentWindow {
                probe_hist: vec![(100 * (idx + 1), 1)],
                ..parent(idx, 0)
            };
            m.parent_window(idx, window, idx == 3);
            m.emit_ready((idx + 1) * 1_000_000, false, &mut out);
        }
        let (_, t) = m.finish(1_500, 4_000);
        // Windows 2 and 3 began after the ramp ended at 1.5 s.
        assert_eq!(t.held_probes, 2);
        assert_eq!(t.held_probe_max_us, Some(400));
        assert_eq!(t.held_probe_p50_us, Some(300));
        // The events of the same windows only.
        assert_eq!(t.held_events, 4);
        // (The histogram keeps three significant digits.)
        assert!(t.held_event_max_us.is_some_and(|us| us.abs_diff(4000) <= 4));
        assert!(t.held_event_p50_us.is_some_and(|us| us.abs_diff(3000) <= 3));
        assert_eq!(t.events, 8);
    }

    fn rec(idx: u64, open: u64, events: &[(u64, u64)], last: bool) -> WorkerRecord {
        WorkerRecord {
            idx,
            last,
            counts: Counts {
                attempted: open,
                established: open,
                open,
                ..Counts::default()
            },
            events: events.iter().map(|e| e.1).sum(),
            hist: vec![(100, events.iter().map(|e| e.1).sum())],
            echo_hist: Vec::new(),
            gap_hist: Vec::new(),
            first_failures: Vec::new(),
            ramp_done_us: None,
            seqs: events
                .iter()
                .map(|&(seq, n)| (seq, START + seq * 100_000_000, n))
                .collect(),
            timeline: if idx == 0 { vec![(0, open)] } else { vec![] },
        }
    }

    fn parent(idx: u64, end_us: u64) -> ParentWindow {
        ParentWindow {
            end_us: if end_us > 0 {
                end_us
            } else {
                (idx + 1) * 1_000_000
            },
            ..ParentWindow::default()
        }
    }

    #[test]
    fn waits_for_every_source_then_sums() {
        let mut m = Merger::new(2, START);
        let mut out = Vec::new();
        m.parent_window(0, parent(0, 0), false);
        m.source_record(0, rec(0, 10, &[(1, 10)], false));
        m.emit_ready(1_000_000, false, &mut |s| out.push(s.clone()));
        assert!(out.is_empty(), "source 1 has not reported");
        m.source_record(1, rec(0, 5, &[(1, 5)], false));
        m.emit_ready(1_000_000, false, &mut |s| out.push(s.clone()));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].open, out[0].events), (15, 15));
        assert_eq!(out[0].event_p50_us, Some(100));
    }

    #[test]
    fn a_lagging_source_is_not_waited_for_forever() {
        let mut m = Merger::new(2, START);
        let mut out = Vec::new();
        m.parent_window(0, parent(0, 0), false);
        m.source_record(0, rec(0, 10, &[], false));
        m.emit_ready(2_400_000, false, &mut |s| out.push(s.clone()));
        assert!(out.is_empty());
        m.emit_ready(2_600_000, false, &mut |s| out.push(s.clone()));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].open, 10);
        // Its late record is folded into the next second.
        m.source_record(1, rec(0, 5, &[(1, 5)], false));
        m.parent_window(1, parent(1, 0), false);
        m.source_record(0, rec(1, 10, &[], false));
        m.source_record(1, rec(1, 5, &[], false));
        m.emit_ready(2_700_000, false, &mut |s| out.push(s.clone()));
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].open, out[1].events), (15, 5));
    }

    #[test]
    fn last_window_waits_for_every_last_record_and_computes_delivery() {
        let mut m = Merger::new(2, START);
        let mut out = Vec::new();
        // Seqs 1..=9 published every 100 ms; source 0 (10 open) gets all, source 1 (10 open)
        // misses seq 5; seq 6 reaches nobody.
        let all: Vec<(u64, u64)> = (1..=9).filter(|&s| s != 6).map(|s| (s, 10)).collect();
        let most: Vec<(u64, u64)> = (1..=9)
            .filter(|&s| s != 5 && s != 6)
            .map(|s| (s, 10))
            .collect();
        m.parent_window(0, parent(0, 0), false);
        m.source_record(0, rec(0, 10, &all, false));
        m.source_record(1, rec(0, 10, &most, false));
        m.emit_ready(1_000_000, false, &mut |s| out.push(s.clone()));
        m.parent_window(1, parent(1, 1_500_000), true);
        m.source_record(0, rec(1, 10, &[], true));
        m.emit_ready(1_500_000, false, &mut |s| out.push(s.clone()));
        assert_eq!(out.len(), 1, "source 1 has not sent its last record");
        m.source_record(1, rec(1, 10, &[], true));
        m.emit_ready(1_500_000, false, &mut |s| out.push(s.clone()));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].t_s, 1.5);
        let (seconds, totals) = m.finish(0, 1_500);
        assert_eq!(seconds.len(), 2);
        assert_eq!(totals.events, 150);
        assert_eq!(totals.peak_open, 20);
        // Window [0, 1500 - 750): seqs 1..=7; seq 5 half delivered, seq 6 not at all.
        let d = totals.delivery;
        assert_eq!(d.seqs, 7);
        assert_eq!(d.min_fraction, Some(0.0));
        let mean = d.mean_fraction.unwrap();
        assert!((mean - 5.5 / 7.0).abs() < 1e-9, "{mean}");
    }
}
