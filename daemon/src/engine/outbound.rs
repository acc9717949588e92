//! Where a daemon's outbound service may connect: the operator's allow list
//! (`--outbound-allow`), and the resolution of a URI's authority.
//!
//! The outbound service is reachable by local programs only (it listens in
//! `$RUNDIR/.outbound/`, which no network client can name); this list bounds what
//! those programs can reach through it, so that the daemon host's network is not
//! open to every member of the run directory's group.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use libipc::proxy::Cidr;

/// One entry of an outbound allow list: a host (an address, a network, a host
/// name, `*.domain`, or `*` for any) and optionally a port.
///
/// Written `HOST[:PORT]`, `CIDR[:PORT]` or, for IPv6 with a port,
/// `[ADDR]:PORT` / `[CIDR]:PORT`: `10.0.0.0/8`, `192.0.2.7:9000`, `2001:db8::/32`,
/// `[::1]:9000`, `db.example.org:9443`, `*.example.org`, `*:9443`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Any,
    /// Matches the address the URI's host resolves to (or is).
    Net(Cidr),
    /// Matches the URI's host name as written (lower case, no final dot).
    Name(String),
    /// `*.example.org`: any name ending in `.example.org` (not the domain itself).
    Suffix(String),
}

impl Destination {
    /// Whether a connection to `addr`, asked for as host `name` (as written in
    /// the URI), is allowed by this entry.
    pub fn allows(&self, name: &str, addr: SocketAddr) -> bool {
        self.may_allow(name, addr.port())
            && match &self.host {
                Host::Net(net) => net.contains(addr.ip()),
                _ => true,
            }
    }

    /// Whether this entry may allow host `name` (as written) on `port`
    /// once it is resolved: entries on addresses need the address to say.
    fn may_allow(&self, name: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.host {
            Host::Any | Host::Net(_) => true,
            Host::Name(n) => *n == normal_name(name),
            Host::Suffix(s) => normal_name(name).ends_with(s.as_str()),
        }
    }
}

/// A host name as compared: lower case, without a final dot.
fn normal_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("{s:?}: {why} (expected HOST, CIDR, HOST:PORT or [IPv6]:PORT)");
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad("bad port"));
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or_else(|| bad("no closing ']'"))?;
            let port = match after {
                "" => None,
                _ => Some(port(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("junk after ']'"))?,
                )?),
            };
            (Host::Net(inner.parse().map_err(|e: String| bad(&e))?), port)
        } else if let Ok(net) = s.parse::<Cidr>() {
            // Before splitting at ':', which IPv6 addresses hold.
            (Host::Net(net), None)
        } else {
            let (host, port) = match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(port(p)?)),
                None => (s, None),
            };
            let host = match host.parse::<Cidr>() {
                Ok(net) if !host.contains(':') => Host::Net(net),
                Ok(_) => return Err(bad("an IPv6 address with a port goes in brackets")),
                Err(_) => {
                    name_rule(host).ok_or_else(|| bad("not an address, network or host name"))?
                }
            };
            (host, port)
        };
        Ok(Destination { host, port })
    }
}

/// `*`, `*.domain` or a host name (letters, digits, `-`, `.`).
fn name_rule(host: &str) -> Option<Host> {
    if host == "*" {
        return Some(Host::Any);
    }
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let name = normal_name(name);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then(|| {
        if wild {
            Host::Suffix(format!(".{name}"))
        } else {
            Host::Name(name)
        }
    })
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (Host::Net(net), Some(p)) => write!(f, "[{net}]:{p}"),
            (Host::Net(net), None) => write!(f, "{net}"),
            (Host::Any, _) => f.write_str("*"),
            (Host::Name(n), _) => f.write_str(n),
            (Host::Suffix(s), _) => write!(f, "*{s}"),
        }?;
        match (&self.host, self.port) {
            (Host::Net(_), _) | (_, None) => Ok(()),
            (_, Some(p)) => write!(f, ":{p}"),
        }
    }
}

/// The host of `host:port` or `[v6]:port`.
pub(super) fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// `authority` with the scheme's default port when it has none (`wss://host/x`
/// is port 443, as in a browser); as it is for schemes with no default.
pub(super) fn with_default_port<'a>(authority: &'a str, scheme: &str) -> Cow<'a, str> {
    let port = match scheme {
        "ws" => 80,
        "wss" => 443,
        _ => return Cow::Borrowed(authority),
    };
    let has_port = match authority.rsplit_once(']') {
        Some((_, after)) => after.starts_with(':'),
        None => authority.contains(':'),
    };
    if has_port {
        Cow::Borrowed(authority)
    } else {
        Cow::Owned(format!("{authority}:{port}"))
    }
}

/// Whether `allow` permits the target `host` (as written) without its
/// addresses, which only the HTTP proxy it goes through will look up: an
/// address target by its address, a name only by a name entry (`*`, a name,
/// `*.domain`) with its port; a network entry cannot vouch for a name whose
/// address the daemon never sees.
pub(super) fn allowed_unresolved(
    host: &str,
    target: Target<'_>,
    allow: &[Destination],
) -> Result<(), String> {
    let refused = || "destination not allowed".to_owned();
    match target {
        Target::Addr(addr) => allowed(host, vec![addr], allow).map(drop),
        Target::Name { .. } if allow.is_empty() => Ok(()),
        Target::Name { host, port } => allow
            .iter()
            .any(|d| !matches!(d.host, Host::Net(_)) && d.may_allow(host, port))
            .then_some(())
            .ok_or_else(refused),
    }
}

/// Allowed addresses tried for one destination, at most: a name with more is
/// not worth more connection attempts.
pub(super) const MAX_ADDRESSES: usize = 8;

/// Longest host name looked up (the DNS limit).
const MAX_HOST: usize = 253;

/// What a URI's authority names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target<'a> {
    /// An IP literal (`192.0.2.7:9000`, `[::1]:9000`): used as it is.
    Addr(SocketAddr),
    /// A host name, for the resolver.
    Name { host: &'a str, port: u16 },
}

/// Parses `host:port` or `[v6]:port`; `allow` refuses a name no entry could
/// allow before it is looked up (nobody learns what it resolves to).
pub(super) fn target<'a>(authority: &'a str, allow: &[Destination]) -> Result<Target<'a>, String> {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok(Target::Addr(addr));
    }
    let shown: String = authority.chars().take(80).collect();
    let (host, port) = authority
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("{shown}: expected HOST:PORT"))?;
    let valid = !host.is_empty()
        && host.len() <= MAX_HOST
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !valid {
        return Err(format!("{shown}: invalid host name"));
    }
    if !allow.is_empty() && !allow.iter().any(|d| d.may_allow(host, port)) {
        return Err("destination not allowed".to_owned());
    }
    Ok(Target::Name { host, port })
}

/// The addresses `allow` permits among `addrs` (which host `name` resolved
/// to), in the resolver's order, at most [`MAX_ADDRESSES`]; all of them if
/// `allow` is empty.
pub(super) fn allowed(
    name: &str,
    addrs: Vec<SocketAddr>,
    allow: &[Destination],
) -> Result<Vec<SocketAddr>, String> {
    if addrs.is_empty() {
        return Err(format!("{name} has no address"));
    }
    let picked: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| allow.is_empty() || allow.iter().any(|d| d.allows(name, *a)))
        .take(MAX_ADDRESSES)
        .collect();
    if picked.is_empty() {
        return Err("destination not allowed".to_owned());
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Destination {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_in_every_documented_form() {
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("192.0.2.7:9000", "[192.0.2.7/32]:9000"),
            ("10.0.0.0/8:9000", "[10.0.0.0/8]:9000"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
            ("[::1]:9000", "[::1/128]:9000"),
            ("[2001:db8::/32]:443", "[2001:db8::/32]:443"),
            ("DB.Example.org.", "db.example.org"),
            ("db.example.org:9443", "db.example.org:9443"),
            ("*.example.org", "*.example.org"),
            ("*:9443", "*:9443"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(d(text).to_string(), shown, "{text}");
        }
        for bad in [
            "",
            ":80",
            "h:",
            "h:99999",
            "[::1",
            "[::1]x",
            "a b",
            "a/b",
            "*.",
            "x..y",
            "10.0.0.0/33",
            "::1:80x",
        ] {
            assert!(bad.parse::<Destination>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn entries_match_address_name_and_port() {
        let net = d("10.0.0.0/8:9000");
        assert!(net.allows("10.1.2.3", a("10.1.2.3:9000")));
        // A name that resolves into the network is the address it resolves to.
        assert!(net.allows("db.internal", a("10.1.2.3:9000")));
        assert!(!net.allows("10.1.2.3", a("10.1.2.3:9001")));
        assert!(!net.allows("11.0.0.1", a("11.0.0.1:9000")));

        let name = d("db.example.org");
        assert!(name.allows("DB.example.org.", a("192.0.2.1:1")));
        assert!(!name.allows("db.example.org.evil", a("192.0.2.1:1")));
        // An IP literal is not the name, even where the name resolves.
        assert!(!name.allows("192.0.2.1", a("192.0.2.1:1")));

        let wild = d("*.example.org:443");
        assert!(wild.allows("a.b.example.org", a("192.0.2.1:443")));
        assert!(!wild.allows("example.org", a("192.0.2.1:443")));
        assert!(!wild.allows("badexample.org", a("192.0.2.1:443")));
        assert!(!wild.allows("a.example.org", a("192.0.2.1:80")));

        let v6 = d("[::1]:9000");
        assert!(v6.allows("::1", a("[::1]:9000")));
        assert!(!v6.allows("::1", a("127.0.0.1:9000")));
        assert!(d("*:9000").allows("anything", a("203.0.113.1:9000")));
    }

    #[test]
    fn resolution_picks_the_allowed_addresses_or_refuses() {
        assert_eq!(
            target("127.0.0.1:5", &[]),
            Ok(Target::Addr(a("127.0.0.1:5")))
        );
        assert_eq!(target("[::1]:5", &[]), Ok(Target::Addr(a("[::1]:5"))));
        assert_eq!(
            target("Db.example:5", &[]),
            Ok(Target::Name {
                host: "Db.example",
                port: 5
            })
        );
        let only = [d("127.0.0.2")];
        assert_eq!(
            allowed("127.0.0.1", vec![a("127.0.0.1:5")], &only).unwrap_err(),
            "destination not allowed"
        );
        // In the resolver's order, those outside the list left out.
        let addrs = vec![a("[::1]:5"), a("127.0.0.2:5"), a("127.0.0.1:5")];
        assert_eq!(
            allowed("localhost", addrs.clone(), &only),
            Ok(vec![a("127.0.0.2:5")])
        );
        assert_eq!(allowed("localhost", addrs.clone(), &[]), Ok(addrs));
        assert!(allowed("h", vec![], &[]).is_err());
        let many = (1..=20).map(|p| a(&format!("127.0.0.1:{p}"))).collect();
        assert_eq!(allowed("h", many, &[]).unwrap().len(), MAX_ADDRESSES);
        assert_eq!(host_of("[::1]:5"), "::1");
        assert_eq!(host_of("h.example:5"), "h.example");
    }

    #[test]
    fn websocket_schemes_have_default_ports() {
        assert_eq!(with_default_port("h.example", "wss"), "h.example:443");
        assert_eq!(with_default_port("h.example", "ws"), "h.example:80");
        assert_eq!(with_default_port("h.example:8080", "wss"), "h.example:8080");
        assert_eq!(with_default_port("[::1]", "wss"), "[::1]:443");
        assert_eq!(with_default_port("[::1]:9", "wss"), "[::1]:9");
        // tcp and tls have no default: the port is required, as before.
        assert_eq!(with_default_port("h.example", "tcp"), "h.example");
    }

    #[test]
    fn through_a_proxy_names_are_judged_by_name_entries_only() {
        let allow = [d("10.0.0.0/8"), d("db.example.org:9443"), d("*.corp:443")];
        let name = |h, p| Target::Name { host: h, port: p };
        assert!(allowed_unresolved("db.example.org", name("db.example.org", 9443), &allow).is_ok());
        assert!(allowed_unresolved("a.corp", name("a.corp", 443), &allow).is_ok());
        // A network entry would need the address the proxy alone will see.
        assert!(allowed_unresolved("in.ten", name("in.ten", 80), &allow).is_err());
        assert!(allowed_unresolved("a.corp", name("a.corp", 80), &allow).is_err());
        // An address target is judged by its address.
        let addr = Target::Addr(a("10.1.2.3:80"));
        assert!(allowed_unresolved("10.1.2.3", addr, &allow).is_ok());
        let addr = Target::Addr(a("192.0.2.1:80"));
        assert!(allowed_unresolved("192.0.2.1", addr, &allow).is_err());
        assert!(allowed_unresolved("x", name("x", 1), &[]).is_ok());
    }

    #[test]
    fn names_no_entry_could_allow_are_refused_before_any_lookup() {
        let allow = [d("db.example.org:9443"), d("10.0.0.0/8:80")];
        // A name entry decides on the name; an address entry needs the address.
        assert!(target("db.example.org:9443", &allow).is_ok());
        assert!(target("other.example.org:80", &allow).is_ok());
        for refused in ["other.example.org:9443", "db.example.org:22"] {
            assert_eq!(
                target(refused, &allow).unwrap_err(),
                "destination not allowed",
                "{refused}"
            );
        }
        // Bounded and quoted in short: the answer cannot grow with the request.
        let long = format!("{}:80", "a".repeat(300));
        let err = target(&long, &[]).unwrap_err();
        assert!(
            err.ends_with("invalid host name") && err.len() < 120,
            "{err}"
        );
        for bad in ["h", "h:x", ":80", "a b:80", "h:99999"] {
            assert!(target(bad, &[]).is_err(), "{bad}");
        }
    }
}
