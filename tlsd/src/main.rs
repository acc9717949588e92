//! tlsd: tcpd behind TLS. The same modes, handshake, limits, workers and drain
//! (`tcpd::cli`), with the TLS transport wrapped around the LibIPC-frames one.

mod certs;
mod identity;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, Result};
use clap::Parser;
use ipc::switch::{Dial, Frames, Routed, Tls, Transport};
use rustls::pki_types::ServerName;
use tcpd::cli::{self, Common, Plan};

use crate::certs::ServerFiles;

/// Puts local LibIPC services behind TLS.
///
/// tlsd is tcpd behind TLS: a TLS client is connected to `$RUNDIR/<name>`, the
/// service given with --service or the one it names first inside TLS (raw name and
/// `ok`, or framed); then LibIPC frames flow both ways. SIGHUP reloads the
/// certificate and key; a reload that fails keeps the old ones.
///
/// Outbound, tlsd is also the LibIPC service `tls`: a local client's
/// `tls://HOST:PORT/SERVICE` is connected over TLS to the tlsd at HOST:PORT,
/// whose certificate is checked against --ca or the system's roots.
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

    /// Certificate chain (PEM, the server's certificate first). Repeatable with
    /// --key, pair by pair: the certificate is chosen by the client's SNI among
    /// the names in each; the first pair is the default.
    #[arg(long, required = true)]
    cert: Vec<PathBuf>,

    /// Private key of the --cert at the same position (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, required = true)]
    key: Vec<PathBuf>,

    /// Refuse a client whose SNI names none of the certificates (instead of
    /// answering with the default one).
    #[arg(long)]
    strict_sni: bool,

    /// ALPN protocol to offer (repeatable, in preference order; none by default).
    #[arg(long)]
    alpn: Vec<String>,

    /// Time a client has to complete the TLS handshake, counted from its
    /// connection (the service handshake timeout still bounds the whole).
    #[arg(long, default_value = "5s", value_parser = cli::parse_duration)]
    tls_handshake_timeout: std::time::Duration,

    /// Client certificate (PEM chain) presented to remote tlsd for outbound
    /// connections (mutual TLS), with --client-key.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,

    /// Private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,

    /// Lowest TLS version accepted: 1.2 or 1.3.
    #[arg(long, default_value = "1.2", value_parser = ["1.2", "1.3"])]
    tls_min_version: String,

    /// Mutual TLS: clients must present a certificate chaining to these CAs (PEM).
    #[arg(long)]
    client_ca: Option<PathBuf>,

    /// With --client-ca: only clients whose certificate has this subject
    /// alternative name (DNS, IP, e-mail or URI) may connect (repeatable).
    #[arg(long, requires = "client_ca")]
    allow_san: Vec<String>,

    /// With --client-ca: only clients whose certificate has this common name may
    /// connect (repeatable; a match on --allow-san or --allow-cn is enough).
    #[arg(long, requires = "client_ca")]
    allow_cn: Vec<String>,

    /// CA certificates (PEM) that remote tlsd certificates must chain to, for
    /// outbound connections (default: the system's roots).
    #[arg(long)]
    ca: Option<PathBuf>,

    /// Name of tlsd's own LibIPC service, for outbound connections.
    #[arg(long, env = "IPC_SERVICE_NAME", default_value = "tls")]
    service_name: String,

    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::main_with("tlsd", &args.common.log_level.clone(), || run(&args))
}

fn run(args: &Args) -> Result<()> {
    if args.cert.len() != args.key.len() {
        anyhow::bail!(
            "{} --cert but {} --key: give them in pairs",
            args.cert.len(),
            args.key.len()
        );
    }
    let files = ServerFiles {
        pairs: args
            .cert
            .iter()
            .cloned()
            .zip(args.key.iter().cloned())
            .collect(),
        strict_sni: args.strict_sni,
        alpn: args.alpn.clone(),
        tls13_only: args.tls_min_version == "1.3",
        client_ca: args.client_ca.clone(),
    };
    let check = args
        .client_ca
        .is_some()
        .then(|| identity::check(args.allow_san.clone(), args.allow_cn.clone()));
    let server = Arc::new(RwLock::new(certs::server_config(&files)?));
    let max = args.common.max_message_size;
    let fixed = args.common.service.is_some();
    let inbound = {
        let server = server.clone();
        Arc::new(move || -> Box<dyn Transport> {
            let config = server
                .read()
                .map_or_else(|p| p.into_inner().clone(), |c| c.clone());
            let inner: Box<dyn Transport> = if fixed {
                Box::new(Frames::new(max))
            } else {
                Box::new(Routed::new(Frames::new(max)))
            };
            match Tls::server(config, inner) {
                Ok(t) => match &check {
                    Some(c) => Box::new(t.with_peer_check(c.clone())),
                    None => Box::new(t),
                },
                // Cannot happen with a valid config; refuse the client rather than panic.
                Err(e) => Box::new(Refuse(e.to_string())),
            }
        })
    };
    let outbound = if args.common.no_outbound {
        None
    } else {
        let identity = args.client_cert.as_deref().zip(args.client_key.as_deref());
        let client = certs::client_config(args.ca.as_deref(), identity).context("outbound TLS")?;
        Some(
            Arc::new(move |service: &str, host: &str| -> Box<dyn Transport> {
                let inner = Dial::new(service, Frames::new(max));
                let name = ServerName::try_from(host.to_owned());
                match name
                    .map_err(|e| e.to_string())
                    .and_then(|n| Tls::client(client.clone(), n, inner).map_err(|e| e.to_string()))
                {
                    Ok(t) => Box::new(t),
                    Err(e) => Box::new(Refuse(e)),
                }
            }) as ipc::daemon::OutboundFactory,
        )
    };
    cli::run(Plan {
        name: "tlsd",
        listen: &args.listen,
        common: &args.common,
        service_name: &args.service_name,
        scheme: "tls",
        inbound,
        outbound,
        transport_handshake_timeout: Some(args.tls_handshake_timeout),
        on_hup: Box::new(move || match certs::server_config(&files) {
            Ok(config) => {
                if let Ok(mut slot) = server.write() {
                    *slot = config;
                }
                tracing::info!(
                    pairs = files.pairs.len(),
                    "SIGHUP: certificates and keys reloaded"
                );
            }
            Err(e) => tracing::error!("SIGHUP: reload failed, keeping the old certificate: {e:#}"),
        }),
    })
}

/// A transport that refuses everything (when one could not be built).
#[derive(Debug)]
struct Refuse(String);

impl Transport for Refuse {
    fn name(&self) -> &'static str {
        "refuse"
    }

    fn on_network_data(&mut self, _: &[u8], _: &mut ipc::switch::Relay<'_>) -> ipc::Result<()> {
        Err(ipc::Error::Tls(self.0.clone()))
    }

    fn on_service_data(&mut self, _: &[u8], _: &mut ipc::switch::Relay<'_>) -> ipc::Result<()> {
        Err(ipc::Error::Tls(self.0.clone()))
    }
}
