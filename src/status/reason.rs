//! The words of pxeconf's errors: the `ErrorInfo` domain, the stable reasons
//! and the metadata keys. A reason's text never changes once released;
//! programs match on it (docs/API.md lists them).

use std::time::Duration;

use tonic::Code;

/// Response metadata of `ListPendingBundles`: the store's epoch, so that a
/// depot learns it even from an empty stream.
pub const EPOCH_METADATA: &str = "pxeconf-epoch";

/// The `ErrorInfo.domain` of every pxeconf error.
pub const DOMAIN: &str = "pxeconf";

/// Metadata key: the depot's revision for the client (decimal).
pub const META_REVISION: &str = "revision";
/// Metadata key: the epoch that revision belongs to.
pub const META_EPOCH: &str = "epoch";
/// Metadata key: the highest revision the depot has seen in the request's
/// epoch (decimal).
pub const META_HIGHEST: &str = "highest";

/// The retry delay a busy database asks for: a moment.
pub const RETRY_BUSY: Duration = Duration::from_secs(1);
/// The retry delay a server that is stopping asks for: long enough for a
/// restart.
pub const RETRY_STOPPING: Duration = Duration::from_secs(5);

macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident = $text:literal, $code:ident;)+) => {
        /// A stable, machine-readable reason: `ErrorInfo.reason`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Reason {
            /// Every reason, in documentation order.
            pub const ALL: &[Reason] = &[$(Reason::$variant),+];

            /// The `ErrorInfo.reason` text.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $text,)+ }
            }

            /// The gRPC code this reason is answered with (where a role
            /// answers otherwise, it says so with `Problem::code`).
            pub fn code(self) -> Code {
                match self { $(Reason::$variant => Code::$code,)+ }
            }

            /// What the reason means, for people (the docs).
            pub fn description(self) -> &'static str {
                match self { $(Reason::$variant => concat!($($doc),+).trim_ascii(),)+ }
            }
        }
    };
}

reasons! {
    /// A field of the request is invalid; `BadRequest` names each bad field.
    InvalidField = "INVALID_FIELD", InvalidArgument;
    /// Something the request names does not exist (metadata `kind`, `id`).
    NotFound = "NOT_FOUND", NotFound;
    /// The MAC address is another client's (metadata `client`, `other`).
    MacConflict = "MAC_CONFLICT", AlreadyExists;
    /// The system UUID is another client's (metadata `client`, `other`).
    UuidConflict = "UUID_CONFLICT", AlreadyExists;
    /// The host key is another depot's: a key identifies one depot.
    HostKeyConflict = "HOST_KEY_CONFLICT", AlreadyExists;
    /// The host id is another kind of host's: a client and a depot cannot
    /// share one (metadata `kind`, `id`, `other`).
    HostIdConflict = "HOST_ID_CONFLICT", AlreadyExists;
    /// A PXE file name the config needs is held by another client on the
    /// depot (metadata `file`, `owner`).
    FileNameConflict = "FILE_NAME_CONFLICT", AlreadyExists;
    /// The caller may not act for the depot or client the request names.
    WrongDepot = "WRONG_DEPOT", PermissionDenied;
    /// The caller presented no host key, or a wrong one.
    Unauthenticated = "UNAUTHENTICATED", Unauthenticated;
    /// The template file does not exist on the depot, or leads out of its
    /// template directory through a symlink there (`PreconditionFailure`
    /// type `TEMPLATE`).
    TemplateMissing = "TEMPLATE_MISSING", FailedPrecondition;
    /// The template is in pxelinux format, which a UEFI client cannot boot
    /// (`PreconditionFailure` type `TEMPLATE`).
    TemplateNotUefi = "TEMPLATE_NOT_UEFI", FailedPrecondition;
    /// The config needs a module that is not licensed: an elilo config the
    /// `uefi` module (`PreconditionFailure` type `MODULE`).
    ModuleNotLicensed = "MODULE_NOT_LICENSED", FailedPrecondition;
    /// The client has neither a MAC address (a `00:00:00:…` placeholder
    /// does not count) nor a system UUID to name its PXE config after
    /// (`PreconditionFailure` type `CLIENT`).
    NoFileNames = "NO_FILE_NAMES", FailedPrecondition;
    /// The client has no netboot action request for the product
    /// (`PreconditionFailure` type `ACTION`).
    NoActionRequest = "NO_ACTION_REQUEST", FailedPrecondition;
    /// No PXE config can be made for the client now (`PreconditionFailure`
    /// type `CLIENT` says why).
    NotDeliverable = "NOT_DELIVERABLE", FailedPrecondition;
    /// The depot has no configserver to look clients up at
    /// (`PreconditionFailure` type `CONFIG`).
    NoConfigServer = "NO_CONFIGSERVER", FailedPrecondition;
    /// A legacy look-up at the configserver failed (metadata `rpc`, and
    /// `code`: the code of the configserver's answer, e.g. `NOT_FOUND`);
    /// UNAVAILABLE with `RetryInfo` when the configserver could not answer.
    LookupFailed = "LOOKUP_FAILED", FailedPrecondition;
    /// The depot runs in legacy mode: use `SetPxeConfigByFqdn`.
    LegacyOnly = "LEGACY_ONLY", Unimplemented;
    /// The depot holds a newer revision of the client's config (metadata
    /// `revision`, `epoch`, `highest`).
    NewerHeld = "NEWER_HELD", Aborted;
    /// That revision, or a newer one, was read by the client (metadata as
    /// `NEWER_HELD`).
    AlreadyRead = "ALREADY_READ", Aborted;
    /// The client's config was removed at that revision or a newer one
    /// (metadata as `NEWER_HELD`).
    Removed = "REMOVED", Aborted;
    /// The configserver's database is busy; retry after `RetryInfo`.
    DatabaseBusy = "DATABASE_BUSY", Unavailable;
    /// The server is stopping; retry after `RetryInfo`.
    ShuttingDown = "SHUTTING_DOWN", Unavailable;
    /// Too many calls at once, or a request over a limit; retry after
    /// `RetryInfo`.
    TooManyRequests = "TOO_MANY_REQUESTS", ResourceExhausted;
    /// The server failed; its log has the detail.
    Internal = "INTERNAL", Internal;
}

impl Reason {
    /// The reason for its text; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_upper_snake_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let text = r.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(text.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            assert_eq!(Reason::parse(text), Some(*r));
            assert!(!r.description().is_empty());
        }
        assert_eq!(Reason::parse("nope"), None);
        assert_eq!(Reason::NewerHeld.code(), Code::Aborted);
    }
}
