//! Why a depot answered ABORTED, machine-readably (the one-time guarantee's
//! reasons and their metadata).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::reason::{DOMAIN, META_EPOCH, META_HIGHEST, META_REVISION};

/// Why a depot refused a revision (the ABORTED reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The depot holds a newer revision of the client's config.
    NewerHeld,
    /// That revision, or a newer one, was read by the client.
    AlreadyRead,
    /// The client's config was removed at that revision or a newer one.
    Removed,
}

impl AbortReason {
    /// The `ErrorInfo.reason` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewerHeld => "NEWER_HELD",
            Self::AlreadyRead => "ALREADY_READ",
            Self::Removed => "REMOVED",
        }
    }

    /// The reason back from its text; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::NewerHeld, Self::AlreadyRead, Self::Removed]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// What an ABORTED from a depot says, machine-readably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aborted {
    /// Why.
    pub reason: AbortReason,
    /// The depot's revision for the client.
    pub revision: u64,
    /// The epoch of that revision (empty: none).
    pub epoch: String,
    /// The highest revision the depot has seen in the request's epoch.
    pub highest: u64,
}

impl Aborted {
    /// An ABORTED status with `message` for people and these details for
    /// programs.
    pub fn to_status(&self, message: impl Into<String>) -> Status {
        let metadata: HashMap<String, String> = [
            (META_REVISION, self.revision.to_string()),
            (META_EPOCH, self.epoch.clone()),
            (META_HIGHEST, self.highest.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Status::with_error_details(
            Code::Aborted,
            message,
            ErrorDetails::with_error_info(self.reason.as_str(), DOMAIN, metadata),
        )
    }

    /// The details of an ABORTED `status`, if it carries pxeconf's: `None`
    /// for another code, another domain, an unknown reason or bad metadata.
    pub fn from_status(status: &Status) -> Option<Self> {
        if status.code() != Code::Aborted {
            return None;
        }
        let info = status.get_details_error_info()?;
        if info.domain != DOMAIN {
            return None;
        }
        let number = |key: &str| info.metadata.get(key)?.parse::<u64>().ok();
        Some(Self {
            reason: AbortReason::parse(&info.reason)?,
            revision: number(META_REVISION)?,
            epoch: info.metadata.get(META_EPOCH).cloned().unwrap_or_default(),
            highest: number(META_HIGHEST).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborted_details_survive_a_status_and_others_are_ignored() {
        let sent = Aborted {
            reason: AbortReason::AlreadyRead,
            revision: 1_700_000_000_000_123,
            epoch: "0123abcd".into(),
            highest: 1_700_000_000_000_999,
        };
        let status = sent.to_status("stale revision");
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(status.message(), "stale revision");
        assert_eq!(Aborted::from_status(&status), Some(sent));
        // Through the wire form too: tonic sends details as bytes.
        let rebuilt = Status::with_details(
            status.code(),
            status.message(),
            status.details().to_vec().into(),
        );
        assert!(Aborted::from_status(&rebuilt).is_some());
        assert_eq!(Aborted::from_status(&Status::aborted("no details")), None);
        let other_domain = Status::with_error_details(
            Code::Aborted,
            "x",
            ErrorDetails::with_error_info("NEWER_HELD", "example.com", HashMap::new()),
        );
        assert_eq!(Aborted::from_status(&other_domain), None);
        for r in [
            AbortReason::NewerHeld,
            AbortReason::AlreadyRead,
            AbortReason::Removed,
        ] {
            assert_eq!(AbortReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(AbortReason::parse("STALE"), None);
    }
}
