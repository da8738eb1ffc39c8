//! A throwaway PKI for the demo and the tests (rcgen, ring): one CA and
//! certificates it signs, with chosen names (IP literals become IP SANs),
//! written as PEM files, keys readable by their owner only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};

use crate::cli::error::CliError;
use crate::transport::{Tls, TlsFiles, Transport};

/// Writes a key file only its owner may read (created so, never readable
/// by others even for a moment).
pub fn write_key(path: &Path, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(key.as_bytes())
}

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
        write_key(&key, &self.key_pem)?;
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
        let validity = expired.then(|| (date_time_ymd(2000, 1, 1), date_time_ymd(2001, 1, 1)));
        self.issue_valid(names, usage, validity)
    }

    /// Like [`issue`](Self::issue), but ending `ends_in` from now, to the
    /// second (a certificate due for renewal).
    pub fn issue_ending_in(
        &self,
        names: &[&str],
        usage: Usage,
        ends_in: std::time::Duration,
    ) -> Result<Leaf, CliError> {
        let now = time::OffsetDateTime::now_utc();
        let ends = time::Duration::try_from(ends_in)
            .ok()
            .and_then(|d| now.checked_add(d))
            .ok_or("a certificate's end past the year 9999")?;
        let validity = (now - time::Duration::days(1), ends);
        self.issue_valid(names, usage, Some(validity))
    }

    /// A certificate for `names`, valid from and to `validity` if given.
    fn issue_valid(
        &self,
        names: &[&str],
        usage: Usage,
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
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
        if let Some((from, to)) = validity {
            params.not_before = from;
            params.not_after = to;
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The lab's TLS: a throwaway CA in `dir/tls`, a certificate per server
/// (for its name, `localhost` and `127.0.0.1`, usable as server and client).
pub struct LabPki {
    ca: ThrowawayCa,
    dir: PathBuf,
    /// The CA certificate file (grpcurl's `-cacert`).
    pub ca_file: PathBuf,
}

impl LabPki {
    /// A new CA written into `dir/tls`.
    pub fn new(dir: &Path) -> Result<Self, CliError> {
        let dir = dir.join("tls");
        std::fs::create_dir_all(&dir)?;
        let ca = ThrowawayCa::new("pxeconf lab CA (throwaway)")?;
        let ca_file = dir.join("ca.pem");
        ca.write(&ca_file)?;
        Ok(Self { ca, dir, ca_file })
    }

    /// TLS for server `name`: its certificate and key, the CA as trust for
    /// peers (and for client certificates when `client_ca`).
    pub fn transport(&self, name: &str, client_ca: bool) -> Result<Transport, CliError> {
        let leaf = self
            .ca
            .issue(&[name, "localhost", "127.0.0.1"], Usage::Both)?;
        let (cert, key) = leaf.write(&self.dir, name)?;
        let tls = Tls::load_serving(TlsFiles {
            cert: Some(cert),
            key: Some(key),
            ca: Some(self.ca_file.clone()),
            client_ca: client_ca.then(|| self.ca_file.clone()),
        })?;
        Ok(Transport {
            tls: Some(tls),
            ..Transport::default()
        })
    }

    /// Client-only TLS: the CA as trust (operator verbs, the lab's admin).
    pub fn client(&self) -> Result<Arc<Tls>, CliError> {
        Ok(Tls::load(TlsFiles {
            ca: Some(self.ca_file.clone()),
            ..TlsFiles::default()
        })?)
    }
}
