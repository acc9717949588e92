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
