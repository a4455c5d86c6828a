//! TLS 1.3 setup, measured without a network: a rustls client and server driven sans-IO, their
//! records handed across in memory one flight at a time. That counts exactly what the
//! handshake costs a connection — round trips before the first response, bytes each
//! way, CPU on each side — for a full handshake, a resumed one (a PSK from an earlier
//! session's ticket, RFC 8446 §2.2) and a resumed one that sends its request as 0-RTT early
//! data (§2.3). What a round trip costs in time is the network's: on loopback almost nothing.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig, ServerConnection,
};
use serde::Serialize;

/// The request and response carried by every measured handshake: the probe's.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

/// How a connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Full,
    Resumed,
    EarlyData,
}

impl Start {
    pub const ALL: [Start; 3] = [Start::Full, Start::Resumed, Start::EarlyData];

    pub fn name(self) -> &'static str {
        match self {
            Start::Full => "TLS 1.3 full handshake + request",
            Start::Resumed => "TLS 1.3 resumed (PSK) + request",
            Start::EarlyData => "TLS 1.3 resumed + 0-RTT request",
        }
    }
}

/// The mean of `count` handshakes of one kind, each carrying one request and its response.
#[derive(Debug, Clone, Serialize)]
pub struct Handshakes {
    pub start: String,
    pub count: u64,
    /// Handshakes that went the way asked (resumed, early data accepted).
    pub as_asked: u64,
    /// Round trips from the client's first byte until it holds the response.
    pub round_trips: u64,
    /// Record bytes each way, the request, the response and the session tickets included.
    pub client_bytes: u64,
    pub server_bytes: u64,
    /// CPU time of each side, in µs per handshake.
    pub client_cpu_us: f64,
    pub server_cpu_us: f64,
}

/// Both configurations of a test PKI: a fresh self-signed ECDSA P-256 certificate for
/// `localhost` that the client trusts.
pub struct Configs {
    server: Arc<ServerConfig>,
    /// Never resumes.
    fresh: Arc<ClientConfig>,
    /// Resumes, without early data.
    resuming: Arc<ClientConfig>,
    /// Resumes and sends early data.
    early: Arc<ClientConfig>,
}

impl Configs {
    pub fn new() -> Result<Configs, String> {
        let tls = |e: rustls::Error| format!("TLS setup: {e}");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .map_err(|e| format!("cannot make a test certificate: {e}"))?;
        let cert = certified.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let provider = Arc::new(default_provider());
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .map_err(tls)?;
        server.max_early_data_size = 16 * 1024;
        // Answer a 0-RTT request in the server's first flight, as a 0-RTT server would.
        server.send_half_rtt_data = true;
        let mut roots = RootCertStore::empty();
        roots.add(cert).map_err(tls)?;
        let client = || -> Result<ClientConfig, String> {
            Ok(ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(tls)?
                .with_root_certificates(roots.clone())
                .with_no_client_auth())
        };
        let mut fresh = client()?;
        fresh.resumption = rustls::client::Resumption::disabled();
        let resuming = client()?;
        let mut early = client()?;
        early.enable_early_data = true;
        Ok(Configs {
            server: Arc::new(server),
            fresh: Arc::new(fresh),
            resuming: Arc::new(resuming),
            early: Arc::new(early),
        })
    }
}

/// `count` handshakes that start as `start` asks, and their mean. A resuming client first
/// makes one full handshake (not counted) for a ticket; each resumption brings fresh ones.
pub fn measure(configs: &Configs, start: Start, count: u64) -> Result<Handshakes, String> {
    let client = match start {
        Start::Full => &configs.fresh,
        Start::Resumed => &configs.resuming,
        Start::EarlyData => &configs.early,
    };
    if start != Start::Full {
        one(client, &configs.server, false)?;
    }
    let mut sum = Handshakes {
        start: start.name().to_string(),
        count,
        as_asked: 0,
        round_trips: 0,
        client_bytes: 0,
        server_bytes: 0,
        client_cpu_us: 0.0,
        server_cpu_us: 0.0,
    };
    for _ in 0..count {
        let h = one(client, &configs.server, start == Start::EarlyData)?;
        let asked = match start {
            Start::Full => h.kind == HandshakeKind::Full,
            Start::Resumed => h.kind == HandshakeKind::Resumed,
            Start::EarlyData => h.kind == HandshakeKind::Resumed && h.early_accepted,
        };
        sum.as_asked += u64::from(asked);
        // Every handshake of a kind takes the same round trips and bytes; keep the last's.
        sum.round_trips = h.round_trips;
        sum.client_bytes = h.client_bytes;
        sum.server_bytes = h.server_bytes;
        sum.client_cpu_us += h.client_cpu_ns as f64 / 1000.0;
        sum.server_cpu_us += h.server_cpu_ns as f64 / 1000.0;
    }
    sum.client_cpu_us /= count.max(1) as f64;
    sum.server_cpu_us /= count.max(1) as f64;
    Ok(sum)
}

/// What TLS adds to a message of `size` bytes sent on an established connection: record
/// headers, content type and AEAD tags, one set per 16 KiB record (RFC 8446 §5.2).
pub fn record_overhead(configs: &Configs, size: usize) -> Result<u64, String> {
    let (mut client, mut server) = pair(&configs.fresh, &configs.server)?;
    let mut flight = Vec::new();
    for _ in 0..8 {
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
        send(&mut client, &mut flight, &mut server)?;
        send(&mut server, &mut flight, &mut client)?;
    }
    // Tickets and anything else the handshake left behind go first.
    send(&mut server, &mut flight, &mut client)?;
    // The whole message at once, past the default 64 KiB of buffered records.
    server.set_buffer_limit(None);
    server
        .writer()
        .write_all(&vec![b'x'; size])
        .map_err(|e| format!("TLS write: {e}"))?;
    flight.clear();
    while server.wants_write() {
        server
            .write_tls(&mut flight)
            .map_err(|e| format!("TLS write: {e}"))?;
    }
    Ok((flight.len() - size) as u64)
}

/// One handshake as it went.
struct One {
    kind: HandshakeKind,
    early_accepted: bool,
    round_trips: u64,
    client_bytes: u64,
    server_bytes: u64,
    client_cpu_ns: u64,
    server_cpu_ns: u64,
}

fn pair(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
) -> Result<(ClientConnection, ServerConnection), String> {
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let client =
        ClientConnection::new(Arc::clone(client), name).map_err(|e| format!("TLS client: {e}"))?;
    let server =
        ServerConnection::new(Arc::clone(server)).map_err(|e| format!("TLS server: {e}"))?;
    Ok((client, server))
}

/// A handshake that carries the request (as early data when `early` and the client may) and
/// ends when the client holds the response. Flights alternate, client first, as on a network
/// where each side answers all it has received at once.
fn one(
    client_cfg: &Arc<ClientConfig>,
    server_cfg: &Arc<ServerConfig>,
    early: bool,
) -> Result<One, String> {
    let mut cpu = [0u64; 2];
    let (mut client, mut server) = timed(&mut cpu[0], || pair(client_cfg, server_cfg))?;
    let mut sent = false;
    if early {
        if let Some(mut data) = client.early_data() {
            let n = data
                .write(REQUEST)
                .map_err(|e| format!("early data: {e}"))?;
            sent = n == REQUEST.len();
        }
    }
    let mut h = One {
        kind: HandshakeKind::Full,
        early_accepted: false,
        round_trips: 0,
        client_bytes: 0,
        server_bytes: 0,
        client_cpu_ns: 0,
        server_cpu_ns: 0,
    };
    let (mut flight, mut plain) = (Vec::new(), Vec::new());
    let (mut answered, mut received) = (false, false);
    for _ in 0..8 {
        // The client's flight; the server takes it in and answers what it can.
        let n = timed(&mut cpu[0], || send(&mut client, &mut flight, &mut server))?;
        h.client_bytes += n as u64;
        timed(&mut cpu[1], || -> Result<(), String> {
            plain.clear();
            if let Some(mut data) = server.early_data() {
                let _ = data.read_to_end(&mut plain);
            }
            read_available(server.reader(), &mut plain)?;
            if !answered && plain.ends_with(b"\r\n\r\n") {
                answered = true;
                server
                    .writer()
                    .write_all(RESPONSE)
                    .map_err(|e| format!("TLS write: {e}"))?;
            }
            Ok(())
        })?;
        // The server's flight: a round trip ends when it reaches the client.
        let n = timed(&mut cpu[1], || send(&mut server, &mut flight, &mut client))?;
        h.server_bytes += n as u64;
        if !received {
            h.round_trips += 1;
        }
        timed(&mut cpu[0], || -> Result<(), String> {
            plain.clear();
            read_available(client.reader(), &mut plain)?;
            received |= plain.ends_with(b"ok\n");
            if !sent && !client.is_handshaking() {
                sent = true;
                client
                    .writer()
                    .write_all(REQUEST)
                    .map_err(|e| format!("TLS write: {e}"))?;
            }
            Ok(())
        })?;
        // Done once the response is in and neither side has more to say: the client's
        // Finished and the server's tickets (which the next resumption uses) have gone too.
        if received && !client.wants_write() && !server.wants_write() && !client.is_handshaking() {
            h.kind = client.handshake_kind().unwrap_or(HandshakeKind::Full);
            h.early_accepted = client.is_early_data_accepted();
            [h.client_cpu_ns, h.server_cpu_ns] = cpu;
            return Ok(h);
        }
    }
    Err("the TLS handshake did not bring the response within 8 flights".to_string())
}

/// Moves every record `from` has to send into `to`, which processes them; the bytes moved.
fn send(
    from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
    flight: &mut Vec<u8>,
    to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
) -> Result<usize, String> {
    flight.clear();
    while from.wants_write() {
        from.write_tls(flight)
            .map_err(|e| format!("TLS write: {e}"))?;
    }
    let mut rest = &flight[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest)
            .map_err(|e| format!("TLS read: {e}"))?;
        to.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
    }
    Ok(flight.len())
}

/// Appends the plaintext that has arrived.
fn read_available(mut reader: rustls::Reader<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(format!("TLS read: {e}")),
        }
    }
}

/// Runs `f`, adding the CPU time this thread spent in it to `total`.
fn timed<T>(total: &mut u64, f: impl FnOnce() -> T) -> T {
    let start = crate::sys::thread_cpu_ns();
    let out = f();
    *total += crate::sys::thread_cpu_ns().saturating_sub(start);
    out
}
