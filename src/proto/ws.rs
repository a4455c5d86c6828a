//! WebSocket (RFC 6455): the opening handshake's key, an incremental frame and message decoder
//! with limits and incremental UTF-8 validation, the frame encoder and close codes. One decoder
//! serves both roles: the server (masked frames in) and the load generator (unmasked frames in).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Close codes this project sends (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
}

/// The GUID every server appends to the client's key (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, a 64-bit length and a masking key.
const MAX_HEADER: usize = 2 + 8 + 4;

/// Most payload capacity reserved up front for one frame. A header can declare any length up to
/// the message limit before sending a byte of it; past this the buffer grows only as data
/// arrives, so idle peers cannot make the server commit memory they never fill.
const PREALLOC_CAP: u64 = 64 * 1024;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(client_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(trim_ows(client_key));
    sha.update(ACCEPT_GUID);
    BASE64.encode(sha.finalize())
}

/// Whether `key` (trimmed) is the base64 encoding of exactly 16 bytes, as §4.1 requires.
pub fn is_valid_client_key(key: &[u8]) -> bool {
    // The standard engine insists on canonical padding and zero trailing bits, so anything it
    // accepts is the one encoding of its 16 bytes: exactly 24 characters ending in "==".
    matches!(BASE64.decode(trim_ows(key)), Ok(bytes) if bytes.len() == 16)
}

/// Strips the optional whitespace (SP / HTAB) that HTTP allows around a field value.
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Whether a close code received on the wire may be accepted: 1000–1003, 1007–1014, 3000–4999.
/// 1004, 1005, 1006, 1015, other unassigned codes and anything below 1000 or above 4999 are not.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl OpCode {
    fn from_wire(bits: u8) -> Option<Self> {
        Some(match bits {
            0 => Self::Continuation,
            1 => Self::Text,
            2 => Self::Binary,
            8 => Self::Close,
            9 => Self::Ping,
            10 => Self::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }
}

/// Which end of the connection this decoder sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives client frames, which must be masked.
    Server,
    /// Receives server frames, which must not be masked.
    Client,
}

/// A complete message or control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// `None` for an empty close body (which a reply treats as 1005, never sent on the wire).
    Close(Option<(u16, String)>),
}

/// A violation that ends the connection with close `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsError {
    /// 1002 protocol error, 1007 invalid UTF-8, 1009 too big.
    pub code: u16,
    pub reason: &'static str,
}

const fn protocol_error(reason: &'static str) -> WsError {
    WsError {
        code: close_code::PROTOCOL_ERROR,
        reason,
    }
}

const INVALID_UTF8: WsError = WsError {
    code: close_code::INVALID_PAYLOAD,
    reason: "invalid UTF-8 in text",
};

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: OpCode,
    fin: bool,
    /// Payload bytes still to come.
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes already unmasked, which fixes where in the key the next byte starts.
    mask_offset: usize,
}

/// Incremental decoder: frames in, messages out, control frames interleaved in fragmented
/// messages handled, the message size limit enforced while bytes arrive, text validated as UTF-8
/// as soon as each byte arrives (an invalid prefix fails at once, even mid-frame).
///
/// Non-minimal length encodings (a 16-bit length below 126, a 64-bit one below 65 536) are
/// rejected with 1002: §5.2 says the minimal encoding MUST be used, no conforming peer sends
/// anything else, and accepting them would only give one frame several spellings.
#[derive(Debug, Clone)]
pub struct Decoder {
    role: Role,
    max_message: usize,
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Set once a header is complete, until its payload has been read.
    frame: Option<Frame>,
    /// Text or Binary while a data message is in progress, from its first frame's header on.
    message: Option<OpCode>,
    /// Unmasked payload of the data message so far.
    data: Vec<u8>,
    /// Length of the prefix of `data` known to be whole, valid UTF-8. What follows it is at most
    /// three bytes that begin a character whose remaining bytes have not arrived yet.
    utf8_valid: usize,
    /// Unmasked payload of the control frame being read (control frames are not fragmented but
    /// may arrive between fragments of a data message, so they get their own buffer).
    control: Vec<u8>,
}

impl Decoder {
    pub fn new(role: Role, max_message: usize) -> Self {
        Self {
            role,
            max_message,
            header: [0; MAX_HEADER],
            header_len: 0,
            frame: None,
            message: None,
            data: Vec::new(),
            utf8_valid: 0,
            control: Vec::new(),
        }
    }

    /// Consumes bytes from `input` until a message or control frame completes:
    /// `Ok((n, Some(msg)))` — `n` bytes consumed, call again with the rest;
    /// `Ok((n, None))` — all `n == input.len()` bytes consumed, more needed.
    /// Fed the same bytes whole or one at a time, it yields the same messages and errors.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), WsError> {
        let mut pos = 0;
        loop {
            let frame = match self.frame {
                Some(frame) => frame,
                None => {
                    pos += self.read_header(&input[pos..])?;
                    match self.frame {
                        Some(frame) => frame,
                        None => return Ok((pos, None)),
                    }
                }
            };
            // Payload bytes are taken as they come, even none at all, so that an empty frame
            // completes in the same call as its header and a bad byte fails the moment it lands.
            let available = input.len() - pos;
            let take = frame.remaining.min(available as u64) as usize;
            self.read_payload(frame, &input[pos..pos + take])?;
            pos += take;
            if frame.remaining > take as u64 {
                return Ok((pos, None));
            }
            self.frame = None;
            if let Some(message) = self.finish_frame(frame)? {
                return Ok((pos, Some(message)));
            }
        }
    }

    /// True between messages with no partial frame buffered: the decoder holds no data and the
    /// caller may drop it until more bytes arrive.
    pub fn is_idle(&self) -> bool {
        self.header_len == 0 && self.frame.is_none() && self.message.is_none()
    }

    /// Copies header bytes from `input` and returns how many it took; `self.frame` is set once
    /// the header is complete. Checks run at fixed points of the header (after its first two
    /// bytes, after all of it) so that every split of the input fails at the same byte.
    fn read_header(&mut self, input: &[u8]) -> Result<usize, WsError> {
        let mut used = 0;
        if self.header_len < 2 {
            used += self.fill_header(input, 2);
            if self.header_len < 2 {
                return Ok(used);
            }
            self.check_first_bytes()?;
        }
        let extended = match self.header[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let masked = self.header[1] & 0x80 != 0;
        let full = 2 + extended + if masked { 4 } else { 0 };
        used += self.fill_header(&input[used..], full);
        if self.header_len < full {
            return Ok(used);
        }
        self.start_frame(extended, masked)?;
        Ok(used)
    }

    /// Appends header bytes from `input` until the header holds `upto`; returns how many.
    fn fill_header(&mut self, input: &[u8], upto: usize) -> usize {
        let take = upto.saturating_sub(self.header_len).min(input.len());
        self.header[self.header_len..self.header_len + take].copy_from_slice(&input[..take]);
        self.header_len += take;
        take
    }

    /// Everything the first two header bytes alone can violate.
    fn check_first_bytes(&self) -> Result<(), WsError> {
        let [b0, b1, ..] = self.header;
        if b0 & 0x70 != 0 {
            return Err(protocol_error("reserved bit set without an extension"));
        }
        let opcode = OpCode::from_wire(b0 & 0x0F).ok_or(protocol_error("reserved opcode"))?;
        let masked = b1 & 0x80 != 0;
        match self.role {
            Role::Server if !masked => return Err(protocol_error("client frame not masked")),
            Role::Client if masked => return Err(protocol_error("server frame masked")),
            _ => {}
        }
        let fin = b0 & 0x80 != 0;
        if opcode.is_control() {
            if !fin {
                return Err(protocol_error("fragmented control frame"));
            }
            // 126 and 127 announce an extended length, which can only be over 125 (or
            // non-minimal, which is refused anyway).
            if usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD {
                return Err(protocol_error("control frame payload over 125 bytes"));
            }
        }
        match (opcode, self.message) {
            (OpCode::Continuation, None) => Err(protocol_error("continuation without a message")),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                Err(protocol_error("new message inside a fragmented one"))
            }
            _ => Ok(()),
        }
    }

    /// Turns the complete header into `self.frame`, enforcing the length rules and the message
    /// size limit before any payload is accepted.
    fn start_frame(&mut self, extended: usize, masked: bool) -> Result<(), WsError> {
        let h = &self.header;
        let length = match extended {
            2 => {
                let length = u64::from(u16::from_be_bytes([h[2], h[3]]));
                if length < 126 {
                    return Err(protocol_error("non-minimal 16-bit length"));
                }
                length
            }
            8 => {
                let length = u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]);
                if length >> 63 != 0 {
                    return Err(protocol_error("64-bit length with the top bit set"));
                }
                if length <= 0xFFFF {
                    return Err(protocol_error("non-minimal 64-bit length"));
                }
                length
            }
            _ => u64::from(h[1] & 0x7F),
        };
        let mask = masked.then(|| {
            let k = 2 + extended;
            [h[k], h[k + 1], h[k + 2], h[k + 3]]
        });
        let fin = h[0] & 0x80 != 0;
        // check_first_bytes has already refused reserved opcodes.
        let opcode = OpCode::from_wire(h[0] & 0x0F).ok_or(protocol_error("reserved opcode"))?;

        if opcode.is_control() {
            self.control.reserve_exact(length as usize);
        } else {
            // Earlier fragments have all arrived, so `data` holds the message's size so far.
            let room = self.max_message.saturating_sub(self.data.len());
            if length > room as u64 {
                return Err(WsError {
                    code: close_code::TOO_BIG,
                    reason: "message over the size limit",
                });
            }
            if opcode != OpCode::Continuation {
                self.message = Some(opcode);
            }
            self.data.reserve(length.min(PREALLOC_CAP) as usize);
        }

        self.header_len = 0;
        self.frame = Some(Frame {
            opcode,
            fin,
            remaining: length,
            mask,
            mask_offset: 0,
        });
        Ok(())
    }

    /// Unmasks and stores the next `chunk` of the current frame's payload; text is validated
    /// right away so an invalid byte fails without waiting for the rest of the frame.
    fn read_payload(&mut self, frame: Frame, chunk: &[u8]) -> Result<(), WsError> {
        let buf = if frame.opcode.is_control() {
            &mut self.control
        } else {
            &mut self.data
        };
        let start = buf.len();
        buf.extend_from_slice(chunk);
        if let Some(key) = frame.mask {
            apply_mask(&mut buf[start..], key, frame.mask_offset);
        }
        if let Some(current) = self.frame.as_mut() {
            current.remaining -= chunk.len() as u64;
            current.mask_offset = (current.mask_offset + chunk.len()) & 3;
        }
        if !frame.opcode.is_control() && self.message == Some(OpCode::Text) {
            self.check_utf8()?;
        }
        Ok(())
    }

    /// Validates what `data` gained since the last call, carrying an incomplete final
    /// character over to the next one (which may be in a later frame).
    fn check_utf8(&mut self) -> Result<(), WsError> {
        match std::str::from_utf8(&self.data[self.utf8_valid..]) {
            Ok(_) => self.utf8_valid = self.data.len(),
            // No error length: the input merely ended inside a character that may yet be
            // completed; std has already checked its bytes so far against the UTF-8 table.
            Err(e) if e.error_len().is_none() => self.utf8_valid += e.valid_up_to(),
            Err(_) => return Err(INVALID_UTF8),
        }
        Ok(())
    }

    /// Called when the last payload byte of `frame` has been read.
    fn finish_frame(&mut self, frame: Frame) -> Result<Option<Message>, WsError> {
        match frame.opcode {
            OpCode::Ping => Ok(Some(Message::Ping(std::mem::take(&mut self.control)))),
            OpCode::Pong => Ok(Some(Message::Pong(std::mem::take(&mut self.control)))),
            OpCode::Close => parse_close(std::mem::take(&mut self.control)).map(Some),
            _ if !frame.fin => Ok(None),
            _ => {
                // Taking the buffer (rather than clearing it) hands its memory to the caller, so
                // an idle decoder holds none.
                let data = std::mem::take(&mut self.data);
                self.utf8_valid = 0;
                match self.message.take() {
                    // Already validated as it arrived; this pass also catches a message that
                    // ends inside a character and is cheap next to the bytes' trip through the
                    // kernel.
                    Some(OpCode::Text) => String::from_utf8(data)
                        .map(|text| Some(Message::Text(text)))
                        .map_err(|_| INVALID_UTF8),
                    _ => Ok(Some(Message::Binary(data))),
                }
            }
        }
    }
}

/// A close frame's body: nothing, or a valid code and a UTF-8 reason (RFC 6455 §5.5.1).
fn parse_close(mut payload: Vec<u8>) -> Result<Message, WsError> {
    match payload.len() {
        0 => Ok(Message::Close(None)),
        1 => Err(protocol_error("close body of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(protocol_error("invalid close code"));
            }
            let reason = String::from_utf8(payload.split_off(2)).map_err(|_| WsError {
                code: close_code::INVALID_PAYLOAD,
                reason: "invalid UTF-8 in close reason",
            })?;
            Ok(Message::Close(Some((code, reason))))
        }
    }
}

/// XORs `buf` with the masking `key`, `offset` bytes into the key's 4-byte cycle (so a payload
/// can be unmasked piece by piece). Eight bytes at a time: the server unmasks every byte in.
fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut k = key;
    k.rotate_left(offset & 3);
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, hence at the start of the (rotated) key.
    for (byte, m) in words.into_remainder().iter_mut().zip(k.iter().cycle()) {
        *byte ^= m;
    }
}

/// Appends one final (FIN) frame; masked with `mask` when given (client role).
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(0x80 | opcode as u8);
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], key, 0);
        }
        None => out.extend_from_slice(payload),
    }
}

/// Appends a close frame with `code` and `reason` (truncated to fit 125 bytes at a char boundary).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str, mask: Option<[u8; 4]>) {
    debug_assert!(
        is_valid_close_code(code),
        "close code {code} may not be sent"
    );
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut body = [0; MAX_CONTROL_PAYLOAD];
    body[..2].copy_from_slice(&code.to_be_bytes());
    body[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(out, OpCode::Close, &body[..2 + cut], mask);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    /// Feeds `chunks` in order, collecting messages until the first error.
    fn drive<'a>(
        dec: &mut Decoder,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<Message>, Option<WsError>) {
        let mut messages = Vec::new();
        for chunk in chunks {
            let mut rest = chunk;
            loop {
                match dec.decode(rest) {
                    Ok((n, Some(message))) => {
                        messages.push(message);
                        rest = &rest[n..];
                    }
                    Ok((n, None)) => {
                        assert_eq!(n, rest.len(), "more needed but input left over");
                        break;
                    }
                    Err(e) => return (messages, Some(e)),
                }
            }
        }
        (messages, None)
    }

    fn whole(role: Role, max: usize, bytes: &[u8]) -> (Vec<Message>, Option<WsError>) {
        drive(&mut Decoder::new(role, max), [bytes])
    }

    fn bytewise(role: Role, max: usize, bytes: &[u8]) -> (Vec<Message>, Option<WsError>) {
        drive(&mut Decoder::new(role, max), bytes.chunks(1))
    }

    /// Decodes `bytes` whole and byte by byte, checks both agree, returns the result.
    fn decode_all(role: Role, bytes: &[u8]) -> (Vec<Message>, Option<WsError>) {
        let result = whole(role, MAX, bytes);
        assert_eq!(result, bytewise(role, MAX, bytes));
        result
    }

    fn error_code(role: Role, bytes: &[u8]) -> u16 {
        match decode_all(role, bytes) {
            (_, Some(e)) => e.code,
            (messages, None) => panic!("no error; decoded {messages:?}"),
        }
    }

    /// A frame with every header field under the test's control.
    fn raw_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Binary, payload, mask);
        out[0] = first;
        out
    }

    fn text(s: &str) -> Message {
        Message::Text(s.to_owned())
    }

    #[test]
    fn accept_key_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept_key(b" \tdGhlIHNhbXBsZSBub25jZQ== "),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn client_key_validation() {
        assert!(is_valid_client_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_valid_client_key(b"\t dGhlIHNhbXBsZSBub25jZQ== "));
        assert!(!is_valid_client_key(b""));
        assert!(!is_valid_client_key(b"dGhlIHNhbXBsZSBub25jZQ")); // no padding
        assert!(!is_valid_client_key(b"dGhlIHNhbXBsZSBub25jZR==")); // non-zero trailing bits
        assert!(!is_valid_client_key(b"dGhlIHNhbXBsZSBub25j")); // 15 bytes
        assert!(!is_valid_client_key(b"dGhlIHNhbXBsZSBub25jZXM=")); // 17 bytes
        assert!(!is_valid_client_key(b"dGhlIHNhbXBsZSBub25j!Q=="));
        assert!(!is_valid_client_key(b"dGhlIHNhbXBs ZSBub25jZQ=="));
    }

    #[test]
    fn close_code_table() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ];
        let valid_ranges = [3000, 3999, 4000, 4999];
        let invalid = [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for code in valid.into_iter().chain(valid_ranges) {
            assert!(is_valid_close_code(code), "{code}");
        }
        for code in invalid {
            assert!(!is_valid_close_code(code), "{code}");
        }
    }

    #[test]
    fn rfc_single_frame_unmasked() {
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            decode_all(Role::Client, &bytes),
            (vec![text("Hello")], None)
        );
    }

    #[test]
    fn rfc_single_frame_masked() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_all(Role::Server, &bytes),
            (vec![text("Hello")], None)
        );
        let mut encoded = Vec::new();
        encode_frame(
            &mut encoded,
            OpCode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(encoded, bytes);
    }

    #[test]
    fn rfc_fragmented_unmasked() {
        let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        assert_eq!(
            decode_all(Role::Client, &bytes),
            (vec![text("Hello")], None)
        );
    }

    #[test]
    fn rfc_ping_and_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let pong = [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let hello = b"Hello".to_vec();
        assert_eq!(
            decode_all(Role::Client, &ping),
            (vec![Message::Ping(hello.clone())], None)
        );
        assert_eq!(
            decode_all(Role::Client, &pong),
            (vec![Message::Pong(hello.clone())], None)
        );
        let masked_pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_all(Role::Server, &masked_pong),
            (vec![Message::Pong(hello)], None)
        );
    }

    #[test]
    fn rfc_16_bit_length() {
        let payload: Vec<u8> = (0..=255).collect();
        let mut bytes = vec![0x82, 0x7E, 0x01, 0x00];
        bytes.extend_from_slice(&payload);
        assert_eq!(
            decode_all(Role::Client, &bytes),
            (vec![Message::Binary(payload.clone())], None)
        );
        let mut encoded = Vec::new();
        encode_frame(&mut encoded, OpCode::Binary, &payload, None);
        assert_eq!(encoded, bytes);
    }

    #[test]
    fn rfc_64_bit_length() {
        let payload: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
        let mut bytes = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        bytes.extend_from_slice(&payload);
        assert_eq!(
            decode_all(Role::Client, &bytes),
            (vec![Message::Binary(payload.clone())], None)
        );
        let mut encoded = Vec::new();
        encode_frame(&mut encoded, OpCode::Binary, &payload, None);
        assert_eq!(encoded, bytes);
    }

    #[test]
    fn mask_direction_is_enforced() {
        let key = Some([1, 2, 3, 4]);
        assert_eq!(
            error_code(Role::Server, &raw_frame(0x81, b"hi", None)),
            1002
        );
        assert_eq!(error_code(Role::Client, &raw_frame(0x81, b"hi", key)), 1002);
        // The check needs only the first two bytes.
        let mut dec = Decoder::new(Role::Server, MAX);
        assert!(dec.decode(&[0x81, 0x05]).is_err());
    }

    #[test]
    fn reserved_bits_are_refused() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(
                error_code(Role::Client, &raw_frame(0x81 | rsv, b"hi", None)),
                1002
            );
        }
    }

    #[test]
    fn reserved_opcodes_are_refused() {
        for op in (3..=7).chain(0xB..=0xF) {
            assert_eq!(
                error_code(Role::Client, &raw_frame(0x80 | op, b"", None)),
                1002
            );
        }
    }

    #[test]
    fn control_frames_must_be_final_and_short() {
        for op in [0x8, 0x9, 0xA] {
            assert_eq!(error_code(Role::Client, &raw_frame(op, b"", None)), 1002);
            let long = raw_frame(0x80 | op, &[b'a'; 126], None);
            assert_eq!(error_code(Role::Client, &long), 1002);
        }
        let max = raw_frame(0x89, &[b'a'; 125], None);
        assert_eq!(
            decode_all(Role::Client, &max),
            (vec![Message::Ping(vec![b'a'; 125])], None)
        );
    }

    #[test]
    fn continuation_needs_a_message() {
        assert_eq!(error_code(Role::Client, &raw_frame(0x80, b"x", None)), 1002);
        assert_eq!(error_code(Role::Client, &raw_frame(0x00, b"x", None)), 1002);
        // Nor does one survive the message it continued.
        let mut bytes = raw_frame(0x81, b"done", None);
        bytes.extend(raw_frame(0x80, b"x", None));
        assert_eq!(
            decode_all(Role::Client, &bytes),
            (
                vec![text("done")],
                Some(protocol_error("continuation without a message"))
            )
        );
    }

    #[test]
    fn new_message_inside_fragmented_one() {
        for op in [0x1, 0x2, 0x81, 0x82] {
            let mut bytes = raw_frame(0x01, b"a", None);
            bytes.extend(raw_frame(op, b"b", None));
            assert_eq!(error_code(Role::Client, &bytes), 1002);
        }
    }

    #[test]
    fn length_encodings() {
        // Top bit of the 64-bit length.
        let huge = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(error_code(Role::Client, &huge), 1002);
        // Non-minimal: 16-bit for 125 bytes, 64-bit for 65 535 bytes.
        let mut short = vec![0x82, 0x7E, 0, 125];
        short.extend([0; 125]);
        assert_eq!(error_code(Role::Client, &short), 1002);
        let mut medium = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF];
        medium.extend(vec![0; 0xFFFF]);
        assert_eq!(error_code(Role::Client, &medium), 1002);
        // Minimal boundaries are accepted.
        for len in [0, 125, 126, 0xFFFF, 0x10000] {
            let mut bytes = Vec::new();
            encode_frame(&mut bytes, OpCode::Binary, &vec![3; len], None);
            let (messages, error) = decode_all(Role::Client, &bytes);
            assert_eq!(
                (messages, error),
                (vec![Message::Binary(vec![3; len])], None)
            );
        }
    }

    #[test]
    fn size_limit_is_enforced_at_the_header() {
        // Only the header of a frame one byte over the limit: refused before its payload.
        let mut dec = Decoder::new(Role::Server, 1000);
        let header = [0x82, 0xFE, 0x03, 0xE9, 1, 2, 3, 4];
        assert_eq!(dec.decode(&header).map_err(|e| e.code), Err(1009));
        // Exactly the limit is fine.
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, OpCode::Binary, &[7; 1000], Some([1, 2, 3, 4]));
        assert_eq!(
            whole(Role::Server, 1000, &bytes),
            (vec![Message::Binary(vec![7; 1000])], None)
        );
        // Cumulatively across fragments: 600 + 401 fails at the second header.
        let mut dec = Decoder::new(Role::Client, 1000);
        let mut first = raw_frame(0x02, &[0; 600], None);
        assert_eq!(dec.decode(&first).map(|r| r.0), Ok(first.len()));
        first = vec![0x80, 0x7E, 0x01, 0x91];
        assert_eq!(dec.decode(&first).map_err(|e| e.code), Err(1009));
        // Control frames do not count against the limit.
        let mut bytes = raw_frame(0x89, &[1; 100], None);
        bytes.extend(raw_frame(0x82, &[2; 50], None));
        assert_eq!(
            whole(Role::Client, 50, &bytes),
            (
                vec![Message::Ping(vec![1; 100]), Message::Binary(vec![2; 50])],
                None
            )
        );
    }

    #[test]
    fn invalid_utf8_is_1007() {
        assert_eq!(
            error_code(Role::Client, &raw_frame(0x81, &[0xFF], None)),
            1007
        );
        // Surrogate, overlong, above U+10FFFF.
        for bad in [
            &[0xED, 0xA0, 0x80][..],
            &[0xC0, 0x80],
            &[0xF4, 0x90, 0x80, 0x80],
        ] {
            let frame = raw_frame(0x81, bad, Some([9, 8, 7, 6]));
            assert_eq!(error_code(Role::Server, &frame), 1007);
        }
        // A message that ends inside a character.
        assert_eq!(
            error_code(Role::Client, &raw_frame(0x81, &[b'a', 0xE2, 0x82], None)),
            1007
        );
        let mut split = raw_frame(0x01, &[0xF0, 0x9F], None);
        split.extend(raw_frame(0x80, &[0x98], None));
        assert_eq!(error_code(Role::Client, &split), 1007);
        // Binary is not checked.
        assert_eq!(
            decode_all(Role::Client, &raw_frame(0x82, &[0xFF], None)),
            (vec![Message::Binary(vec![0xFF])], None)
        );
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_ends() {
        // (payload prefix, bytes of it after which decoding must fail, masking key)
        for (prefix, fails_at, key) in [
            (&[0xC0, 0x80][..], 1, None),
            (&[0xFF], 1, None),
            (&[b'o', b'k', 0xE0, 0x80], 4, None),
            (&[0xC0, 0x80], 1, Some([0x11, 0x22, 0x33, 0x44])),
            (
                &[b'a', 0xF4, 0x8F, 0xBF, 0xC0],
                5,
                Some([0xA5, 0x5A, 0x0F, 0xF0]),
            ),
        ] {
            let role = if key.is_some() {
                Role::Server
            } else {
                Role::Client
            };
            let mut payload = prefix.to_vec();
            payload.resize(100, b'x');
            let frame = raw_frame(0x81, &payload, key);
            let header = frame.len() - 100;
            // The prefix alone, at once or byte by byte: both fail without the rest.
            let mut dec = Decoder::new(role, MAX);
            let fed = &frame[..header + prefix.len()];
            assert_eq!(dec.decode(fed).map_err(|e| e.code), Err(1007));
            let (messages, error) = bytewise(role, MAX, fed);
            assert!(messages.is_empty());
            assert_eq!(error.map(|e| e.code), Some(1007));
            // Exactly at the offending byte, not one earlier.
            let mut dec = Decoder::new(role, MAX);
            let before = header + fails_at - 1;
            assert_eq!(dec.decode(&frame[..before]), Ok((before, None)));
            assert_eq!(
                dec.decode(&frame[before..before + 1]).map_err(|e| e.code),
                Err(1007)
            );
        }
    }

    #[test]
    fn utf8_split_across_fragments() {
        // U+1F600 is F0 9F 98 80; its bytes straddle two continuation frames.
        let mut bytes = raw_frame(0x01, b"a\xF0", None);
        bytes.extend(raw_frame(0x00, b"\x9F", None));
        bytes.extend(raw_frame(0x80, b"\x98\x80b", None));
        assert_eq!(
            decode_all(Role::Client, &bytes),
            (vec![text("a\u{1F600}b")], None)
        );
        // The partial character stays pending while it is still a valid prefix only.
        let mut bad = raw_frame(0x01, b"\xF0\x9F", None);
        bad.extend(raw_frame(0x80, b"x", None));
        let mut dec = Decoder::new(Role::Client, MAX);
        assert_eq!(dec.decode(&bad[..4]), Ok((4, None)));
        assert_eq!(dec.decode(&bad[4..]).map_err(|e| e.code), Err(1007));
    }

    #[test]
    fn control_frames_interleave_with_fragments() {
        let key = Some([0xDE, 0xAD, 0xBE, 0xEF]);
        let mut bytes = raw_frame(0x01, "Hé".as_bytes(), key);
        bytes.extend(raw_frame(0x89, b"p1", key));
        bytes.extend(raw_frame(0x00, &"llo, wörld".as_bytes()[..1], key));
        bytes.extend(raw_frame(0x8A, b"", key));
        let mut close = Vec::new();
        encode_close(&mut close, 1000, "bye", key);
        bytes.extend(raw_frame(0x80, &"llo, wörld".as_bytes()[1..], key));
        bytes.extend(close);
        assert_eq!(
            decode_all(Role::Server, &bytes),
            (
                vec![
                    Message::Ping(b"p1".to_vec()),
                    Message::Pong(Vec::new()),
                    text("Héllo, wörld"),
                    Message::Close(Some((1000, "bye".to_owned()))),
                ],
                None
            )
        );
    }

    #[test]
    fn close_bodies() {
        let close = |body: &[u8]| raw_frame(0x88, body, None);
        assert_eq!(
            decode_all(Role::Client, &close(b"")),
            (vec![Message::Close(None)], None)
        );
        assert_eq!(
            decode_all(Role::Client, &close(b"\x03\xE8")),
            (vec![Message::Close(Some((1000, String::new())))], None)
        );
        assert_eq!(error_code(Role::Client, &close(b"\x03")), 1002);
        for code in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert_eq!(error_code(Role::Client, &close(&code.to_be_bytes())), 1002);
        }
        assert_eq!(error_code(Role::Client, &close(b"\x03\xE8ok\xFF")), 1007);
    }

    #[test]
    fn encode_close_truncates_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let mut out = Vec::new();
        encode_close(&mut out, 4000, &reason, None);
        assert_eq!(out[1] as usize, 2 + 122);
        assert_eq!(
            decode_all(Role::Client, &out),
            (vec![Message::Close(Some((4000, "é".repeat(61))))], None)
        );
        let mut out = Vec::new();
        encode_close(&mut out, 1001, &"a".repeat(123), Some([5, 6, 7, 8]));
        assert_eq!(
            decode_all(Role::Server, &out),
            (vec![Message::Close(Some((1001, "a".repeat(123))))], None)
        );
    }

    #[test]
    fn round_trips() {
        for len in [0, 1, 7, 8, 9, 125, 126, 127, 1000, 0xFFFF, 0x10000, 0x10001] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let text_payload: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            for (role, mask) in [
                (Role::Client, None),
                (Role::Server, Some([1, 0x80, 0xFF, 9])),
            ] {
                let mut bytes = Vec::new();
                encode_frame(&mut bytes, OpCode::Binary, &payload, mask);
                encode_frame(&mut bytes, OpCode::Text, text_payload.as_bytes(), mask);
                if len <= 125 {
                    encode_frame(&mut bytes, OpCode::Ping, &payload, mask);
                    encode_frame(&mut bytes, OpCode::Pong, &payload, mask);
                }
                let mut expected = vec![
                    Message::Binary(payload.clone()),
                    Message::Text(text_payload.clone()),
                ];
                if len <= 125 {
                    expected.push(Message::Ping(payload.clone()));
                    expected.push(Message::Pong(payload.clone()));
                }
                assert_eq!(decode_all(role, &bytes), (expected, None), "len {len}");
            }
        }
    }

    #[test]
    fn idle_only_between_messages() {
        let mut dec = Decoder::new(Role::Client, MAX);
        assert!(dec.is_idle());
        assert_eq!(dec.decode(&[0x01]), Ok((1, None)));
        assert!(!dec.is_idle());
        assert_eq!(dec.decode(&[0x01, b'a']), Ok((2, None)));
        assert!(!dec.is_idle()); // fragmented message in progress
        assert_eq!(
            dec.decode(&[0x89, 0x00]),
            Ok((2, Some(Message::Ping(vec![]))))
        );
        assert!(!dec.is_idle());
        assert_eq!(dec.decode(&[0x80, 0x01, b'b']), Ok((3, Some(text("ab")))));
        assert!(dec.is_idle());
        assert_eq!(dec.data.capacity(), 0);
    }

    #[test]
    fn decode_stops_after_each_message() {
        let mut bytes = raw_frame(0x81, b"one", None);
        bytes.extend(raw_frame(0x82, b"", None));
        let mut dec = Decoder::new(Role::Client, MAX);
        assert_eq!(dec.decode(&bytes), Ok((5, Some(text("one")))));
        assert_eq!(
            dec.decode(&bytes[5..]),
            Ok((2, Some(Message::Binary(vec![]))))
        );
        assert_eq!(dec.decode(&[]), Ok((0, None)));
    }

    #[test]
    fn mask_matches_bytewise_xor_at_every_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..37).collect();
        for offset in 0..8 {
            let mut fast = data.clone();
            apply_mask(&mut fast, key, offset);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[(i + offset) % 4])
                .collect();
            assert_eq!(fast, slow, "offset {offset}");
        }
    }

    /// One frame of a valid stream, and what decoding it should yield.
    #[derive(Debug, Clone)]
    enum Part {
        Control(OpCode, Vec<u8>),
        Close(u16, String),
        /// A data message cut into fragments at the given byte positions (not necessarily
        /// character boundaries), with control frames slipped in after some fragments.
        Data {
            text: bool,
            payload: Vec<u8>,
            cuts: Vec<usize>,
            interleaved: Vec<(usize, Vec<u8>)>,
        },
    }

    fn part() -> impl Strategy<Value = Part> {
        let control = (
            prop_oneof![Just(OpCode::Ping), Just(OpCode::Pong)],
            prop::collection::vec(any::<u8>(), 0..=125),
        )
            .prop_map(|(op, payload)| Part::Control(op, payload));
        let close = (
            prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999],
            "\\PC{0,40}",
        )
            .prop_map(|(code, reason)| Part::Close(code, reason));
        let payload = prop_oneof![
            "\\PC{0,300}".prop_map(|s| (true, s.into_bytes())),
            prop::collection::vec(any::<u8>(), 0..70_000).prop_map(|b| (false, b)),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| (false, b)),
        ];
        let data = (
            payload,
            prop::collection::vec(any::<prop::sample::Index>(), 0..5),
            prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    prop::collection::vec(any::<u8>(), 0..10),
                ),
                0..3,
            ),
        )
            .prop_map(|((text, payload), cuts, interleaved)| {
                let mut cuts: Vec<usize> =
                    cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
                cuts.sort_unstable();
                let fragments = cuts.len() + 1;
                let interleaved = interleaved
                    .into_iter()
                    .map(|(i, ping)| (i.index(fragments), ping))
                    .collect();
                Part::Data {
                    text,
                    payload,
                    cuts,
                    interleaved,
                }
            });
        prop_oneof![2 => control, 1 => close, 4 => data]
    }

    /// Encodes `parts` as a client would (masked), returning the bytes and expected messages.
    fn encode_parts(parts: &[Part], keys: &[[u8; 4]]) -> (Vec<u8>, Vec<Message>) {
        let mut keys = keys.iter().copied().cycle();
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for part in parts {
            match part {
                Part::Control(op, payload) => {
                    encode_frame(&mut bytes, *op, payload, keys.next());
                    expected.push(match op {
                        OpCode::Ping => Message::Ping(payload.clone()),
                        _ => Message::Pong(payload.clone()),
                    });
                }
                Part::Close(code, reason) => {
                    encode_close(&mut bytes, *code, reason, keys.next());
                    let mut cut = reason.len().min(123);
                    while !reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    expected.push(Message::Close(Some((*code, reason[..cut].to_owned()))));
                }
                Part::Data {
                    text,
                    payload,
                    cuts,
                    interleaved,
                } => {
                    let bounds: Vec<usize> = std::iter::once(0)
                        .chain(cuts.iter().copied())
                        .chain(std::iter::once(payload.len()))
                        .collect();
                    let last = bounds.len() - 2;
                    for (i, pair) in bounds.windows(2).enumerate() {
                        let op = match (i, text) {
                            (0, true) => 0x1,
                            (0, false) => 0x2,
                            _ => 0x0,
                        };
                        let fin = if i == last { 0x80 } else { 0 };
                        let mut frame = Vec::new();
                        encode_frame(
                            &mut frame,
                            OpCode::Binary,
                            &payload[pair[0]..pair[1]],
                            keys.next(),
                        );
                        frame[0] = fin | op;
                        bytes.extend(frame);
                        for (_, ping) in interleaved.iter().filter(|(at, _)| *at == i) {
                            if i != last {
                                encode_frame(&mut bytes, OpCode::Ping, ping, keys.next());
                                expected.push(Message::Ping(ping.clone()));
                            }
                        }
                    }
                    expected.push(if *text {
                        Message::Text(String::from_utf8(payload.clone()).unwrap())
                    } else {
                        Message::Binary(payload.clone())
                    });
                }
            }
        }
        (bytes, expected)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn valid_streams_decode_the_same_however_split(
            parts in prop::collection::vec(part(), 0..8),
            keys in prop::collection::vec(any::<[u8; 4]>(), 1..4),
            splits in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let (bytes, expected) = encode_parts(&parts, &keys);
            let expected = (expected, None);
            prop_assert_eq!(&whole(Role::Server, MAX, &bytes), &expected);

            let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let chunks = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]);
            prop_assert_eq!(&drive(&mut Decoder::new(Role::Server, MAX), chunks), &expected);

            prop_assert_eq!(&bytewise(Role::Server, MAX, &bytes), &expected);
        }

        #[test]
        fn garbage_never_panics_and_splits_agree(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            server in any::<bool>(),
            max in prop_oneof![Just(16usize), Just(MAX)],
        ) {
            let role = if server { Role::Server } else { Role::Client };
            prop_assert_eq!(whole(role, max, &bytes), bytewise(role, max, &bytes));
        }

        #[test]
        fn corrupted_streams_agree_whole_and_bytewise(
            parts in prop::collection::vec(part(), 1..5),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            max in prop_oneof![Just(64usize), Just(MAX)],
        ) {
            let (mut bytes, _) = encode_parts(&parts, &[[0x5A, 0x01, 0xC3, 0x7E]]);
            if !bytes.is_empty() {
                for (at, bits) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= bits;
                }
            }
            prop_assert_eq!(whole(Role::Server, max, &bytes), bytewise(Role::Server, max, &bytes));
        }
    }
}
