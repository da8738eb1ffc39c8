//! A peer's gRPC URL, checked once wherever one enters (settings, the Admin
//! API, the command line), so a typo fails early with the same message.

use std::fmt;

use super::error::ValidationError;

/// An `http://` or `https://` URL with a host, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint(String);

impl Endpoint {
    /// Parses a gRPC URL; `field` names it in the error.
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        let url = value.trim().trim_end_matches('/');
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
        if !ok {
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
        }
        Ok(Self(url.to_owned()))
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

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
