//! The floor for fan-out measurements (`c10k serve --model floor`, hidden): a bare mio loop
//! that answers `GET /sse` with the same head as the servers, then on every tick writes one
//! prebuilt event — the same bytes the servers send — to every subscriber in one tight loop,
//! and answers anything else with the probe's `200 ok`. No session, no write queue, no batches:
//! a subscriber that cannot take the whole event at once just misses it. What is left is the
//! cost of the `write()` calls themselves, so `c10k run fanout` can say how close each model
//! comes to what the kernel allows.
//!
//! With `--workers N` it forks N − 1 copies of itself on the same listening socket before any
//! connection arrives; each ticks on the wall clock (at multiples of the period), so all of
//! them fan out at the same moments, like one server.

use std::io::{self, Read, Write};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::app::config::ServerConfig;
use crate::app::hub::{Encoding, Hub};
use crate::app::reply;
use crate::sys;

const LISTENER: Token = Token(usize::MAX);
/// A request head longer than this is not one the floor serves.
const HEAD_LIMIT: usize = 4096;

struct Client {
    sock: TcpStream,
    head: Vec<u8>,
    subscribed: bool,
}

/// Serves until killed (SIGTERM's default action: the floor has no goodbyes to say).
pub fn serve(
    cfg: ServerConfig,
    workers: usize,
    ready: impl FnOnce(std::net::SocketAddr),
) -> io::Result<()> {
    let std_listener = sys::listen(cfg.listen, cfg.backlog, false)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    for _ in 1..workers.max(1) {
        // SAFETY: the process has one thread here, so the child may run anything.
        match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()),
            0 => {
                // SAFETY: prctl with PR_SET_PDEATHSIG has no memory effects.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
                return run(TcpListener::from_std(std_listener), cfg.tick_ms);
            }
            _ => {}
        }
    }
    ready(addr);
    run(TcpListener::from_std(std_listener), cfg.tick_ms)
}

fn run(mut listener: TcpListener, tick_ms: u64) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut clients: Slab<Client> = Slab::new();
    let mut hub = Hub::new(1, 1 << 16);
    let period_ns = tick_ms.max(1) * 1_000_000;
    let mut next_tick = (sys::now_ns() / period_ns + 1) * period_ns;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let wait = next_tick.saturating_sub(sys::now_ns());
        match poll.poll(
            &mut events,
            (tick_ms > 0).then(|| Duration::from_nanos(wait)),
        ) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => accept(&mut listener, &poll, &mut clients),
                Token(key) => {
                    if !read(&mut clients, key, &mut buf) {
                        clients.remove(key);
                    }
                }
            }
        }
        let now = sys::now_ns();
        if tick_ms > 0 && now >= next_tick {
            let event = hub.publish_tick(now);
            let bytes = event.bytes(Encoding::Sse);
            for (_, client) in clients.iter_mut().filter(|(_, c)| c.subscribed) {
                let _ = client.sock.write(bytes);
            }
            next_tick = (sys::now_ns() / period_ns + 1) * period_ns;
        }
    }
}

fn accept(listener: &mut TcpListener, poll: &Poll, clients: &mut Slab<Client>) {
    loop {
        match listener.accept() {
            Ok((mut sock, _)) => {
                let entry = clients.vacant_entry();
                if poll
                    .registry()
                    .register(&mut sock, Token(entry.key()), Interest::READABLE)
                    .is_ok()
                {
                    entry.insert(Client {
                        sock,
                        head: Vec::new(),
                        subscribed: false,
                    });
                }
            }
            // Out of descriptors or anything else: the other copies take the connection; this
            // one tries again at the next wake-up.
            Err(_) => return,
        }
    }
}

/// Reads what arrived; answers a complete head. Returns whether to keep the connection.
fn read(clients: &mut Slab<Client>, key: usize, buf: &mut [u8]) -> bool {
    let Some(client) = clients.get_mut(key) else {
        return true;
    };
    loop {
        match client.sock.read(buf) {
            Ok(0) => return false,
            // A subscriber's later bytes mean nothing to the floor.
            Ok(_) if client.subscribed => {}
            Ok(n) => {
                client.head.extend_from_slice(&buf[..n]);
                if client.head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut out = Vec::new();
                    let sse = client.head.starts_with(b"GET /sse");
                    if sse {
                        reply::sse_head(&mut out, false);
                    } else {
                        reply::probe(&mut out, false);
                    }
                    if client.sock.write_all(&out).is_err() || !sse {
                        return false;
                    }
                    client.subscribed = true;
                    client.head = Vec::new();
                } else if client.head.len() > HEAD_LIMIT {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
