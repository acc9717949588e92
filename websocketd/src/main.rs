//! websocketd: WebSocket clients (browsers included) to local LibIPC services.
//!
//! Thin by design: its flags, then the WebSocket transport of its library
//! (`websocketd::ws`, with the HTTP side in `http`, `site` and `files`) on the
//! daemon kit tcpd and tlsd run on.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use daemon::cli::{self, Common, Listeners, Plan};
use daemon::tls::server::{TlsArgs, TlsServer};
use libipc::switch::Transport;

use websocketd::http::{self, Policy};
use websocketd::site::{self, Origins, PublicHost, Site};
use websocketd::ws::{MessageType, Settings, WebSocket};

/// Puts local LibIPC services on WebSocket, for browsers and any WebSocket client.
///
/// A client opening ws://HOST:PORT/NAME is connected to the service
/// `$RUNDIR/NAME` (or, with --service, every client to that one service,
/// whatever the path). Each WebSocket message it sends, text or binary, whole or
/// fragmented, reaches the service as one LibIPC message; each message from the
/// service reaches the client as one WebSocket message, text or binary as
/// --message-type says. When the service closes, the client gets a close frame
/// (1000; 1011 if the service process died); when the client closes, the
/// service connection is closed once everything the client sent is delivered.
///
/// With --cert and --key it speaks wss (TLS, the same flags and SIGHUP reload
/// as tlsd). With --static-dir it also serves files for plain GET requests, so a
/// page and its WebSocket share one origin.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address to listen on (repeatable; port 0 picks a free port, logged).
    #[arg(
        long,
        env = "ADDRESS",
        value_delimiter = ',',
        default_value = "127.0.0.1:8080"
    )]
    listen: Vec<String>,

    /// Type of the WebSocket messages sent to clients: `mirror` answers in the
    /// type of the client's last message (text until it sent one, when the
    /// payload is UTF-8), `auto` sends text when the payload is UTF-8, `text`
    /// sends text (binary for a payload that is not UTF-8), `binary` always binary.
    #[arg(long, value_enum, default_value_t = MessageType::Mirror)]
    message_type: MessageType,

    /// A name clients reach this daemon by, NAME or NAME:PORT (repeatable;
    /// e.g. example.org behind a reverse proxy). Every request must name the
    /// daemon in its Host header: an IP address or localhost (at any port), or
    /// a public host (at its PORT if given, else at any); others are refused
    /// with 421, which defeats DNS rebinding (static files included).
    #[arg(
        long = "public-host",
        env = "PUBLIC_HOST",
        value_delimiter = ',',
        value_name = "NAME[:PORT]",
        value_parser = site::parse_public_host
    )]
    public_hosts: Vec<PublicHost>,

    /// Accept requests whatever host their Host header names (for clients that
    /// reach the daemon by names not given with --public-host). Browser pages
    /// still need an allowed origin.
    #[arg(long)]
    allow_any_host: bool,

    /// Browser origin allowed to connect (repeatable; `https://app.example.org`),
    /// instead of this daemon's own. By default a page may connect from: the
    /// host and port of the request (when that host is the daemon's: an IP
    /// address, localhost or a --public-host), localhost or a listen address
    /// (127.0.0.1 or ::1 for a wildcard one) at a listen port, or a public
    /// host at its port (default: the scheme's); with the listener's scheme,
    /// http for ws and https for wss (a public host may be https on a plain
    /// listener, behind a TLS terminator). Clients that send no Origin (not
    /// browsers) are not affected. Refusals get 403.
    #[arg(long, value_parser = http::parse_origin, conflicts_with = "allow_any_origin")]
    origin: Vec<String>,

    /// Let pages from any origin connect (cross-site WebSocket hijacking is then
    /// the services' problem). The Host check still applies.
    #[arg(long)]
    allow_any_origin: bool,

    /// Subprotocol to accept when a client offers it (repeatable, in preference
    /// order). Clients that offer none are accepted too.
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,

    /// Serve the files in this directory for plain GET requests (index.html for
    /// directories; no listings, nothing outside it; sent 64 KiB at a time as
    /// the client reads).
    #[arg(long)]
    static_dir: Option<PathBuf>,

    /// Ping a client after this long without traffic (0: never). A client that
    /// answers no ping for --idle-timeout is closed.
    #[arg(long, default_value = "30s", value_parser = cli::parse_duration)]
    ping_interval: Duration,

    /// Time a client has to send its HTTP request head, from its connection
    /// (with wss, counted after --tls-handshake-timeout).
    #[arg(long, default_value = "10s", value_parser = cli::parse_duration)]
    header_timeout: Duration,

    #[command(flatten, next_help_heading = "TLS (wss)")]
    tls: TlsArgs,

    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::main_with("websocketd", &args.common, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    let tls = if args.tls.enabled() {
        Some(TlsServer::new(&args.tls)?)
    } else {
        None
    };
    let static_dir = match &args.static_dir {
        Some(d) => {
            let real = d
                .canonicalize()
                .with_context(|| format!("--static-dir {}", d.display()))?;
            if !real.is_dir() {
                bail!("--static-dir {}: not a directory", d.display());
            }
            Some(real)
        }
        None => None,
    };
    if let Some(s) = &args.common.service {
        libipc::service::validate_name(s.as_bytes()).context("--service")?;
    }
    let origins = if args.allow_any_origin {
        Origins::Any
    } else if args.origin.is_empty() {
        Origins::Own
    } else {
        Origins::List(args.origin.clone())
    };
    // Bound first: the policy knows the daemon by its actual addresses.
    let listeners = Listeners::open(&args.listen, &args.common)?;
    let ping = (!args.ping_interval.is_zero()).then_some(args.ping_interval);
    let idle = args.common.idle_timeout;
    let max_unanswered_pings = match ping {
        Some(p) if !idle.is_zero() => idle.as_millis().div_ceil(p.as_millis()).max(1) as u32,
        _ => u32::MAX,
    };
    let settings = Arc::new(Settings {
        policy: Policy {
            fixed_service: args.common.service.clone(),
            site: Site {
                listeners: listeners.addresses()?,
                public: args.public_hosts.clone(),
                any_host: args.allow_any_host,
                origins,
                tls: tls.is_some(),
            },
            subprotocols: args.subprotocols.clone(),
            static_dir,
        },
        message_type: args.message_type,
        max_message_size: args.common.max_message_size,
        max_unanswered_pings,
    });
    let transport_timeout = match &tls {
        Some(_) => args.header_timeout + args.tls.tls_handshake_timeout,
        None => args.header_timeout,
    };
    let inbound = {
        let tls = tls.clone();
        Arc::new(move || -> Box<dyn Transport> {
            let ws = Box::new(WebSocket::new(settings.clone()));
            match &tls {
                Some(server) => server.wrap(ws),
                None => ws,
            }
        })
    };
    cli::serve(
        Plan {
            name: "websocketd",
            listen: &args.listen,
            common: &args.common,
            service_name: "ws",
            scheme: "ws",
            inbound,
            outbound: None,
            transport_handshake_timeout: Some(transport_timeout),
            fixed_in_transport: true,
            keepalive: ping,
            on_hup: Box::new(move || match &tls {
                Some(server) => server.reload(),
                None => tracing::info!("SIGHUP: nothing to reload (no TLS)"),
            }),
        },
        listeners,
    )
}
