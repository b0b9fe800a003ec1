//! The DATA reader on arbitrary bytes and arbitrary TCP segmentation: never panics, the
//! segmentation never changes the result, a message ends only at CRLF.CRLF, and the output
//! never grows past the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtpd_smtp::{DataEnd, DataReader};

fn run(data: &[u8], chunk: usize) -> (Vec<u8>, Option<DataEnd>, usize) {
    let mut reader = DataReader::new(1 << 16, 1000);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + chunk).min(data.len());
        let (n, done) = reader.feed(&data[pos..end], &mut out);
        assert!(n <= end - pos);
        pos += n;
        if done.is_some() {
            return (out, done, pos);
        }
        if n == 0 {
            break;
        }
    }
    (out, None, pos)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else { return };
    let whole = run(data, data.len().max(1));
    let chunked = run(data, (split as usize % 17) + 1);
    assert_eq!(whole, chunked, "segmentation changed the result");
    let (out, end, consumed) = whole;
    assert!(out.len() <= consumed);
    // The message ends at the first CRLF.CRLF (counting the CRLF of the DATA line), and only there.
    let framed = [b"\r\n".as_slice(), data].concat();
    let first = framed.windows(5).position(|w| w == b"\r\n.\r\n").map(|i| i + 5 - 2);
    match end {
        Some(_) => assert_eq!(first, Some(consumed), "ended somewhere other than the first CRLF.CRLF"),
        None => {
            assert_eq!(first, None, "missed a CRLF.CRLF");
            assert_eq!(consumed, data.len());
        }
    }
});
