//! Helpers shared by the in-process tests.
#![allow(dead_code)] // each test file uses its own subset

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use std::net::{TcpListener, TcpStream};

use libipc::switch::{DaemonExt, Frames, Routed};
use libipc::{Config, ConnId, Context, Event};

pub const LIMIT: Duration = Duration::from_secs(20);

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

pub fn read_frame(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut hdr = [0; 4];
    s.read_exact(&mut hdr)?;
    let mut p = vec![0; u32::from_be_bytes(hdr) as usize];
    s.read_exact(&mut p)?;
    Ok(p)
}

pub fn client(rundir: &Path, name: &str) -> UnixStream {
    let s = UnixStream::connect(rundir.join(name)).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

/// What the echo service saw, sent back to the test when it stops.
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: usize,
    pub disconnections: Vec<(ConnId, Option<String>)>,
    pub messages: usize,
}

impl Seen {
    /// The reasons given for disconnections that were not orderly.
    pub fn reasons(&self) -> Vec<String> {
        self.disconnections
            .iter()
            .filter_map(|(_, r)| r.clone())
            .collect()
    }
}

/// An echo service on its own thread. It stops after `stop_after` disconnections.
pub fn echo_service(
    rundir: &Path,
    name: &str,
    config: Config,
    stop_after: usize,
) -> mpsc::Receiver<Seen> {
    counting_echo_service(rundir, name, config, stop_after).0
}

/// [`echo_service`], and the connections it has accepted so far (for tests
/// that count them while the service runs).
pub fn counting_echo_service(
    rundir: &Path,
    name: &str,
    config: Config,
    stop_after: usize,
) -> (mpsc::Receiver<Seen>, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let mut ctx = Context::with_config(config).unwrap();
    ctx.set_rundir(rundir);
    ctx.service_init(name).unwrap();
    ctx.set_timer(Some(LIMIT));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut seen = Seen::default();
        while seen.disconnections.len() < stop_after {
            match ctx.wait_event().unwrap() {
                Event::Connection { .. } => {
                    seen.connections += 1;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Event::Message { id, payload } => {
                    seen.messages += 1;
                    ctx.schedule_vec(id, payload).unwrap();
                }
                Event::Disconnection { id, reason } => {
                    seen.disconnections
                        .push((id, reason.map(|e| e.to_string())));
                }
                Event::Timer => panic!("echo service idle for {LIMIT:?}"),
                _ => {}
            }
        }
        tx.send(seen).unwrap();
    });
    (rx, connections)
}

pub fn rundir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    (tmp, dir)
}

/// A relay context with one routed network client connected to it.
pub fn routed_client(dir: &std::path::Path) -> (Context, ConnId, TcpStream) {
    routed_client_with(dir, Config::default())
}

/// [`routed_client`] with a context made with `config`.
pub fn routed_client_with(dir: &std::path::Path, config: Config) -> (Context, ConnId, TcpStream) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let (stream, _) = tcp.accept().unwrap();
    let mut ctx = Context::with_config(config).unwrap();
    ctx.set_rundir(dir);
    ctx.set_timer(Some(LIMIT));
    let id = ctx
        .add_network(stream.into(), Box::new(Routed::new(Frames::new(1 << 20))))
        .unwrap();
    (ctx, id, client)
}

pub fn next_request(ctx: &mut Context) -> (ConnId, Vec<u8>) {
    loop {
        match ctx.wait_event().unwrap() {
            Event::ServiceRequest { id, name } => return (id, name),
            Event::Timer => panic!("no request within {LIMIT:?}"),
            _ => {}
        }
    }
}
