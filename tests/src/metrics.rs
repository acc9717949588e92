//! A daemon's Prometheus metrics (`--metrics 127.0.0.1:0`), read the way a
//! scraper reads them: what the daemon counted, not what it logged.

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::clients::{tcp, until_closed};

/// GETs `http://addr/metrics`; returns the body.
pub fn scrape(addr: SocketAddr) -> String {
    let mut s = tcp(addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("metrics: request");
    let response = String::from_utf8(until_closed(&mut s)).expect("metrics are text");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_owned()
}

/// Scrapes until every line of `want` is in the metrics (they are updated once
/// a second for open connections); fails after 5 s with the last scrape.
pub fn scrape_until(addr: SocketAddr, want: &[&str]) -> String {
    scrape_within(addr, want, Duration::from_secs(5))
}

/// [`scrape_until`], for `within` rather than 5 s: for what the daemon does
/// at a deadline of its own.
pub fn scrape_within(addr: SocketAddr, want: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let body = scrape(addr);
        if want.iter().all(|w| body.lines().any(|l| l == *w)) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "after {within:?} the metrics still lack some of {want:#?}:\n{body}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Every series of `metric` in `body`: its labels (`daemon="tcpd",...`) and
/// its value.
pub fn series(body: &str, metric: &str) -> Vec<(String, u64)> {
    body.lines()
        .filter_map(|l| l.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}
