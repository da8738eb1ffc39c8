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
use prometheus_client::metrics::gauge::Gauge;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How often the files are looked at for a change (SIGHUP reloads at once).
pub const FILE_POLL: Duration = Duration::from_secs(2);
/// A server's certificate expiring sooner than this is warned about at
/// every load, when the time comes, and then daily.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
/// How often a certificate in its last days (or past them) is spoken of.
const EXPIRY_REMINDER: Duration = Duration::from_secs(24 * 3600);

/// When to speak of a certificate ending at `ends` next, seen at `now`:
/// as it enters its last 14 days, then daily and at the moment it ends,
/// then daily. A server runs for months; a warning only at start or reload
/// would come once, long before anyone needed it.
fn next_expiry_check(ends: SystemTime, now: SystemTime) -> SystemTime {
    match ends.duration_since(now) {
        Ok(left) if left > EXPIRY_WARNING => ends - EXPIRY_WARNING,
        Ok(left) => now + left.min(EXPIRY_REMINDER).max(Duration::from_secs(1)),
        Err(_) => now + EXPIRY_REMINDER,
    }
}

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

/// Fails when others may read the private key file at `path`, as the host
/// key file is refused (a key its group may read passes: the usual layout
/// of a key shared with a group such as `ssl-cert`). With client
/// certificates as the only credential, whoever reads the key is the role.
fn private(setting: &'static str, path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| TlsError::Read {
            setting,
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        return Err(invalid(
            setting,
            format!(
                "{} may be read by others (mode {:o}); chmod 600 (or 640) it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
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
            private("tls_key", key)?;
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

/// Refuses a leaf certificate that has expired: every peer would refuse it
/// at the handshake, with nothing in this server's log to say why. Returns
/// when it ends, for [`Tls::warn_if_expiring`].
fn check_expiry(files: &TlsFiles, id: Option<&Identity>) -> Result<Option<SystemTime>, TlsError> {
    let (Some((chain, _)), Some(path)) = (id, &files.cert) else {
        return Ok(None);
    };
    let Some(not_after) = chain.first().and_then(|leaf| not_after(leaf)) else {
        return Ok(None);
    };
    if not_after < SystemTime::now() {
        let shown = humantime::format_rfc3339_seconds(not_after);
        return Err(invalid(
            "tls_cert",
            format!("{}: expired on {shown}", path.display()),
        ));
    }
    Ok(Some(not_after))
}

/// The end of a certificate's validity (`tbsCertificate.validity.notAfter`),
/// read from its DER; `None` if it cannot be read (rustls has accepted the
/// certificate; a form this reader does not know is not refused here).
fn not_after(der: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, cert, _) = der_item(der.as_ref())?;
    let (_, tbs, _) = der_item(cert)?;
    let mut rest = tbs;
    let mut item = der_item(rest)?;
    // The explicit version, [0], is optional.
    if item.0 == 0xa0 {
        rest = item.2;
        item = der_item(rest)?;
    }
    // serialNumber, signature, issuer: skipped.
    for _ in 0..3 {
        item = der_item(item.2)?;
    }
    let (tag, validity, _) = item;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_not_before) = der_item(validity)?;
    let (tag, time, _) = der_item(after_not_before)?;
    der_time(tag, time)
}

/// One DER item at the start of `bytes`: (tag, contents, what follows).
fn der_item(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let (digits, rest) = rest.split_at_checked(n)?;
            let len = digits
                .iter()
                .fold(0usize, |l, &d| (l << 8) | usize::from(d));
            (len, rest)
        }
        _ => return None,
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// A UTCTime (0x17, `YYMMDDHHMMSSZ`) or GeneralizedTime (0x18,
/// `YYYYMMDDHHMMSSZ`) as RFC 5280 writes them.
fn der_time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// The configurations, and (serving) when the certificate ends.
fn load(files: &TlsFiles, serving: bool) -> Result<(Configs, Option<SystemTime>), TlsError> {
    let id = identity(files)?;
    let ends = if serving {
        check_expiry(files, id.as_ref())?
    } else {
        None
    };
    let server = server_config(files, id.as_ref())?.map(Arc::new);
    let client = client_config(files, id.as_ref())?.map(Arc::new);
    Ok(((server, client), ends))
}

/// A process's TLS configuration, swappable at run time.
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<Configs>,
    /// A server's: its certificate is checked for expiry at every load.
    serving: bool,
    /// When the loaded server certificate ends.
    ends: std::sync::Mutex<Option<SystemTime>>,
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
        Self::load_as(files, false)
    }

    /// [`load`](Self::load) for a server: an expired certificate is refused
    /// (at start, and by a reload, which keeps the one in use), one expiring
    /// within 14 days warned about.
    pub fn load_serving(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        Self::load_as(files, true)
    }

    fn load_as(files: TlsFiles, serving: bool) -> Result<Arc<Self>, TlsError> {
        // Loaded before the log is set up (settings are checked first): the
        // server warns of an ending certificate once it serves.
        let (configs, ends) = load(&files, serving)?;
        Ok(Arc::new(Self {
            files,
            current: ArcSwap::from_pointee(configs),
            serving,
            ends: std::sync::Mutex::new(ends),
        }))
    }

    /// When the server certificate in use ends, if known.
    pub fn ends(&self) -> Option<SystemTime> {
        *self
            .ends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Warns if the server certificate in use ends within 14 days, and
    /// says so as an error once it has ended (every peer refuses it then);
    /// at start, after each reload, and as the time comes (see
    /// [`spawn_reloader`](Self::spawn_reloader)).
    pub fn warn_if_expiring(&self) {
        let (Some(ends), Some(path)) = (self.ends(), &self.files.cert) else {
            return;
        };
        let shown = humantime::format_rfc3339_seconds(ends);
        match ends.duration_since(SystemTime::now()) {
            Ok(left) if left > EXPIRY_WARNING => {}
            Ok(_) => {
                warn!(cert = %path.display(), expires = %shown, "the TLS certificate expires within 14 days");
            }
            Err(_) => {
                error!(cert = %path.display(), expired = %shown, "the TLS certificate has expired: peers refuse every connection until it is replaced (a new file is loaded by itself)");
            }
        }
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
        let (configs, ends) = load(&self.files, self.serving)?;
        self.current.store(Arc::new(configs));
        *self
            .ends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ends;
        self.warn_if_expiring();
        Ok(())
    }

    /// Reloads on SIGHUP and when a file's size, time or inode changes,
    /// until `stop` is cancelled; speaks of the certificate's end as it
    /// comes near (the file poll's tick looks at the wall clock: a
    /// certificate ends by it, and a suspended machine's monotonic timer
    /// would not), and keeps the gauge `expiry` makes at its end (Unix
    /// seconds) — made only once there is an end to show: a plaintext
    /// server that only trusts a CA has none, and a 0 would read as expired.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        stop: CancellationToken,
        expiry: impl Fn() -> Gauge + Send + 'static,
    ) {
        use tokio::signal::unix::{SignalKind, signal};
        let tls = self.clone();
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => Some(hup),
            Err(e) => {
                error!(error = %e, "cannot listen for SIGHUP; certificates reload on file change only");
                None
            }
        };
        let mut next_check = tls.expiry_watch(&expiry);
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
                        let wall = SystemTime::now();
                        // A clock stepped back would hold a stored time
                        // back as far: never wait longer than from now.
                        if let (Some(at), Some(ends)) = (next_check, tls.ends()) {
                            next_check = Some(at.min(next_expiry_check(ends, wall)));
                        }
                        if next_check.is_some_and(|at| wall >= at) {
                            tls.warn_if_expiring();
                            next_check = tls.expiry_watch(&expiry);
                        }
                        let now = tls.stamp();
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "file change"
                    }
                };
                match tls.reload() {
                    Ok(()) => {
                        info!(reason = why, "TLS certificates reloaded");
                        next_check = tls.expiry_watch(&expiry);
                    }
                    Err(e) => {
                        error!(reason = why, error = %e, "TLS reload failed; the previous certificates stay in use")
                    }
                }
            }
        });
    }

    /// Sets the gauge `expiry` makes to the certificate's end; when to look
    /// at it next.
    fn expiry_watch(&self, expiry: &impl Fn() -> Gauge) -> Option<SystemTime> {
        let ends = self.ends()?;
        let secs = ends
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        expiry().set(i64::try_from(secs).unwrap_or(i64::MAX));
        Some(next_expiry_check(ends, SystemTime::now()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};

    #[test]
    fn a_certificate_is_looked_at_as_its_last_days_begin_then_daily_and_as_it_ends() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = EXPIRY_REMINDER;
        // 30 days left: next when 14 are.
        let ends = now + day * 30;
        assert_eq!(next_expiry_check(ends, now), now + day * 16);
        // 14 days left or fewer: daily, and the moment it ends.
        assert_eq!(next_expiry_check(ends, now + day * 16), now + day * 17);
        let ends = now + Duration::from_secs(3600);
        assert_eq!(next_expiry_check(ends, now), ends);
        // At the second it ends, a second later (not a busy loop); past it,
        // daily.
        assert_eq!(next_expiry_check(now, now), now + Duration::from_secs(1));
        assert_eq!(
            next_expiry_check(now, now + Duration::from_secs(5)),
            now + Duration::from_secs(5) + day
        );
    }

    /// A self-signed server certificate and key in `dir`, expired in 2001
    /// when `expired`.
    fn files(dir: &Path, expired: bool) -> TlsFiles {
        let mut params = CertificateParams::new(vec!["depot1.example.org".to_owned()]).unwrap();
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        // Private, as a key file must be (a file rewritten keeps its mode).
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        std::fs::set_permissions(
            &key_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        TlsFiles {
            cert: Some(cert_file),
            key: Some(key_file),
            ca: None,
            client_ca: None,
        }
    }

    #[test]
    fn validity_times_read_as_rfc_5280_writes_them() {
        let at = |tag, text: &str| {
            der_time(tag, text.as_bytes()).map(|t| humantime::format_rfc3339_seconds(t).to_string())
        };
        assert_eq!(
            at(0x17, "010101000000Z").as_deref(),
            Some("2001-01-01T00:00:00Z")
        );
        assert_eq!(
            at(0x17, "991231235959Z").as_deref(),
            Some("1999-12-31T23:59:59Z")
        );
        assert_eq!(
            at(0x18, "20480229120000Z").as_deref(),
            Some("2048-02-29T12:00:00Z")
        );
        for (tag, bad) in [
            (0x17, "0101010000Z"),
            (0x18, "010101000000Z"),
            (0x17, "01010100000Z0"),
        ] {
            assert_eq!(at(tag, bad), None, "{bad}");
        }
    }

    #[test]
    fn a_private_key_others_may_read_is_refused_at_start_and_on_reload() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let good = files(dir.path(), false);
        let key = good.key.clone().unwrap();
        let mode = |m| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m)).unwrap();
        mode(0o644);
        let err = Tls::load_serving(good.clone()).unwrap_err().to_string();
        assert!(
            err.starts_with("tls_key: ") && err.contains("may be read by others (mode 644)"),
            "{err}"
        );
        // A client's key too: it is the caller's credential.
        assert!(Tls::load(good.clone()).is_err());
        mode(0o640);
        let tls = Tls::load_serving(good.clone()).unwrap();
        mode(0o604);
        assert!(
            tls.reload()
                .unwrap_err()
                .to_string()
                .contains("may be read by others")
        );
        mode(0o600);
        tls.reload().unwrap();
    }

    #[test]
    fn a_server_refuses_an_expired_certificate_at_start_and_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let expired = files(dir.path(), true);
        let err = Tls::load_serving(expired.clone()).unwrap_err().to_string();
        assert!(
            err.starts_with("tls_cert: ") && err.ends_with("expired on 2001-01-01T00:00:00Z"),
            "{err}"
        );
        // A client's own certificate is the server's to judge.
        assert!(Tls::load(expired).is_ok());

        let good = files(dir.path(), false);
        let tls = Tls::load_serving(good.clone()).unwrap();
        let before = tls.server().unwrap();
        // The files are replaced by an expired pair: the reload is refused
        // and the certificate in use stays.
        files(dir.path(), true);
        assert!(tls.reload().unwrap_err().to_string().contains("expired on"));
        assert!(Arc::ptr_eq(&before, &tls.server().unwrap()));
        files(dir.path(), false);
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.server().unwrap()));
    }
}
