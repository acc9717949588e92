//! Certificates and keys for the tlsd tests, generated at run time with `rcgen`
//! (nothing hand-made or committed as a blob): CAs, server certificates for
//! `localhost` and `127.0.0.1` signed by them, and their keys, written as PEM
//! files into a directory the test owns.
//!
//! ```no_run
//! # let dir = std::path::Path::new("/tmp/x");
//! let pki = libipc_tests::certs::generate(dir, true);
//! // tlsd --cert pki.server.cert --key pki.server.key; clients trust pki.ca.cert
//! let other = pki.second_ca.as_ref().unwrap().server(dir, "other");
//! ```
//!
//! The certificates of servers and clients are made as a public CA makes them:
//! valid from a day ago until 90 days from now, and naming where the CA
//! publishes its revocations ([`CRL_URI`]: nothing is served there, and no
//! client here checks revocation). TLS scanners (testssl.sh) rate a longer
//! validity, or no word of revocation, as high-severity findings.
//!
//! Every key rcgen makes is ECDSA P-256 and serialized as PKCS#8. rcgen cannot
//! make RSA keys with the `ring` backend, nor write the older PEM forms (PKCS#1
//! `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`): the tests make those with the
//! `openssl` command and have [`Ca::server_with_key`] certify them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CrlDistributionPoint, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// The names every server certificate is valid for (subject alternative names).
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// The CRL distribution point every server and client certificate names.
pub const CRL_URI: &str = "http://localhost/libipc-test-ca.crl";

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A certificate authority: its certificate as a PEM file, and what it takes to
/// sign more certificates.
#[derive(Debug)]
pub struct Ca {
    /// The CA's certificate (PEM), what clients are told to trust.
    pub cert: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct ServerPair {
    /// The certificate (PEM; the chain is this one certificate).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8 unless made otherwise).
    pub key: PathBuf,
}

/// What [`generate`] wrote.
#[derive(Debug)]
pub struct Pki {
    /// The CA.
    pub ca: Ca,
    /// A server certificate signed by [`Pki::ca`], and its key.
    pub server: ServerPair,
    /// Another, unrelated CA (when asked for).
    pub second_ca: Option<Ca>,
}

/// Writes into `dir`: `ca.pem`, a CA (ECDSA P-256); `server.pem` and
/// `server.key`, a certificate for `localhost` and `127.0.0.1` signed by it and
/// its PKCS#8 key; with `second_ca`, `ca2.pem`, another CA.
pub fn generate(dir: &Path, second_ca: bool) -> Pki {
    let ca = Ca::new(dir, "ca", "libipc test CA 1");
    let server = ca.server(dir, "server");
    let second_ca = second_ca.then(|| Ca::new(dir, "ca2", "libipc test CA 2"));
    Pki {
        ca,
        server,
        second_ca,
    }
}

/// A leaf's parameters: common name `cn`, and `sans` as subject alternative
/// names (each an IP address or else a DNS name).
fn named(cn: &str, sans: &[&str]) -> CertificateParams {
    let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf parameters");
    params.distinguished_name.push(DnType::CommonName, cn);
    params
}

/// `dns:NAME`, `ip:ADDR`, `email:ADDR` or `uri:URI` as rcgen's name.
fn typed_san(san: &str) -> SanType {
    let (kind, value) = san
        .split_once(':')
        .unwrap_or_else(|| panic!("{san:?}: no TYPE: prefix"));
    let ia5 = || value.try_into().expect("an IA5 string");
    match kind {
        "dns" => SanType::DnsName(ia5()),
        "email" => SanType::Rfc822Name(ia5()),
        "uri" => SanType::URI(ia5()),
        "ip" => SanType::IpAddress(value.parse().expect("an IP address")),
        _ => panic!("{san:?}: unknown SAN type"),
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl Ca {
    /// A new CA (fresh P-256 key) called `common_name`, its certificate written to
    /// `dir/<file>.pem`.
    pub fn new(dir: &Path, file: &str, common_name: &str) -> Ca {
        let key = KeyPair::generate().expect("generating the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, key).expect("signing the CA");
        let cert = dir.join(format!("{file}.pem"));
        write(&cert, &issuer.pem());
        Ca { cert, issuer }
    }

    /// A server certificate for [`SERVER_NAMES`] with a fresh P-256 key:
    /// `dir/<name>.pem` and `dir/<name>.key` (PKCS#8).
    pub fn server(&self, dir: &Path, name: &str) -> ServerPair {
        let key = KeyPair::generate().expect("generating a server key");
        let key_path = dir.join(format!("{name}.key"));
        write(&key_path, &key.serialize_pem());
        ServerPair {
            cert: self.certify(dir, name, &key),
            key: key_path,
        }
    }

    /// A server certificate for [`SERVER_NAMES`] for an existing key, given as a
    /// PKCS#8 PEM file (ECDSA P-256 or P-384, Ed25519 or RSA): writes
    /// `dir/<name>.pem`; the pair's key is `key` itself.
    pub fn server_with_key(&self, dir: &Path, name: &str, key: &Path) -> ServerPair {
        let pem = std::fs::read_to_string(key)
            .unwrap_or_else(|e| panic!("reading {}: {e}", key.display()));
        let pair = KeyPair::from_pem(&pem)
            .unwrap_or_else(|e| panic!("{}: not a PKCS#8 key rcgen takes: {e}", key.display()));
        ServerPair {
            cert: self.certify(dir, name, &pair),
            key: key.to_path_buf(),
        }
    }

    /// A server certificate for `names` (the first is also the common name),
    /// with a fresh P-256 key: `dir/<file>.pem` and `dir/<file>.key`.
    pub fn server_for(&self, dir: &Path, file: &str, names: &[&str]) -> ServerPair {
        let params = named(names[0], names);
        self.pair(dir, file, params, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (mutual TLS) with common name `cn` and subject
    /// alternative names `sans` (DNS names or IP addresses), with a fresh P-256 key.
    pub fn client(&self, dir: &Path, file: &str, cn: &str, sans: &[&str]) -> ServerPair {
        let params = named(cn, sans);
        self.pair(dir, file, params, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose subject has the common names `cns`, in order
    /// (none, one, or several: no CA should sign that, a test needs it), and
    /// the subject alternative names `sans`, each `dns:`, `ip:`, `email:` or
    /// `uri:` and its value, as tlsd's `--allow-san` writes them.
    pub fn client_named(&self, dir: &Path, file: &str, cns: &[&str], sans: &[&str]) -> ServerPair {
        let sans = sans.iter().map(|s| typed_san(s)).collect();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = DistinguishedName::new();
        for (i, cn) in cns.iter().enumerate() {
            // rcgen keeps one value per attribute type: a second common name
            // goes in under the same OID (2.5.4.3) as a "custom" type.
            let kind = match i {
                0 => DnType::CommonName,
                _ => DnType::CustomDnType(vec![2, 5, 4, 3]),
            };
            params.distinguished_name.push(kind, *cn);
        }
        self.pair(dir, file, params, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Signs `params` for a fresh key: `dir/<file>.pem` and `dir/<file>.key`.
    fn pair(
        &self,
        dir: &Path,
        file: &str,
        params: CertificateParams,
        usage: ExtendedKeyUsagePurpose,
    ) -> ServerPair {
        let key = KeyPair::generate().expect("generating a key");
        let key_path = dir.join(format!("{file}.key"));
        write(&key_path, &key.serialize_pem());
        let cert = self.sign(dir, file, params, usage, &key);
        ServerPair {
            cert,
            key: key_path,
        }
    }

    fn certify(&self, dir: &Path, name: &str, key: &KeyPair) -> PathBuf {
        let params = named(SERVER_NAMES[0], &SERVER_NAMES);
        self.sign(dir, name, params, ExtendedKeyUsagePurpose::ServerAuth, key)
    }

    fn sign(
        &self,
        dir: &Path,
        name: &str,
        mut params: CertificateParams,
        usage: ExtendedKeyUsagePurpose,
        key: &KeyPair,
    ) -> PathBuf {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("a clock after 1970");
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + now.saturating_sub(DAY);
        params.not_after = params.not_before + 91 * DAY;
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![CRL_URI.to_owned()],
        }];
        let cert = params
            .signed_by(key, &self.issuer)
            .expect("signing a certificate");
        let path = dir.join(format!("{name}.pem"));
        write(&path, &cert.pem());
        path
    }
}
