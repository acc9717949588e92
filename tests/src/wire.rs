//! Bytes on the wire: LibIPC frames and test payloads.

/// One LibIPC frame: 4-byte big-endian length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payload under 4 GiB");
    [&len.to_be_bytes()[..], payload].concat()
}

/// A payload of `len` bytes that tells whose (`seed`) and which it is, every
/// byte value included (a binary-safe check).
pub fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k.wrapping_mul(31) ^ seed.wrapping_mul(7919) ^ (k >> 8)) as u8)
        .collect()
}
