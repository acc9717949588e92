//! Property tests (the fuzzing issue, on stable Rust): the frame decoder and scanner,
//! service-name validation, and the URI / IPC_NETWORK parsers. Each property runs a
//! bounded number of cases so the whole file stays within a few seconds in CI; a
//! failure proptest finds is kept below as a plain `#[test]`.

use std::path::{Component, Path};

use libipc::Error;
use libipc::frame::{self, Decoder, HEADER_LEN, Scanner};
use libipc::network::{Route, parse_uri, route};
use libipc::service::validate_name;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrinking stays bounded too, should a property fail in CI.
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

/// `data` cut at the given points (taken modulo its length, in any order).
fn chunks(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    at.push(0);
    at.push(data.len());
    at.sort_unstable();
    at.windows(2).map(|w| data[w[0]..w[1]].to_vec()).collect()
}

/// What a stream holds, judged on the whole buffer at once: the complete frames'
/// payload ranges, and the offset of the first header over `max`, if any.
fn model(buf: &[u8], max: usize) -> (Vec<std::ops::Range<usize>>, Option<usize>) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= HEADER_LEN {
        let len = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        if len > max {
            return (frames, Some(pos));
        }
        if buf.len() - pos - HEADER_LEN < len {
            break;
        }
        frames.push(pos + HEADER_LEN..pos + HEADER_LEN + len);
        pos += HEADER_LEN + len;
    }
    (frames, None)
}

/// Bytes that look like frames often enough: small big-endian lengths mixed with
/// garbage, so that both the valid path and the refusal path are exercised.
fn framish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        // A plausible header (declared length 0..80) followed by some bytes.
        (0u32..80, prop::collection::vec(any::<u8>(), 0..80)).prop_map(|(n, b)| {
            let mut v = n.to_be_bytes().to_vec();
            v.extend(b);
            v
        }),
        prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(config(512))]

    /// Encoding any payloads and feeding the stream cut anywhere gives back exactly
    /// those payloads, through `feed` and `feed_owned` alike.
    #[test]
    fn decoder_round_trips_any_cut(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        owned in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            frame::encode(p, &mut stream).unwrap();
        }
        let mut dec = Decoder::new(300);
        let mut got: Vec<Vec<u8>> = Vec::new();
        for c in chunks(&stream, &cuts) {
            let n = if owned {
                dec.feed_owned(&c, |p| got.push(p))
            } else {
                dec.feed(&c, |p| got.push(p.to_vec()))
            };
            n.unwrap();
        }
        prop_assert_eq!(&got, &payloads);
        prop_assert_eq!(dec.pending(), 0);
        prop_assert!(dec.finish().is_ok());
    }

    /// On any bytes, cut anywhere, the decoder yields exactly the frames the stream
    /// holds up to the first header over the maximum, refuses that header in the
    /// read that completes it (before any of its payload is taken in), and never
    /// holds more than one header and one maximum-size payload.
    #[test]
    fn decoder_on_garbage_matches_the_model(
        data in prop_oneof![framish(), prop::collection::vec(any::<u8>(), 0..400)],
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        max in 0usize..100,
    ) {
        let (frames, bad) = model(&data, max);
        let mut dec = Decoder::new(max);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut offset = 0;
        let mut failed_at = None;
        for c in chunks(&data, &cuts) {
            let res = dec.feed(&c, |p| got.push(p.to_vec()));
            match res {
                Ok(_) => prop_assert!(dec.pending() <= HEADER_LEN + max),
                Err(Error::MessageTooLarge { len, max: m }) => {
                    prop_assert!(len as usize > max && m == max);
                    failed_at = Some(offset..offset + c.len());
                    break;
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            }
            offset += c.len();
        }
        let want: Vec<Vec<u8>> = frames.iter().map(|r| data[r.clone()].to_vec()).collect();
        prop_assert_eq!(got, want);
        match bad {
            // Refused in the read holding the header's last byte.
            Some(pos) => {
                let read = failed_at.expect("an oversized header was accepted");
                prop_assert!(read.contains(&(pos + HEADER_LEN - 1)), "{:?} {}", read, pos);
            }
            None => prop_assert!(failed_at.is_none()),
        }
        if bad.is_none() {
            // Whatever is left over is an unfinished frame, and said so.
            let tail = data.len() - frames.last().map_or(0, |r| r.end);
            prop_assert_eq!(dec.pending(), tail);
            prop_assert_eq!(dec.finish().is_ok(), tail == 0);
        }
    }

    /// The scanner counts the same frames as the decoder, read by read, fails in the
    /// same read, and its `scan_valid` prefix stops at the bad header (or at the
    /// start of the read, when earlier reads already held part of that header).
    #[test]
    fn scanner_agrees_with_decoder(
        data in prop_oneof![framish(), prop::collection::vec(any::<u8>(), 0..400)],
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        max in 0usize..100,
    ) {
        let (_, bad) = model(&data, max);
        let mut dec = Decoder::new(max);
        let mut sc = Scanner::new(max);
        let mut offset = 0;
        for c in chunks(&data, &cuts) {
            let d = dec.feed(&c, |_| {});
            let (valid, s) = sc.scan_valid(&c);
            match (d, s) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(valid, c.len());
                    prop_assert_eq!(sc.at_boundary(), dec.pending() == 0);
                }
                (Err(_), Err(_)) => {
                    let pos = bad.expect("both failed on a stream with no bad header");
                    prop_assert_eq!(offset + valid, pos.max(offset));
                    return Ok(());
                }
                (d, s) => {
                    return Err(TestCaseError::fail(format!(
                        "decoder {:?}, scanner {:?}", d.map_err(|e| e.to_string()),
                        s.map_err(|e| e.to_string())
                    )));
                }
            }
            offset += c.len();
        }
        prop_assert!(bad.is_none());
    }

    /// Names accepted are safe file names directly under the run directory.
    #[test]
    fn accepted_names_stay_in_the_rundir(
        name in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            "[A-Za-z0-9._/\\\\-]{0,70}".prop_map(String::into_bytes),
            prop::collection::vec(
                prop::sample::select(vec![&b".."[..], b".", b"/", b"\0", b"a", b"-", b"_", b"%2e"]),
                0..12,
            ).prop_map(|p| p.concat()),
        ],
    ) {
        if let Ok(s) = validate_name(&name) {
            prop_assert_eq!(s.as_bytes(), &name[..]);
            prop_assert!(!s.is_empty() && s.len() <= 64);
            prop_assert!(!s.starts_with('.'));
            prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            prop_assert!(!s.contains(['/', '\0']));
            let rundir = Path::new("/run/ipc");
            let path = rundir.join(s);
            prop_assert_eq!(path.parent(), Some(rundir));
            let last = path.components().next_back();
            prop_assert_eq!(last, Some(Component::Normal(s.as_ref())));
        }
    }

    /// Every name made of the allowed bytes, not starting with '.', is accepted.
    #[test]
    fn well_formed_names_are_accepted(name in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}") {
        prop_assert_eq!(validate_name(name.as_bytes()).ok(), Some(name.as_str()));
    }

    /// `parse_uri` never panics, and what it returns puts the URI back together.
    #[test]
    fn parse_uri_splits_any_string(s in prop_oneof![any::<String>(), "[a-z:/\\[\\]0-9.]{0,30}"]) {
        if let Ok(u) = parse_uri(&s) {
            prop_assert!(!u.scheme.is_empty() && !u.scheme.contains("://"));
            prop_assert!(!u.authority.contains('/'));
            let mut back = format!("{}://{}", u.scheme, u.authority);
            if s.len() > back.len() {
                back.push('/');
                back.push_str(u.path);
            }
            prop_assert_eq!(back, s);
        } else {
            prop_assert!(!s.contains("://") || s.starts_with("://"));
        }
    }

    /// `scheme://host:port/service` comes apart into exactly its parts, and as an
    /// IPC_NETWORK entry routes to the scheme's daemon with the whole URI.
    #[test]
    fn uri_round_trip(
        scheme in "[a-z][a-z0-9_-]{0,9}",
        host in prop_oneof!["[a-z0-9][a-z0-9.-]{0,20}", "\\[[0-9a-f:]{2,20}\\]"],
        port in any::<u16>(),
        service in "svc[A-Za-z0-9._-]{0,20}",
        path_rest in "(/[a-z0-9._-]{0,8}){0,2}",
        others in "([a-r]{1,5} [a-z]{1,5}://[a-z0-9:]{0,10}(/[a-z]*)?;){0,3}",
    ) {
        let authority = format!("{host}:{port}");
        let path = format!("{service}{path_rest}");
        let uri = format!("{scheme}://{authority}/{path}");
        let u = parse_uri(&uri).unwrap();
        prop_assert_eq!(u.scheme, scheme.as_str());
        prop_assert_eq!(u.authority, authority.as_str());
        prop_assert_eq!(u.path, path.as_str());

        let network = format!("{others} {service} {uri} ;");
        let want = if scheme == "unix" {
            // `unix://host:port` names a local service: ':' makes it invalid.
            None
        } else {
            Some(Route::Daemon { daemon: &scheme, uri: &uri })
        };
        prop_assert_eq!(route(&network, &service).ok(), want);
    }

    /// Routing on any IPC_NETWORK value and service never panics, and only ever
    /// leads to a valid local name or a daemon named by a valid scheme.
    #[test]
    fn route_on_any_value(
        network in prop_oneof![
            any::<String>(),
            "([a-z;]{0,4}[ ;]{0,2}([a-z.]{0,4}://[a-z./:]{0,8})?[; ]{0,2}){0,5}",
        ],
        service in prop_oneof![any::<String>(), "[a-z]{0,3}"],
    ) {
        match route(&network, &service) {
            Ok(Route::Local(name)) => prop_assert!(name == service || validate_name(name.as_bytes()).is_ok()),
            Ok(Route::Daemon { daemon, uri }) => {
                prop_assert!(validate_name(daemon.as_bytes()).is_ok());
                prop_assert!(daemon != "unix");
                let daemon_prefix = format!("{daemon}://");
                prop_assert!(uri.starts_with(&daemon_prefix));
                prop_assert!(network.contains(uri));
            }
            Err(_) => prop_assert!(network.contains(service.as_str())),
        }
    }
}
