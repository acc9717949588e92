//! The frame decoder ([`Decoder`], both ways of taking payloads) and the
//! relay's [`Scanner`], on any byte stream cut into any reads, checked against
//! a reference walk of the frames: the same payloads, which re-encode to
//! exactly the bytes consumed; the same refusal at the same header; the same
//! account of an unfinished frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libipc::Error;
use libipc::frame::{self, DEFAULT_MAX_MESSAGE_SIZE, Decoder, Scanner};
use libipc_fuzz::{missing, read_start, reads, reference_frames};

const MAXES: [usize; 8] = [0, 1, 3, 4, 64, 255, 1000, DEFAULT_MAX_MESSAGE_SIZE];

fuzz_target!(|data: &[u8]| {
    let [pick, seed, stream @ ..] = data else {
        return;
    };
    let max = MAXES[usize::from(*pick) % MAXES.len()];
    let (frames, bad, consumed) = reference_frames(stream, max);
    let reads = reads(stream, *seed, true);

    match frame::decode(stream, max) {
        Ok(Some(range)) => assert_eq!(&stream[range], frames[0]),
        Ok(None) => assert!(frames.is_empty() && bad.is_none()),
        Err(_) => assert_eq!(bad, Some(0)),
    }

    // The decoder, fed read by read (taking payloads both ways in turn).
    let mut dec = Decoder::new(max);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut refused = false;
    for (i, read) in reads.iter().enumerate() {
        let before = got.len();
        let fed = if i % 2 == 0 {
            dec.feed(read, |p| got.push(p.to_vec()))
        } else {
            dec.feed_owned(read, |p| got.push(p))
        };
        match fed {
            Ok(n) => assert_eq!(n, got.len() - before),
            Err(Error::MessageTooLarge { len, max: m }) => {
                assert_eq!(m, max);
                assert!(len > max as u64);
                refused = true;
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(got, frames);
    assert_eq!(refused, bad.is_some());
    let mut again = Vec::new();
    for p in &got {
        frame::encode(p, &mut again).unwrap();
    }
    assert_eq!(again, stream[..consumed]);
    if !refused {
        let pending = stream.len() - consumed;
        assert_eq!(dec.pending(), pending);
        match dec.finish() {
            Ok(()) => assert_eq!(pending, 0),
            Err(Error::Truncated { missing: m }) => assert_eq!(m, missing(stream, consumed)),
            Err(e) => panic!("unexpected error: {e}"),
        }
        assert_eq!(dec.take_pending(), stream[consumed..]);
        assert_eq!(dec.pending(), 0);
    }

    // The scanner, over the same reads.
    let mut sc = Scanner::new(max);
    let (mut passed, mut ended) = (0, 0);
    for read in &reads {
        let (valid, scanned) = sc.scan_valid(read);
        passed += valid;
        match scanned {
            Ok(n) => {
                assert_eq!(valid, read.len());
                ended += n;
            }
            Err(Error::MessageTooLarge { .. }) => {
                // Everything before the bad header is passed on: its first
                // bytes too, when an earlier read carried them.
                let at = bad.expect("refused without a bad header");
                assert_eq!(passed, at.max(read_start(&reads, at + 3)));
                return;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(bad.is_none());
    assert_eq!(ended, frames.len());
    assert_eq!(sc.at_boundary(), consumed == stream.len());
    assert_eq!(sc.missing(), missing(stream, consumed));
});
