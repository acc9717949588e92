//! The outbound service's side of a worker: a local client's request
//! (`SCHEME://HOST:PORT/SERVICE`), the name lookup (off the loop, see
//! [`super::resolver`]), the connection to the remote daemon, and the answer
//! to the local client. Nothing here blocks the worker's loop.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::outbound::{self, Target};
use super::resolver::{Answer, Lookups, Resolver};
use super::{DialTarget, NetConn, Worker};
use libipc::ConnId;
use libipc::error::Chain;
use libipc::network::parse_uri;
use libipc::service::validate_name;
use libipc::switch::{DaemonExt, ProxyConfig};
use libipc::{Error, Result};

/// How long a local client has to read its last answer (a refusal) before
/// it is closed anyway: the answer is short, a client that reads at all
/// reads it at once.
const ANSWER_LINGER: Duration = Duration::from_secs(2);

/// A local client's request, once parsed.
#[derive(Debug)]
pub(super) struct Request {
    /// The protocol to speak to the remote (`DialTarget::scheme`).
    scheme: String,
    service: String,
    /// The host as written in the URI (allow-list names, TLS server names).
    host: String,
    port: u16,
    /// The client offered to take the connection itself
    /// (`libipc::network::HANDOFF_OPTION`).
    pub(super) handoff: bool,
    /// The HTTP proxy the connection goes through: the addresses dialled
    /// are the proxy's, the target is judged by name.
    via: Option<Arc<ProxyConfig>>,
}

impl Request {
    fn target(&self) -> DialTarget<'_> {
        DialTarget {
            scheme: &self.scheme,
            service: &self.service,
            host: &self.host,
            port: self.port,
        }
    }

    /// The host whose addresses are dialled: the proxy's, or the target's.
    fn dialled_host(&self) -> &str {
        self.via.as_deref().map_or(&self.host, ProxyConfig::host)
    }
}

/// Where a local client's outbound connection stands.
#[derive(Debug)]
pub(super) enum Dialing {
    /// Waiting for lookup `seq` (the local client's deadline is the timeout).
    Resolving { seq: u64, req: Request },
    /// Connecting to the remote daemon (or the proxy) through `net`; `rest`:
    /// the next allowed addresses, tried in turn if this one refuses the
    /// connection.
    Connecting {
        net: ConnId,
        req: Request,
        rest: Vec<SocketAddr>,
    },
}

impl Worker {
    /// Binds the outbound service (`$RUNDIR/.outbound/NAME`), under the name
    /// of each scheme it dials when its name is the default. A name another
    /// process has is left to it when [`super::DaemonConfig::local_service_if_free`]
    /// allows, with a line that says who has it.
    pub(super) fn offer_outbound(&mut self, resolver: &Resolver) -> Result<()> {
        let Some(main) = self.config.local_service.clone() else {
            return Ok(());
        };
        let mut names = vec![main.clone()];
        if main == self.config.scheme {
            names.extend(self.config.also_schemes.iter().cloned());
        }
        for name in &names {
            match self.ctx.outbound_service_init(name) {
                Ok(id) => self.local_service.push(id),
                Err(e @ Error::AlreadyRunning { .. }) if self.config.local_service_if_free => {
                    // Once, from the one worker that would have served it. The
                    // name stays the other daemon's: no retry if it exits.
                    tracing::info!(
                        "outbound service {name:?} left to another daemon: {e}; serving inbound \
                         clients only"
                    );
                    continue;
                }
                Err(e) => return Err(e),
            }
            let path = libipc::service::outbound_dir(&self.config.rundir).join(name);
            tracing::info!(service = %name, path = %path.display(), "outbound service ready");
        }
        if self.local_service.is_empty() {
            self.outbound = None;
            return Ok(());
        }
        self.lookups = Some(Lookups::new(resolver.clone(), &mut self.ctx)?);
        // Only now that a name is ours is this the policy local clients get.
        match self.config.outbound_allow.as_slice() {
            [] => tracing::info!(
                service = %main,
                "outbound: any destination (no --outbound-allow)"
            ),
            allow => {
                let allow: Vec<String> = allow.iter().map(ToString::to_string).collect();
                tracing::info!(service = %main, allow = %allow.join(","), "outbound: allowed destinations");
            }
        }
        if let Some(proxy) = &self.config.proxy {
            // Its Display leaves the credentials out.
            tracing::info!(service = %main, %proxy, "outbound: through an HTTP proxy");
        }
        Ok(())
    }

    /// A local client of our service asks for `SCHEME://HOST:PORT/SERVICE`.
    pub(super) fn outbound_request(&mut self, local: ConnId, payload: &[u8]) {
        if self.outbound.is_none() {
            return;
        }
        if self.dialing.contains_key(&local) {
            tracing::warn!(conn = %local, "message before the outbound connection was ready");
            self.local_left(local);
            let _ = self.ctx.close(local);
            return;
        }
        let uri = String::from_utf8_lossy(&payload[..payload.len().min(300)]).into_owned();
        if let Err(why) = self.request(local, payload) {
            tracing::warn!(%uri, reason = %why, "outbound refused");
            self.answer_local(local, &format!("no: {why}"));
        }
    }

    /// The protocol a request's scheme asks for: the daemon's own (by its
    /// scheme or its service's name), or one of its other schemes.
    fn scheme_of(&self, asked: &str) -> Result<String, String> {
        let c = &self.config;
        if asked == c.scheme || Some(asked) == c.local_service.as_deref() {
            return Ok(c.scheme.clone());
        }
        if c.also_schemes.iter().any(|s| s == asked) {
            return Ok(asked.to_owned());
        }
        let mut speaks = vec![format!("{}://", c.scheme)];
        speaks.extend(c.also_schemes.iter().map(|s| format!("{s}://")));
        Err(format!(
            "this daemon speaks {}, not {}://",
            speaks.join(" and "),
            asked.chars().take(40).collect::<String>()
        ))
    }

    /// Parses and checks a request, then connects (an IP literal) or starts
    /// the lookup (a host name): of the target, or of the proxy.
    fn request(&mut self, local: ConnId, payload: &[u8]) -> Result<(), String> {
        let request = std::str::from_utf8(payload).map_err(|_| "the request is not UTF-8")?;
        // The URI, then options, a line each (clients of this libipc offer
        // to take the connection: `handoff`).
        let mut lines = request.split('\n');
        let uri = lines.next().unwrap_or_default();
        let handoff = lines.any(|o| o == libipc::network::HANDOFF_OPTION);
        let u = parse_uri(uri).map_err(|e| e.to_string())?;
        let scheme = self.scheme_of(u.scheme)?;
        let authority = outbound::with_default_port(u.authority, &scheme);
        let service = validate_name(u.path.as_bytes()).map_err(|e| e.to_string())?;
        let allow = &self.config.outbound_allow;
        let target = outbound::target(&authority, allow)?;
        let port = match target {
            Target::Addr(addr) => addr.port(),
            Target::Name { port, .. } => port,
        };
        let mut req = Request {
            scheme,
            service: service.to_owned(),
            host: outbound::host_of(&authority).to_owned(),
            port,
            handoff,
            via: None,
        };
        let proxy = self
            .config
            .proxy
            .clone()
            .filter(|p| p.applies_to(&req.host));
        let Some(proxy) = proxy else {
            return self.reach(local, req, target);
        };
        // The proxy resolves the target: the allow list judges it by what
        // it is without that (its name, or its address if it is one).
        outbound::allowed_unresolved(&req.host, target, allow)?;
        let proxy_target = outbound::target(proxy.authority(), &[])
            .map_err(|e| format!("the proxy {proxy}: {e}"))?;
        req.via = Some(proxy.clone());
        self.reach(local, req, proxy_target)
    }

    /// Connects to `target` (an address) or starts its lookup (a name).
    fn reach(&mut self, local: ConnId, req: Request, target: Target<'_>) -> Result<(), String> {
        match target {
            Target::Addr(addr) => {
                let addrs = match req.via {
                    Some(_) => vec![addr],
                    None => outbound::allowed(&req.host, vec![addr], &self.config.outbound_allow)?,
                };
                self.connect(local, req, addrs);
            }
            Target::Name { host, port } => {
                let lookups = self.lookups.as_mut().ok_or("no name lookups here")?;
                let seq = lookups.start(local, host, port)?;
                let deadline = Instant::now() + lookups.timeout();
                // The local client's own deadline is the lookup's timeout.
                let _ = self.ctx.set_deadline(local, Some(deadline));
                tracing::debug!(conn = %local, host, "looking up");
                self.dialing.insert(local, Dialing::Resolving { seq, req });
            }
        }
        Ok(())
    }

    /// Lookups came back: connect their clients, or answer why not. Answers
    /// for clients that left or were answered already (timed out) are dropped.
    pub(super) fn lookups_done(&mut self) {
        let Some(lookups) = self.lookups.as_mut() else {
            return;
        };
        for Answer { seq, local, result } in lookups.take_answers() {
            match self.dialing.get(&local) {
                Some(Dialing::Resolving { seq: s, .. }) if *s == seq => {}
                _ => {
                    tracing::debug!(conn = %local, "a lookup answered too late: dropped");
                    continue;
                }
            }
            let Some(Dialing::Resolving { req, .. }) = self.dialing.remove(&local) else {
                continue;
            };
            let _ = self.ctx.set_deadline(local, None);
            // The proxy's addresses are the operator's choice, not a
            // destination the allow list judges.
            let allow = match req.via {
                Some(_) => &[][..],
                None => &self.config.outbound_allow[..],
            };
            let name = req.dialled_host();
            let addrs = result
                .map_err(|e| format!("cannot resolve {name}: {e}"))
                .and_then(|a| outbound::allowed(name, a, allow));
            match addrs {
                Ok(addrs) => self.connect(local, req, addrs),
                Err(why) => {
                    tracing::warn!(host = %req.host, reason = %why, "outbound refused");
                    self.answer_local(local, &format!("no: {why}"));
                }
            }
        }
    }

    /// The local client's deadline passed while its name was looked up:
    /// answered now (the lookup's thread finishes when it can; its answer
    /// is dropped). False if `local` was not waiting for a lookup.
    pub(super) fn lookup_timed_out(&mut self, local: ConnId) -> bool {
        let Some(Dialing::Resolving { req, .. }) = self.dialing.get(&local) else {
            return false;
        };
        let why = format!("cannot resolve {}: timed out", req.dialled_host());
        tracing::warn!(conn = %local, reason = %why, "outbound refused");
        self.answer_local(local, &format!("no: {why}"));
        true
    }

    /// Connects to the first of `addrs` that takes a connection now; the
    /// others wait in `Dialing::Connecting` in case it refuses later.
    fn connect(&mut self, local: ConnId, req: Request, addrs: Vec<SocketAddr>) {
        let mut addrs = addrs.into_iter();
        let mut last = String::from("no address to connect to");
        for addr in addrs.by_ref() {
            match self.dial(addr, &req) {
                Ok(net) => {
                    if let Some(c) = self.conns.get_mut(&net) {
                        c.local = Some(local);
                    }
                    let rest = addrs.collect();
                    self.dialing
                        .insert(local, Dialing::Connecting { net, req, rest });
                    return;
                }
                Err(why) => last = why,
            }
        }
        tracing::warn!(host = %req.host, reason = %last, "outbound refused");
        self.answer_local(local, &format!("no: {last}"));
    }

    fn dial(&mut self, addr: SocketAddr, req: &Request) -> Result<ConnId, String> {
        let Some(factory) = self.outbound.clone() else {
            return Err("no outbound service".into());
        };
        let mut transport = factory(&req.target())?;
        if let Some(proxy) = &req.via {
            transport = Box::new(proxy.tunnel(&req.host, req.port, transport));
        }
        let via = if req.via.is_some() { "the proxy " } else { "" };
        let stream =
            mio::net::TcpStream::connect(addr).map_err(|e| format!("connect {via}{addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let fd: OwnedFd = std::net::TcpStream::from(stream).into();
        let net = self
            .ctx
            .add_network(fd, transport)
            .map_err(|e| Chain(&e).to_string())?;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .ctx
            .set_deadline(net, Some(Instant::now() + self.config.handshake_timeout));
        let conn = NetConn::new(addr, Some(req.service.clone()), false);
        self.ctx.set_span(net, conn.span.clone());
        self.conns.insert(net, Box::new(conn));
        tracing::debug!(%addr, conn = %net, proxy = req.via.is_some(), "dialing");
        Ok(net)
    }

    /// Outbound connection `net` for `local` failed before the remote daemon
    /// said ok: the next address if this one refused the connection (no byte
    /// reached anyone: trying another is safe), else the local client hears why.
    pub(super) fn dial_failed(&mut self, local: ConnId, dialing: Dialing, reason: Option<&Error>) {
        let proxy = match &dialing {
            Dialing::Connecting { req, .. } => req.via.as_deref().map(ToString::to_string),
            Dialing::Resolving { .. } => None,
        };
        let refused = matches!(reason, Some(Error::Io(e)) if matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
        ));
        if let Dialing::Connecting { req, rest, .. } = dialing
            && refused
            && !rest.is_empty()
        {
            tracing::debug!(conn = %local, "connection refused: the next address");
            return self.connect(local, req, rest);
        }
        let text = match (reason, proxy) {
            (Some(Error::Denied(answer)), _) => answer.clone(),
            (Some(e @ Error::Io(_)), Some(proxy)) => {
                format!("no: the proxy {proxy} is unreachable: {}", Chain(e))
            }
            (Some(e), _) => format!("no: {}", Chain(e)),
            (None, _) => "no: the remote daemon closed the connection".into(),
        };
        // The remote's certificate refused, a proxy's refusal: the operator
        // sees why as well as the local client.
        tracing::warn!(conn = %local, reason = %text, "outbound failed");
        self.answer_local(local, &text);
    }

    /// A local client left: its lookup's answer will be dropped, its
    /// connection in progress is closed.
    pub(super) fn local_left(&mut self, local: ConnId) {
        match self.dialing.remove(&local) {
            Some(Dialing::Connecting { net, .. }) => self.close_net(net, "local client left"),
            Some(Dialing::Resolving { .. }) => {
                tracing::debug!(conn = %local, "the local client left during its lookup")
            }
            None => {}
        }
    }

    /// Draining: clients still waiting for a lookup are answered now (the
    /// worker ends once its network connections are gone).
    pub(super) fn refuse_lookups(&mut self) {
        let waiting: Vec<ConnId> = self
            .dialing
            .iter()
            .filter(|(_, d)| matches!(d, Dialing::Resolving { .. }))
            .map(|(&id, _)| id)
            .collect();
        for local in waiting {
            self.answer_local(local, "no: the daemon is shutting down");
        }
    }

    /// Tells a local client the outcome (a framed answer), then closes it once
    /// that is written: queued, never a blocking write, so that a client which
    /// does not read cannot stop the worker.
    pub(super) fn answer_local(&mut self, local: ConnId, text: &str) {
        self.dialing.remove(&local);
        let _ = self.ctx.schedule(local, text.as_bytes());
        if self.ctx.close_after_flush(local, ANSWER_LINGER).is_err() {
            let _ = self.ctx.close(local);
        }
    }
}
