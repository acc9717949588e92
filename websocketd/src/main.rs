//! websocketd: WebSocket clients (browsers included) to local LibIPC services.
//!
//! Thin by design: its flags, then the WebSocket transport of its library
//! (`websocketd::ws`, with the HTTP side in `http`, `site` and `files`) on the
//! daemon kit tcpd and tlsd run on.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use daemon::cli::{self, Common, Listeners, Plan};
use daemon::tls::server::{TlsArgs, TlsServer};
use libipc::switch::Transport;

use websocketd::flags::Flags;
use websocketd::ws::WebSocket;

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
/// (under "TLS (wss)" below) and SIGHUP reload; not tlsd's outbound ones
/// (websocketd has no outbound service). With --static-dir it also serves
/// files for plain GET requests, so a page and its WebSocket share one origin.
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
            inbound,
            outbound: None,
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
