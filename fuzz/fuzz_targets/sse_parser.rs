//! The WHATWG event-stream parser on arbitrary bytes cut at arbitrary points: no panic, and the
//! same events whatever the cuts.
#![no_main]

use c10k_lab::proto::sse::Parser;
use libfuzzer_sys::fuzz_target;

fn events(pieces: &[&[u8]]) -> Vec<String> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    for piece in pieces {
        parser.feed(piece, &mut out);
    }
    out.iter()
        .map(|e| format!("{:?}|{:?}|{:?}", e.event_type, e.data, e.last_event_id))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let pieces: Vec<&[u8]> = input.chunks(usize::from(control % 13) + 1).collect();
    assert_eq!(events(&pieces), events(&[input]));
});
