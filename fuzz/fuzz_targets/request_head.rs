//! The request head parser on arbitrary bytes: no panic, a head it accepts ends inside the
//! input, and what it refuses it refuses with a status the contract names.
#![no_main]

use c10k_lab::proto::http::parse_request_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_request_head(data) {
        Ok(Some((head, used))) => {
            assert!(used <= data.len());
            assert!(head.minor_version <= 1);
            // The same head parses the same from exactly its own bytes.
            let again = parse_request_head(&data[..used]).expect("a prefix that parsed");
            assert_eq!(again.map(|(_, n)| n), Some(used));
        }
        Ok(None) => {}
        // 501: a transfer coding other than chunked (RFC 9112 §6.1).
        Err(e) => assert!(matches!(e.status(), 400 | 431 | 501 | 505)),
    }
});
