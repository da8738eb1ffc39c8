//! TLS with rustls (the `ring` provider): a server's certificate and key,
//! the CA it trusts for the peers it calls, the CA it verifies its callers'
//! client certificates with. Loaded from PEM files whole or not at all, and
//! reloaded on SIGHUP or when a file changes: each new connection takes the
//! configuration current at its accept, established ones keep theirs, so a
//! reload drops no call.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How often the files are looked at for a change (SIGHUP reloads at once).
pub const FILE_POLL: Duration = Duration::from_secs(2);

/// The PEM files of one process's TLS settings; each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This server's certificate chain (leaf first); also presented as the
    /// client certificate when it calls a peer that asks for one.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// The CA certificates trusted for the peers this process calls.
    pub ca: Option<PathBuf>,
    /// The CA certificates client certificates are verified with; callers
    /// may then present one (whether they must is the `client_auth` setting).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether no file is set: plaintext on every hop.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Why TLS settings could not be loaded; names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Read {
        /// The setting.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM, or rustls refused what it holds.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl ToString) -> TlsError {
    TlsError::Invalid {
        setting,
        message: message.to_string(),
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

fn certs(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(setting, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            setting,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

fn roots(setting: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(setting, path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(setting, format!("{}: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

/// A certificate chain and its key, read from PEM.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn identity(files: &TlsFiles) -> Result<Option<Identity>, TlsError> {
    match (&files.cert, &files.key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid("tls_key", "is required with tls_cert")),
        (None, Some(_)) => Err(invalid("tls_cert", "is required with tls_key")),
        (Some(cert), Some(key)) => {
            let chain = certs("tls_cert", cert)?;
            let pem = read("tls_key", key)?;
            let key = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| invalid("tls_key", format!("{}: {e}", key.display())))?;
            Ok(Some((chain, key)))
        }
    }
}

/// The server side, with the client CA if one is set: client certificates
/// are then verified when presented (a caller without one is let through
/// to the authorization check, which knows whether the call needs one).
fn server_config(
    files: &TlsFiles,
    id: Option<&Identity>,
) -> Result<Option<ServerConfig>, TlsError> {
    let Some((chain, key)) = id else {
        if files.client_ca.is_some() {
            return Err(invalid("tls_client_ca", "needs tls_cert and tls_key"));
        }
        return Ok(None);
    };
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls_cert", e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                roots("tls_client_ca", path)?,
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid("tls_client_ca", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // Fails when the key does not belong to the certificate.
    let mut config = builder
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| invalid("tls_key", format!("does not fit tls_cert: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(config))
}

/// The client side: the trusted CA, and this process's certificate as the
/// client certificate when it has one.
fn client_config(
    files: &TlsFiles,
    id: Option<&Identity>,
) -> Result<Option<ClientConfig>, TlsError> {
    let Some(ca) = &files.ca else {
        return Ok(None);
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls_ca", e))?
        .with_root_certificates(roots("tls_ca", ca)?);
    let mut config = match id {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid("tls_key", e))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(config))
}

/// Both sides, loaded together.
type Configs = (Option<Arc<ServerConfig>>, Option<Arc<ClientConfig>>);

fn load(files: &TlsFiles) -> Result<Configs, TlsError> {
    let id = identity(files)?;
    let server = server_config(files, id.as_ref())?.map(Arc::new);
    let client = client_config(files, id.as_ref())?.map(Arc::new);
    Ok((server, client))
}

/// A process's TLS configuration, swappable at run time.
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<Configs>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads `files`: every file read and checked (a key that does not fit
    /// its certificate fails here, not at the first handshake).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let configs = load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: ArcSwap::from_pointee(configs),
        }))
    }

    /// The files it was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The server configuration for a new connection; `None` without a
    /// certificate (the server then speaks plaintext).
    pub fn server(&self) -> Option<Arc<ServerConfig>> {
        self.current.load().0.clone()
    }

    /// The client configuration for a new connection to an `https://`
    /// peer; `None` without a trusted CA.
    pub fn client(&self) -> Option<Arc<ClientConfig>> {
        self.current.load().1.clone()
    }

    /// Whether callers' client certificates are verified.
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again and swaps the configuration in; on an error the
    /// old one stays in use. Connections already open keep theirs.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(Arc::new(load(&self.files)?));
        Ok(())
    }

    /// Reloads on SIGHUP and when a file's size, time or inode changes,
    /// until `stop` is cancelled.
    pub fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let tls = self.clone();
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => Some(hup),
            Err(e) => {
                error!(error = %e, "cannot listen for SIGHUP; certificates reload on file change only");
                None
            }
        };
        tokio::spawn(async move {
            let mut seen = tls.stamp();
            let mut poll = tokio::time::interval(FILE_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    () = stop.cancelled() => return,
                    got = async {
                        match hup.as_mut() {
                            Some(hup) => hup.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        if got.is_none() {
                            hup = None; // the signal driver is gone
                            continue;
                        }
                        seen = tls.stamp();
                        "SIGHUP"
                    }
                    _ = poll.tick() => {
                        let now = tls.stamp();
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "file change"
                    }
                };
                match tls.reload() {
                    Ok(()) => info!(reason = why, "TLS certificates reloaded"),
                    Err(e) => {
                        error!(reason = why, error = %e, "TLS reload failed; the previous certificates stay in use")
                    }
                }
            }
        });
    }

    /// What identifies the files' contents cheaply: size, time, inode each.
    fn stamp(&self) -> Vec<Option<(u64, SystemTime, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let f = &self.files;
        [&f.cert, &f.key, &f.ca, &f.client_ca]
            .into_iter()
            .flatten()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.len(), m.modified().ok()?, m.ino()))
            })
            .collect()
    }
}

/// Whether the (already verified) leaf certificate `der` is valid for
/// `name`, a DNS name or an IP literal, by webpki's own matching (its docs
/// advise against comparing the SAN list by hand).
pub fn cert_names(der: &CertificateDer<'_>, name: &str) -> bool {
    let (Ok(cert), Ok(name)) = (
        webpki::EndEntityCert::try_from(der),
        ServerName::try_from(name),
    ) else {
        return false;
    };
    // An identity is exact: a wildcard would stand for every depot (or
    // configserver) under it.
    if cert.valid_dns_names().any(|n| n.contains('*')) {
        return false;
    }
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// The DNS names a certificate is valid for, for log lines.
pub fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(der)
        .map(|c| c.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}
