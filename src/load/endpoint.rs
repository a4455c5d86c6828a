//! What the load generator connects to and asks for: the address, the request every connection
//! sends (path, `Host`, extra header fields) and where an event carries its send time. Built
//! from `--target ADDR --kind K` (the contract's paths) or from `--url`, so the same client can
//! hold connections to any SSE, chunked-stream, long-poll or WebSocket server.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Serialize};

use super::Kind;

/// The request line and header fields of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Path and query, e.g. `/events?room=1`; a long poll appends `after=SEQ` to it.
    pub path: String,
    /// The `Host` field.
    pub host: String,
    /// Extra `Name: value` fields, sent with every request (the WebSocket upgrade included).
    pub headers: Vec<String>,
    /// The `Sec-WebSocket-Protocol` offered with an upgrade (comma-separated names).
    pub ws_protocol: Option<String>,
}

impl Request {
    /// The contract's request for `kind`, to `host`.
    pub fn contract(kind: Kind, host: &str) -> Request {
        let path = match kind {
            Kind::Sse => "/sse",
            Kind::Ws => "/ws",
            Kind::Stream => "/stream",
            Kind::Poll => "/poll",
        };
        Request {
            path: path.to_string(),
            host: host.to_string(),
            headers: Vec::new(),
            ws_protocol: None,
        }
    }

    /// `GET PATH HTTP/1.1`, `Host`, the extra fields and `extra` (already `\r\n`-terminated
    /// lines), and the blank line.
    pub fn write_get(&self, path: &str, extra: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.host).as_bytes());
        for field in &self.headers {
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(extra.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// The path of a long poll for events after `after`.
    pub fn poll_path(&self, after: Option<u64>) -> String {
        match after {
            None => self.path.clone(),
            Some(seq) if self.path.contains('?') => format!("{}&after={seq}", self.path),
            Some(seq) => format!("{}?after={seq}", self.path),
        }
    }
}

/// `--url`: `http://HOST[:PORT]/PATH?QUERY` or `ws://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub websocket: bool,
    /// `HOST:PORT` as written (the `Host` field).
    pub authority: String,
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let (websocket, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("ws://") {
            (true, rest)
        } else if text.starts_with("https://") || text.starts_with("wss://") {
            return Err(format!(
                "{text} needs TLS, which the load generator does not speak: use http:// or ws://"
            ));
        } else {
            return Err(format!(
                "{text} is not a URL the load generator takes: it starts with http:// or ws://"
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "{text} has no host (or has user info, which is not taken)"
            ));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if path.contains('#') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "{text}: the path must not hold spaces, control characters or a fragment"
            ));
        }
        Ok(Url {
            websocket,
            authority: authority.to_string(),
            path,
        })
    }

    /// The address to connect to: the host resolved (IPv4 first), port 80 when none is given.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        let with_port = if self.authority.ends_with(']') || !self.authority.contains(':') {
            format!("{}:80", self.authority)
        } else {
            self.authority.clone()
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.authority))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("{} resolves to no address", self.authority))
    }
}

/// Checks one `-H 'Name: value'` argument.
pub fn check_header(field: &str) -> Result<(), String> {
    let Some((name, _)) = field.split_once(':') else {
        return Err(format!("-H {field:?} is not `Name: value`"));
    };
    if !is_token(name) {
        return Err(format!("-H {field:?}: {name:?} is not a header field name"));
    }
    if field.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("-H {field:?} holds a line break"));
    }
    let lower = name.to_ascii_lowercase();
    if ["host", "content-length", "transfer-encoding"].contains(&lower.as_str()) {
        return Err(format!(
            "-H {name}: the load generator writes that field itself"
        ));
    }
    Ok(())
}

/// Checks `--ws-protocol`: a comma-separated list of subprotocol names.
pub fn check_ws_protocol(list: &str) -> Result<(), String> {
    if list.split(',').all(|name| is_token(name.trim())) {
        Ok(())
    } else {
        Err(format!(
            "--ws-protocol {list:?} is not a comma-separated list of names"
        ))
    }
}

/// An RFC 9110 token (§5.6.2): what field names and subprotocol names are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The unit of an event's send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Told apart by size: a time since 1970 in seconds is about 10⁹, in ms 10¹², µs 10¹⁵,
    /// ns 10¹⁸.
    #[default]
    Auto,
    /// Seconds (a fraction allowed).
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

/// Where an event's send time is: a field of its JSON (`a.b` for a nested one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub field: String,
    pub unit: TimeUnit,
}

impl Default for Timestamp {
    /// The contract's `sent_ns`.
    fn default() -> Self {
        Timestamp {
            field: "sent_ns".to_string(),
            unit: TimeUnit::Auto,
        }
    }
}

impl Timestamp {
    /// Whether this is the contract's `sent_ns` (read without building a JSON tree).
    pub fn is_contract(&self) -> bool {
        self.field == "sent_ns" && self.unit == TimeUnit::Auto
    }

    /// The send time (ns since the epoch) and `seq` of an event, when its data is JSON that has
    /// them; `(None, None)` for anything else — an event without a timestamp is still an event.
    pub fn read(&self, json: &serde_json::Value) -> (Option<u64>, Option<u64>) {
        let seq = json.get("seq").and_then(serde_json::Value::as_u64);
        let mut at = Some(json);
        for part in self.field.split('.') {
            at = at.and_then(|v| v.get(part));
        }
        let sent = at.and_then(|v| match v {
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(int) => self.int_to_ns(int),
                None => n.as_f64().and_then(|f| self.float_to_ns(f)),
            },
            serde_json::Value::String(s) => match s.trim().parse::<u64>() {
                Ok(int) => self.int_to_ns(int),
                Err(_) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(|f| self.float_to_ns(f)),
            },
            _ => None,
        });
        (sent, seq)
    }

    /// Nanoseconds per unit, the unit told by size when it is `auto`.
    fn scale(&self, v: f64) -> u64 {
        let unit = match self.unit {
            TimeUnit::Auto if v >= 1e17 => TimeUnit::Ns,
            TimeUnit::Auto if v >= 1e14 => TimeUnit::Us,
            TimeUnit::Auto if v >= 1e11 => TimeUnit::Ms,
            TimeUnit::Auto => TimeUnit::S,
            unit => unit,
        };
        match unit {
            TimeUnit::S => 1_000_000_000,
            TimeUnit::Ms => 1_000_000,
            TimeUnit::Us => 1_000,
            TimeUnit::Ns | TimeUnit::Auto => 1,
        }
    }

    /// Integers exactly: an f64 would round nanoseconds since 1970 to a quarter microsecond.
    fn int_to_ns(&self, v: u64) -> Option<u64> {
        (v > 0).then(|| v.checked_mul(self.scale(v as f64)))?
    }

    fn float_to_ns(&self, v: f64) -> Option<u64> {
        let ns = v * self.scale(v) as f64;
        (v.is_finite() && v > 0.0 && ns < u64::MAX as f64).then_some(ns as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://localhost:8080/events?room=1").unwrap();
        assert_eq!(
            (u.websocket, u.authority.as_str(), u.path.as_str()),
            (false, "localhost:8080", "/events?room=1")
        );
        let u = Url::parse("ws://127.0.0.1:9/socket").unwrap();
        assert!(u.websocket);
        assert_eq!(u.resolve().unwrap(), "127.0.0.1:9".parse().unwrap());
        assert_eq!(Url::parse("http://h").unwrap().path, "/");
        assert_eq!(Url::parse("http://h?x=1").unwrap().path, "/?x=1");
        assert_eq!(
            Url::parse("http://127.0.0.1").unwrap().resolve().unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        for bad in [
            "https://h/",
            "ftp://h/",
            "http:///x",
            "http://u@h/",
            "http://h/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_carry_the_extra_fields() {
        let r = Request {
            path: "/events?room=1".into(),
            host: "h:1".into(),
            headers: vec!["Authorization: Bearer t".into()],
            ws_protocol: None,
        };
        let mut out = Vec::new();
        r.write_get(&r.path, "Accept: text/event-stream\r\n", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /events?room=1 HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer t\r\nAccept: text/event-stream\r\n\r\n"
        );
        assert_eq!(r.poll_path(Some(7)), "/events?room=1&after=7");
        assert_eq!(
            Request::contract(Kind::Poll, "h").poll_path(Some(7)),
            "/poll?after=7"
        );
        assert_eq!(Request::contract(Kind::Poll, "h").poll_path(None), "/poll");
    }

    #[test]
    fn header_fields_are_checked() {
        assert!(check_header("X-Token: abc").is_ok());
        assert!(check_header("Cookie: a=b; c=d").is_ok());
        for bad in ["NoColon", ": v", "Bad Name: v", "Host: x", "X: a\r\nY: b"] {
            assert!(check_header(bad).is_err(), "{bad}");
        }
        assert!(check_ws_protocol("chat.v1, chat.v2").is_ok());
        assert!(check_ws_protocol("chat v1").is_err());
        assert!(check_ws_protocol("a,,b").is_err());
    }

    #[test]
    fn timestamps_in_any_unit() {
        let ts = Timestamp {
            field: "t".into(),
            unit: TimeUnit::Auto,
        };
        let at = |v: serde_json::Value| ts.read(&serde_json::json!({ "t": v })).0;
        let ns = 1_764_000_000_123_456_789_u64;
        assert_eq!(at(ns.into()), Some(ns));
        assert_eq!(at((ns / 1000).into()), Some(ns / 1000 * 1000));
        assert_eq!(
            at((ns / 1_000_000).into()),
            Some(ns / 1_000_000 * 1_000_000)
        );
        assert_eq!(at(1_764_000_000.5.into()), Some(1_764_000_000_500_000_000));
        assert_eq!(at("1764000000123".into()), Some(1_764_000_000_123_000_000));
        assert_eq!(at(serde_json::Value::Null), None);
        let nested = Timestamp {
            field: "meta.sent".into(),
            unit: TimeUnit::Ms,
        };
        let v = serde_json::json!({"seq": 4, "meta": {"sent": 5}});
        assert_eq!(nested.read(&v), (Some(5_000_000), Some(4)));
        assert_eq!(
            Timestamp::default().read(&serde_json::json!("text")),
            (None, None)
        );
    }
}
