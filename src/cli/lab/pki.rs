//! A throwaway PKI for the demo and the tests (rcgen, ring): one CA and
//! certificates it signs, with chosen names (IP literals become IP SANs),
//! written as PEM files, keys readable by their owner only.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};

use crate::cli::error::CliError;

/// What a certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server.
    Server,
    /// A TLS client (mTLS).
    Client,
    /// Both: a server that also calls peers with its certificate.
    Both,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl Leaf {
    /// Writes `dir/name.pem` and `dir/name.key` (mode 0600); their paths.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        super::depots::write_key(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A certificate authority that lives as long as the demo or test.
pub struct ThrowawayCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl ThrowawayCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<Self, CliError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.cert_pem())
    }

    /// A certificate for `names` (DNS names; IP literals become IP SANs).
    pub fn issue(&self, names: &[&str], usage: Usage) -> Result<Leaf, CliError> {
        self.issue_with(names, usage, false)
    }

    /// Like [`issue`](Self::issue), but expired in 2001 when `expired`.
    pub fn issue_with(
        &self,
        names: &[&str],
        usage: Usage,
        expired: bool,
    ) -> Result<Leaf, CliError> {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("pxeconf"),
        );
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
