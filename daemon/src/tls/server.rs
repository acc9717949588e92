//! Inbound TLS as the daemons use it: the flags, the rustls server configuration
//! built from them, wrapping each client's transport, and reloading on SIGHUP.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Result, bail};
use libipc::switch::{PeerCheck, Relay, Tls, Transport};
use rustls::ServerConfig;

use crate::tls::certs::{self, ServerFiles};
use crate::tls::identity::{self, AllowList, SanPattern};

/// Inbound TLS flags (tlsd's, and websocketd's for wss).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM, the server's certificate first). Repeatable with
    /// --key, pair by pair: the certificate is chosen by the client's SNI among
    /// the names in each; the first pair is the default.
    #[arg(long)]
    pub cert: Vec<PathBuf>,

    /// Private key of the --cert at the same position (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long)]
    pub key: Vec<PathBuf>,

    /// Refuse a client whose SNI names none of the certificates (instead of
    /// answering with the default one).
    #[arg(long)]
    pub strict_sni: bool,

    /// ALPN protocol to offer (repeatable, in preference order; none by default).
    #[arg(long)]
    pub alpn: Vec<String>,

    /// Time a client has to complete the TLS handshake, counted from its
    /// connection (the service handshake timeout still bounds the whole).
    #[arg(long, default_value = "5s", value_parser = crate::cli::parse_duration)]
    pub tls_handshake_timeout: Duration,

    /// Lowest TLS version accepted: 1.2 or 1.3.
    #[arg(long, default_value = "1.2", value_parser = ["1.2", "1.3"])]
    pub tls_min_version: String,

    /// Mutual TLS: clients must present a certificate chaining to these CAs (PEM).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,

    /// With --client-ca: only clients whose certificate has this subject
    /// alternative name may connect (repeatable). A bare NAME is a DNS name
    /// (compared without regard to case); other types are named:
    /// `dns:NAME`, `ip:ADDR`, `email:LOCAL@DOMAIN` (the domain's case ignored),
    /// `uri:URI` (exact). A name matches names of its own type only (`alice.example`
    /// is not `email:alice.example`); no wildcards.
    #[arg(long, requires = "client_ca", value_name = "[TYPE:]NAME")]
    pub allow_san: Vec<SanPattern>,

    /// With --client-ca: only clients whose certificate's subject has this
    /// common name may connect (repeatable; compared exactly, case included).
    /// A subject with more than one common name matches none. A match on
    /// --allow-san or --allow-cn is enough.
    #[arg(long, requires = "client_ca", value_name = "NAME")]
    pub allow_cn: Vec<String>,
}

impl TlsArgs {
    /// True when TLS was asked for (a --cert or a --key given).
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }
}

/// The server side of TLS: the current configuration (replaced on reload) and
/// the identity check for mutual TLS. Cheap to clone; clones share the
/// configuration.
#[derive(Clone)]
pub struct TlsServer {
    files: Arc<ServerFiles>,
    config: Arc<RwLock<Arc<ServerConfig>>>,
    check: Option<PeerCheck>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads the certificates and keys `args` names; fails with a clear message
    /// when one is missing, unreadable or does not match.
    pub fn new(args: &TlsArgs) -> Result<Self> {
        if args.cert.is_empty() {
            bail!("TLS needs a certificate: give --cert and --key");
        }
        if args.cert.len() != args.key.len() {
            bail!(
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
        let check = args.client_ca.is_some().then(|| {
            identity::check(AllowList {
                sans: args.allow_san.clone(),
                cns: args.allow_cn.clone(),
            })
        });
        let config = certs::server_config(&files)?;
        Ok(TlsServer {
            files: Arc::new(files),
            config: Arc::new(RwLock::new(config)),
            check,
        })
    }

    /// `inner` behind TLS, with the configuration in force now.
    pub fn wrap(&self, inner: Box<dyn Transport>) -> Box<dyn Transport> {
        let config = self
            .config
            .read()
            .map_or_else(|p| p.into_inner().clone(), |c| c.clone());
        match Tls::server(config, inner) {
            Ok(t) => match &self.check {
                Some(c) => Box::new(t.with_peer_check(c.clone())),
                None => Box::new(t),
            },
            // Cannot happen with a valid config; refuse the client rather than panic.
            Err(e) => Box::new(Refuse(e.to_string())),
        }
    }

    /// Reloads certificates, keys and client CAs (SIGHUP). Connections already
    /// open keep theirs; a reload that fails keeps the old configuration, and
    /// says why in the log.
    pub fn reload(&self) {
        match certs::server_config(&self.files) {
            Ok(config) => {
                if let Ok(mut slot) = self.config.write() {
                    *slot = config;
                }
                tracing::info!(
                    pairs = self.files.pairs.len(),
                    "SIGHUP: certificates and keys reloaded"
                );
            }
            Err(e) => tracing::error!("SIGHUP: reload failed, keeping the old certificate: {e:#}"),
        }
    }
}

/// A transport that refuses everything (when one could not be built).
#[derive(Debug)]
pub struct Refuse(pub String);

impl Transport for Refuse {
    fn name(&self) -> &'static str {
        "refuse"
    }

    fn on_network_data(&mut self, _: &[u8], _: &mut Relay<'_>) -> libipc::Result<()> {
        Err(libipc::Error::Tls(self.0.clone()))
    }

    fn on_service_data(&mut self, _: &[u8], _: &mut Relay<'_>) -> libipc::Result<()> {
        Err(libipc::Error::Tls(self.0.clone()))
    }
}
