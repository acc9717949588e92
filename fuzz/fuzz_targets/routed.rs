//! The routed handshake (`Routed<Frames>`, tcpd's default mode): any bytes
//! from the network, cut into any reads, then the daemon's decision. Checks
//! that the service asked for is exactly the name the client sent (framed, or
//! every raw byte up to its line end, a frame or the end of a read), asked
//! for once; that the client gets `ok` or `no: ...` in its own form and
//! nothing else; that nothing reaches the service before a name, nothing at
//! all once refused, and once accepted exactly the bytes after the name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libipc::frame;
use libipc::service::MAX_NAME_LEN;
use libipc::switch::{Frames, Routed, Transport};
use libipc::testing::Harness;
use libipc_fuzz::{read_start, reads, reference_frames};

/// An answer as the client gets it: in the form it named the service in.
fn answer(framed: bool, text: &str) -> Vec<u8> {
    if framed {
        let mut out = Vec::new();
        frame::encode(text.as_bytes(), &mut out).unwrap();
        out
    } else if text == "ok" {
        text.as_bytes().to_vec()
    } else {
        format!("{text}\n").into_bytes()
    }
}

fn is_name_start(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed, input @ ..] = data else {
        return;
    };
    let max = if flags & 1 == 0 { 1000 } else { 3 };
    let accept = flags & 2 == 0;
    let reads = reads(input, *seed, false);
    let mut t = Routed::new(Frames::new(max));
    let mut h = Harness::new();
    // The name asked for, and where the read that carried it ends.
    let mut request: Option<(Vec<u8>, usize)> = None;
    let mut failed = None;
    let mut fed = 0;
    for read in &reads {
        let call = h.call(|relay| t.on_network_data(read, relay));
        fed += read.len();
        if let Some(name) = call.requested {
            assert!(request.is_none(), "a second service request");
            request = Some((name, fed));
            let decided = h.call(|relay| {
                if accept {
                    t.accepted(relay)
                } else {
                    t.refused(libipc::switch::Refusal::UnknownService, relay)
                }
            });
            // What came after the name is looked at only once it is accepted.
            if let Some(Some(e)) = decided.finished {
                failed = Some(e);
                break;
            }
        }
        if let Err(e) = call.value {
            failed = Some(e);
            break;
        }
    }
    let framed = input.first() == Some(&0);
    let to_service = h.take_to_service();
    let to_network = h.take_to_network();

    let Some((name, name_read_end)) = request else {
        // No name (yet): nothing for the service; a refusal, or silence.
        assert!(to_service.is_empty());
        match failed {
            Some(e) => assert_eq!(to_network, answer(framed, &format!("no: {e}"))),
            None => {
                assert!(to_network.is_empty());
                assert!(t.network_closed().is_err());
            }
        }
        return;
    };

    // The name: exactly what was sent.
    assert!(name.len() <= MAX_NAME_LEN);
    let used = if framed {
        assert_eq!(name, input[4..4 + name.len()]);
        assert_eq!(input[..4], frame::header(name.len()).unwrap());
        4 + name.len()
    } else {
        assert!(name.first().is_some_and(is_name_start));
        assert!(input.starts_with(&name));
        assert!(!name.contains(&b'\n') && !name.contains(&0));
        // Ended by the client, or by a read.
        let rest = &input[name.len()..name_read_end];
        let read_ends: Vec<usize> = reads
            .iter()
            .scan(0, |at, r| {
                *at += r.len();
                Some(*at)
            })
            .collect();
        assert!(
            [&b"\n"[..], b"\r\n", b"\0"]
                .iter()
                .any(|end| rest.starts_with(end))
                || read_ends.contains(&name.len())
        );
        // A line end in the same read is the handshake's.
        name.len()
            + if rest.starts_with(b"\r\n") {
                2
            } else {
                usize::from(rest.starts_with(b"\n"))
            }
    };
    let text = if accept { "ok" } else { "no: unknown service" };
    assert_eq!(to_network, answer(framed, text));

    if !accept {
        // Refused: what followed the name was never looked at.
        assert!(to_service.is_empty() && failed.is_none());
        return;
    }
    // After the name: the bytes that followed, unchanged, up to a bad frame
    // header.
    let after = &input[used..fed];
    assert_eq!(to_service, after[..to_service.len()]);
    let (_, bad, consumed) = reference_frames(after, max);
    match (failed, bad) {
        (None, _) => {
            assert_eq!(to_service.len(), after.len());
            assert!(bad.is_none());
        }
        (Some(_), Some(at)) => {
            let reads_after: Vec<&[u8]> = reads_after(&reads, used);
            assert_eq!(to_service.len(), at.max(read_start(&reads_after, at + 3)));
            return;
        }
        (Some(e), None) => panic!("refused good frames: {e}"),
    }
    assert_eq!(t.network_closed().is_ok(), consumed == after.len());
    // The service's frames go to the client as they are.
    let hello = answer(true, "hello");
    h.call(|relay| t.on_service_data(&hello, relay))
        .value
        .unwrap();
    assert_eq!(h.take_to_network(), hello);
});

/// The reads as seen from byte `from` of the input on.
fn reads_after<'a>(reads: &[&'a [u8]], from: usize) -> Vec<&'a [u8]> {
    let mut start = 0;
    let mut out = Vec::new();
    for r in reads {
        let end = start + r.len();
        if end > from {
            out.push(&r[from.saturating_sub(start)..]);
        }
        start = end;
    }
    out
}
