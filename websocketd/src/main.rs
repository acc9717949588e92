//! websocketd: WebSocket clients (browsers included) to local LibIPC services.
//!
//! Thin by design: its flags, then the WebSocket transport of its library
//! (`websocketd::ws`, with the HTTP side in `http`, `site` and `files`) on the
//! daemon kit tcpd and tlsd run on.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use daemon::cli::{self, Common, Listeners, Outbound, OutboundName, Plan};
use daemon::engine::DialTarget;
use daemon::tls::client::{TlsClient, TlsClientArgs};
use daemon::tls::server::{TlsArgs, TlsServer};
use libipc::switch::Transport;

use websocketd::client::WsClient;
use websocketd::flags::Flags;
use websocketd::ws::{Settings, WebSocket};

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
/// With --cert and --key it speaks wss, with tlsd's server-side TLS flags
/// (under "TLS (wss)" below) and SIGHUP reload. With --static-dir it also
/// serves files for plain GET requests, so a page and its WebSocket share
/// one origin.
///
/// Outbound, websocketd is also the LibIPC services `ws` and `wss` (at
/// `$RUNDIR/.outbound/`, out of reach of network clients): a local client's
/// `ws://HOST:PORT/SERVICE` or `wss://HOST[:PORT]/SERVICE` is connected to
/// SERVICE behind the websocketd at HOST:PORT, one binary WebSocket message
/// per LibIPC message; wss checks the server's certificate against --ca or
/// the system's roots. Quiet connections are pinged (--ping-interval).
/// --outbound-allow bounds where it connects, --proxy goes through an HTTP
/// proxy.
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

    #[command(flatten)]
    ws: Flags,

    #[command(flatten, next_help_heading = "TLS (wss)")]
    tls: TlsArgs,

    #[command(flatten, next_help_heading = "Outbound TLS (wss://)")]
    client: TlsClientArgs,

    #[command(flatten)]
    outbound: OutboundName,

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
    // Bound first: the policy knows the daemon by its actual addresses.
    let listeners = Listeners::open(&args.listen, &args.common)?;
    let settings = args
        .ws
        .settings(&args.common, listeners.addresses()?, tls.is_some())?;
    let transport_timeout = match &tls {
        Some(_) => args.ws.header_timeout + args.tls.tls_handshake_timeout,
        None => args.ws.header_timeout,
    };
    let settings_out = settings.clone();
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
    let outbound = if args.common.no_outbound {
        None
    } else {
        Some(outbound(args, settings_out)?)
    };
    cli::serve(
        Plan {
            name: "websocketd",
            listen: &args.listen,
            common: &args.common,
            inbound,
            outbound,
            transport_handshake_timeout: Some(transport_timeout),
            fixed_in_transport: true,
            keepalive: args.ws.keepalive(),
            handoff: false,
            on_hup: Box::new(move || match &tls {
                Some(server) => server.reload(),
                None => tracing::info!("SIGHUP: nothing to reload (no TLS)"),
            }),
        },
        listeners,
    )
}

/// The outbound service: `ws` and `wss`, the latter inside verified TLS.
fn outbound(args: &Args, settings: Arc<Settings>) -> Result<Outbound<'_>> {
    // A host without system roots still serves inbound clients and ws://;
    // wss:// is refused there, saying why. Files given and unreadable stop
    // the daemon.
    let tls = match TlsClient::new(&args.client) {
        Ok(tls) => Ok(tls),
        Err(e) if args.client.ca.is_none() && args.client.client_cert.is_none() => {
            let why = format!("{e:#}");
            tracing::warn!("outbound wss:// unavailable: {why}");
            Err(why)
        }
        Err(e) => return Err(e),
    };
    Ok(Outbound {
        service_name: args.outbound.service_name.as_deref(),
        scheme: "ws",
        also_schemes: &["wss"],
        factory: Arc::new(
            move |t: &DialTarget<'_>| -> Result<Box<dyn Transport>, String> {
                let secure = t.scheme == "wss";
                let default_port = if secure { 443 } else { 80 };
                let ws = WsClient::new(settings.clone(), t.service, t.host, t.port, default_port);
                match (&tls, secure) {
                    (_, false) => Ok(Box::new(ws)),
                    (Ok(tls), true) => tls.wrap(t.host, ws),
                    (Err(why), true) => Err(format!("wss:// is unavailable: {why}")),
                }
            },
        ),
    })
}
