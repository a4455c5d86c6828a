//! Refusing a connection no thread can serve. When the OS will not create a thread (at
//! `kernel.pid_max`, `kernel.threads-max`, `RLIMIT_NPROC`, or out of memory for a stack), the
//! accept thread hands the connection to this one thread, started while threads were still
//! available, which answers `503` and closes properly: send, shut the writing side, wait
//! briefly for the client's FIN. Closing at once with the request unread would send an RST that
//! can destroy the answer before the client reads it.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::Instant;

use crate::app::reply;

use super::live::Tracked;
use super::{millis, service_thread, Shared};

/// Connections waiting to be refused; past this they are refused on the spot, without waiting
/// for the client's FIN.
const QUEUE: usize = 1024;
/// How long one refusal waits for the client to read the answer and close.
const LINGER_MS: u64 = 1_000;

pub(crate) struct Rejecter {
    tx: SyncSender<Tracked>,
}

impl Rejecter {
    pub fn start() -> io::Result<Rejecter> {
        let (tx, rx) = mpsc::sync_channel::<Tracked>(QUEUE);
        let answer = unavailable();
        service_thread("reject", move || {
            for conn in rx {
                refuse(&conn, &answer);
            }
        })?;
        Ok(Rejecter { tx })
    }

    /// Counts `conn` as rejected and answers it `503`.
    pub fn reject(&self, shared: &Shared, conn: Tracked) {
        shared.rejected();
        match self.tx.try_send(conn) {
            Ok(()) => {}
            Err(TrySendError::Full(conn) | TrySendError::Disconnected(conn)) => {
                // Without blocking the accept thread: the answer fits in the socket buffer.
                let _ = conn.sock.stream.set_nonblocking(true);
                let _ = (&conn.sock.stream).write_all(&unavailable());
            }
        }
    }
}

/// `503 Service Unavailable`, then close.
pub(crate) fn unavailable() -> Vec<u8> {
    let mut out = Vec::new();
    reply::error(&mut out, 503, &[], false);
    out
}

fn refuse(conn: &Tracked, answer: &[u8]) {
    let mut stream = &conn.sock.stream;
    let deadline = Instant::now() + millis(LINGER_MS);
    if stream.set_write_timeout(Some(millis(LINGER_MS))).is_err()
        || stream.write_all(answer).is_err()
        || stream.shutdown(Shutdown::Write).is_err()
    {
        return;
    }
    let mut sink = [0u8; 1024];
    loop {
        let now = Instant::now();
        if now >= deadline || stream.set_read_timeout(Some(deadline - now)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
