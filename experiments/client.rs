//! A plain blocking client for the experiments that watch one connection closely (full-duplex,
//! keepalive, slow-consumer, disconnect, proxy): `std::net`, every read bounded by a timeout,
//! and the same sans-IO core the servers use to parse what comes back.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::proto::http::{parse_response_head, BodyDecoder, BodyFraming, ResponseHead};
use crate::proto::ws::{self, Decoder, Message, OpCode, Role};

/// Reads give up after this long: a broken server fails an experiment, never hangs it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One client connection and the bytes read from it but not yet used.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Result<Client, String> {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Result<Client, String> {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| format!("cannot set up a client socket: {e}"))?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("cannot send to the server: {e}"))
    }

    /// What the kernel counted on this connection so far (`TCP_INFO`).
    pub fn tcp_counters(&self) -> Result<crate::sys::TcpCounters, String> {
        use std::os::fd::AsRawFd;
        crate::sys::tcp_counters(self.stream.as_raw_fd()).map_err(|e| format!("TCP_INFO: {e}"))
    }

    /// Reads once into the buffer; the number of new bytes (0 at end of stream).
    pub fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The response head, if the buffer holds a whole one; what follows it stays buffered.
    pub fn try_head(&mut self) -> Result<Option<ResponseHead>, String> {
        match parse_response_head(&self.buf) {
            Ok(Some((head, used))) => {
                self.buf.drain(..used);
                Ok(Some(head))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("the server sent a bad response head: {e:?}")),
        }
    }

    /// Reads until a whole response head has arrived; what follows it stays buffered.
    pub fn read_head(&mut self) -> Result<ResponseHead, String> {
        loop {
            if let Some(head) = self.try_head()? {
                return Ok(head);
            }
            match self.fill() {
                Ok(0) => return Err("the server closed before a response head".to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("no response head: {e}")),
            }
        }
    }

    /// Decodes what is buffered of a body into `body`; true once the body is complete.
    pub fn decode_buffered(
        &mut self,
        decoder: &mut BodyDecoder,
        body: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let used = decoder
            .decode(&self.buf, body)
            .map_err(|e| format!("the server sent a bad body: {e:?}"))?;
        self.buf.drain(..used);
        Ok(decoder.is_done())
    }

    /// Reads the whole body that `head` announces.
    pub fn read_body(&mut self, head: &ResponseHead) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        let mut decoder = BodyDecoder::new(head.body, u64::MAX);
        while !self.decode_buffered(&mut decoder, &mut body)? {
            match self.fill() {
                Ok(0) if head.body == BodyFraming::UntilClose => break,
                Ok(0) => return Err("the server closed mid-body".to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("the body stopped arriving: {e}")),
            }
        }
        Ok(body)
    }

    /// Sends `request` and reads one whole response: its status and body.
    pub fn request(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
        self.send(request)?;
        let head = self.read_head()?;
        let body = self.read_body(&head)?;
        Ok((head.status, body))
    }

    /// Asks to upgrade this connection to a WebSocket on `path`; the server's status (`101`
    /// when it did).
    pub fn try_upgrade(&mut self, path: &str) -> Result<u16, String> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: c10k\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        self.send(request.as_bytes())?;
        Ok(self.read_head()?.status)
    }

    /// Upgrades this connection to a WebSocket on `path`.
    pub fn upgrade(&mut self, path: &str) -> Result<(), String> {
        match self.try_upgrade(path)? {
            101 => Ok(()),
            status => Err(format!("the WebSocket upgrade was answered {status}")),
        }
    }

    /// Reads until one whole WebSocket message (or control frame) from the server has arrived.
    pub fn read_message(&mut self, decoder: &mut Decoder) -> Result<Message, String> {
        loop {
            let (used, message) = decoder
                .decode(&self.buf)
                .map_err(|e| format!("the server sent a bad frame: {}", e.reason))?;
            self.buf.drain(..used);
            if let Some(message) = message {
                return Ok(message);
            }
            match self.fill() {
                Ok(0) => return Err("the server closed the WebSocket".to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("no WebSocket message: {e}")),
            }
        }
    }
}

/// A decoder for frames a server sends.
pub fn server_frames() -> Decoder {
    Decoder::new(Role::Client, 16 << 20)
}

/// One masked client frame, as RFC 6455 §5.3 requires of every frame a client sends.
pub fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    ws::encode_frame(&mut out, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]));
    out
}

/// Seconds since `start`, for timelines.
pub fn since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
