//! Mutual TLS: who a client certificate names, and whether it may connect.

use std::sync::Arc;

use ipc::switch::PeerCheck;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The names in a client certificate.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Subject common names.
    pub cns: Vec<String>,
    /// Subject alternative names: DNS names, IP addresses, e-mail addresses, URIs.
    pub sans: Vec<String>,
}

impl Identity {
    /// Reads the names of a DER certificate.
    pub fn of(der: &[u8]) -> Result<Self, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
        let cns = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect();
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                        sans.push((*s).to_owned())
                    }
                    GeneralName::IPAddress(b) => sans.extend(ip(b)),
                    _ => {}
                }
            }
        }
        Ok(Identity { cns, sans })
    }
}

fn ip(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        _ => None,
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CN={:?} SAN={:?}", self.cns, self.sans)
    }
}

/// The check run after each client's handshake: the chain was already verified
/// by rustls against --client-ca; here its names are logged and, if allow lists
/// are given, one of them must match (`--allow-san` against the SANs,
/// `--allow-cn` against the common names).
pub fn check(allow_san: Vec<String>, allow_cn: Vec<String>) -> PeerCheck {
    Arc::new(move |chain: &[CertificateDer<'_>]| {
        let Some(leaf) = chain.first() else {
            return Err("no client certificate".into());
        };
        let id = Identity::of(leaf)?;
        let open = allow_san.is_empty() && allow_cn.is_empty();
        let allowed = open
            || id.sans.iter().any(|s| allow_san.contains(s))
            || id.cns.iter().any(|c| allow_cn.contains(c));
        if allowed {
            Ok(id.to_string())
        } else {
            Err(format!("{id} is not on the allow list"))
        }
    })
}
