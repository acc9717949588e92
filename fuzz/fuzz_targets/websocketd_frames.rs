//! websocketd's reading of client frames ([`websocketd::frame::Reader`]) on
//! any bytes cut into any reads, against tungstenite's server (the codec it
//! replaced) on the same reads: the same messages, pings, pongs, close and
//! close code. The one difference allowed is websocketd's failing fast: on a
//! frame that the input leaves unfinished (tungstenite waits for its end),
//! websocketd may already have found the fault (an unmasked frame, invalid
//! UTF-8). Also checks that the output is exactly the messages, each as one
//! LibIPC frame. First byte: the reads' seed; second: the maximum size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libipc_fuzz::reads;
use websocketd::frame_reference::{Seen, ours, reference};

fuzz_target!(|data: &[u8]| {
    let [seed, max, rest @ ..] = data else {
        return;
    };
    let max = [16, 125, 200, 1 << 16][*max as usize % 4];
    let chunks = reads(rest, *seed, false);
    let ours = ours(&chunks, max);
    let theirs = reference(&chunks, max);
    if ours != theirs {
        // Failing fast: tungstenite waits for the rest of a frame.
        let waiting = !matches!(theirs.last(), Some(Seen::Close(_) | Seen::Fault(_)));
        let early =
            matches!(ours.last(), Some(Seen::Fault(_))) && ours[..ours.len() - 1] == theirs[..];
        assert!(waiting && early, "ours {ours:?}\ntungstenite {theirs:?}");
    }
});
