//! `IPC_NETWORK`: [`parse_uri`] and [`route`] on any text (the service name
//! on the first line, the variable's value after it). Checks that a URI's
//! parts put back together give the URI, and that [`route`] gives what a
//! reference reading of the documented syntax gives (below: written for this
//! target, byte by byte, sharing no code with libipc): the last entry naming
//! the service decides, `unix://NAME` is the local service NAME, any other
//! scheme is the outbound service of that name, asked for the whole URI, and
//! an entry naming the service that breaks the syntax is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libipc::network::{Route, parse_uri, route};

fn check_uri(s: &str) {
    match parse_uri(s) {
        Ok(u) => {
            assert!(!u.scheme.is_empty() && !u.scheme.contains("://"));
            assert!(!u.authority.contains('/'));
            let rebuilt = format!("{}://{}", u.scheme, u.authority);
            let rest = s.strip_prefix(&rebuilt).expect("the URI's own parts");
            assert!(rest.is_empty() || rest.strip_prefix('/') == Some(u.path));
        }
        Err(_) => assert!(!s.contains("://") || s.starts_with("://")),
    }
}

/// Where the reference sends a connection: `(true, NAME, "")` for the local
/// service NAME, `(false, DAEMON, URI)` for outbound service DAEMON asked for URI.
type Reference = (bool, String, String);

/// A service name as documented: 1 to 64 bytes of letters, digits, `.`, `_`,
/// `-`, not starting with `.`.
fn is_name(s: &[u8]) -> bool {
    let mut ok = !s.is_empty() && s.len() <= 64 && s[0] != b'.';
    for &b in s {
        ok &= b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-';
    }
    ok
}

/// `s` without the whitespace around it.
fn trimmed(s: &str) -> &str {
    s.trim_matches(char::is_whitespace)
}

/// The first place `needle` starts in `s`.
fn find(s: &[u8], needle: &[u8]) -> Option<usize> {
    (0..s.len()).find(|&i| s[i..].starts_with(needle))
}

/// `NAME SCHEME://AUTHORITY[/PATH]` entries separated by `;` (blank ones and
/// whitespace around entries and targets ignored); `None` if an entry naming
/// `service` is not one.
fn reference(network: &str, service: &str) -> Option<Reference> {
    let mut found = (true, service.to_owned(), String::new());
    let bytes = network.as_bytes();
    let mut start = 0;
    for end in 0..=bytes.len() {
        if end < bytes.len() && bytes[end] != b';' {
            continue;
        }
        let entry = trimmed(&network[start..end]);
        start = end + 1;
        if entry.is_empty() {
            continue;
        }
        let space = find(entry.as_bytes(), b" ").unwrap_or(entry.len());
        if &entry[..space] != service {
            continue;
        }
        let target = trimmed(entry.get(space + 1..).unwrap_or(""));
        let colon = find(target.as_bytes(), b"://")?;
        let scheme = &target[..colon];
        let after = &target.as_bytes()[colon + 3..];
        let authority = &after[..find(after, b"/").unwrap_or(after.len())];
        found = if scheme == "unix" {
            is_name(authority).then_some(())?;
            (
                true,
                String::from_utf8(authority.to_vec()).unwrap(),
                String::new(),
            )
        } else {
            is_name(scheme.as_bytes()).then_some(())?;
            (false, scheme.to_owned(), target.to_owned())
        };
    }
    Some(found)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_uri(text);
    let (service, network) = text.split_once('\n').unwrap_or((text, ""));
    check_uri(network);

    let got = route(network, service).ok().map(|r| match r {
        Route::Local(name) => (true, name.to_owned(), String::new()),
        Route::Daemon { daemon, uri } => (false, daemon.to_owned(), uri.to_owned()),
    });
    assert_eq!(
        got,
        reference(network, service),
        "{network:?} for {service:?}"
    );
});
