//! Unit tests of request decisions and answers.

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
    // Each Origin header counts (found by `decide_never_panics`): an own
    // origin first does not let another through after it.
    let two = "Origin: http://127.0.0.1:8080\r\nOrigin: http://evil.example:8080\r\n";
    assert_eq!(status(&decide(&upgrade("/s", two), &same)), "HTTP/1.1 403");
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
