//! The HTTP side of websocketd: reading a request head, deciding between a
//! WebSocket upgrade (to which service, with which subprotocol, from which
//! origin), a static file, or a refusal, and writing the answers.

use std::path::PathBuf;

use crate::files;
use crate::site::Site;
use libipc::switch::{Refusal, WebSocketInfo};

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted in a request.
const MAX_HEADERS: usize = 64;

/// How requests are answered: the policy part of the daemon's flags.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Every WebSocket goes to this service, whatever its path.
    pub fixed_service: Option<String>,
    /// Which hosts and origins are the daemon's own.
    pub site: Site,
    /// Subprotocols offered, in preference order.
    pub subprotocols: Vec<String>,
    /// Files served for plain GET requests (canonical path).
    pub static_dir: Option<PathBuf>,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// A valid WebSocket upgrade: connect `service`; send `response` (101) once
    /// it is attached. `client`: the request, for `--peer-info`.
    Upgrade {
        service: String,
        response: Vec<u8>,
        client: WebSocketInfo,
    },
    /// Answer and close: `response`, then `body` if there is one (a file).
    /// `refused` says why, when the client asked for something it may not
    /// have or sent a bad request (logged as a warning).
    Respond {
        response: Vec<u8>,
        body: Option<files::Body>,
        refused: Option<String>,
        line: String,
    },
}

/// Where the request head ends (just past its blank line), if it is complete.
pub fn head_end(buf: &[u8], searched_to: usize) -> Option<usize> {
    let from = searched_to.saturating_sub(3);
    buf[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
}

/// An HTTP/1.1 response that closes the connection. `head_only` (a HEAD
/// request) leaves out the body but keeps its length.
pub fn response(
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = response_head(status, headers, content_type, body.len() as u64);
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The head of an HTTP/1.1 response that closes the connection, for a body
/// of `length` bytes sent after it.
pub fn response_head(
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    length: u64,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    out.into_bytes()
}

/// A plain-text error response.
pub fn error(status: u16, message: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{status} {}: {message}\n", reason_phrase(status));
    response(
        status,
        headers,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
    )
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// The answer to a refusal from the daemon: its HTTP status, its text.
pub fn refusal(refusal: Refusal) -> Vec<u8> {
    let status = refusal.http_status();
    // A full daemon or a busy service: worth trying again soon.
    let retry: &[(&str, &str)] = if status == 503 {
        &[("Retry-After", "1")]
    } else {
        &[]
    };
    error(status, &refusal.text(), retry)
}

fn refuse(status: u16, why: &str, line: &str, headers: &[(&str, &str)]) -> Decision {
    Decision::Respond {
        response: error(status, why, headers),
        body: None,
        refused: Some(why.to_owned()),
        line: line.to_owned(),
    }
}

/// Decides what to do with a complete request head.
pub fn decide(head: &[u8], policy: &Policy) -> Decision {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return refuse(400, "incomplete request", "-", &[]),
        Err(httparse::Error::TooManyHeaders) => {
            return refuse(431, "more than 64 headers", "-", &[]);
        }
        Err(e) => return refuse(400, &format!("malformed request: {e}"), "-", &[]),
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    // At most 200 bytes of the target in the log line, cut on a char boundary.
    let mut cut = target.len().min(200);
    while !target.is_char_boundary(cut) {
        cut -= 1;
    }
    let line = format!("{method} {}", &target[..cut]);
    if req.version != Some(1) {
        return refuse(505, "HTTP/1.1 only", &line, &[]);
    }
    let headers: &[httparse::Header<'_>] = req.headers;
    let get = |name: &'static str| values(headers, name);
    // Before anything is served, static files included: under a DNS
    // rebinding, a page could read them too.
    let hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Host"))
        .map(|h| std::str::from_utf8(h.value).unwrap_or("\u{fffd}"));
    let host = match policy.site.check_host(hosts) {
        Ok(host) => host,
        Err(r) => return refuse(r.status, &r.why, &line, &[]),
    };
    let has_token = |name: &'static str, token: &str| {
        get(name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let Some(path) = target.split('?').next().filter(|p| p.starts_with('/')) else {
        return refuse(400, "the request target must be a path", &line, &[]);
    };
    if !has_token("Upgrade", "websocket") {
        let head_only = method == "HEAD";
        if method != "GET" && !head_only {
            return refuse(405, "only GET", &line, &[("Allow", "GET, HEAD")]);
        }
        return match &policy.static_dir {
            Some(dir) => {
                let answer = files::serve(dir, path, head_only);
                Decision::Respond {
                    response: answer.head,
                    body: answer.body,
                    refused: answer.refused,
                    line,
                }
            }
            None => refuse(
                426,
                "this is a WebSocket endpoint: connect with ws://HOST/SERVICE",
                &line,
                &[("Upgrade", "websocket")],
            ),
        };
    }
    if method != "GET" {
        return refuse(
            405,
            "a WebSocket upgrade must be a GET",
            &line,
            &[("Allow", "GET")],
        );
    }
    if !has_token("Connection", "upgrade") {
        return refuse(400, "Upgrade without Connection: upgrade", &line, &[]);
    }
    if !get("Sec-WebSocket-Version").any(|v| v.trim() == "13") {
        return refuse(
            426,
            "unsupported WebSocket version (13 only)",
            &line,
            &[("Sec-WebSocket-Version", "13")],
        );
    }
    let Some(key) = get("Sec-WebSocket-Key").next().map(str::trim) else {
        return refuse(400, "no Sec-WebSocket-Key", &line, &[]);
    };
    // A base64 nonce of 16 bytes.
    if key.len() != 24 || !key.ends_with("==") {
        return refuse(400, "bad Sec-WebSocket-Key", &line, &[]);
    }
    // Every Origin header, not only the first: a request with an own origin
    // first and another after it is not one of our pages'. A value that is
    // not UTF-8 is no origin of ours either.
    let mut origins = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Origin"))
        .map(|h| std::str::from_utf8(h.value).unwrap_or("\u{fffd}"));
    let origin = origins.next();
    for o in origin.into_iter().chain(origins) {
        if let Err(r) = policy.site.check_origin(Some(o), &host) {
            return refuse(r.status, &r.why, &line, &[]);
        }
    }
    let service = match &policy.fixed_service {
        Some(s) => s.clone(),
        None => {
            let name = &path[1..];
            if name.is_empty() {
                return refuse(
                    404,
                    "name a service in the path: ws://HOST/SERVICE",
                    &line,
                    &[],
                );
            }
            name.to_owned()
        }
    };
    let offered: Vec<&str> = get("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let chosen = policy
        .subprotocols
        .iter()
        .find(|p| offered.contains(&p.as_str()));
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    );
    if let Some(p) = chosen {
        response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    response.push_str("\r\n");
    Decision::Upgrade {
        service,
        response: response.into_bytes(),
        client: WebSocketInfo {
            path: target.to_owned(),
            origin: origin.map(str::to_owned),
            subprotocol: chosen.cloned(),
        },
    }
}

/// The values of header `name` (case-insensitive), those that are UTF-8.
fn values<'h>(
    headers: &'h [httparse::Header<'h>],
    name: &'static str,
) -> impl Iterator<Item = &'h str> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// Normalises an --origin value (`scheme://host[:port]`, no path).
pub fn parse_origin(s: &str) -> Result<String, String> {
    let o = s.trim().trim_end_matches('/');
    match o.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && !rest.is_empty()
                && !rest.contains('/')
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            Ok(o.to_owned())
        }
        _ => Err(format!(
            "{s:?}: an origin is scheme://host[:port], e.g. https://example.org"
        )),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
