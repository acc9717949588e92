//! The PROXY protocol parser ([`parse`], v1 and v2) on any bytes. Checks that a
//! header found is no longer than the input or the specification's bounds,
//! stands on its own (the same header from its own bytes, and every shorter
//! start of it asks for more), says what its bytes say (read again here from
//! the raw input, field by field, as the specification lays them out: the v1
//! words, the v2 fixed offsets) and survives being encoded again; that "more,
//! please" never comes past the bounds.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use libipc::proxy::{Header, V1_MAX, parse};

/// A v2 header: 16 fixed bytes, then at most 64 KiB.
const V2_MAX: usize = 16 + 0xffff;

/// A v1 port: decimal digits, no leading zero, at most 65535.
fn v1_port(s: &[u8]) -> Option<u16> {
    let canonical = !s.is_empty() && (s == b"0" || s[0] != b'0');
    let mut n: u32 = 0;
    for &b in s {
        if !b.is_ascii_digit() || n > 65535 {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    (canonical && n <= 65535).then_some(n as u16)
}

/// A v1 TCP4 address: four decimal bytes, no leading zeros.
fn v1_ipv4(s: &[u8]) -> Option<IpAddr> {
    let parts: Vec<&[u8]> = s.split(|&b| b == b'.').collect();
    let mut octets = [0; 4];
    if parts.len() != 4 {
        return None;
    }
    for (o, p) in octets.iter_mut().zip(parts) {
        *o = u8::try_from(v1_port(p).filter(|_| p.len() <= 3)?).ok()?;
    }
    Some(IpAddr::from(octets))
}

/// An IPv6 address as a client is known by: an IPv4-mapped one is that IPv4
/// address (the parser's documented reading, in v1 and v2 alike).
fn client_ip(octets: [u8; 16]) -> IpAddr {
    match octets {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d] => IpAddr::from([a, b, c, d]),
        _ => IpAddr::from(octets),
    }
}

/// What the v1 line `PROXY ...\r\n` of `head` says (`head` is the whole header).
fn v1_reading(head: &[u8]) -> Header {
    let line = head
        .strip_prefix(b"PROXY ")
        .and_then(|l| l.strip_suffix(b"\r\n"))
        .expect("PROXY ...\\r\\n");
    // Ended by the first CR (an UNKNOWN line's rest may hold anything else).
    assert!(!line.contains(&b'\r'), "ended by its first CR");
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let addresses = match words[0] {
        b"UNKNOWN" => None,
        family @ (b"TCP4" | b"TCP6") => {
            let [_, src, dst, sport, dport] = words[..] else {
                panic!("a TCP line of {} words", words.len());
            };
            let ip = |s: &[u8]| {
                if family == b"TCP4" {
                    v1_ipv4(s).expect("an IPv4 address")
                } else {
                    let text = std::str::from_utf8(s).expect("ASCII");
                    let ip: Ipv6Addr = text.parse().expect("an IPv6 address");
                    client_ip(ip.octets())
                }
            };
            let port = |s: &[u8]| v1_port(s).expect("a port");
            Some((
                SocketAddr::new(ip(src), port(sport)),
                SocketAddr::new(ip(dst), port(dport)),
            ))
        }
        other => panic!("family {other:?}"),
    };
    Header {
        version: 1,
        addresses,
        local: false,
    }
}

/// What the v2 header `head` says, from its fixed offsets.
fn v2_reading(head: &[u8]) -> Header {
    assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(head[12] >> 4, 2, "version");
    let local = match head[12] & 0x0f {
        0 => true,
        1 => false,
        c => panic!("command {c}"),
    };
    let len = usize::from(head[14]) << 8 | usize::from(head[15]);
    assert_eq!(head.len(), 16 + len);
    let at = |i: usize| u16::from(head[i]) << 8 | u16::from(head[i + 1]);
    let addresses = match head[13] {
        _ if local => None,
        0x11 => {
            let ip = |i: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    head[i],
                    head[i + 1],
                    head[i + 2],
                    head[i + 3],
                ))
            };
            Some((
                SocketAddr::new(ip(16), at(24)),
                SocketAddr::new(ip(20), at(26)),
            ))
        }
        0x21 => {
            let ip = |i: usize| client_ip(head[i..i + 16].try_into().unwrap());
            Some((
                SocketAddr::new(ip(16), at(48)),
                SocketAddr::new(ip(32), at(50)),
            ))
        }
        0x00 | 0x31 => None,
        family => panic!("family {family:#x}"),
    };
    Header {
        version: 2,
        addresses,
        local,
    }
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Some((header, n))) => {
            let bound = if header.version == 1 { V1_MAX } else { V2_MAX };
            assert!(n <= data.len() && n <= bound, "{n} bytes of {}", data.len());
            let reading = match header.version {
                1 => v1_reading(&data[..n]),
                _ => v2_reading(&data[..n]),
            };
            assert_eq!(header, reading);
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
