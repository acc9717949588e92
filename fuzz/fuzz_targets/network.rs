//! `IPC_NETWORK`: [`parse_uri`] and [`route`] on any text (the service name
//! on the first line, the variable's value after it). Checks that a URI's
//! parts put back together give the URI, and that a route comes from the last
//! entry naming the service, leads only to valid service names, and is the
//! plain local service when no entry names it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libipc::network::{Route, parse_uri, route};
use libipc::service::validate_name;

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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_uri(text);
    let (service, network) = text.split_once('\n').unwrap_or((text, ""));
    check_uri(network);

    let naming: Vec<&str> = network
        .split(';')
        .map(str::trim)
        .filter(|e| !e.is_empty() && e.split_once(' ').map_or(*e, |(n, _)| n) == service)
        .collect();
    let found = route(network, service);
    let Some(last) = naming.last() else {
        assert_eq!(found.unwrap(), Route::Local(service));
        return;
    };
    match found {
        // The last entry naming the service decides, whatever came before it.
        Ok(r) => {
            assert_eq!(route(last, service).unwrap(), r);
            match r {
                Route::Local(name) => {
                    assert!(validate_name(name.as_bytes()).is_ok());
                    assert!(last.contains(&format!("unix://{name}")));
                }
                Route::Daemon { daemon, uri } => {
                    assert!(daemon != "unix" && validate_name(daemon.as_bytes()).is_ok());
                    assert_eq!(parse_uri(uri).unwrap().scheme, daemon);
                    assert!(last.contains(uri));
                }
            }
        }
        // One bad entry naming the service is enough to fail it.
        Err(_) => assert!(naming.iter().any(|e| route(e, service).is_err())),
    }
});
