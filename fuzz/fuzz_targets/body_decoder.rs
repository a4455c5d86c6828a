//! The request body decoder (Content-Length or chunked, with extensions and trailers) on
//! arbitrary bytes cut at arbitrary points: no panic, never more than its limit, and the same
//! body and verdict whatever the cuts.
#![no_main]

use c10k_lab::proto::http::{BodyDecoder, BodyFraming};
use libfuzzer_sys::fuzz_target;

const MAX: u64 = 4096;

fn decode(framing: BodyFraming, pieces: &[&[u8]]) -> (Vec<u8>, Result<bool, u16>) {
    let mut dec = BodyDecoder::new(framing, MAX);
    let mut body = Vec::new();
    let mut pending = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        match dec.decode(&pending, &mut body) {
            Ok(used) => drop(pending.drain(..used)),
            Err(e) => return (body, Err(e.status())),
        }
        assert!(body.len() as u64 <= MAX);
        if dec.is_done() {
            break;
        }
    }
    // What is left after the body belongs to the next request; decoding it is not a verdict.
    (body, Ok(dec.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let framing = if control & 1 == 0 {
        BodyFraming::Chunked
    } else {
        BodyFraming::Length(u64::from(control >> 1) * 40)
    };
    let whole = decode(framing, &[input]);
    let step = usize::from(control >> 4) + 1;
    let mut pieces: Vec<&[u8]> = input.chunks(step).collect();
    if pieces.is_empty() {
        // A declared length over the limit is refused before any byte: decode once anyway.
        pieces.push(&[]);
    }
    let (body, verdict) = decode(framing, &pieces);
    match (whole.1, verdict) {
        // A refusal is a refusal however the bytes came; the body read before it may differ.
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => assert_eq!((whole.0, a), (body, b)),
    }
});
