//! The WebSocket frame decoder (server side: masked client frames, fragmentation, control
//! frames, incremental UTF-8) on arbitrary bytes cut at arbitrary points: no panic, no message
//! over the limit, and the same messages and verdict whatever the cuts.
#![no_main]

use c10k_lab::proto::ws::{Decoder, Message, Role};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fn decode(pieces: &[&[u8]]) -> (Vec<Message>, Option<u16>) {
    let mut dec = Decoder::new(Role::Server, MAX);
    let mut messages = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        let mut used = 0;
        while used < pending.len() {
            match dec.decode(&pending[used..]) {
                Ok((n, msg)) => {
                    used += n;
                    match msg {
                        Some(m) => {
                            let size = match &m {
                                Message::Text(t) => t.len(),
                                Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
                                Message::Close(_) => 0,
                            };
                            assert!(size <= MAX);
                            messages.push(m);
                        }
                        None if n == 0 => break,
                        None => {}
                    }
                }
                Err(e) => return (messages, Some(e.code)),
            }
        }
        pending.drain(..used);
    }
    (messages, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let whole = decode(&[input]);
    let pieces: Vec<&[u8]> = input.chunks(usize::from(control % 17) + 1).collect();
    assert_eq!(decode(&pieces), whole);
});
