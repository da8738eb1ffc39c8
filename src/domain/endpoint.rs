//! A peer's gRPC URL, checked once wherever one enters (settings, the Admin
//! API, the command line), so a typo fails early with the same message.

use std::fmt;

use super::error::ValidationError;

/// An `http://` or `https://` URL with a host, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint(String);

impl Endpoint {
    /// Parses a gRPC URL as it enters (settings, the Admin API, the command
    /// line); `field` names it in the error. A user name, password, path or
    /// query is refused: gRPC uses none of them, and a password would be
    /// logged and shown.
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        let (endpoint, uri) = Self::checked(value, field)?;
        // Nothing of such a URL is quoted: the password is in it.
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(ValidationError::new(
                field,
                "must not carry a user name or password (gRPC never sends them; keys authenticate)",
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(ValidationError::new(
                field,
                format!(
                    "{} has a path or query, which gRPC does not use: give the scheme, host and port",
                    super::limits::shown(value)
                ),
            ));
        }
        Ok(endpoint)
    }

    /// A URL read back from where it was kept (the store's depots): only
    /// the scheme and the host are checked, as [`Self::parse`] did before
    /// it refused paths and user-info (2026-11-30) — a depot registered so
    /// earlier must not stop the configserver from reading its depots.
    pub fn stored(value: &str, field: &str) -> Result<Self, ValidationError> {
        Self::checked(value, field).map(|(endpoint, _)| endpoint)
    }

    /// An `http(s)://` URL with a host, and its parts.
    fn checked(value: &str, field: &str) -> Result<(Self, http::Uri), ValidationError> {
        let url = value.trim().trim_end_matches('/');
        let uri = (url.starts_with("http://") || url.starts_with("https://"))
            .then(|| url.parse::<http::Uri>().ok())
            .flatten()
            .filter(|u| u.host().is_some());
        let Some(uri) = uri else {
            // The example with the port of the server the field names.
            let port = if field.contains("configserver") || field == "--server" {
                50050
            } else {
                50051
            };
            return Err(ValidationError::new(
                field,
                format!(
                    "{} is not a URL like http://host.example.org:{port}",
                    super::limits::shown(value)
                ),
            ));
        };
        Ok((Self(url.to_owned()), uri))
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the hop is encrypted (`https://`).
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("https://")
    }
}

/// The URL as shown (logs, errors, `ListDepots`): a user name or password
/// a row stored by an older version may carry is left out. Calls use
/// [`Endpoint::as_str`].
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((scheme, rest)) = self.0.split_once("://") {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            if let Some(at) = authority.rfind('@') {
                return write!(f, "{scheme}://…@{}", &rest[at + 1..]);
            }
        }
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row stored by an older version with a password reads, and is
    /// shown without it (`ListDepots`, `pxeconf depots`, logs).
    #[test]
    fn a_stored_url_with_credentials_is_shown_without_them() {
        let stored = Endpoint::stored("http://pxe:s3cret@d1.example.org:50051/x", "e").unwrap();
        assert_eq!(stored.as_str(), "http://pxe:s3cret@d1.example.org:50051/x");
        assert_eq!(stored.to_string(), "http://…@d1.example.org:50051/x");
        let plain = Endpoint::parse("https://d1.example.org:50051", "e").unwrap();
        assert_eq!(plain.to_string(), "https://d1.example.org:50051");
    }

    #[test]
    fn a_url_with_credentials_or_a_path_is_refused_without_quoting_a_password() {
        let err = Endpoint::parse("http://pxe:s3cret@config.example.org:50050", "configserver")
            .unwrap_err();
        assert!(err.message.contains("user name or password"), "{err:?}");
        assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
        for with_path in [
            "http://config.example.org:50050/rpc",
            "http://config.example.org:50050?x=1",
        ] {
            let err = Endpoint::parse(with_path, "configserver").unwrap_err();
            assert!(err.message.contains("path or query"), "{err:?}");
        }
        let ok = Endpoint::parse("https://config.example.org:50050/", "configserver").unwrap();
        assert_eq!(ok.as_str(), "https://config.example.org:50050");
        // One kept from before (a depot registered so) still reads.
        let kept = Endpoint::stored("https://d1.example.org:50051/pxe", "endpoint").unwrap();
        assert_eq!(kept.as_str(), "https://d1.example.org:50051/pxe");
        assert!(Endpoint::stored("d1.example.org:50051", "endpoint").is_err());
    }

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        let e = Endpoint::parse(" http://depot1.example.org:50051/ ", "endpoint").unwrap();
        assert_eq!(e.as_str(), "http://depot1.example.org:50051");
        assert!(!e.is_tls());
        assert!(
            Endpoint::parse("https://127.0.0.1:1", "x")
                .unwrap()
                .is_tls()
        );
        for bad in ["", "depot1:50051", "ftp://x", "http://", "http:// x"] {
            let err = Endpoint::parse(bad, "endpoint").unwrap_err();
            assert_eq!(err.field, "endpoint", "{bad:?}");
        }
    }
}
