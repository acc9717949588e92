//! Helpers shared by the fuzz targets in `fuzz_targets/`.

/// Cuts `data` into reads as a socket might deliver them: lengths drawn from
/// `seed` (a small xorshift generator), so that the fuzzer explores cut points
/// by mutating one byte. Seed 0 gives the whole of `data` in one read.
/// `empty_reads`: whether zero-length reads may appear (a transport is never
/// handed one; a decoder may be).
pub fn reads(data: &[u8], seed: u8, empty_reads: bool) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data];
    }
    let mut state = u32::from(seed).wrapping_mul(0x9e37_79b9) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        // Mostly short reads (headers split byte by byte), sometimes long ones.
        let len = if state % 8 == 0 {
            (state >> 8) as usize % 512
        } else {
            (state >> 8) as usize % 6
        };
        let len = len.min(rest.len());
        if len > 0 || empty_reads {
            out.push(&rest[..len]);
        }
        rest = &rest[len..];
    }
    out
}

/// The frames at the start of `stream`, walked by the specification alone (a
/// 4-byte big-endian length, then that many bytes): the payloads of the whole
/// frames before the first header announcing more than `max`, where that
/// header starts (if there is one), and where the last whole frame ends.
pub fn reference_frames(stream: &[u8], max: usize) -> (Vec<&[u8]>, Option<usize>, usize) {
    let mut payloads = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        let Some(header) = rest.first_chunk::<4>() else {
            return (payloads, None, at);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > max {
            return (payloads, Some(at), at);
        }
        let Some(payload) = rest.get(4..4 + len) else {
            return (payloads, None, at);
        };
        payloads.push(payload);
        at += 4 + len;
    }
}

/// Bytes missing to complete the frame that starts at `stream[at..]` and runs
/// past its end (0 if `at` is the end).
pub fn missing(stream: &[u8], at: usize) -> usize {
    let rest = &stream[at..];
    match rest.first_chunk::<4>() {
        _ if rest.is_empty() => 0,
        None => 4 - rest.len(),
        Some(header) => 4 + u32::from_be_bytes(*header) as usize - rest.len(),
    }
}

/// Where the read holding byte `at` of the stream starts.
pub fn read_start(reads: &[&[u8]], at: usize) -> usize {
    let mut start = 0;
    for r in reads {
        if at < start + r.len() {
            return start;
        }
        start += r.len();
    }
    start
}
