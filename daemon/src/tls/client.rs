//! The client side of TLS for outbound connections (tlsd's `tls://`,
//! websocketd's `wss://`): the flags, the verifying configuration, and the
//! layer around each connection's inner transport.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use libipc::switch::{Tls, Transport};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::tls::certs;

/// The outbound TLS flags (flattened into a daemon's own).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsClientArgs {
    /// Client certificate (PEM chain) presented to remote daemons for
    /// outbound TLS connections (mutual TLS), with --client-key.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// Private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// CA certificates (PEM) that remote daemons' certificates must chain
    /// to, for outbound TLS connections (default: the system's roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// Outbound TLS: remote certificates verified against the roots, for the
/// host name of each connection (also sent as SNI).
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// The configuration the flags describe; fails on unreadable files, or
    /// when there is no --ca and the system has no roots.
    pub fn new(args: &TlsClientArgs) -> Result<Self> {
        let identity = args.client_cert.as_deref().zip(args.client_key.as_deref());
        let config = certs::client_config(args.ca.as_deref(), identity).context("outbound TLS")?;
        Ok(TlsClient { config })
    }

    /// `inner` inside TLS to `host`; fails for a host that is no valid
    /// server name.
    pub fn wrap(
        &self,
        host: &str,
        inner: impl Transport + 'static,
    ) -> Result<Box<dyn Transport>, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
        let tls = Tls::client(self.config.clone(), name, inner).map_err(|e| e.to_string())?;
        Ok(Box::new(tls))
    }
}
