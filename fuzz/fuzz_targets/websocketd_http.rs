//! websocketd's HTTP side: [`http::decide`] on any request head, under a
//! policy picked by the first byte, and [`http::head_end`] on any bytes cut
//! into any reads (websocketd's library, as the daemon runs it).
//! Checks that a 101 answers only a GET upgrade with a 16-byte nonce (with its
//! accept value), that every other answer is a complete refusal or file (its
//! head, then its chunks), that no static file from outside the static
//! directory is ever served, that nothing is served to a request whose Host
//! names another host (unless --allow-any-host), and that searching a head
//! read by read finds what one search of it finds. A 101 is checked against
//! the raw head by code of this target's own (no header parser of
//! websocketd's): an HTTP/1.1 GET with `Upgrade: websocket`, `Connection:
//! upgrade`, `Sec-WebSocket-Version: 13`, and an Origin the policy allows.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use libipc_fuzz::reads;
use websocketd::http::{Decision, Policy, decide, head_end};
use websocketd::site::{Origins, Site, parse_public_host};

const INSIDE: &[u8] = b"served from the static directory\n";
const OUTSIDE: &[u8] = b"SECRET outside the static directory\n";

/// A static directory (`www/index.html`, `www/sub/page.txt`, a link out to
/// `../secret.txt`) next to a file that must never be served. Made once in
/// the temporary directory and reused by later runs (written only when
/// missing, so that runs side by side do not see a file half written).
fn static_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join("libipc-fuzz-www");
        let www = base.join("www");
        std::fs::create_dir_all(www.join("sub")).unwrap();
        let put = |path: PathBuf, content: &[u8]| {
            if std::fs::read(&path).ok().as_deref() != Some(content) {
                std::fs::write(path, content).unwrap();
            }
        };
        put(base.join("secret.txt"), OUTSIDE);
        put(www.join("index.html"), INSIDE);
        put(www.join("sub/page.txt"), INSIDE);
        let _ = std::os::unix::fs::symlink("../secret.txt", www.join("link.txt"));
        www.canonicalize().unwrap()
    })
}

/// The daemon as `--listen 127.0.0.1:8080 --public-host h`, with options
/// picked by `flags`.
fn policy(flags: u8) -> Policy {
    Policy {
        fixed_service: (flags & 1 != 0).then(|| "echo".to_owned()),
        site: Site {
            listeners: vec![([127, 0, 0, 1], 8080).into()],
            public: vec![parse_public_host("h").unwrap()],
            any_host: flags & 32 != 0,
            origins: match (flags >> 1) % 3 {
                0 => Origins::Own,
                1 => Origins::List(vec!["https://a.example".into()]),
                _ => Origins::Any,
            },
            tls: flags & 16 != 0,
        },
        subprotocols: vec!["chat".into(), "json".into()],
        static_dir: (flags & 8 != 0).then(|| static_dir().clone()),
    }
}

/// The request in `head`: after any empty lines, which HTTP lets a server skip.
fn request(head: &[u8]) -> &[u8] {
    let blank = head
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    &head[blank..]
}

/// The values of the headers of `request` named `name`.
fn header_values<'a>(request: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    request
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(move |l| {
            let colon = l.iter().position(|&b| b == b':')?;
            l[..colon]
                .eq_ignore_ascii_case(name)
                .then(|| &l[colon + 1..])
        })
}

/// The first Sec-WebSocket-Key header of `request` that is UTF-8 (the
/// others are not headers to `decide`), trimmed.
fn upgrade_key(request: &[u8]) -> Option<&str> {
    header_values(request, b"Sec-WebSocket-Key")
        .find_map(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
}

/// The values of the Host headers of `head`.
fn hosts(head: &[u8]) -> Vec<String> {
    header_values(request(head), b"Host")
        .map(|v| String::from_utf8_lossy(v).trim().to_owned())
        .collect()
}

/// Whether `host` (a Host header's value) names the daemon of [`policy`]:
/// an IP address, localhost or `h`, at any port.
fn names_the_daemon(host: &str) -> bool {
    if host.starts_with('[') {
        return true;
    }
    let name = host.split(':').next().unwrap().trim_end_matches('.');
    ["h", "localhost"].contains(&name.to_ascii_lowercase().as_str())
        || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// Whether a header `name` of `request` lists `token` (comma-separated, any
/// case), as RFC 6455 requires of `Upgrade: websocket` and `Connection:
/// upgrade`.
fn lists(request: &[u8], name: &[u8], token: &str) -> bool {
    header_values(request, name)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// `host[:port]` of a Host header or an origin, for comparing: the host
/// lowercase without its trailing dot, an IP address in one spelling; the
/// port if given. `None` for what is not one.
fn authority(s: &str) -> Option<(String, Option<u16>)> {
    let (host, after) = match s.strip_prefix('[') {
        Some(rest) => {
            let close = rest.find(']')?;
            let ip: std::net::Ipv6Addr = rest[..close].parse().ok()?;
            (ip.to_string(), &rest[close + 1..])
        }
        None => {
            let colon = s.find(':').unwrap_or(s.len());
            let host = s[..colon].strip_suffix('.').unwrap_or(&s[..colon]);
            let host = match host.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => host.to_ascii_lowercase(),
            };
            (host, &s[colon..])
        }
    };
    let port = match after {
        "" | ":" => None,
        _ => {
            let digits = after.strip_prefix(':')?;
            digits.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
            Some(digits.parse().ok()?)
        }
    };
    Some((host, port))
}

/// Whether a page of `origin` may open a WebSocket on the daemon of
/// [`policy`] (`flags`) with a request for `host`, as the README says:
/// `--origin https://a.example`, any origin, or by default the daemon's own,
/// that is the request's own host and port when that host names the daemon,
/// `localhost` or the listen address at the listen port (8080), or the
/// public host `h` at its scheme's port; with the listener's scheme (http,
/// https for wss), or https for `h` on a plain listener.
fn origin_allowed(flags: u8, origin: &str, host: &str) -> bool {
    match (flags >> 1) % 3 {
        1 => return origin.eq_ignore_ascii_case("https://a.example"),
        2 => return true,
        _ => {}
    }
    let tls = flags & 16 != 0;
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let (Some((page, port)), Some((request, request_port))) = (authority(rest), authority(host))
    else {
        return false;
    };
    let port = port.unwrap_or(default);
    let scheme_ok = scheme == if tls { "https" } else { "http" } || (!tls && page == "h");
    scheme_ok
        && ((page == request && port == request_port.unwrap_or(default) && names_the_daemon(host))
            || (matches!(page.as_str(), "localhost" | "127.0.0.1") && port == 8080)
            || (page == "h" && port == default))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed, head @ ..] = data else {
        return;
    };
    let policy = policy(*flags);
    let decision = decide(head, &policy);
    let served = match &decision {
        Decision::Upgrade { .. } => true,
        Decision::Respond { response, .. } => response.starts_with(b"HTTP/1.1 200"),
    };
    if served && !policy.site.any_host {
        let hosts = hosts(head);
        assert!(hosts.len() == 1 && names_the_daemon(&hosts[0]), "{hosts:?}");
    }
    match decision {
        Decision::Upgrade {
            service,
            response,
            client,
        } => {
            let request = request(head);
            assert!(request.starts_with(b"GET /"));
            // An HTTP/1.1 GET with the headers of RFC 6455, read from the raw
            // head, and an Origin (the first, as a browser sends one) the
            // policy allows.
            let line = request.split(|&b| b == b'\n').next().unwrap();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(
                line.ends_with(b" HTTP/1.1"),
                "{:?}",
                String::from_utf8_lossy(line)
            );
            assert!(
                lists(request, b"Upgrade", "websocket"),
                "no Upgrade: websocket"
            );
            assert!(
                lists(request, b"Connection", "upgrade"),
                "no Connection: upgrade"
            );
            let version = header_values(request, b"Sec-WebSocket-Version")
                .filter_map(|v| std::str::from_utf8(v).ok())
                .any(|v| v.trim() == "13");
            assert!(version, "no Sec-WebSocket-Version: 13");
            let origin =
                header_values(request, b"Origin").find_map(|v| std::str::from_utf8(v).ok());
            if let Some(origin) = origin.map(str::trim) {
                let host = &hosts(head)[0];
                assert!(
                    origin_allowed(*flags, origin, host),
                    "origin {origin:?} for Host {host:?}"
                );
            }
            let path = client.path.split('?').next().unwrap();
            match &policy.fixed_service {
                Some(fixed) => assert_eq!(&service, fixed),
                None => assert!(!service.is_empty() && path.strip_prefix('/') == Some(&service)),
            }
            let text = String::from_utf8(response).unwrap();
            assert!(text.starts_with("HTTP/1.1 101 ") && text.ends_with("\r\n\r\n"));
            let accept = text
                .split("\r\n")
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Accept: "))
                .expect("no Sec-WebSocket-Accept");
            let key = upgrade_key(request).expect("no key");
            assert!(key.len() == 24 && key.ends_with("=="), "{key:?}");
            assert_eq!(
                accept,
                tungstenite::handshake::derive_accept_key(key.as_bytes())
            );
            if let Some(p) = &client.subprotocol {
                assert!(policy.subprotocols.contains(p));
            }
        }
        Decision::Respond {
            mut response,
            body,
            line,
            ..
        } => {
            // A file comes after the head, in chunks, as the client reads.
            if let Some(mut body) = body {
                assert!(response.starts_with(b"HTTP/1.1 200"));
                while !body.is_done() {
                    response.extend(body.next_chunk().unwrap());
                }
            }
            assert!(response.starts_with(b"HTTP/1.1 ") && !response.starts_with(b"HTTP/1.1 101"));
            assert!(contains(&response, b"\r\n\r\n"));
            assert!(!contains(&response, OUTSIDE));
            // A HEAD request (its method as logged) gets no body.
            if response.starts_with(b"HTTP/1.1 200") && !line.starts_with("HEAD ") {
                assert!(response.ends_with(INSIDE));
            }
        }
    }

    // The end of the head, searched read by read as the daemon does.
    let want = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let mut buf = Vec::new();
    let mut found = None;
    for read in reads(head, *seed, false) {
        let searched = buf.len();
        buf.extend_from_slice(read);
        found = head_end(&buf, searched);
        if found.is_some() {
            break;
        }
    }
    assert_eq!(found, want);
});
