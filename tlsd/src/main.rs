//! tlsd: tcpd behind TLS. The same modes, handshake, limits, workers and drain
//! (`daemon::cli`), with the TLS transport wrapped around the LibIPC-frames one.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use daemon::cli::{self, Common, Outbound, OutboundName, Plan};
use daemon::engine::DialTarget;
use libipc::switch::{Dial, Frames};

use daemon::tls::client::{TlsClient, TlsClientArgs};
use daemon::tls::server::{TlsArgs, TlsServer};

/// Puts local LibIPC services behind TLS.
///
/// tlsd is tcpd behind TLS: a TLS client is connected to `$RUNDIR/<name>`, the
/// service given with --service or the one it names first inside TLS (raw name and
/// `ok`, or framed); then LibIPC frames flow both ways. SIGHUP reloads the
/// certificate and key; a reload that fails keeps the old ones.
///
/// Outbound, tlsd is also the LibIPC service `tls` (at `$RUNDIR/.outbound/tls`,
/// out of reach of network clients): a local client's
/// `tls://HOST:PORT/SERVICE` is connected over TLS to the tlsd at HOST:PORT,
/// whose certificate is checked against --ca or the system's roots;
/// --outbound-allow bounds where it connects. Several tlsd (each with its
/// certificates) may share a RUNDIR: the first to start offers `tls`, the
/// others serve inbound clients only (see --service-name).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address to listen on (repeatable; port 0 picks a free port, logged).
    #[arg(
        long,
        env = "ADDRESS",
        value_delimiter = ',',
        default_value = "127.0.0.1:9443"
    )]
    listen: Vec<String>,

    #[command(flatten)]
    tls: TlsArgs,

    #[command(flatten)]
    client: TlsClientArgs,

    #[command(flatten)]
    outbound: OutboundName,

    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::main_with("tlsd", &args.common, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    let server = TlsServer::new(&args.tls)?;
    let max = args.common.max_message_size;
    let inbound = {
        let (server, common) = (server.clone(), args.common.clone());
        Arc::new(move || server.wrap(cli::frames_inbound(&common)))
    };
    let outbound = if args.common.no_outbound {
        None
    } else {
        let client = TlsClient::new(&args.client)?;
        Some(Outbound {
            service_name: args.outbound.service_name.as_deref(),
            scheme: "tls",
            also_schemes: &[],
            factory: Arc::new(move |t: &DialTarget<'_>| {
                client.wrap(t.host, Dial::new(t.service, Frames::new(max)))
            }),
        })
    };
    cli::run(Plan {
        name: "tlsd",
        listen: &args.listen,
        common: &args.common,
        inbound,
        outbound,
        transport_handshake_timeout: Some(args.tls.tls_handshake_timeout),
        fixed_in_transport: false,
        keepalive: None,
        handoff: false,
        on_hup: Box::new(move || server.reload()),
    })
}
