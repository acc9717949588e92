//! In-process tests of the daemon's counters (what its metrics endpoint
//! serves): they match what the test's clients did.

use daemon::engine::ServiceStats;
use libipc::traffic::Traffic;

mod support;
use support::*;

#[test]
fn counters_match_what_clients_did() {
    let mut setup = Setup::routed();
    setup.config.allow = vec!["echo".into(), "other".into(), "nobody".into()];
    let _echo = Service::start(setup.rundir(), "echo");
    let _other = Service::start(setup.rundir(), "other");
    let _hidden = Service::start(setup.rundir(), "hidden");
    let d = setup.start(listener().0);
    let mut echo_clients: Vec<_> = (0..3).map(|_| d.echo_client("echo")).collect();
    let other = d.echo_client("other");
    for (name, want) in [
        (&b"nobody"[..], "no: unknown service"),
        (b"hidden", "no: service not allowed"),
        (b"../x", "no: invalid service name"),
        (b"nobody", "no: unknown service"),
    ] {
        assert_eq!(d.ask(name).1, want);
    }
    // Open now: the four relayed; the refused are gone.
    let open = d.stats_when(|s| s.open == 4);
    assert_eq!(open.accepted, 8);
    assert_eq!(
        (open.services["echo"].open, open.services["other"].open),
        (3, 1)
    );
    // Three more messages of 5 bytes through the first echo client, then
    // everyone leaves.
    for _ in 0..3 {
        assert_echoes(&mut echo_clients[0], b"12345");
    }
    drop((echo_clients, other));
    let s = d.stats_when(|s| s.open == 0 && s.services.values().all(|v| v.open == 0));
    let refused: Vec<(&str, u64)> = s.refused.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        refused,
        [
            ("invalid service name", 1),
            ("service not allowed", 1),
            ("unknown service", 2),
        ]
    );
    assert_eq!(s.accepted, 8);
    // Per service: the connections, and the messages each way (the
    // handshake's `ok` is the daemon's, not the service's). Each client sent
    // "hello" (see `echo_client`); the first, three more.
    let traffic = |messages: u64, bytes: u64| Traffic {
        bytes_in: bytes,
        bytes_out: bytes,
        messages_in: messages,
        messages_out: messages,
    };
    let echo = ServiceStats {
        open: 0,
        connections: 3,
        traffic: traffic(6, 6 * 9),
        handed_off: 0,
    };
    let other = ServiceStats {
        open: 0,
        connections: 1,
        traffic: traffic(1, 9),
        handed_off: 0,
    };
    assert_eq!(s.services.len(), 2, "{s:?}");
    assert_eq!((s.services["echo"], s.services["other"]), (echo, other));
}
