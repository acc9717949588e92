//! A daemon's Prometheus metrics (`--metrics ADDR`), read as a scraper does.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::clients::{tcp, until_closed};

/// GETs `http://addr/metrics`; returns the body.
pub fn scrape(addr: SocketAddr) -> String {
    let mut c = tcp(addr);
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap_or_else(|e| panic!("metrics at {addr}: {e}"));
    let response = String::from_utf8(until_closed(c)).expect("metrics are text");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_owned()
}

/// Scrapes until every line of `want` is in the metrics (they are updated once
/// a second for open connections); fails after 5 s with the last scrape.
pub fn scrape_until(addr: SocketAddr, want: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = scrape(addr);
        if want.iter().all(|w| body.lines().any(|l| l == *w)) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "after 5 s the metrics still lack some of {want:#?}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
