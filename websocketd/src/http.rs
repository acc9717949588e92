//! The HTTP side of websocketd: reading a request head, deciding between a
//! WebSocket upgrade (to which service, with which subprotocol, from which
//! origin), a static file, or a refusal, and writing the answers.

use std::path::PathBuf;

use crate::files;
use crate::site::Site;
use libipc::switch::{Refusal, WebSocketInfo};

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted in a request.
const MAX_HEADERS: usize = 64;

/// How requests are answered: the policy part of the daemon's flags.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Every WebSocket goes to this service, whatever its path.
    pub fixed_service: Option<String>,
    /// Which hosts and origins are the daemon's own.
    pub site: Site,
    /// Subprotocols offered, in preference order.
    pub subprotocols: Vec<String>,
    /// Files served for plain GET requests (canonical path).
    pub static_dir: Option<PathBuf>,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// A valid WebSocket upgrade: connect `service`; send `response` (101) once
    /// it is attached. `client`: the request, for `--peer-info`.
    Upgrade {
        service: String,
        response: Vec<u8>,
        client: WebSocketInfo,
    },
    /// Answer and close: `response`, then `body` if there is one (a file).
    /// `refused` says why, when the client asked for something it may not
    /// have or sent a bad request (logged as a warning).
    Respond {
        response: Vec<u8>,
        body: Option<files::Body>,
        refused: Option<String>,
        line: String,
    },
}

/// Where the request head ends (just past its blank line), if it is complete.
pub fn head_end(buf: &[u8], searched_to: usize) -> Option<usize> {
    let from = searched_to.saturating_sub(3);
    buf[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
}

/// An HTTP/1.1 response that closes the connection. `head_only` (a HEAD
/// request) leaves out the body but keeps its length.
pub fn response(
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = response_head(status, headers, content_type, body.len() as u64);
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The head of an HTTP/1.1 response that closes the connection, for a body
/// of `length` bytes sent after it.
pub fn response_head(
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    length: u64,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    out.into_bytes()
}

/// A plain-text error response.
pub fn error(status: u16, message: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{status} {}: {message}\n", reason_phrase(status));
    response(
        status,
        headers,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
    )
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// The answer to a refusal from the daemon: its HTTP status, its text.
pub fn refusal(refusal: Refusal) -> Vec<u8> {
    let status = refusal.http_status();
    // A full daemon or a busy service: worth trying again soon.
    let retry: &[(&str, &str)] = if status == 503 {
        &[("Retry-After", "1")]
    } else {
        &[]
    };
    error(status, &refusal.text(), retry)
}

fn refuse(status: u16, why: &str, line: &str, headers: &[(&str, &str)]) -> Decision {
    Decision::Respond {
        response: error(status, why, headers),
        body: None,
        refused: Some(why.to_owned()),
        line: line.to_owned(),
    }
}

/// Decides what to do with a complete request head.
pub fn decide(head: &[u8], policy: &Policy) -> Decision {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return refuse(400, "incomplete request", "-", &[]),
        Err(httparse::Error::TooManyHeaders) => {
            return refuse(431, "more than 64 headers", "-", &[]);
        }
        Err(e) => return refuse(400, &format!("malformed request: {e}"), "-", &[]),
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    // At most 200 bytes of the target in the log line, cut on a char boundary.
    let mut cut = target.len().min(200);
    while !target.is_char_boundary(cut) {
        cut -= 1;
    }
    let line = format!("{method} {}", &target[..cut]);
    if req.version != Some(1) {
        return refuse(505, "HTTP/1.1 only", &line, &[]);
    }
    let headers: &[httparse::Header<'_>] = req.headers;
    let get = |name: &'static str| values(headers, name);
    // Before anything is served, static files included: under a DNS
    // rebinding, a page could read them too.
    let hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Host"))
        .map(|h| std::str::from_utf8(h.value).unwrap_or("\u{fffd}"));
    let host = match policy.site.check_host(hosts) {
        Ok(host) => host,
        Err(r) => return refuse(r.status, &r.why, &line, &[]),
    };
    let has_token = |name: &'static str, token: &str| {
        get(name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let Some(path) = target.split('?').next().filter(|p| p.starts_with('/')) else {
        return refuse(400, "the request target must be a path", &line, &[]);
    };
    if !has_token("Upgrade", "websocket") {
        let head_only = method == "HEAD";
        if method != "GET" && !head_only {
            return refuse(405, "only GET", &line, &[("Allow", "GET, HEAD")]);
        }
        return match &policy.static_dir {
            Some(dir) => {
                let answer = files::serve(dir, path, head_only);
                Decision::Respond {
                    response: answer.head,
                    body: answer.body,
                    refused: answer.refused,
                    line,
                }
            }
            None => refuse(
                426,
                "this is a WebSocket endpoint: connect with ws://HOST/SERVICE",
                &line,
                &[("Upgrade", "websocket")],
            ),
        };
    }
    if method != "GET" {
        return refuse(
            405,
            "a WebSocket upgrade must be a GET",
            &line,
            &[("Allow", "GET")],
        );
    }
    if !has_token("Connection", "upgrade") {
        return refuse(400, "Upgrade without Connection: upgrade", &line, &[]);
    }
    if !get("Sec-WebSocket-Version").any(|v| v.trim() == "13") {
        return refuse(
            426,
            "unsupported WebSocket version (13 only)",
            &line,
            &[("Sec-WebSocket-Version", "13")],
        );
    }
    let Some(key) = get("Sec-WebSocket-Key").next().map(str::trim) else {
        return refuse(400, "no Sec-WebSocket-Key", &line, &[]);
    };
    // A base64 nonce of 16 bytes.
    if key.len() != 24 || !key.ends_with("==") {
        return refuse(400, "bad Sec-WebSocket-Key", &line, &[]);
    }
    let origin = get("Origin").next();
    if let Err(r) = policy.site.check_origin(origin, &host) {
        return refuse(r.status, &r.why, &line, &[]);
    }
    let service = match &policy.fixed_service {
        Some(s) => s.clone(),
        None => {
            let name = &path[1..];
            if name.is_empty() {
                return refuse(
                    404,
                    "name a service in the path: ws://HOST/SERVICE",
                    &line,
                    &[],
                );
            }
            name.to_owned()
        }
    };
    let offered: Vec<&str> = get("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let chosen = policy
        .subprotocols
        .iter()
        .find(|p| offered.contains(&p.as_str()));
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    );
    if let Some(p) = chosen {
        response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    response.push_str("\r\n");
    Decision::Upgrade {
        service,
        response: response.into_bytes(),
        client: WebSocketInfo {
            path: target.to_owned(),
            origin: origin.map(str::to_owned),
            subprotocol: chosen.cloned(),
        },
    }
}

/// The values of header `name` (case-insensitive), those that are UTF-8.
fn values<'h>(
    headers: &'h [httparse::Header<'h>],
    name: &'static str,
) -> impl Iterator<Item = &'h str> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// Normalises an --origin value (`scheme://host[:port]`, no path).
pub fn parse_origin(s: &str) -> Result<String, String> {
    let o = s.trim().trim_end_matches('/');
    match o.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && !rest.is_empty()
                && !rest.contains('/')
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            Ok(o.to_owned())
        }
        _ => Err(format!(
            "{s:?}: an origin is scheme://host[:port], e.g. https://example.org"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::{Origins, parse_public_host};

    /// websocketd --listen 127.0.0.1:8080, with `origins`.
    pub(crate) fn site(origins: Origins) -> Site {
        Site {
            listeners: vec!["127.0.0.1:8080".parse().unwrap()],
            public: vec![],
            any_host: false,
            origins,
            tls: false,
        }
    }

    fn policy() -> Policy {
        Policy {
            fixed_service: None,
            site: site(Origins::Own),
            subprotocols: vec!["chat.v2".into(), "chat".into()],
            static_dir: None,
        }
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade(path: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn status(d: &Decision) -> String {
        match d {
            Decision::Upgrade { response, .. } | Decision::Respond { response, .. } => {
                String::from_utf8_lossy(&response[..12]).into_owned()
            }
        }
    }

    #[test]
    fn the_rfc_example_key_gets_the_rfc_accept_value_and_the_path_names_the_service() {
        let d = decide(&upgrade("/chat?room=1", ""), &policy());
        let Decision::Upgrade {
            service, response, ..
        } = d
        else {
            panic!("not an upgrade: {d:?}");
        };
        assert_eq!(service, "chat");
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        // RFC 6455, section 1.3.
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!text.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn subprotocol_is_the_servers_first_choice_among_those_offered() {
        let d = decide(
            &upgrade("/s", "Sec-WebSocket-Protocol: chat, chat.v2\r\n"),
            &policy(),
        );
        let Decision::Upgrade { response, .. } = d else {
            panic!("{d:?}")
        };
        assert!(
            String::from_utf8(response)
                .unwrap()
                .contains("Sec-WebSocket-Protocol: chat.v2\r\n")
        );
        let d = decide(
            &upgrade("/s", "Sec-WebSocket-Protocol: other\r\n"),
            &policy(),
        );
        let Decision::Upgrade { response, .. } = d else {
            panic!("{d:?}")
        };
        assert!(
            !String::from_utf8(response)
                .unwrap()
                .contains("Sec-WebSocket-Protocol")
        );
    }

    #[test]
    fn origins_same_list_and_any() {
        let same = policy();
        for (origin, ok) in [
            ("http://127.0.0.1:8080", true),
            ("HTTP://127.0.0.1:8080", true),
            ("https://127.0.0.1:8080", false),
            ("http://evil.example:8080", false),
            ("null", false),
        ] {
            let d = decide(&upgrade("/s", &format!("Origin: {origin}\r\n")), &same);
            assert_eq!(matches!(d, Decision::Upgrade { .. }), ok, "{origin}: {d:?}");
            if !ok {
                assert_eq!(status(&d), "HTTP/1.1 403");
            }
        }
        let list = Policy {
            site: site(Origins::List(vec!["https://app.example".into()])),
            ..policy()
        };
        let d = decide(&upgrade("/s", "Origin: https://app.example\r\n"), &list);
        assert!(matches!(d, Decision::Upgrade { .. }));
        let d = decide(&upgrade("/s", "Origin: http://127.0.0.1:8080\r\n"), &list);
        assert_eq!(status(&d), "HTTP/1.1 403");
        let any = Policy {
            site: site(Origins::Any),
            ..policy()
        };
        let d = decide(&upgrade("/s", "Origin: https://anything.example\r\n"), &any);
        assert!(matches!(d, Decision::Upgrade { .. }));
        // No Origin: not a browser page.
        assert!(matches!(
            decide(&upgrade("/s", ""), &list),
            Decision::Upgrade { .. }
        ));
        // Default ports are the same origin as no port (for a host that is
        // the daemon's own).
        let mut public = same.clone();
        public.site.public = vec![parse_public_host("example.org").unwrap()];
        let d = decide(
            b"GET /s HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.org:80\r\n\r\n",
            &public,
        );
        assert!(matches!(d, Decision::Upgrade { .. }), "{d:?}");
    }

    #[test]
    fn bad_upgrades_are_refused_with_the_right_status() {
        let p = policy();
        let cases: [(&[u8], &str); 7] = [
            (b"GET /s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
            (b"GET /s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", "426"),
            (b"POST /s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "405"),
            (b"GET /s HTTP/1.0\r\nUpgrade: websocket\r\n\r\n", "505"),
            (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", "426"),
            (b"GET\x01 / HTTP/1.1\r\n\r\n", "400"),
            (b"GET http://x/ HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", "400"),
        ];
        for (req, code) in cases {
            let d = decide(req, &p);
            assert_eq!(
                status(&d),
                format!("HTTP/1.1 {code}"),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
        assert_eq!(status(&decide(&upgrade("/", ""), &p)), "HTTP/1.1 404");
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status(&decide(&upgrade("/s", &many), &p)), "HTTP/1.1 431");
    }

    #[test]
    fn a_host_that_is_not_the_daemons_gets_421_for_upgrades_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "home").unwrap();
        let p = Policy {
            static_dir: Some(dir.path().canonicalize().unwrap()),
            ..policy()
        };
        let rebinding = b"GET /s HTTP/1.1\r\nHost: evil.example:8080\r\nOrigin: http://evil.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert_eq!(status(&decide(rebinding, &p)), "HTTP/1.1 421");
        let file = |host: &str| {
            decide(
                format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
                &p,
            )
        };
        assert_eq!(status(&file("evil.example:8080")), "HTTP/1.1 421");
        assert_eq!(status(&file("127.0.0.1:8080")), "HTTP/1.1 200");
        assert_eq!(
            status(&decide(b"GET / HTTP/1.1\r\n\r\n", &p)),
            "HTTP/1.1 400"
        );
        let two = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nHost: evil.example\r\n\r\n";
        assert_eq!(status(&decide(two, &p)), "HTTP/1.1 400");
    }

    #[test]
    fn fixed_service_ignores_the_path() {
        let p = Policy {
            fixed_service: Some("echo".into()),
            ..policy()
        };
        let Decision::Upgrade { service, .. } = decide(&upgrade("/anything/at/all", ""), &p) else {
            panic!()
        };
        assert_eq!(service, "echo");
    }

    #[test]
    fn head_end_finds_the_blank_line_across_chunks() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(head_end(req, 0), Some(req.len() - 4));
        // Searched up to the middle of the terminator earlier.
        assert_eq!(head_end(req, req.len() - 6), Some(req.len() - 4));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
    }

    #[test]
    fn origin_flag_values() {
        assert_eq!(
            parse_origin("https://a.example/").unwrap(),
            "https://a.example"
        );
        assert!(parse_origin("a.example").is_err());
        assert!(parse_origin("https://a.example/path").is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn policy(static_dir: Option<PathBuf>) -> Policy {
        Policy {
            fixed_service: None,
            site: super::tests::site(crate::site::Origins::Own),
            subprotocols: vec!["chat".into()],
            static_dir,
        }
    }

    /// A request head: a request line with any target, and headers drawn from
    /// those that matter to an upgrade, with plausible or arbitrary values.
    fn head() -> impl Strategy<Value = Vec<u8>> {
        let name = prop::sample::select(vec![
            "Host",
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Key",
            "sec-websocket-key",
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Protocol",
            "Origin",
            "X-Other",
        ]);
        let value = prop_oneof![
            prop::sample::select(vec![
                "websocket",
                "Upgrade",
                "keep-alive, upgrade",
                "13",
                " dGhlIHNhbXBsZSBub25jZQ== ",
                "dGhlIHNhbXBsZSBub25jZQ=",
                "http://127.0.0.1:8080",
                "127.0.0.1:8080",
                "chat, other",
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,30}",
            "[ -~]{22}==",
            any::<String>(),
        ];
        let headers = prop::collection::vec((name, value), 0..10);
        let method = prop::sample::select(vec!["GET", "HEAD", "POST", "get", ""]);
        let target = prop_oneof![
            "/[a-z._-]{0,10}",
            "/[a-z/?%.]{0,30}",
            any::<String>(),
            "/[éa]{130,150}",
        ];
        let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2", ""]);
        (method, target, version, headers).prop_map(|(m, t, v, hs)| {
            let mut h = format!("{m} {t} {v}\r\n");
            for (n, val) in hs {
                h.push_str(&format!("{n}:{val}\r\n"));
            }
            h.push_str("\r\n");
            h.into_bytes()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, max_shrink_iters: 2048, ..ProptestConfig::default() })]

        /// Any head, structured or not: no panic, and a 101 only for a GET whose
        /// Sec-WebSocket-Key is a 24-character nonce, answered with its accept value.
        #[test]
        fn decide_never_panics(
            head in prop_oneof![head(), prop::collection::vec(any::<u8>(), 0..300)],
        ) {
            match decide(&head, &policy(None)) {
                Decision::Upgrade {
                    service, response, ..
                } => {
                    prop_assert!(!service.is_empty());
                    prop_assert!(head.starts_with(b"GET /"));
                    let text = String::from_utf8(response).unwrap();
                    prop_assert!(text.starts_with("HTTP/1.1 101 "));
                    let head = String::from_utf8_lossy(&head);
                    let key = head
                        .split("\r\n")
                        .filter_map(|l| l.split_once(':'))
                        .find(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Key"))
                        .map(|(_, v)| v.trim_matches([' ', '\t']))
                        .expect("a 101 without Sec-WebSocket-Key");
                    prop_assert!(key.len() == 24 && key.ends_with("=="), "{:?}", key);
                    let accept = format!(
                        "Sec-WebSocket-Accept: {}\r\n",
                        tungstenite::handshake::derive_accept_key(key.as_bytes())
                    );
                    prop_assert!(text.contains(&accept));
                }
                Decision::Respond { response, .. } => {
                    prop_assert!(!response.starts_with(b"HTTP/1.1 101"));
                }
            }
        }

        /// Fed in any chunks as the connection reads them, `head_end` finds the
        /// end of the first blank line of the whole buffer, and no other.
        #[test]
        fn head_end_agrees_with_a_whole_search(
            data in prop_oneof![
                prop::collection::vec(prop::sample::select(vec![b'\r', b'\n', b'a']), 0..40),
                prop::collection::vec(any::<u8>(), 0..40),
            ],
            cuts in prop::collection::vec(0usize..41, 0..6),
        ) {
            let want = data.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            at.extend([0, data.len()]);
            at.sort_unstable();
            let mut buf = Vec::new();
            let mut found = None;
            for w in at.windows(2) {
                let searched = buf.len();
                buf.extend_from_slice(&data[w[0]..w[1]]);
                found = head_end(&buf, searched);
                if found.is_some() {
                    break;
                }
            }
            prop_assert_eq!(found, want);
        }
    }

    /// Regression (found by `decide_never_panics`): a request target with a
    /// multi-byte character across byte 200 panicked when cut for the log line.
    #[test]
    fn long_non_ascii_target_does_not_panic() {
        let head = format!("GET /{} HTTP/1.1\r\n\r\n", "é".repeat(150));
        let d = decide(head.as_bytes(), &policy(None));
        assert!(matches!(d, Decision::Respond { .. }));
    }
}
