//! The PROXY header parser on arbitrary bytes: never panics; reading exactly as many octets as
//! it asks for never takes one past the header; the result does not depend on how far ahead
//! the input goes; a header never claims more octets than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtpd_smtp::proxy::{self, MAX_V1_LINE, MAX_V2_LENGTH, Parsed};

fuzz_target!(|data: &[u8]| {
    let mut have = 0;
    let outcome = loop {
        match proxy::parse(&data[..have]) {
            Ok(Parsed::Incomplete(n)) => {
                assert!(n > 0);
                if have + n > data.len() {
                    break None;
                }
                have += n;
            }
            Ok(Parsed::Header { header, len }) => {
                assert_eq!(len, have, "the header is exactly what was read");
                assert!(len <= MAX_V1_LINE.max(MAX_V2_LENGTH));
                break Some(Ok(header));
            }
            Err(e) => break Some(Err(e)),
        }
    };
    // Given everything at once, the parser agrees (it never looks past the header).
    if let Some(result) = outcome {
        match (proxy::parse(data), result) {
            (Ok(Parsed::Header { header, len }), Ok(h)) => assert_eq!((header, len), (h, have)),
            (Err(a), Err(b)) => assert_eq!(a, b),
            (whole, stepwise) => panic!("whole {whole:?}, stepwise {stepwise:?}"),
        }
    }
});
