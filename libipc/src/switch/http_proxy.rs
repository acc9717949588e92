//! An HTTP CONNECT proxy as a transport layer: the daemon connects to the
//! proxy, this layer asks it for a tunnel to the target (`CONNECT host:port`),
//! waits for its 2xx, then hands the stream to the transport it wraps (LibIPC
//! frames, TLS, WebSocket), which starts only then. So every outbound scheme
//! goes through a proxy the same way, and the layers inside never know.
//!
//! Where the proxy is and which hosts go direct are [`ProxyConfig`], read from
//! `--proxy URL` or the variables curl reads (`https_proxy`, `HTTPS_PROXY`,
//! `no_proxy`, `NO_PROXY`). Its credentials (the URL's user info) are sent as
//! basic authentication and never shown: the config's `Display` and `Debug`
//! leave them out.

use std::fmt;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::network::percent_decode;
use crate::proxy::Cidr;
use crate::switch::{PeerInfo, Refusal, Relay, Transport};

/// Longest answer head accepted from a proxy.
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// The port of a proxy URL without one (curl's default).
const DEFAULT_PORT: u16 = 1080;

/// An HTTP proxy, and the hosts that do not go through it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    host: String,
    /// `host:port` (IPv6 in brackets), to connect to.
    authority: String,
    /// The `Proxy-Authorization` value (`Basic ...`), from the URL's user info.
    authorization: Option<String>,
    no_proxy: Vec<NoProxy>,
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxy {
    /// `*`: nothing goes through the proxy.
    All,
    /// An address or a network (`10.0.0.0/8`): matches targets written as
    /// an address in it.
    Net(Cidr),
    /// A name: matches it and the names under it (`example.org` and
    /// `.example.org` both match `a.example.org` and `example.org`).
    Domain(String),
}

impl ProxyConfig {
    /// Parses `http://[USER[:PASSWORD]@]HOST[:PORT][/]` (the scheme may be
    /// left out; the port defaults to 1080, as in curl; user and password
    /// are percent-decoded) and a `NO_PROXY` list (comma- or
    /// space-separated). Errors never quote the password.
    pub fn parse(url: &str, no_proxy: &str) -> std::result::Result<Self, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "proxy scheme {:?}: only http:// proxies (HTTP CONNECT) are supported",
                    scheme.chars().take(20).collect::<String>()
                ));
            }
            None => url,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let bad = |why: &str| {
            format!(
                "proxy http://{}: {why}",
                hostport.chars().take(80).collect::<String>()
            )
        };
        if hostport.contains('/') {
            return Err(bad("a proxy URL has no path"));
        }
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad host or port"))?;
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
        if !valid {
            return Err(bad("bad host"));
        }
        let port = port.unwrap_or(DEFAULT_PORT);
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let authorization = match userinfo {
            None => None,
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
                let password =
                    percent_decode(password).ok_or_else(|| bad("bad %-escape in the password"))?;
                let mut both = user;
                both.push(b':');
                both.extend_from_slice(&password);
                Some(format!("Basic {}", base64(&both)))
            }
        };
        Ok(ProxyConfig {
            host: host.to_owned(),
            authority,
            authorization,
            no_proxy: parse_no_proxy(no_proxy),
        })
    }

    /// The proxy's host (a name or an address, IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host:port` to connect to (IPv6 in brackets).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether a connection to `host` (as written in the URI) goes through
    /// the proxy: false when a `NO_PROXY` entry matches it.
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        !self.no_proxy.iter().any(|n| match n {
            NoProxy::All => true,
            NoProxy::Net(net) => ip.is_some_and(|ip| net.contains(ip)),
            NoProxy::Domain(d) => {
                host == *d
                    || host
                        .strip_suffix(d.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
        })
    }

    /// `inner` through this proxy, to `host:port`.
    pub fn tunnel<T: Transport>(&self, host: &str, port: u16, inner: T) -> Tunnel<T> {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(auth) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        Tunnel {
            request: request.into_bytes(),
            target,
            authenticated: self.authorization.is_some(),
            answer: Some(Vec::new()),
            inner,
        }
    }
}

/// Shown without the credentials: `http://proxy.example:3128 (with credentials)`.
impl fmt::Display for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)?;
        if self.authorization.is_some() {
            f.write_str(" (with credentials)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("authority", &self.authority)
            .field("credentials", &self.authorization.is_some())
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok();
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(port(after.strip_prefix(':')?)?))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(port(p)?))),
        Some(_) => None,
        None => Some((s, None)),
    }
}

/// curl's reading of `NO_PROXY`: `*`, names (a leading dot ignored), addresses
/// and networks; ports are ignored, as curl does.
fn parse_no_proxy(list: &str) -> Vec<NoProxy> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e == "*" {
                return NoProxy::All;
            }
            let e = e
                .strip_prefix('[')
                .map_or(e, |r| r.split(']').next().unwrap_or(r));
            if let Ok(net) = e.parse::<Cidr>() {
                return NoProxy::Net(net);
            }
            let name = e.rsplit_once(':').map_or(e, |(h, _)| h);
            let name = name.strip_prefix('.').unwrap_or(name);
            let name = name.strip_suffix('.').unwrap_or(name);
            NoProxy::Domain(name.to_ascii_lowercase())
        })
        .collect()
}

/// Standard base64 with padding (RFC 4648), for basic authentication.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The proxy's answer to CONNECT, once its head is whole.
fn read_answer(head: &[u8], target: &str, authenticated: bool) -> Result<()> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let line = line.trim_end();
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let reason: String = parts.next().unwrap_or("").chars().take(80).collect();
    if !version.starts_with("HTTP/1.") {
        return Err(Error::Handshake(
            "the proxy's answer to CONNECT is not HTTP".into(),
        ));
    }
    let denied = |text: String| Err(Error::Denied(format!("no: {text}")));
    match code.parse::<u16>() {
        Ok(200..=299) => Ok(()),
        // 407 is the standard answer; tinyproxy says 401 to wrong credentials.
        Ok(code @ (401 | 407)) if authenticated => denied(format!(
            "the proxy refused its credentials ({code} {reason})"
        )),
        Ok(code @ (401 | 407)) => denied(format!(
            "the proxy requires authentication ({code} {reason}): give it in --proxy http://USER:PASSWORD@HOST:PORT"
        )),
        Ok(403) => denied(format!(
            "the proxy does not allow a connection to {target} (403 {reason})"
        )),
        Ok(code) => denied(format!(
            "the proxy could not connect to {target} ({code} {reason})"
        )),
        Err(_) => Err(Error::Handshake(
            "the proxy's answer to CONNECT has no status".into(),
        )),
    }
}

/// A connection through an HTTP proxy to the target, then `inner`.
#[derive(Debug)]
pub struct Tunnel<T> {
    /// `CONNECT ...`, sent at the start (it carries the credentials: never
    /// logged).
    request: Vec<u8>,
    target: String,
    authenticated: bool,
    /// The proxy's answer so far; `None` once the tunnel is open.
    answer: Option<Vec<u8>>,
    inner: T,
}

impl<T: Transport> Transport for Tunnel<T> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn start(&mut self, relay: &mut Relay<'_>) {
        relay.to_network(&std::mem::take(&mut self.request));
    }

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let Some(head) = self.answer.as_mut() else {
            return self.inner.on_network_data(data, relay);
        };
        let searched = head.len().saturating_sub(3);
        head.extend_from_slice(data);
        let Some(end) = head[searched..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| searched + p + 4)
        else {
            if head.len() > MAX_ANSWER_HEAD {
                return Err(Error::Handshake(format!(
                    "the proxy's answer to CONNECT is longer than {MAX_ANSWER_HEAD} bytes"
                )));
            }
            return Ok(());
        };
        let head = self.answer.take().unwrap_or_default();
        read_answer(&head[..end], &self.target, self.authenticated)?;
        tracing::debug!(target = %self.target, "proxy tunnel open");
        // The tunnel is the target's now: the inner transport opens.
        self.inner.start(relay);
        match &head[end..] {
            [] => Ok(()),
            rest => self.inner.on_network_data(rest, relay),
        }
    }

    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        self.inner.on_service_data(data, relay)
    }

    fn network_drained(&mut self, relay: &mut Relay<'_>) {
        self.inner.network_drained(relay)
    }

    fn accepted(&mut self, relay: &mut Relay<'_>) {
        self.inner.accepted(relay)
    }

    fn refused(&mut self, refusal: Refusal, relay: &mut Relay<'_>) {
        self.inner.refused(refusal, relay)
    }

    fn handshake_phase(&self) -> Option<&'static str> {
        match self.answer {
            Some(_) => Some("proxy CONNECT"),
            None => self.inner.handshake_phase(),
        }
    }

    fn keepalive(&mut self, relay: &mut Relay<'_>) -> Result<bool> {
        self.inner.keepalive(relay)
    }

    fn going_away(&mut self, relay: &mut Relay<'_>) -> bool {
        self.inner.going_away(relay)
    }

    fn can_go_away(&self) -> bool {
        self.inner.can_go_away()
    }

    fn network_closed(&mut self) -> Result<()> {
        match self.answer {
            Some(_) => Err(Error::Denied(format!(
                "no: the proxy closed the connection before opening a tunnel to {}",
                self.target
            ))),
            None => self.inner.network_closed(),
        }
    }

    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        self.inner.service_closed(relay, clean)
    }

    fn describe(&self, info: &mut PeerInfo) {
        self.inner.describe(info)
    }

    // `can_hand_off` stays false: the socket leads to the proxy, and what it
    // buffered for us is this layer's, not the local client's to read.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::OutQueue;
    use crate::switch::{Dial, Frames};

    fn p(url: &str, no: &str) -> ProxyConfig {
        ProxyConfig::parse(url, no).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn urls_parse_and_never_show_their_credentials() {
        let c = p("http://al%40ice:s3cr%3At@proxy.example:3128/", "");
        assert_eq!(c.authority(), "proxy.example:3128");
        assert_eq!(c.host(), "proxy.example");
        assert_eq!(
            c.authorization.as_deref(),
            Some("Basic YWxAaWNlOnMzY3I6dA==")
        );
        for shown in [c.to_string(), format!("{c:?}")] {
            assert!(!shown.contains("s3cr") && !shown.contains("YWx"), "{shown}");
        }
        assert_eq!(p("10.0.0.1", "").authority(), "10.0.0.1:1080");
        assert_eq!(p("http://[::1]:8080", "").authority(), "[::1]:8080");
        for bad in [
            "https://p:1",
            "socks5://p:1",
            "http://p:x",
            "http://p:1/path",
            "http://u:%zz@p:1",
            "http://",
        ] {
            let err = ProxyConfig::parse(bad, "").unwrap_err();
            assert!(!err.contains("%zz"), "{err}");
        }
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn no_proxy_matches_as_curl_does() {
        let c = p("p:1", "localhost, .internal,example.org:443 10.0.0.0/8,::1");
        for direct in [
            "localhost",
            "a.internal",
            "internal",
            "example.org",
            "x.example.org",
            "10.2.3.4",
            "::1",
            "LOCALHOST.",
        ] {
            assert!(!c.applies_to(direct), "{direct}");
        }
        for proxied in [
            "badexample.org",
            "internal.evil",
            "11.0.0.1",
            "::2",
            "remote.example",
        ] {
            assert!(c.applies_to(proxied), "{proxied}");
        }
        assert!(!p("p:1", "*").applies_to("anything"));
        assert!(p("p:1", "").applies_to("anything"));
    }

    /// The tunnel to `pong` at `db:9000` through `c`, fed `answer` cut at
    /// `cut`: what it sent, what it asked for, or its error.
    fn through(c: &ProxyConfig, answer: &[u8], cut: usize) -> (Vec<u8>, Result<Option<Vec<u8>>>) {
        let mut t = c.tunnel("db", 9000, Dial::new("pong", Frames::new(1000)));
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let mut relay = Relay::new(&mut svc, &mut net);
        t.start(&mut relay);
        let r = t
            .on_network_data(&answer[..cut], &mut relay)
            .and_then(|()| t.on_network_data(&answer[cut..], &mut relay));
        (
            relay.to_network.take_bytes(),
            r.map(|()| relay.request.take()),
        )
    }

    #[test]
    fn connects_then_the_inner_transport_speaks_and_reads_what_followed() {
        let c = p("http://u:pw@p:1", "");
        let answer = b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\nok";
        for cut in 0..answer.len() {
            let (sent, asked) = through(&c, answer, cut);
            let sent = String::from_utf8(sent).unwrap();
            assert_eq!(
                sent,
                "CONNECT db:9000 HTTP/1.1\r\nHost: db:9000\r\nProxy-Authorization: Basic dTpwdw==\r\n\r\npong",
                "at {cut}"
            );
            // The remote tcpd's `ok` came in the same read as the 200.
            assert_eq!(asked.unwrap().as_deref(), Some(&b"pong"[..]), "at {cut}");
        }
    }

    #[test]
    fn refusals_say_what_the_proxy_meant() {
        let refusal = |c: &ProxyConfig, status: &str| {
            let answer = format!("HTTP/1.1 {status}\r\n\r\n");
            match through(c, answer.as_bytes(), 0).1 {
                Err(Error::Denied(t)) => t,
                other => panic!("{status}: {other:?}"),
            }
        };
        let plain = p("p:1", "");
        let with = p("u:pw@p:1", "");
        assert!(
            refusal(&plain, "407 Proxy Authentication Required")
                .contains("requires authentication")
        );
        assert!(
            refusal(&with, "407 Proxy Authentication Required").contains("refused its credentials")
        );
        assert!(
            refusal(&plain, "403 Forbidden").contains("does not allow a connection to db:9000")
        );
        assert!(refusal(&plain, "502 Bad Gateway").contains("could not connect to db:9000 (502"));
        for text in [refusal(&plain, "403 Forbidden"), refusal(&with, "407 x")] {
            assert!(text.starts_with("no: ") && !text.contains("dTpw"), "{text}");
        }
        assert!(matches!(
            through(&plain, b"SSH-2.0\r\n\r\n", 0).1,
            Err(Error::Handshake(_))
        ));
        // An answer head that never ends is bounded.
        let long = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; MAX_ANSWER_HEAD]].concat();
        assert!(matches!(
            through(&plain, &long, 0).1,
            Err(Error::Handshake(_))
        ));
    }
}
