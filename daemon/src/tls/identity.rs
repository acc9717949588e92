//! Mutual TLS: who a client certificate names, and whether it may connect.
//!
//! A subject alternative name has a type (DNS name, IP address, e-mail
//! address, URI), and the type is part of the name: `alice.example` as a DNS
//! name and `alice.example` as an e-mail address or URI are different names,
//! possibly vouched for by different checks at the CA. So `--allow-san` names
//! the type (`dns:` when none is given), identities are logged with their
//! types, and a name only ever matches a name of its own type.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use libipc::switch::PeerCheck;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A subject alternative name, with its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// `dNSName`.
    Dns(String),
    /// `iPAddress`.
    Ip(IpAddr),
    /// `rfc822Name`, an e-mail address.
    Email(String),
    /// `uniformResourceIdentifier`.
    Uri(String),
}

impl San {
    /// The DNS name, if this is one.
    pub fn dns(&self) -> Option<&str> {
        match self {
            San::Dns(name) => Some(name),
            _ => None,
        }
    }
}

/// `dns:NAME`, `ip:ADDR`, `email:ADDR`, `uri:URI`: the syntax of `--allow-san`.
impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(s) => write!(f, "dns:{s}"),
            San::Ip(a) => write!(f, "ip:{a}"),
            San::Email(s) => write!(f, "email:{s}"),
            San::Uri(s) => write!(f, "uri:{s}"),
        }
    }
}

/// The names in a client certificate.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Every common name of the subject, in order; `None` for one that is not
    /// a string x509-parser reads (a BMPString, say): still counted, never
    /// matched.
    pub cns: Vec<Option<String>>,
    /// The subject alternative names of the types above (others are ignored).
    pub sans: Vec<San>,
}

impl Identity {
    /// Reads the names of a DER certificate; fails on a certificate or a
    /// subject alternative name extension that cannot be parsed.
    pub fn of(der: &[u8]) -> Result<Self, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
        let cns = cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect();
        let ext = cert
            .subject_alternative_name()
            .map_err(|e| format!("unreadable subject alternative names: {e}"))?;
        let sans = ext
            .iter()
            .flat_map(|ext| &ext.value.general_names)
            .filter_map(|name| match name {
                GeneralName::DNSName(s) => Some(San::Dns((*s).to_owned())),
                GeneralName::RFC822Name(s) => Some(San::Email((*s).to_owned())),
                GeneralName::URI(s) => Some(San::Uri((*s).to_owned())),
                GeneralName::IPAddress(b) => ip(b).map(San::Ip),
                _ => None,
            })
            .collect();
        Ok(Identity { cns, sans })
    }

    /// The common name, when the subject has exactly one and it is readable.
    /// With several, none of them is the subject's name: a CA may have checked
    /// only the one it put there, and a client could add another.
    pub fn cn(&self) -> Option<&str> {
        match self.cns.as_slice() {
            [Some(cn)] => Some(cn),
            _ => None,
        }
    }
}

fn ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

/// `CN=["alice"] SAN=["dns:alice.example", "ip:192.0.2.7"]`: strings quoted and
/// escaped, so no name can pass for two; a common name that is not a string
/// shows as `?`, unquoted.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CN=[")?;
        for (i, cn) in self.cns.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            match cn {
                Some(cn) => write!(f, "{sep}{cn:?}")?,
                None => write!(f, "{sep}?")?,
            }
        }
        let sans: Vec<String> = self.sans.iter().map(San::to_string).collect();
        write!(f, "] SAN={sans:?}")
    }
}

/// One `--allow-san` entry: a name of one type, matched against the names of
/// that type only. DNS names compare without regard to ASCII case, e-mail
/// addresses with the case of their domain ignored (RFC 5280, 7.5), URIs
/// exactly, IP addresses as addresses (`ip:::1` is `ip:0:0:0:0:0:0:0:1`).
/// No wildcards: a `*` is a character like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanPattern(San);

impl FromStr for SanPattern {
    type Err = String;

    /// `NAME` or `dns:NAME`, `ip:ADDR`, `email:ADDR`, `uri:URI` (the type in any
    /// case, so OpenSSL's `DNS:` and `URI:` work). A bare IP address is refused
    /// rather than taken as a DNS name that no certificate would carry.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.parse::<IpAddr>().is_ok() {
            return Err(format!("{s:?} is an IP address: write ip:{s}"));
        }
        let (kind, name) = s.split_once(':').unwrap_or(("dns", s));
        if name.is_empty() {
            return Err(format!("{s:?}: the name is empty"));
        }
        let san = match kind.to_ascii_lowercase().as_str() {
            "dns" => San::Dns(name.to_ascii_lowercase()),
            "email" => match name.rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                    San::Email(format!("{local}@{}", domain.to_ascii_lowercase()))
                }
                _ => return Err(format!("{s:?}: not an e-mail address (LOCAL@DOMAIN)")),
            },
            "uri" => San::Uri(name.to_owned()),
            "ip" => San::Ip(
                name.parse()
                    .map_err(|_| format!("{s:?}: {name:?} is not an IP address"))?,
            ),
            _ => {
                return Err(format!(
                    "{s:?}: unknown name type {kind:?} (dns:, ip:, email: or uri:)"
                ));
            }
        };
        Ok(SanPattern(san))
    }
}

impl SanPattern {
    fn matches(&self, san: &San) -> bool {
        match (&self.0, san) {
            (San::Dns(want), San::Dns(got)) => want.eq_ignore_ascii_case(got),
            (San::Ip(want), San::Ip(got)) => want == got,
            (San::Uri(want), San::Uri(got)) => want == got,
            (San::Email(want), San::Email(got)) => {
                let (want_local, want_domain) = want.rsplit_once('@').unwrap_or((want, ""));
                got.rsplit_once('@').is_some_and(|(local, domain)| {
                    local == want_local && domain.eq_ignore_ascii_case(want_domain)
                })
            }
            _ => false,
        }
    }
}

/// Who may connect: a client matching any entry of either list. Both empty:
/// anyone the client CA vouches for.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    /// `--allow-san`.
    pub sans: Vec<SanPattern>,
    /// `--allow-cn`: compared exactly, case included, with the subject's only
    /// common name.
    pub cns: Vec<String>,
}

impl AllowList {
    /// `Ok` when `id` may connect, else why not.
    pub fn admit(&self, id: &Identity) -> Result<(), String> {
        if self.sans.is_empty() && self.cns.is_empty() {
            return Ok(());
        }
        let by_san = id
            .sans
            .iter()
            .any(|s| self.sans.iter().any(|p| p.matches(s)));
        let by_cn = id.cn().is_some_and(|cn| self.cns.iter().any(|c| c == cn));
        if by_san || by_cn {
            return Ok(());
        }
        let why = if !self.cns.is_empty() && id.cns.len() > 1 {
            format!(
                " (its subject has {} common names: --allow-cn matches none of them)",
                id.cns.len()
            )
        } else {
            String::new()
        };
        Err(format!("{id} is not on the allow list{why}"))
    }
}

/// The check run after each client's handshake: the chain was already verified
/// by rustls against --client-ca; here its names are read and logged, and
/// must pass `allow`.
pub fn check(allow: AllowList) -> PeerCheck {
    Arc::new(move |chain: &[CertificateDer<'_>]| {
        let Some(leaf) = chain.first() else {
            return Err("no client certificate".into());
        };
        let id = Identity::of(leaf)?;
        allow.admit(&id)?;
        Ok(id.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<const N: usize>(cns: &[&str], sans: [San; N]) -> Identity {
        Identity {
            cns: cns.iter().map(|c| Some(c.to_string())).collect(),
            sans: sans.into(),
        }
    }

    fn allow(sans: &[&str], cns: &[&str]) -> AllowList {
        AllowList {
            sans: sans.iter().map(|s| s.parse().unwrap()).collect(),
            cns: cns.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn dns(s: &str) -> San {
        San::Dns(s.into())
    }

    #[test]
    fn a_bare_name_matches_dns_names_only() {
        let a = allow(&["alice.example"], &[]);
        assert!(a.admit(&id(&[], [dns("alice.example")])).is_ok());
        assert!(a.admit(&id(&[], [dns("ALICE.Example")])).is_ok());
        for other in [
            San::Email("alice.example".into()),
            San::Uri("alice.example".into()),
            dns("alice.example.evil"),
            dns("*.example"),
        ] {
            let err = a.admit(&id(&["bob"], [other.clone()])).unwrap_err();
            assert!(err.contains("not on the allow list"), "{other}: {err}");
        }
    }

    #[test]
    fn explicit_types_match_their_type_only() {
        let a = allow(
            &[
                "email:Alice@Example.ORG",
                "URI:spiffe://example.org/alice",
                "ip:2001:db8::7",
                "DNS:host.example",
            ],
            &[],
        );
        let ok = [
            San::Email("Alice@example.org".into()),
            San::Uri("spiffe://example.org/alice".into()),
            San::Ip("2001:db8:0:0:0:0:0:7".parse().unwrap()),
            dns("HOST.example"),
        ];
        for san in ok {
            assert!(a.admit(&id(&[], [san.clone()])).is_ok(), "{san}");
        }
        let refused = [
            // The local part of an address is case-sensitive; URIs compare exactly.
            San::Email("alice@example.org".into()),
            San::Uri("spiffe://example.org/Alice".into()),
            dns("Alice@Example.ORG"),
            dns("spiffe://example.org/alice"),
            dns("2001:db8::7"),
            San::Email("host.example".into()),
            San::Ip("2001:db8::8".parse().unwrap()),
        ];
        for san in refused {
            assert!(a.admit(&id(&[], [san.clone()])).is_err(), "{san}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (bad, says) in [
            ("spiffe://x/y", "unknown name type \"spiffe\""),
            ("dsn:alice.example", "unknown name type \"dsn\""),
            ("10.0.0.1", "write ip:10.0.0.1"),
            ("::1", "write ip:::1"),
            ("ip:alice.example", "not an IP address"),
            ("email:alice.example", "not an e-mail address"),
            ("uri:", "the name is empty"),
            ("", "the name is empty"),
        ] {
            let err = bad.parse::<SanPattern>().unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_common_name_matches_only_when_it_is_the_only_one() {
        let a = allow(&[], &["alice"]);
        assert!(a.admit(&id(&["alice"], [])).is_ok());
        assert!(a.admit(&id(&["Alice"], [])).is_err(), "case counts");
        for cns in [
            &["mallory", "alice"][..],
            &["alice", "mallory"],
            &["alice", "alice"],
        ] {
            let err = a.admit(&id(cns, [])).unwrap_err();
            assert!(err.contains("2 common names"), "{cns:?}: {err}");
        }
        let unreadable = Identity {
            cns: vec![None, Some("alice".into())],
            sans: vec![],
        };
        assert!(a.admit(&unreadable).is_err());
        // A SAN on the list still admits it.
        let a = allow(&["alice.example"], &["alice"]);
        assert!(
            a.admit(&id(&["mallory", "alice"], [dns("alice.example")]))
                .is_ok()
        );
    }

    #[test]
    fn no_list_admits_anyone_the_ca_vouches_for() {
        assert!(AllowList::default().admit(&id(&["a", "b"], [])).is_ok());
    }

    /// A certificate whose subject has two common names, the first a
    /// BMPString (which x509-parser does not read as a string), and one SAN of
    /// each type.
    #[test]
    fn every_common_name_is_read_and_every_san_keeps_its_type() {
        use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType};
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let bmp = DnValue::BmpString("mallory".try_into().unwrap());
        params.distinguished_name.push(DnType::CommonName, bmp);
        // rcgen keeps one value per type: the same OID under another name.
        let cn_again = DnType::CustomDnType(vec![2, 5, 4, 3]);
        params.distinguished_name.push(cn_again, "alice");
        params.subject_alt_names = vec![
            SanType::DnsName("alice.example".try_into().unwrap()),
            SanType::Rfc822Name("alice@example.org".try_into().unwrap()),
            SanType::URI("spiffe://example.org/alice".try_into().unwrap()),
            SanType::IpAddress("192.0.2.7".parse().unwrap()),
        ];
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let id = Identity::of(cert.der()).unwrap();
        assert_eq!(id.cns, vec![None, Some("alice".to_owned())]);
        assert_eq!(id.cn(), None);
        assert_eq!(
            id.to_string(),
            r#"CN=[?, "alice"] SAN=["dns:alice.example", "email:alice@example.org", "uri:spiffe://example.org/alice", "ip:192.0.2.7"]"#
        );
    }

    #[test]
    fn identities_show_the_type_of_each_name() {
        let id = Identity {
            cns: vec![Some("mallory".into()), None, Some("a\"b".into())],
            sans: vec![
                dns("alice.example"),
                San::Email("alice.example".into()),
                San::Uri("uri:x".into()),
                San::Ip("127.0.0.1".parse().unwrap()),
            ],
        };
        assert_eq!(
            id.to_string(),
            r#"CN=["mallory", ?, "a\"b"] SAN=["dns:alice.example", "email:alice.example", "uri:uri:x", "ip:127.0.0.1"]"#
        );
    }
}
