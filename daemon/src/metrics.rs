//! `--metrics ADDR`: the daemon's counters in the Prometheus text format, on a
//! listener of their own (a thread; one scrape at a time, each bounded in time
//! and size).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Snapshot, Stats};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Longest a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

type Labels = Vec<(&'static str, String)>;

/// Serves `stats` on `listener` from a thread of its own.
pub fn spawn(listener: TcpListener, stats: Arc<Stats>, daemon: String) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "metrics at http://{}/metrics", listener.local_addr()?);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = answer(s, &stats, &daemon) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

fn answer(mut s: TcpStream, stats: &Stats, daemon: &str) -> std::io::Result<()> {
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, ctype, body) = if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ")
    {
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(&stats.snapshot(), daemon),
        )
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        )
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The snapshot in the OpenMetrics text format (which Prometheus reads).
pub fn render(snap: &Snapshot, daemon: &str) -> String {
    let mut registry = Registry::with_prefix_and_labels(
        "ipc",
        [(
            std::borrow::Cow::Borrowed("daemon"),
            std::borrow::Cow::Owned(daemon.to_owned()),
        )]
        .into_iter(),
    );
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        g
    };
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    registry.register(
        "connections_open",
        "Network connections open now",
        gauge(snap.open),
    );
    registry.register(
        "connections_accepted",
        "Network connections accepted since start",
        counter(snap.accepted),
    );
    registry.register(
        "outbound_handoffs",
        "Outbound connections given to the local clients that asked (--handoff)",
        counter(snap.outbound_handed_off),
    );
    let refused = Family::<Labels, Counter>::default();
    for (reason, n) in &snap.refused {
        refused
            .get_or_create(&vec![("reason", reason.clone())])
            .inc_by(*n);
    }
    registry.register(
        "handshake_failures",
        "Clients refused or failed before reaching a service, by reason",
        refused,
    );
    let open = Family::<Labels, Gauge>::default();
    let total = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let messages = Family::<Labels, Counter>::default();
    let handed = Family::<Labels, Counter>::default();
    for (service, s) in &snap.services {
        let svc = || vec![("service", service.clone())];
        open.get_or_create(&svc()).set(s.open as i64);
        total.get_or_create(&svc()).inc_by(s.connections);
        if s.handed_off > 0 {
            handed.get_or_create(&svc()).inc_by(s.handed_off);
        }
        for (dir, b, m) in [
            ("in", s.traffic.bytes_in, s.traffic.messages_in),
            ("out", s.traffic.bytes_out, s.traffic.messages_out),
        ] {
            let mut l = svc();
            l.push(("direction", dir.to_owned()));
            bytes.get_or_create(&l).inc_by(b);
            messages.get_or_create(&l).inc_by(m);
        }
    }
    registry.register(
        "service_connections_open",
        "Connections relayed to a service now",
        open,
    );
    registry.register(
        "service_connections",
        "Connections relayed to a service since start",
        total,
    );
    registry.register(
        "service_handoffs",
        "Clients handed to a service itself (--handoff): not relayed, not counted above",
        handed,
    );
    registry.register(
        "service_bytes",
        "LibIPC bytes relayed (in: client to service, out: service to client)",
        bytes,
    );
    registry.register(
        "service_messages",
        "LibIPC messages relayed (in: client to service, out: service to client)",
        messages,
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ServiceStats;
    use libipc::traffic::Traffic;

    #[test]
    fn renders_every_counter_with_its_labels() {
        let mut snap = Snapshot {
            open: 3,
            accepted: 10,
            outbound_handed_off: 4,
            ..Snapshot::default()
        };
        snap.refused.insert("unknown service".into(), 2);
        snap.services.insert(
            "pong".into(),
            ServiceStats {
                open: 1,
                connections: 7,
                traffic: Traffic {
                    bytes_in: 100,
                    bytes_out: 90,
                    messages_in: 5,
                    messages_out: 4,
                },
                handed_off: 3,
            },
        );
        let text = render(&snap, "tcpd");
        for line in [
            "ipc_connections_open{daemon=\"tcpd\"} 3",
            "ipc_connections_accepted_total{daemon=\"tcpd\"} 10",
            "ipc_outbound_handoffs_total{daemon=\"tcpd\"} 4",
            "ipc_handshake_failures_total{daemon=\"tcpd\",reason=\"unknown service\"} 2",
            "ipc_service_connections_open{daemon=\"tcpd\",service=\"pong\"} 1",
            "ipc_service_connections_total{daemon=\"tcpd\",service=\"pong\"} 7",
            "ipc_service_handoffs_total{daemon=\"tcpd\",service=\"pong\"} 3",
            "ipc_service_bytes_total{daemon=\"tcpd\",service=\"pong\",direction=\"in\"} 100",
            "ipc_service_messages_total{daemon=\"tcpd\",service=\"pong\",direction=\"out\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
