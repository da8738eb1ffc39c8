//! Bearer-token authentication between services: `authorization: Bearer
//! <host key>` in the request metadata. Keys are loaded by one set of rules
//! (environment or key file), compared in constant time and never logged.

use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::domain::Secret;
use crate::domain::limits::MAX_KEY;
use crate::transport::ConnInfo;

/// The bearer token of a request, if it carries one.
pub fn bearer_token<T>(request: &Request<T>) -> Option<&str> {
    let value = request.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether two keys are equal, in time independent of where they differ.
pub fn keys_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The status for a request without the right key.
pub fn unauthenticated(missing: bool) -> Status {
    if missing {
        refused("missing 'authorization: Bearer <host key>' metadata")
    } else {
        refused("wrong host key")
    }
}

/// UNAUTHENTICATED with pxeconf's `ErrorInfo`.
pub fn refused(message: &str) -> Status {
    crate::status::Problem::new(crate::status::Reason::Unauthenticated, message).into_status()
}

/// A server interceptor accepting exactly one key; with no key configured it
/// lets every request through.
#[derive(Clone)]
pub struct RequireKey {
    key: Option<Secret>,
}

impl RequireKey {
    /// Requires `key`, or nothing when it is `None` or empty.
    pub fn new(key: Option<Secret>) -> Self {
        Self {
            key: key.filter(|k| !k.is_empty()),
        }
    }
}

impl Interceptor for RequireKey {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.key {
            match bearer_token(&request) {
                None => return Err(unauthenticated(true)),
                Some(token) if keys_equal(token, key.expose()) => {}
                Some(_) => return Err(unauthenticated(false)),
            }
        }
        if let Some(info) = ConnInfo::of(&request) {
            info.authenticated();
        }
        Ok(request)
    }
}

/// A client interceptor that adds the bearer token to every call.
#[derive(Clone)]
pub struct AttachKey {
    value: Option<MetadataValue<Ascii>>,
}

impl AttachKey {
    /// Attaches `key`; an empty key attaches nothing.
    pub fn new(key: &Secret) -> Result<Self, InvalidKey> {
        if key.is_empty() {
            return Ok(Self { value: None });
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", key.expose())
            .parse()
            .map_err(|_| InvalidKey)?;
        value.set_sensitive(true);
        Ok(Self { value: Some(value) })
    }
}

impl Interceptor for AttachKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A host key that cannot be sent as metadata (non-ASCII or control characters).
#[derive(Debug, thiserror::Error)]
#[error("host key must be printable ASCII")]
pub struct InvalidKey;

/// A key as the environment gives it: the variable's name, for messages, and
/// its value. Read once, with the flags, so that whoever builds settings in
/// process (tests) decides whether there is one; `Debug` never shows it.
#[derive(Clone, Default)]
pub struct EnvKey {
    name: &'static str,
    value: Option<String>,
}

impl EnvKey {
    /// The variable `name` of this process's environment; unset (or not
    /// Unicode) is no key.
    pub fn read(name: &'static str) -> Self {
        Self {
            name,
            value: std::env::var(name).ok(),
        }
    }

    /// Whether the variable holds more than blanks (it then wins over a file).
    pub fn is_set(&self) -> bool {
        self.value.as_deref().is_some_and(|v| !v.trim().is_empty())
    }

    /// `value`, as if the variable `name` held it.
    pub fn given(name: &'static str, value: impl Into<String>) -> Self {
        Self {
            name,
            value: Some(value.into()),
        }
    }
}

impl fmt::Debug for EnvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.value.as_ref().map(|_| "***");
        f.debug_struct("EnvKey")
            .field("name", &self.name)
            .field("value", &value)
            .finish()
    }
}

/// Where a key was found, as an error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// An environment variable.
    Env(&'static str),
    /// A key file.
    File(PathBuf),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::Env(name) => f.write_str(name),
            KeyOrigin::File(path) => write!(f, "key file {}", path.display()),
        }
    }
}

/// A key that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds nothing but blanks.
    #[error("key file {} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The key holds a space or a character that is not printable ASCII, so
    /// an `authorization` header cannot carry it.
    #[error("{origin}: the key must be printable ASCII without spaces")]
    Unprintable {
        /// Where it came from.
        origin: KeyOrigin,
    },
    /// A server's key that is too short to resist guessing, or too long.
    #[error("{origin}: the key must be {} to {} characters", SERVER_KEY_LENGTH.start(), SERVER_KEY_LENGTH.end())]
    Length {
        /// Where it came from.
        origin: KeyOrigin,
    },
}

/// How long a key a server requires (its own, and every depot's key the
/// Admin API registers) must be: long enough that guessing is hopeless.
pub const SERVER_KEY_LENGTH: std::ops::RangeInclusive<usize> = 32..=MAX_KEY;

/// Checks a key a server requires: [`SERVER_KEY_LENGTH`] characters, each
/// printable ASCII (no spaces), so that it fits an `authorization` header.
pub fn check_server_key(key: &str) -> Result<(), &'static str> {
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces");
    }
    if !SERVER_KEY_LENGTH.contains(&key.len()) {
        return Err("must be 32 to 256 characters");
    }
    Ok(())
}

/// A server's own key, loaded as [`load_key`] does and as long as
/// [`SERVER_KEY_LENGTH`] asks.
pub fn load_server_key(env: &EnvKey, file: Option<&Path>) -> Result<Option<Secret>, KeyError> {
    let key = load_key(env, file)?;
    if let Some(k) = &key
        && !SERVER_KEY_LENGTH.contains(&k.expose().len())
    {
        let origin = match (env.is_set(), file) {
            (false, Some(path)) => KeyOrigin::File(path.to_owned()),
            _ => KeyOrigin::Env(env.name),
        };
        return Err(KeyError::Length { origin });
    }
    Ok(key)
}

/// Loads a key by the rules every role and verb shares: the environment
/// variable wins when it holds more than blanks, else the file, else there is
/// none. Either is trimmed and must be printable ASCII without spaces; a key
/// file that is empty is an error, not "no key". Keys are never taken from
/// the command line, where `ps` would show them.
pub fn load_key(env: &EnvKey, file: Option<&Path>) -> Result<Option<Secret>, KeyError> {
    let (key, origin) = match env.value.as_deref().map(str::trim) {
        Some(key) if !key.is_empty() => (key.to_owned(), KeyOrigin::Env(env.name)),
        _ => {
            let Some(path) = file else { return Ok(None) };
            let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                path: path.to_owned(),
                source,
            })?;
            let key = text.trim();
            if key.is_empty() {
                return Err(KeyError::Empty {
                    path: path.to_owned(),
                });
            }
            (key.to_owned(), KeyOrigin::File(path.to_owned()))
        }
    };
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::Unprintable { origin });
    }
    Ok(Some(Secret::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_load_by_one_set_of_rules() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        std::fs::write(&file, "  from-file\n").unwrap();
        let none = EnvKey::default();
        let load = |env: &EnvKey, file: Option<&Path>| {
            load_key(env, file).map(|k| k.map(|k| k.expose().to_owned()))
        };
        assert_eq!(load(&none, None).unwrap(), None);
        assert_eq!(
            load(&none, Some(&file)).unwrap().as_deref(),
            Some("from-file")
        );
        // The variable wins, trimmed; blank counts as unset.
        let env = EnvKey::given("PXECONF_TEST_KEY", " from-env ");
        assert_eq!(
            load(&env, Some(&file)).unwrap().as_deref(),
            Some("from-env")
        );
        let blank = EnvKey::given("PXECONF_TEST_KEY", "  ");
        assert_eq!(
            load(&blank, Some(&file)).unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(load(&blank, None).unwrap(), None);

        std::fs::write(&file, " \n").unwrap();
        let empty = load(&none, Some(&file)).unwrap_err();
        assert!(matches!(empty, KeyError::Empty { .. }), "{empty}");
        let absent = dir.path().join("absent");
        let err = load(&none, Some(&absent)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("key file {}: ", absent.display())),
            "{err}"
        );

        std::fs::write(&file, "two words").unwrap();
        let err = load(&none, Some(&file)).unwrap_err().to_string();
        assert!(
            err.ends_with("must be printable ASCII without spaces"),
            "{err}"
        );
        let err = load(&EnvKey::given("PXECONF_TEST_KEY", "schlüssel"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PXECONF_TEST_KEY: the key must be printable ASCII without spaces"
        );
        assert!(!format!("{env:?}").contains("from-env"));
    }

    fn with_auth(value: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", value.parse().unwrap());
        r
    }

    #[test]
    fn require_key_checks_the_bearer_token() {
        let mut check = RequireKey::new(Some(Secret::new("k1")));
        assert!(check.call(with_auth("Bearer k1")).is_ok());
        assert!(check.call(with_auth("bearer k1")).is_ok());
        let wrong = check.call(with_auth("Bearer k2")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let missing = check.call(Request::new(())).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(check.call(with_auth("Basic k1")).is_err());
    }

    #[test]
    fn no_key_lets_requests_through_and_attach_adds_the_header() {
        assert!(RequireKey::new(None).call(Request::new(())).is_ok());
        let mut attach = AttachKey::new(&Secret::new("k1")).unwrap();
        let r = attach.call(Request::new(())).unwrap();
        assert_eq!(bearer_token(&r), Some("k1"));
    }
}
