//! Which hosts and browser origins are this daemon's own: the Host check and
//! the Origin check of every request.
//!
//! A DNS rebinding gives an attacker's page a name that resolves to this
//! daemon, so the Host header and the page's origin are then both the
//! attacker's name: comparing one with the other proves nothing. Both are
//! compared instead with names the daemon knows to be its own: IP addresses
//! (a rebinding needs a name: a page's origin is the name in its URL),
//! `localhost` (browsers never ask DNS for it) and the operator's
//! `--public-host` names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which browser origins may open WebSockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// This daemon's own origins (see [`Site::check_origin`]).
    Own,
    /// Exactly these origins (`scheme://host[:port]`, compared without case).
    List(Vec<String>),
    /// Any origin (--allow-any-origin).
    Any,
}

/// A `--public-host` value: a DNS name clients reach the daemon by, and the
/// port they use, if only one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicHost {
    name: String,
    port: Option<u16>,
}

/// Parses a `--public-host` value: `NAME` or `NAME:PORT`.
pub fn parse_public_host(s: &str) -> Result<PublicHost, String> {
    match Authority::parse(s) {
        Some(Authority {
            host: Host::Name(name),
            port,
        }) => Ok(PublicHost { name, port }),
        Some(_) => Err(format!(
            "{s:?}: an IP address needs no --public-host (every IP address is accepted)"
        )),
        None => Err(format!(
            "{s:?}: a public host is NAME or NAME:PORT, e.g. example.org or example.org:8443"
        )),
    }
}

/// Who this daemon is, and what it accepts: the part of the policy that
/// depends on where it listens.
#[derive(Debug, Clone)]
pub struct Site {
    /// The addresses it listens on, as bound (the port picked for port 0,
    /// the sockets systemd passed).
    pub listeners: Vec<SocketAddr>,
    /// --public-host.
    pub public: Vec<PublicHost>,
    /// --allow-any-host: the Host check accepts any well-formed Host.
    pub any_host: bool,
    /// Which pages may open WebSockets.
    pub origins: Origins,
    /// The listener speaks TLS (wss, https origins).
    pub tls: bool,
}

/// A refused request: its HTTP status and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub why: String,
}

fn rejection(status: u16, why: String) -> Rejection {
    Rejection { status, why }
}

/// The host of a Host header or an origin: lowercase, no trailing dot, IPv6
/// without brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// `host[:port]`, as in a Host header or after an origin's `scheme://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    host: Host,
    port: Option<u16>,
}

impl Authority {
    /// `None` unless `s` is a host (a DNS name, an IPv4 address or an IPv6
    /// address in brackets) and an optional port.
    fn parse(s: &str) -> Option<Self> {
        let (host, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let (ip, after) = rest.split_once(']')?;
                let ip: Ipv6Addr = ip.parse().ok()?;
                (Host::Ip(ip.into()), after)
            }
            None => {
                let (host, port) = s.split_at(s.find(':').unwrap_or(s.len()));
                let host = host.strip_suffix('.').unwrap_or(host);
                let host = match host.parse::<Ipv4Addr>() {
                    Ok(ip) => Host::Ip(ip.into()),
                    Err(_) if is_dns_name(host) => Host::Name(host.to_ascii_lowercase()),
                    Err(_) => return None,
                };
                (host, port)
            }
        };
        let port = match port {
            "" | ":" => None,
            p => {
                let digits = p.strip_prefix(':')?;
                if !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(digits.parse().ok()?)
            }
        };
        Some(Authority { host, port })
    }

    /// Its port, or `default` when it names none.
    fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The port a URL of `scheme` means when it names none.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl Site {
    /// The Host check, on every request (WebSocket or static file): the
    /// request's Host header (all its values) must name this daemon, unless
    /// --allow-any-host. Returns the Host, for the Origin check.
    ///
    /// Refusals: 400 for no Host, several, or one that is not `host[:port]`
    /// (HTTP/1.1 requires exactly one); 421 Misdirected Request for a Host
    /// that is not this daemon's.
    pub fn check_host<'h>(
        &self,
        mut hosts: impl Iterator<Item = &'h str>,
    ) -> Result<Authority, Rejection> {
        let (Some(raw), None) = (hosts.next(), hosts.next()) else {
            return Err(rejection(400, "exactly one Host header is required".into()));
        };
        let raw = raw.trim();
        let Some(host) = Authority::parse(raw) else {
            return Err(rejection(400, format!("malformed Host {raw:?}")));
        };
        if self.any_host || self.is_own_host(&host) {
            Ok(host)
        } else {
            Err(rejection(
                421,
                format!("host {raw:?} is not this daemon's (see --public-host)"),
            ))
        }
    }

    /// An IP address or `localhost` at any port (a client that reaches the
    /// daemon by them cannot be a DNS rebinding, and a port forward may have
    /// changed the port), or a --public-host (at its port if it has one; a
    /// Host without a port then stands for 80 or 443, the scheme being
    /// unknown behind a TLS terminator).
    fn is_own_host(&self, host: &Authority) -> bool {
        match &host.host {
            Host::Ip(_) => true,
            Host::Name(name) if name == "localhost" => true,
            Host::Name(name) => self.public.iter().any(|p| {
                p.name == *name
                    && match (p.port, host.port) {
                        (None, _) => true,
                        (Some(want), Some(got)) => want == got,
                        (Some(want), None) => want == 80 || want == 443,
                    }
            }),
        }
    }

    /// The Origin check, on WebSocket upgrades: a request with no Origin is
    /// not from a browser page and passes; otherwise the Origin must be
    /// listed (--origin), or any (--allow-any-origin), or by default one of
    /// this daemon's own:
    ///
    /// - the Host of the request itself (same host and port), when that Host
    ///   is this daemon's by name (an IP address, `localhost`, a
    ///   --public-host), even with --allow-any-host;
    /// - `localhost`, or the address of a listener (a loopback address for a
    ///   wildcard one), at a listener's port;
    /// - a --public-host at its port (by default the scheme's).
    ///
    /// The scheme is the listener's (http for ws, https for wss); a
    /// --public-host's origins may also be https on a plain listener, which
    /// is then behind a TLS terminator. Refused with 403.
    pub fn check_origin(&self, origin: Option<&str>, host: &Authority) -> Result<(), Rejection> {
        let Some(origin) = origin.map(str::trim) else {
            return Ok(());
        };
        let allowed = match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
            Origins::Own => self.is_own_origin(origin, host),
        };
        if allowed {
            Ok(())
        } else {
            Err(rejection(403, format!("origin {origin:?} not allowed")))
        }
    }

    fn public_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a PublicHost> {
        self.public.iter().filter(move |p| p.name == name)
    }

    fn is_own_origin(&self, origin: &str, request_host: &Authority) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        let scheme = scheme.to_ascii_lowercase();
        let (Some(default), Some(page)) = (default_port(&scheme), Authority::parse(rest)) else {
            return false;
        };
        let port = page.port_or(default);
        let listener_scheme = scheme == if self.tls { "https" } else { "http" };
        let scheme_ok = listener_scheme
            || match &page.host {
                Host::Name(name) => {
                    !self.tls && scheme == "https" && self.public_named(name).next().is_some()
                }
                Host::Ip(_) => false,
            };
        if !scheme_ok {
            return false;
        }
        let same_as_request = page.host == request_host.host
            && port == request_host.port_or(default)
            && self.is_own_host(request_host);
        same_as_request
            || match &page.host {
                Host::Name(name) if name == "localhost" => {
                    self.listeners.iter().any(|l| l.port() == port)
                }
                Host::Name(name) => self
                    .public_named(name)
                    .any(|p| p.port.unwrap_or(default) == port),
                Host::Ip(ip) => self
                    .listeners
                    .iter()
                    .any(|l| l.port() == port && own_ip(l.ip()) == *ip),
            }
    }
}

/// The address a browser on this machine uses for a listener: its own, or
/// loopback for a wildcard one.
fn own_ip(listener: IpAddr) -> IpAddr {
    match listener {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain listener on `listen`, with `public` hosts, default origins.
    fn site(listen: &[&str], public: &[&str]) -> Site {
        Site {
            listeners: listen.iter().map(|a| a.parse().unwrap()).collect(),
            public: public
                .iter()
                .map(|p| parse_public_host(p).unwrap())
                .collect(),
            any_host: false,
            origins: Origins::Own,
            tls: false,
        }
    }

    fn host(site: &Site, host: &str) -> Result<Authority, u16> {
        site.check_host(std::iter::once(host)).map_err(|r| r.status)
    }

    /// Whether a page of `origin` may open a WebSocket whose request has `host`.
    fn origin_ok(site: &Site, host: &str, origin: &str) -> bool {
        let host = site.check_host(std::iter::once(host)).unwrap();
        site.check_origin(Some(origin), &host).is_ok()
    }

    #[test]
    fn a_dns_rebinding_is_refused_by_host_and_by_origin() {
        let s = site(&["127.0.0.1:18085"], &[]);
        assert_eq!(host(&s, "evil.example:18085").unwrap_err(), 421);
        // Even when the Host is let through, its name is not an origin.
        let any = Site {
            any_host: true,
            ..s.clone()
        };
        assert!(!origin_ok(
            &any,
            "evil.example:18085",
            "http://evil.example:18085"
        ));
        // The same page and Host by IP address or localhost: the daemon's own.
        assert!(origin_ok(&s, "127.0.0.1:18085", "http://127.0.0.1:18085"));
        assert!(origin_ok(&s, "localhost:18085", "http://localhost:18085"));
        assert!(origin_ok(&s, "LOCALHOST.:18085", "http://localhost:18085"));
    }

    #[test]
    fn hosts_ip_addresses_and_localhost_at_any_port_public_hosts_at_theirs() {
        let s = site(
            &["0.0.0.0:8080"],
            &["ws.example", "app.example:8443", "web.example:443"],
        );
        for (h, want) in [
            ("127.0.0.1:8080", Ok(())),
            ("192.0.2.7:18080", Ok(())),
            ("[::1]:8080", Ok(())),
            ("[2001:db8::1]", Ok(())),
            ("localhost", Ok(())),
            ("localhost:3000", Ok(())),
            ("ws.example", Ok(())),
            ("WS.Example.:9999", Ok(())),
            ("app.example:8443", Ok(())),
            ("app.example:8080", Err(421)),
            ("app.example", Err(421)),
            ("web.example", Ok(())),
            ("app.localhost:8080", Err(421)),
            ("evil.example:8080", Err(421)),
            ("ws.example.evil.example", Err(421)),
            ("127.0.0.1.evil.example", Err(421)),
            ("", Err(400)),
            ("a b", Err(400)),
            ("127.0.0.1:80:80", Err(400)),
            ("127.0.0.1:99999", Err(400)),
            ("[::1", Err(400)),
            ("::1", Err(400)),
            ("user@127.0.0.1", Err(400)),
        ] {
            assert_eq!(host(&s, h).map(|_| ()), want, "Host {h:?}");
        }
        assert_eq!(s.check_host(std::iter::empty()).unwrap_err().status, 400);
        let two = ["127.0.0.1:8080", "127.0.0.1:8080"];
        assert_eq!(s.check_host(two.into_iter()).unwrap_err().status, 400);
        let any = Site {
            any_host: true,
            ..s
        };
        assert!(host(&any, "evil.example").is_ok());
        assert_eq!(host(&any, "a b").unwrap_err(), 400);
    }

    #[test]
    fn own_origins() {
        let s = site(
            &["127.0.0.1:8080", "[::]:9090"],
            &["ws.example", "app.example:8443"],
        );
        for (h, origin, want) in [
            // The request's own Host, when it is the daemon's.
            ("127.0.0.1:8080", "http://127.0.0.1:8080", true),
            ("192.0.2.7:9090", "http://192.0.2.7:9090", true),
            ("192.0.2.7:18080", "http://192.0.2.7:18080", true),
            ("ws.example", "http://ws.example", true),
            ("ws.example:8000", "http://ws.example:8000", true),
            // Another port, scheme or host than the request's.
            ("192.0.2.7:9090", "http://192.0.2.7:9091", false),
            ("127.0.0.1:8080", "https://127.0.0.1:8080", false),
            ("127.0.0.1:8080", "http://192.0.2.7:8080", false),
            ("127.0.0.1:8080", "http://127.0.0.1:3000", false),
            ("localhost:8080", "http://localhost:3000", false),
            // localhost and listen addresses at listen ports, whatever the Host.
            ("127.0.0.1:8080", "http://localhost:8080", true),
            ("localhost:8080", "http://127.0.0.1:8080", true),
            ("127.0.0.1:8080", "http://localhost:9090", true),
            ("127.0.0.1:8080", "http://[::1]:9090", true),
            ("127.0.0.1:8080", "http://127.0.0.1:9090", false),
            // Public hosts at their port (or the scheme's), http or https
            // (behind a TLS terminator).
            ("127.0.0.1:8080", "https://ws.example", true),
            ("ws.example", "https://ws.example", true),
            ("127.0.0.1:8080", "http://ws.example:80", true),
            ("127.0.0.1:8080", "https://ws.example:8443", false),
            ("127.0.0.1:8080", "https://app.example:8443", true),
            ("127.0.0.1:8080", "https://app.example", false),
            // Not origins at all.
            ("127.0.0.1:8080", "null", false),
            ("127.0.0.1:8080", "file://", false),
            ("127.0.0.1:8080", "ftp://127.0.0.1:8080", false),
            ("127.0.0.1:8080", "http://127.0.0.1:8080/path", false),
        ] {
            assert_eq!(origin_ok(&s, h, origin), want, "Host {h}, Origin {origin}");
        }
        let mut wss = s.clone();
        wss.tls = true;
        assert!(origin_ok(&wss, "localhost:8080", "https://localhost:8080"));
        assert!(!origin_ok(&wss, "localhost:8080", "http://localhost:8080"));
        assert!(!origin_ok(&wss, "ws.example", "http://ws.example"));
        assert!(origin_ok(&wss, "ws.example", "https://ws.example"));
        // Listed origins replace the daemon's own; no Origin is not a page.
        let listed = Site {
            origins: Origins::List(vec!["https://app.example".into()]),
            ..s
        };
        assert!(origin_ok(&listed, "127.0.0.1:8080", "HTTPS://app.example"));
        assert!(!origin_ok(
            &listed,
            "127.0.0.1:8080",
            "http://127.0.0.1:8080"
        ));
        let h = listed
            .check_host(std::iter::once("127.0.0.1:8080"))
            .unwrap();
        assert!(listed.check_origin(None, &h).is_ok());
    }

    #[test]
    fn public_host_values() {
        assert!(parse_public_host("example.org").is_ok());
        assert!(parse_public_host("example.org:8443").is_ok());
        assert!(
            parse_public_host("127.0.0.1")
                .unwrap_err()
                .contains("IP address")
        );
        assert!(parse_public_host("https://example.org").is_err());
        assert!(parse_public_host("example.org/x").is_err());
        assert!(parse_public_host("").is_err());
    }
}
