//! The PROXY protocol parser ([`parse`], v1 and v2) on any bytes. Checks that a
//! header found is no longer than the input or the specification's bounds,
//! stands on its own (the same header from its own bytes, and every shorter
//! start of it asks for more), and survives being encoded again; that "more,
//! please" never comes past the bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libipc::proxy::{V1_MAX, parse};

/// A v2 header: 16 fixed bytes, then at most 64 KiB.
const V2_MAX: usize = 16 + 0xffff;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Some((header, n))) => {
            let bound = if header.version == 1 { V1_MAX } else { V2_MAX };
            assert!(n <= data.len() && n <= bound, "{n} bytes of {}", data.len());
            assert_eq!(parse(&data[..n]), Ok(Some((header, n))));
            for cut in 0..n {
                assert_eq!(parse(&data[..cut]), Ok(None), "cut at {cut} of {n}");
            }
            let again = header.encode();
            assert_eq!(parse(&again), Ok(Some((header, again.len()))));
        }
        Ok(None) => {
            let bound = if data.first() == Some(&b'P') {
                V1_MAX
            } else {
                V2_MAX
            };
            assert!(
                data.len() < bound,
                "asks for more after {} bytes",
                data.len()
            );
        }
        Err(e) => {
            // The error says why in words.
            assert!(!e.to_string().is_empty());
        }
    }
});
