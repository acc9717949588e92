//! The PROXY protocol (versions 1 and 2), as HAProxy, nginx, AWS and most other
//! TCP load balancers send it: a header in front of the client's first byte that
//! says who the client really is, since the daemon only sees the balancer.
//!
//! [`parse`] is sans-I/O: it reads a header from the start of what arrived so
//! far, asks for more when the header is incomplete, and refuses anything else
//! (a PROXY header is believed only from a balancer the operator trusts, see
//! [`Cidr`], so whatever such a peer sends that is not a header is an error).
//!
//! Reference: <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Longest version 1 header, `\r\n` included (the specification's bound).
pub const V1_MAX: usize = 107;
/// Version 2 headers start with these 12 bytes.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Length of a version 2 header before its addresses.
const V2_FIXED: usize = 16;

/// What a PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The protocol version (1 or 2).
    pub version: u8,
    /// The client and the address it connected to, for a proxied TCP
    /// connection. `None` for a connection the balancer made on its own (a v2
    /// LOCAL health check) or of an unknown kind (v1 `UNKNOWN`, v2 `UNSPEC` or
    /// unix sockets): the connection's own peer is then the client.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// A v2 LOCAL header: the balancer's own connection (a health check),
    /// not a client's.
    pub local: bool,
}

impl Header {
    /// The client's address, if the header gave one.
    pub fn source(&self) -> Option<SocketAddr> {
        self.addresses.map(|(s, _)| s)
    }

    /// The header as a balancer would send it (for tests and for daemons that
    /// forward it).
    pub fn encode(&self) -> Vec<u8> {
        match self.version {
            1 => match self.addresses {
                Some((s, d)) => {
                    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
                    let (sip, dip) = (s.ip(), d.ip());
                    let (sp, dp) = (s.port(), d.port());
                    format!("PROXY {family} {sip} {dip} {sp} {dp}\r\n").into_bytes()
                }
                None => b"PROXY UNKNOWN\r\n".to_vec(),
            },
            _ => {
                let mut out = V2_SIGNATURE.to_vec();
                let mut body = Vec::new();
                let (command, family) = match self.addresses {
                    Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
                        body.extend_from_slice(&s.ip().octets());
                        body.extend_from_slice(&d.ip().octets());
                        body.extend_from_slice(&s.port().to_be_bytes());
                        body.extend_from_slice(&d.port().to_be_bytes());
                        (0x21, 0x11)
                    }
                    Some((s, d)) => {
                        body.extend_from_slice(&v6(s.ip()).octets());
                        body.extend_from_slice(&v6(d.ip()).octets());
                        body.extend_from_slice(&s.port().to_be_bytes());
                        body.extend_from_slice(&d.port().to_be_bytes());
                        (0x21, 0x21)
                    }
                    None if self.local => (0x20, 0x00),
                    None => (0x21, 0x00),
                };
                out.push(command);
                out.push(family);
                out.extend_from_slice(&(body.len() as u16).to_be_bytes());
                out.extend_from_slice(&body);
                out
            }
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Why a PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad PROXY protocol header: {0}")]
pub struct BadHeader(pub &'static str);

/// Reads a PROXY header (v1 or v2) from the start of `buf`. Returns the header
/// and its length in bytes (what follows is the client's own data), `Ok(None)`
/// while `buf` is a correct but incomplete start of a header.
///
/// Never asks for more than a v1 header's 107 bytes, or a v2 header's 16 bytes
/// plus its declared length (at most 64 KiB), before deciding.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, BadHeader> {
    const V1: &[u8] = b"PROXY ";
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first == V1[0] {
        if !prefix_of(buf, V1) {
            return Err(BadHeader("not a PROXY header"));
        }
        return parse_v1(buf);
    }
    if first == V2_SIGNATURE[0] {
        if !prefix_of(buf, &V2_SIGNATURE) {
            return Err(BadHeader("not a PROXY header"));
        }
        return parse_v2(buf);
    }
    Err(BadHeader("expected a PROXY header first"))
}

/// `buf` and `sig` agree on their common length.
fn prefix_of(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, BadHeader> {
    // The CR at the latest at byte 106, so that CRLF ends by byte 107.
    let window = &buf[..buf.len().min(V1_MAX - 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if buf.len() >= V1_MAX - 1 {
            Err(BadHeader("v1 header longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    match buf.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(BadHeader("v1 header not ended by CRLF")),
    }
    let line = std::str::from_utf8(&buf[..cr]).map_err(|_| BadHeader("v1 header not ASCII"))?;
    let mut words = line.split(' ');
    words.next(); // "PROXY"
    let addresses = match words.next() {
        // The rest of an UNKNOWN line is to be ignored.
        Some("UNKNOWN") => None,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || words.next().ok_or(BadHeader("v1 header too short"));
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            if words.next().is_some() {
                return Err(BadHeader("v1 header has extra fields"));
            }
            let ip = |s: &str| -> Result<IpAddr, BadHeader> {
                let ip = if family == "TCP4" {
                    Ipv4Addr::from_str(s).map(IpAddr::V4)
                } else {
                    // `::ffff:a.b.c.d` is the IPv4 client it stands for, as in v2.
                    Ipv6Addr::from_str(s).map(|a| a.to_canonical())
                };
                ip.map_err(|_| BadHeader("v1 address does not match its family"))
            };
            let port = |s: &str| -> Result<u16, BadHeader> {
                // Decimal, no sign, no leading zero (the specification's form).
                let canonical = !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s == "0" || !s.starts_with('0'));
                canonical
                    .then(|| s.parse().ok())
                    .flatten()
                    .ok_or(BadHeader("v1 port is not a number from 0 to 65535"))
            };
            Some((
                SocketAddr::new(ip(src)?, port(sport)?),
                SocketAddr::new(ip(dst)?, port(dport)?),
            ))
        }
        _ => return Err(BadHeader("v1 family is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some((
        Header {
            version: 1,
            addresses,
            local: false,
        },
        cr + 2,
    )))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, BadHeader> {
    if buf.len() < V2_FIXED {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(BadHeader("v2 version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(BadHeader("v2 command is neither LOCAL nor PROXY")),
    };
    let family = buf[13];
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let Some(body) = buf.get(V2_FIXED..V2_FIXED + len) else {
        return Ok(None);
    };
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let addresses = match family {
        // Whatever a LOCAL header carries is to be ignored.
        _ if local => None,
        // TCP over IPv4.
        0x11 => {
            if len < 12 {
                return Err(BadHeader("v2 IPv4 addresses cut short"));
            }
            let ip = |at: usize| IpAddr::from([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        // TCP over IPv6.
        0x21 => {
            if len < 36 {
                return Err(BadHeader("v2 IPv6 addresses cut short"));
            }
            let ip = |at: usize| {
                let octets: [u8; 16] = body[at..at + 16].try_into().expect("16 bytes");
                Ipv6Addr::from(octets).to_canonical()
            };
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        // UNSPEC, or unix stream sockets: no address to believe.
        0x00 | 0x31 => None,
        0x12 | 0x22 | 0x32 => return Err(BadHeader("v2 header for a datagram connection")),
        _ => return Err(BadHeader("v2 address family unknown")),
    };
    // TLVs after the addresses (SSL details, unique IDs) are skipped.
    Ok(Some((
        Header {
            version: 2,
            addresses,
            local,
        },
        V2_FIXED + len,
    )))
}

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address,
/// `192.0.2.7`): the balancers whose PROXY headers a daemon believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4 client seen on an IPv6 socket
    /// (`::ffff:a.b.c.d`) counts as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(ip)
            .map_err(|_| format!("{s:?}: not an IP address or network (like 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr {
            addr: addr.to_canonical(),
            prefix: if addr.to_canonical() != addr {
                // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
                prefix.saturating_sub(96)
            } else {
                prefix
            },
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let (h, n) = parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(n, 41);
        assert_eq!(h.source(), Some(addr("192.0.2.7:56324")));
        assert_eq!(h.addresses.unwrap().1, addr("10.0.0.1:443"));
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source(), Some(addr("[2001:db8::1]:1")));
        let (h, n) = parse(b"PROXY UNKNOWN whatever follows\r\nx")
            .unwrap()
            .unwrap();
        assert_eq!((h.source(), n), (None, 32));
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443 9\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 0443 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +1 443\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 443\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 443\rX",
            b"PROXZ",
            b"GET / HTTP/1.1\r\n",
            b"\0\0\0\x04echo",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // No CRLF within 107 bytes.
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(
            parse(&long),
            Err(BadHeader("v1 header longer than 107 bytes"))
        );
        assert_eq!(parse(&long[..105]), Ok(None));
        assert!(parse(&long[..106]).is_err());
    }

    #[test]
    fn v2_proxy_local_and_tlvs() {
        let h = Header {
            version: 2,
            addresses: Some((addr("192.0.2.7:56324"), addr("10.0.0.1:443"))),
            local: false,
        };
        let mut wire = h.encode();
        // A TLV (type 0x05, unique id) after the addresses: skipped.
        wire[15] += 7;
        wire.extend_from_slice(&[0x05, 0x00, 0x04, 1, 2, 3, 4]);
        let len = wire.len();
        wire.extend_from_slice(b"data");
        assert_eq!(parse(&wire), Ok(Some((h, len))));
        let local = Header {
            version: 2,
            addresses: None,
            local: true,
        };
        assert_eq!(parse(&local.encode()), Ok(Some((local, 16))));
        // An IPv4-mapped IPv6 source is the IPv4 address.
        let mapped = Header {
            version: 2,
            addresses: Some((addr("[::ffff:192.0.2.7]:1"), addr("[::1]:2"))),
            local: false,
        };
        let (got, _) = parse(&mapped.encode()).unwrap().unwrap();
        assert_eq!(got.source(), Some(addr("192.0.2.7:1")));
    }

    #[test]
    fn v2_refusals() {
        let good = Header {
            version: 2,
            addresses: Some((addr("192.0.2.7:1"), addr("10.0.0.1:2"))),
            local: false,
        }
        .encode();
        let with = |at: usize, byte: u8| {
            let mut w = good.clone();
            w[at] = byte;
            w
        };
        assert!(parse(&with(12, 0x11)).is_err(), "version 1 in a v2 header");
        assert!(parse(&with(12, 0x22)).is_err(), "command 2");
        assert!(parse(&with(13, 0x12)).is_err(), "UDP");
        assert!(parse(&with(13, 0x41)).is_err(), "family 4");
        assert!(parse(&with(15, 11)).is_err(), "addresses cut short");
        assert!(parse(&with(11, b'X')).is_err(), "signature");
    }

    #[test]
    fn cidr() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.200.1.2".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped, net);
        for bad in ["10.0.0.0/33", "10.0.0/8", "::/129", "x", "10.0.0.0/", "/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    fn any_header() -> impl Strategy<Value = Header> {
        let ip = prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::from(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| Ipv6Addr::from(a).to_canonical()),
        ];
        let pair = (ip.clone(), any::<u16>(), ip, any::<u16>()).prop_filter_map(
            "one family",
            |(s, sp, d, dp)| {
                (s.is_ipv4() == d.is_ipv4())
                    .then(|| (SocketAddr::new(s, sp), SocketAddr::new(d, dp)))
            },
        );
        (1u8..=2, proptest::option::of(pair), any::<bool>()).prop_map(
            |(version, addresses, local)| Header {
                version,
                addresses,
                // Only a v2 header without addresses can say LOCAL.
                local: local && version == 2 && addresses.is_none(),
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Any header, cut anywhere: incomplete until its last byte, then
        /// exactly itself, and the client's data after it is left alone.
        #[test]
        fn round_trip_under_cuts(h in any_header(), data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let wire = h.encode();
            for cut in 0..wire.len() {
                prop_assert_eq!(parse(&wire[..cut]), Ok(None));
            }
            let mut all = wire.clone();
            all.extend_from_slice(&data);
            prop_assert_eq!(parse(&all), Ok(Some((h, wire.len()))));
        }

        /// Arbitrary bytes never panic, and a header found is never longer
        /// than the input or the specification's bounds.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), sig in any::<bool>(), v1 in any::<bool>()) {
            let mut input = Vec::new();
            if sig {
                input.extend_from_slice(if v1 { b"PROXY ".as_slice() } else { &V2_SIGNATURE });
            }
            input.extend_from_slice(&bytes);
            match parse(&input) {
                Ok(Some((h, n))) => {
                    let bound = if h.version == 1 { V1_MAX } else { V2_FIXED + 0xffff };
                    prop_assert!(n <= input.len() && n <= bound, "{n} bytes of {}", input.len());
                }
                Ok(None) => {
                    let bound = if input.starts_with(b"P") { V1_MAX } else { V2_FIXED + 0xffff };
                    prop_assert!(input.len() < bound, "asks for more after {} bytes", input.len());
                }
                Err(_) => {}
            }
        }
    }
}
