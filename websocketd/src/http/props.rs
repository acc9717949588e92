//! Property tests of request heads: `decide` and `head_end` on arbitrary input.

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
            "chat, other",
        ])
        .prop_map(str::to_owned),
        prop::sample::select(HOSTS.to_vec()).prop_map(str::to_owned),
        prop::sample::select(ORIGINS.to_vec()).prop_map(str::to_owned),
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

/// Host values: this daemon's (an IP address or `localhost`, at any port) and
/// another's.
const HOSTS: [&str; 7] = [
    "127.0.0.1:8080",
    "localhost:8080",
    "LOCALHOST:9000",
    "127.0.0.1:9000",
    "[::1]:8080",
    "127.0.0.1",
    "evil.example:8080",
];

/// Origin values, own or not depending on the Host they come with.
const ORIGINS: [&str; 11] = [
    "http://127.0.0.1:8080",
    "http://localhost:8080",
    "HTTP://LOCALHOST:8080",
    "http://localhost:9000",
    "http://127.0.0.1:9000",
    "https://127.0.0.1:8080",
    "http://evil.example:8080",
    "null",
    "http://[::1]:8080",
    "http://127.0.0.1",
    "http://127.0.0.1:80",
];

/// An upgrade request that is valid but for its Host and its Origin headers
/// (none, one or two), in any order.
fn upgrade_head() -> impl Strategy<Value = Vec<u8>> {
    let host = prop::sample::select(HOSTS.to_vec());
    let origins = prop::collection::vec(prop::sample::select(ORIGINS.to_vec()), 0..3);
    (host, origins, any::<prop::sample::Index>()).prop_map(|(host, origins, at)| {
        let mut lines: Vec<String> = [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
        .map(str::to_owned)
        .to_vec();
        lines.push(format!("Host: {host}"));
        for origin in origins {
            lines.insert(at.index(lines.len() + 1), format!("Origin: {origin}"));
        }
        format!("GET /s HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n")).into_bytes()
    })
}

/// The values of the header `name` in `head`, trimmed, as a reader of the
/// head sees them.
fn header_values<'h>(head: &'h str, name: &'h str) -> impl Iterator<Item = &'h str> {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim_matches([' ', '\t']))
}

/// `host:port`, lowercase, port 80 when none is given (HTTP's default).
fn with_port(authority: &str) -> String {
    let a = authority.to_ascii_lowercase();
    if a.ends_with(']') || !a.contains(':') {
        format!("{a}:80")
    } else {
        a
    }
}

/// The README's own hosts: an IP address or `localhost`, at any port (no
/// --public-host in `policy`).
fn own_host(host: &str) -> bool {
    let name = with_port(host);
    let name = name.rsplit_once(':').map_or("", |(n, _)| n);
    name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok() || name == "[::1]"
}

/// The README's own origins for `policy` (listening on 127.0.0.1:8080, plain
/// HTTP): `http://` and the listen address or `localhost` at its port, or the
/// request's own Host (one of [`own_host`]).
fn own_origin(origin: &str, host: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    let Some(authority) = origin.strip_prefix("http://") else {
        return false;
    };
    let page = with_port(authority);
    page == "127.0.0.1:8080" || page == "localhost:8080" || page == with_port(host)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, max_shrink_iters: 2048, ..ProptestConfig::default() })]

    /// Any head, structured or not: no panic, and a 101 only for a GET whose
    /// Sec-WebSocket-Key is a 24-character nonce, answered with its accept
    /// value, from a Host and Origins (if any) that are the daemon's own.
    #[test]
    fn decide_never_panics(
        head in prop_oneof![head(), upgrade_head(), prop::collection::vec(any::<u8>(), 0..300)],
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
                let hosts: Vec<&str> = header_values(&head, "Host").collect();
                prop_assert!(hosts.len() == 1 && own_host(hosts[0]), "Host {:?}", hosts);
                for origin in header_values(&head, "Origin") {
                    prop_assert!(own_origin(origin, hosts[0]), "Origin {} from Host {}", origin, hosts[0]);
                }
            }
            Decision::Respond { response, .. } => {
                prop_assert!(!response.starts_with(b"HTTP/1.1 101"));
            }
        }
    }

    /// A valid upgrade but for its Host and Origins: a 101 exactly when the
    /// Host and every Origin are the daemon's own, else 421 (another's Host)
    /// or 403 (an Origin that is not its own).
    #[test]
    fn upgrades_follow_the_host_and_origin_policy(head in upgrade_head()) {
        let text = String::from_utf8(head.clone()).unwrap();
        let host = header_values(&text, "Host").next().unwrap();
        let want = if !own_host(host) {
            "HTTP/1.1 421 "
        } else if header_values(&text, "Origin").all(|o| own_origin(o, host)) {
            "HTTP/1.1 101 "
        } else {
            "HTTP/1.1 403 "
        };
        let got = match decide(&head, &policy(None)) {
            Decision::Upgrade { response, .. } | Decision::Respond { response, .. } => response,
        };
        let got = String::from_utf8_lossy(&got);
        prop_assert!(got.starts_with(want), "{}\n{}", text, got);
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
