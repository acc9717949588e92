//! websocketd's HTTP side: [`http::decide`] on any request head, under a
//! policy picked by the first byte, and [`http::head_end`] on any bytes cut
//! into any reads. websocketd is a binary crate: its `http` and `files`
//! modules are compiled into this target from their source files as they are.
//! Checks that a 101 answers only a GET upgrade with a 16-byte nonce (with its
//! accept value), that every other answer is a complete refusal or file, that
//! no static file from outside the static directory is ever served, and that
//! searching a head read by read finds what one search of it finds.
#![no_main]

#[allow(dead_code)]
#[path = "../../websocketd/src/files.rs"]
mod files;
#[allow(dead_code)]
#[path = "../../websocketd/src/http.rs"]
mod http;

use std::path::PathBuf;
use std::sync::OnceLock;

use http::{Decision, Origins, Policy, decide, head_end};
use libfuzzer_sys::fuzz_target;
use libipc_fuzz::reads;

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

fn policy(flags: u8) -> Policy {
    Policy {
        fixed_service: (flags & 1 != 0).then(|| "echo".to_owned()),
        origins: match (flags >> 1) % 3 {
            0 => Origins::Same,
            1 => Origins::List(vec!["https://a.example".into()]),
            _ => Origins::Any,
        },
        subprotocols: vec!["chat".into(), "json".into()],
        static_dir: (flags & 8 != 0).then(|| static_dir().clone()),
        tls: flags & 16 != 0,
    }
}

/// The first Sec-WebSocket-Key header of `request` that is UTF-8 (the
/// others are not headers to `decide`), trimmed.
fn upgrade_key(request: &[u8]) -> Option<&str> {
    request
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            let (name, value) = (&l[..colon], &l[colon + 1..]);
            let value = std::str::from_utf8(value).ok()?;
            name.eq_ignore_ascii_case(b"Sec-WebSocket-Key")
                .then(|| value.trim())
        })
        .next()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed, head @ ..] = data else {
        return;
    };
    let policy = policy(*flags);
    match decide(head, &policy) {
        Decision::Upgrade {
            service,
            response,
            client,
        } => {
            // The request (after any empty lines, which HTTP lets a server skip).
            let blank = head
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let request = &head[blank..];
            assert!(request.starts_with(b"GET /"));
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
        Decision::Respond { response, line, .. } => {
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
