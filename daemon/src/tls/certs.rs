//! Certificates and keys: loading PEM files and building rustls configurations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use libipc::switch::ReportSni;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::tls::identity::{Identity, San};

/// What the server side is built from (kept to rebuild it on SIGHUP).
#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// Certificate/key pairs: PEM chains (the certificate first), PEM keys
    /// (PKCS#8, PKCS#1 or SEC1). The first pair is the default.
    pub pairs: Vec<(PathBuf, PathBuf)>,
    /// Refuse clients whose SNI matches no certificate (else: the default pair).
    pub strict_sni: bool,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<String>,
    /// Accept TLS 1.3 only.
    pub tls13_only: bool,
    /// Require client certificates chaining to these CAs (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS13_AND_12: [&SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(tls13_only: bool) -> &'static [&'static SupportedProtocolVersion] {
    if tls13_only {
        &TLS13_ONLY
    } else {
        &TLS13_AND_12
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("certificate file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("certificate file {}: not valid PEM", path.display()))?;
    if certs.is_empty() {
        bail!("certificate file {}: no CERTIFICATE in it", path.display());
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| {
        format!(
            "key file {}: no PKCS#8, PKCS#1 or SEC1 private key found",
            path.display()
        )
    })
}

/// Builds the server configuration: safe defaults (TLS 1.3 and 1.2, rustls'
/// default suites, no renegotiation or compression, which rustls never does),
/// the server's order of preference among those suites, session resumption by
/// tickets and by session id.
pub fn server_config(files: &ServerFiles) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_protocol_versions(versions(files.tls13_only));
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots(path)?))
                .build()
                .with_context(|| format!("client CA file {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // ReportSni: the client's server name reaches its peer info.
    let mut config = builder.with_cert_resolver(Arc::new(ReportSni(Arc::new(resolver(files)?))));
    // tlsd picks the suite among those the client offers, in rustls' order
    // (AES-256-GCM first), whatever the client's order. All of rustls' suites
    // are strong; TLS scanners (testssl.sh) still rate a server that lets the
    // client choose as a high-severity finding.
    config.ignore_client_order = true;
    config.ticketer = rustls::crypto::ring::Ticketer::new().context("session tickets")?;
    config.alpn_protocols = files.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// Picks the certificate by SNI among the pairs (by the DNS names in each
/// certificate), falling back to the first pair unless SNI is strict.
#[derive(Debug)]
struct BySni {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()))
            .or(self.default.as_ref())
            .cloned()
    }
}

fn resolver(files: &ServerFiles) -> Result<BySni> {
    let mut by_name = HashMap::new();
    let mut default = None;
    for (cert, key) in &files.pairs {
        let chain = load_certs(cert)?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&load_key(key)?)
            .with_context(|| format!("key file {}: unsupported key type", key.display()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().with_context(|| {
            format!(
                "certificate {} and key {} do not go together",
                cert.display(),
                key.display()
            )
        })?;
        let certified = Arc::new(certified);
        let names = Identity::of(&certified.cert[0])
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("certificate {}", cert.display()))?;
        let dns = names.sans.iter().filter_map(San::dns);
        for name in dns.chain(names.cns.iter().flatten().map(String::as_str)) {
            by_name
                .entry(name.to_ascii_lowercase())
                .or_insert_with(|| certified.clone());
        }
        default.get_or_insert(certified);
    }
    Ok(BySni {
        by_name,
        default: if files.strict_sni { None } else { default },
    })
}

/// The CA certificates in `path`.
fn roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .with_context(|| format!("CA file {}", path.display()))?;
    }
    Ok(roots)
}

/// Builds the client configuration for outbound connections: remote daemons are
/// verified against `ca` if given, else against the system's roots; `identity`
/// (certificate and key files) is presented when a remote asks for one.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>> {
    let roots = match ca {
        Some(path) => roots(path)?,
        None => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                bail!("no system CA certificates found; give --ca FILE");
            }
            roots
        }
    };
    let builder = ClientConfig::builder().with_root_certificates(roots);
    Ok(Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .with_context(|| {
                format!(
                    "client certificate {} and key {}",
                    cert.display(),
                    key.display()
                )
            })?,
    }))
}
