//! One end of the Unix socket between the supervisor and a worker: messages queued for writing,
//! bytes read and cut into messages, never blocking.

use std::io::{self, Read, Write};

use mio::net::UnixStream;

use super::wire::{Decoder, Msg, WireError};

pub struct Channel {
    pub sock: UnixStream,
    decoder: Decoder,
    out: Vec<u8>,
    /// How much of `out` has been written.
    written: usize,
}

impl Channel {
    pub fn new(sock: UnixStream) -> Channel {
        Channel::continuing(sock, Decoder::default())
    }

    /// A channel whose first bytes were read (and partly decoded) by `decoder` already.
    pub fn continuing(sock: UnixStream, decoder: Decoder) -> Channel {
        Channel {
            sock,
            decoder,
            out: Vec::new(),
            written: 0,
        }
    }

    pub fn send(&mut self, msg: &Msg) {
        msg.encode(&mut self.out);
    }

    /// Queues frames already encoded (one encoding of an event for every worker).
    pub fn send_encoded(&mut self, frames: &[u8]) {
        self.out.extend_from_slice(frames);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len() - self.written
    }

    /// Writes what is queued, as far as the socket takes it.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.sock.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        } else if self.written > self.out.len() / 2 {
            self.out.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    /// Reads everything waiting (readiness is edge-triggered). `Ok(false)` once the other
    /// process has closed its end.
    pub fn fill(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        loop {
            match self.sock.read(scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => self.decoder.feed(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn next_msg(&mut self) -> Result<Option<Msg>, WireError> {
        self.decoder.next_msg()
    }
}
