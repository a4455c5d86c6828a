//! The dashboard's feed: every message an experiment publishes, numbered and encoded once as a
//! server-sent event, kept so that a page opened mid-run gets the whole run at once and a page
//! that lost its connection resumes after its `Last-Event-ID` with nothing lost or repeated.
//! Sans-IO: messages in, bytes out.

use std::collections::VecDeque;

use crate::proto::sse;

/// The run's messages so far, within a byte budget. The first message (the run's description)
/// is never dropped; past the budget the oldest rows after it go, and a page that asks for them
/// is told how many it missed.
#[derive(Debug)]
pub struct Feed {
    first: Option<Vec<u8>>,
    /// Encoded messages with ids `oldest_id..`, after the first one.
    rest: VecDeque<Vec<u8>>,
    oldest_id: u64,
    bytes: usize,
    limit: usize,
}

impl Feed {
    /// A feed keeping at most about `limit` bytes of encoded messages.
    pub fn new(limit: usize) -> Feed {
        Feed {
            first: None,
            rest: VecDeque::new(),
            oldest_id: 2,
            bytes: 0,
            limit,
        }
    }

    /// The id the next message gets. Ids start at 1.
    pub fn next_id(&self) -> u64 {
        match self.first {
            None => 1,
            Some(_) => self.oldest_id + self.rest.len() as u64,
        }
    }

    /// Appends a message `event` with `data` (one line of JSON); returns its encoding.
    pub fn push(&mut self, event: &str, data: &str) -> &[u8] {
        let id = self.next_id();
        let mut bytes = Vec::with_capacity(data.len() + event.len() + 24);
        sse::encode_event(&mut bytes, Some(&id.to_string()), Some(event), data);
        if self.first.is_none() {
            return self.first.insert(bytes);
        }
        self.bytes += bytes.len();
        self.rest.push_back(bytes);
        while self.bytes > self.limit && self.rest.len() > 1 {
            if let Some(old) = self.rest.pop_front() {
                self.bytes -= old.len();
                self.oldest_id += 1;
            }
        }
        self.rest.back().map_or(&[], Vec::as_slice)
    }

    /// The bytes a page receives when it (re)connects having seen every message up to
    /// `last_id` (`None`: a fresh page, which gets everything kept).
    pub fn replay(&self, last_id: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        let last = last_id.unwrap_or(0);
        if last == 0 {
            if let Some(first) = &self.first {
                out.extend_from_slice(first);
            }
        }
        let from = last.max(1) + 1;
        if from < self.oldest_id && self.first.is_some() {
            let missed = self.oldest_id - from;
            sse::encode_comment(&mut out, &format!("{missed} older rows were dropped"));
        }
        let skip = from.saturating_sub(self.oldest_id) as usize;
        for message in self.rest.iter().skip(skip) {
            out.extend_from_slice(message);
        }
        out
    }

    /// Bytes kept.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes + self.first.as_ref().map_or(0, Vec::len)
    }
}

/// The id a reconnecting page last saw: its `Last-Event-ID` header, else `?after=`.
pub fn resume_from(last_event_id: Option<&str>, after: Option<&str>) -> Option<u64> {
    last_event_id.or(after).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::sse::{Event, Parser};

    fn events(bytes: &[u8]) -> Vec<Event> {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        parser.feed(bytes, &mut out);
        out
    }

    fn ids(bytes: &[u8]) -> Vec<u64> {
        events(bytes)
            .iter()
            .map(|e| e.last_event_id.parse().unwrap_or(0))
            .collect()
    }

    fn feed_of(n: u64) -> Feed {
        let mut feed = Feed::new(1 << 20);
        feed.push("meta", "{}");
        for i in 2..=n {
            feed.push("row", &format!("{{\"i\":{i}}}"));
        }
        feed
    }

    #[test]
    fn a_fresh_page_gets_every_message_in_order() {
        let feed = feed_of(5);
        assert_eq!(ids(&feed.replay(None)), vec![1, 2, 3, 4, 5]);
        let all = events(&feed.replay(None));
        assert_eq!(all[0].event_type, "meta");
        assert_eq!(all[4].data, "{\"i\":5}");
        assert_eq!(feed.next_id(), 6);
    }

    #[test]
    fn a_resumed_page_gets_exactly_the_messages_after_its_last_id() {
        let feed = feed_of(6);
        for last in 0..=6 {
            let expected: Vec<u64> = (last + 1..=6).collect();
            assert_eq!(ids(&feed.replay(Some(last))), expected, "after {last}");
        }
        assert!(feed.replay(Some(99)).is_empty());
    }

    #[test]
    fn a_page_resumed_at_every_point_sees_each_message_once() {
        // A page that drops its connection after every message still sees 1..=n once each.
        let mut feed = Feed::new(1 << 20);
        let mut seen = Vec::new();
        for i in 1..=20u64 {
            feed.push(if i == 1 { "meta" } else { "row" }, &i.to_string());
            let last = seen.last().copied();
            seen.extend(ids(&feed.replay(last)));
        }
        assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn past_its_budget_the_feed_drops_the_oldest_rows_keeps_the_first_and_says_so() {
        let mut feed = Feed::new(300);
        feed.push("meta", "{\"experiment\":\"x\"}");
        for i in 0..100 {
            feed.push("row", &format!("{{\"i\":{i}}}"));
        }
        assert!(feed.bytes() <= 300 + 64, "{} bytes kept", feed.bytes());
        let fresh = feed.replay(None);
        let got = ids(&fresh);
        assert_eq!(got[0], 1);
        assert_eq!(*got.last().unwrap_or(&0), 101);
        assert!(got.windows(2).skip(1).all(|w| w[1] == w[0] + 1));
        assert!(String::from_utf8_lossy(&fresh).contains("older rows were dropped"));
        // A page that was only a little behind gets the rest with no gap message.
        let recent = ids(&feed.replay(Some(99)));
        assert_eq!(recent, vec![100, 101]);
    }

    #[test]
    fn the_resume_point_comes_from_the_header_before_the_query() {
        assert_eq!(resume_from(Some("7"), Some("3")), Some(7));
        assert_eq!(resume_from(None, Some("3")), Some(3));
        assert_eq!(resume_from(Some("x"), None), None);
        assert_eq!(resume_from(None, None), None);
    }
}
