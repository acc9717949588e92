//! tcpd: TCP clients to local LibIPC services, and local clients to remote ones.
//!
//! Thin by design: its flags, then the shared daemon plumbing (`daemon::cli`) with
//! the plain LibIPC-frames transport.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use daemon::cli::{self, Common, Outbound, OutboundName, Plan};
use daemon::engine::DialTarget;
use libipc::switch::{Dial, Frames, Transport};

/// Puts local LibIPC services on TCP.
///
/// Inbound, each TCP client is connected to the service `$RUNDIR/<name>`: the one
/// given with --service (fixed mode), or the one the client names first (routed
/// mode: the raw name, optionally ending in a newline, answered `ok`; or the name
/// in one LibIPC frame, answered with a framed `ok`). Then LibIPC frames flow both
/// ways. Failures are answered `no: REASON` before the connection is closed.
///
/// Outbound, tcpd is also a LibIPC service (`tcp`, at `$RUNDIR/.outbound/tcp`): a
/// local client that sends `tcp://HOST:PORT/SERVICE` is connected to SERVICE
/// behind the tcpd at HOST:PORT. With IPC_NETWORK="pong tcp://HOST:PORT/pong",
/// libipc's connect does this itself. Network clients cannot reach it (unless
/// --expose-outbound says so); --outbound-allow bounds where it connects.
/// Several tcpd (and tlsd, websocketd) may share a RUNDIR: the first to start
/// offers `tcp`, the others serve inbound clients only (see --service-name).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address to listen on (repeatable; IPv4, IPv6 `[::1]:9000`, or a host name;
    /// port 0 picks a free port, logged at startup).
    #[arg(
        long,
        env = "ADDRESS",
        value_delimiter = ',',
        default_value = "127.0.0.1:9000"
    )]
    listen: Vec<String>,

    #[command(flatten)]
    outbound: OutboundName,

    /// Hand each client's socket to its service once its handshake is done,
    /// when the service takes handed-off clients (any service built on this
    /// libipc, Rust or C; others are relayed as usual): tcpd then steps out,
    /// and the client talks to the service directly. Handed-off clients are
    /// the service's: tcpd's drain, --idle-timeout and per-message metrics no
    /// longer apply to them, --max-connections counts only clients in their
    /// handshake, and restarting tcpd does not cut them.
    #[arg(long, env = "TCPD_HANDOFF")]
    handoff: bool,

    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::main_with("tcpd", &args.common, || {
        let max = args.common.max_message_size;
        let common = args.common.clone();
        cli::run(Plan {
            name: "tcpd",
            listen: &args.listen,
            common: &args.common,
            inbound: Arc::new(move || cli::frames_inbound(&common)),
            outbound: Some(Outbound {
                service_name: args.outbound.service_name.as_deref(),
                scheme: "tcp",
                also_schemes: &[],
                factory: Arc::new(
                    move |t: &DialTarget<'_>| -> Result<Box<dyn Transport>, String> {
                        Ok(Box::new(Dial::new(t.service, Frames::new(max))))
                    },
                ),
            }),
            transport_handshake_timeout: None,
            fixed_in_transport: false,
            keepalive: None,
            on_hup: Box::new(|| tracing::info!("SIGHUP: tcpd has nothing to reload")),
            handoff: args.handoff,
        })
    })
}
