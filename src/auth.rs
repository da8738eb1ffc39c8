//! Bearer-token authentication between services: `authorization: Bearer
//! <host key>` in the request metadata. Keys are compared in constant time
//! and never logged.

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::domain::Secret;

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
        Status::unauthenticated("missing 'authorization: Bearer <host key>' metadata")
    } else {
        Status::unauthenticated("wrong host key")
    }
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
        let Some(key) = &self.key else {
            return Ok(request);
        };
        match bearer_token(&request) {
            None => Err(unauthenticated(true)),
            Some(token) if keys_equal(token, key.expose()) => Ok(request),
            Some(_) => Err(unauthenticated(false)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
