//! Why a depot request failed or the depot could not start, and the one
//! place depot errors become gRPC statuses.

use std::path::PathBuf;

use tonic::{Code, Status};
use tracing::{error, warn};

use super::render::RenderError;
use super::template::TemplateError;
use super::writer::{JournalError, SeenState, WriterError};
use crate::domain::{Fqdn, ValidationError};
use crate::status::{AbortReason, Aborted, Problem, RETRY_BUSY, RETRY_STOPPING, Reason, code_name};

/// Why a depot request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A template could not be used.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Rendering was refused.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The writer refused or failed.
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// The bundle names another depot.
    #[error("bundle is for depot {bundle}, this is {this}")]
    WrongDepot {
        /// The depot the bundle names.
        bundle: Fqdn,
        /// This depot.
        this: Fqdn,
    },
    /// The bundle asks to boot nothing.
    #[error("{fqdn} has no netboot action request for {product}")]
    NoAction {
        /// The client.
        fqdn: Fqdn,
        /// The product.
        product: String,
    },
    /// The client has no service address: its boot image could reach
    /// nothing (opsi 4.3 refuses alike).
    #[error("{}", crate::domain::opsi::no_service(fqdn.as_str()))]
    NoService {
        /// The client.
        fqdn: Fqdn,
    },
    /// The legacy path needs a configserver.
    #[error(
        "no configserver is configured; legacy look-ups by FQDN are impossible (start the depot with --configserver)"
    )]
    NoConfigServer,
    /// This depot runs in legacy-only mode.
    #[error("this depot runs in legacy mode; use SetPxeConfigByFqdn")]
    LegacyOnly,
    /// This depot serves `SetPxeConfig` per client only (as depots did
    /// before `BatchSetPxeConfigs`).
    #[error("this depot takes no batches; use SetPxeConfig")]
    NoBatches,
    /// A batch with more pushes than one call may carry.
    #[error("a batch carries at most {max} pushes, this one {pushes}")]
    BatchTooLarge {
        /// Pushes in the batch.
        pushes: usize,
        /// The most one batch may carry.
        max: usize,
    },
    /// A look-up at the configserver failed. The message carries the
    /// configserver's own answer only where it answered no (NOT_FOUND,
    /// FAILED_PRECONDITION); a transport failure's detail (addresses, OS
    /// errors) goes to the depot's log, not to the caller.
    #[error(
        "look-up {rpc} for {fqdn} at the configserver failed: {}",
        answer(status)
    )]
    Lookup {
        /// The look-up RPC.
        rpc: &'static str,
        /// The client.
        fqdn: String,
        /// What the configserver answered.
        status: tonic::Status,
    },
    /// The configserver's look-up answers for a client do not make a valid
    /// config (a template path, an append item the depot refuses): the
    /// store's data is at fault, not the caller's request.
    #[error("the configserver's look-up answers for {fqdn} do not make a valid config: {error}")]
    LookupInvalid {
        /// The client.
        fqdn: Fqdn,
        /// What is wrong with the answers.
        error: ValidationError,
    },
    /// The configserver answered a look-up for another client than the
    /// one asked (a configserver that is confused or not the one meant).
    #[error("look-up {rpc} for {asked} at the configserver answered for another client")]
    LookupMismatch {
        /// The look-up RPC.
        rpc: &'static str,
        /// The client asked for.
        asked: Fqdn,
    },
}

/// What a failed look-up's caller is told of the configserver's answer.
fn answer(status: &Status) -> String {
    match status.code() {
        Code::NotFound | Code::FailedPrecondition => {
            format!("{}: {}", code_name(status.code()), status.message())
        }
        code => code_name(code).to_owned(),
    }
}

/// Why a depot could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The PXE directory is unusable.
    #[error("PXE directory {path}: {source}")]
    PxeDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The template directory is unusable.
    #[error(transparent)]
    Templates(#[from] TemplateError),
    /// The configserver URL or host key is unusable.
    #[error("configserver: {0}")]
    ConfigServer(String),
    /// The journal in the state directory is unusable.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Files in the PXE directory cannot be given the configured group.
    #[error(
        "file_group: files in {dir} cannot be given group {gid} ({source}): run the depot as a member of the group (systemd: SupplementaryGroups=), or make the directory setgid to it"
    )]
    FileGroup {
        /// The PXE directory.
        dir: PathBuf,
        /// The group.
        gid: u32,
        /// Why not.
        source: std::io::Error,
    },
    /// The state directory is unusable for the depot.
    #[error("state directory {path}: {why}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// A bundle written, for `pxeconf_bundles_received_total`.
pub const BUNDLE_OK: &str = "ok";
const ABORTED: &str = "aborted";
const INTERNAL: &str = "internal";
const REFUSED: &str = "refused";
/// Every result `pxeconf_bundles_received_total` can show: [`BUNDLE_OK`]
/// and each [`Error::label`], created at zero when a depot that takes
/// bundles starts.
pub const BUNDLE_RESULTS: [&str; 4] = [BUNDLE_OK, ABORTED, INTERNAL, REFUSED];

impl Error {
    /// What went wrong, for metrics: `aborted` (the depot holds a newer
    /// revision, or it was read or removed), `internal` (the depot's own
    /// failure) or `refused` (the request's fault).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Writer(WriterError::Stale { .. }) => ABORTED,
            Error::Writer(WriterError::Io { .. } | WriterError::Stopped)
            | Error::Template(TemplateError::Io { .. } | TemplateError::Dir { .. })
            | Error::Render(RenderError::Hash(_))
            | Error::LookupMismatch { .. } => INTERNAL,
            _ => REFUSED,
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::Writer(WriterError::Stale {
                held,
                state,
                epoch,
                highest,
                ..
            }) => {
                let reason = match state {
                    SeenState::Held => AbortReason::NewerHeld,
                    SeenState::Read => AbortReason::AlreadyRead,
                    SeenState::Removed => AbortReason::Removed,
                };
                let aborted = Aborted {
                    reason,
                    revision: held,
                    epoch,
                    highest,
                };
                aborted.to_status(message)
            }
            // What a depot from before the batch RPC answers: no details.
            Error::NoBatches => Status::unimplemented(message),
            other => problem(other, message).into_status(),
        }
    }
}

/// Every other error as a [`Problem`]: the code, the reason, the details.
fn problem(err: Error, message: String) -> Problem {
    match err {
        Error::Invalid(e) => Problem::invalid(&e),
        Error::Template(TemplateError::Escapes { name }) => {
            Problem::new(Reason::InvalidField, message).violation(
                "product.pxe_config_template",
                format!("{name:?} is outside the template directory"),
            )
        }
        // A symlink in the depot's template directory: the caller's name
        // (or none, for a default) is not at fault; the operator's set-up is.
        Error::Template(TemplateError::LinksOut { name, path }) => {
            warn!(template = %name, path = %path.display(), "template leads outside the template directory; not used");
            Problem::new(Reason::TemplateMissing, message).precondition(
                "TEMPLATE",
                name,
                "the template on the depot leads outside its template directory",
            )
        }
        Error::Template(TemplateError::Missing { name, path }) => {
            // Where the depot looked is for its operator, not the caller.
            warn!(template = %name, path = %path.display(), "template file missing");
            Problem::new(Reason::TemplateMissing, message).precondition(
                "TEMPLATE",
                name,
                "the template file does not exist on the depot",
            )
        }
        Error::Template(TemplateError::PxelinuxForUefi { name, mode, .. }) => {
            Problem::new(Reason::TemplateNotUefi, message).precondition(
                "TEMPLATE",
                name,
                format!("pxelinux format cannot boot a {mode} client"),
            )
        }
        Error::Render(RenderError::Syntax { field, format, ch }) => {
            Problem::new(Reason::InvalidField, message)
                .violation(field, format!("{ch:?} is {format} syntax"))
        }
        Error::Render(RenderError::UefiNotLicensed { mode }) => {
            Problem::new(Reason::ModuleNotLicensed, message).precondition(
                "MODULE",
                "uefi",
                format!("an elilo config for boot mode {mode} needs the uefi module"),
            )
        }
        Error::Writer(WriterError::Conflict { name, owner, .. }) => {
            Problem::new(Reason::FileNameConflict, message)
                .meta("file", name)
                .meta("owner", owner)
        }
        Error::Writer(WriterError::NoFileNames { fqdn }) => {
            Problem::new(Reason::NoFileNames, message).precondition(
                "CLIENT",
                fqdn.to_string(),
                "neither a MAC address (00:00:00:… is a placeholder) nor a system UUID",
            )
        }
        Error::WrongDepot { .. } => {
            Problem::new(Reason::WrongDepot, message).code(Code::FailedPrecondition)
        }
        Error::NoAction { fqdn, product } => Problem::new(Reason::NoActionRequest, message)
            .precondition(
                "ACTION",
                format!("{fqdn}/{product}"),
                "no netboot action request",
            ),
        Error::NoService { fqdn } => Problem::new(Reason::NotDeliverable, message).precondition(
            "CLIENT",
            fqdn.to_string(),
            "no clientconfig.configserver.url",
        ),
        Error::NoConfigServer => Problem::new(Reason::NoConfigServer, message).precondition(
            "CONFIG",
            "configserver",
            "not configured on this depot",
        ),
        Error::Writer(WriterError::Stopped) => {
            Problem::new(Reason::ShuttingDown, message).retry_after(RETRY_STOPPING)
        }
        Error::LegacyOnly => Problem::new(Reason::LegacyOnly, message),
        // Answered without details in `From` (as a depot before the RPC
        // answers); the same code here keeps this match whole.
        Error::NoBatches => Problem::new(Reason::Internal, message).code(Code::Unimplemented),
        Error::BatchTooLarge { max, .. } => Problem::new(Reason::InvalidField, message)
            .violation("pushes", format!("at most {max} per call")),
        Error::Lookup { rpc, fqdn, status } => {
            if !matches!(status.code(), Code::NotFound | Code::FailedPrecondition) {
                warn!(rpc, client = %fqdn, code = code_name(status.code()), detail = %status.message(), "look-up failed");
            }
            lookup(rpc, &status, message)
        }
        Error::LookupInvalid { fqdn, error } => {
            warn!(client = %fqdn, %error, "the configserver's look-up answers do not make a valid config");
            Problem::new(Reason::LookupFailed, message).precondition(
                "LOOKUP",
                "ClientBundle",
                "the configserver's answers do not make a valid config",
            )
        }
        Error::LookupMismatch { rpc, asked } => {
            error!(rpc, client = %asked, "the configserver answered a look-up for another client");
            Problem::new(Reason::LookupFailed, message)
                .meta("rpc", rpc)
                .code(Code::Internal)
        }
        // File system trouble is ours, not the caller's: the detail goes
        // to the log, the caller learns that it happened.
        Error::Writer(WriterError::Io { .. } | WriterError::Stale { .. })
        | Error::Template(TemplateError::Io { .. } | TemplateError::Dir { .. })
        | Error::Render(RenderError::Hash(_)) => {
            error!(error = %message, "depot internal error");
            Problem::new(
                Reason::Internal,
                "internal error on the depot; the depot log has the detail",
            )
        }
    }
}

/// A failed legacy look-up: the configserver's answer decides whether the
/// caller may retry (it could not answer) or not (it answered no).
fn lookup(rpc: &'static str, status: &Status, message: String) -> Problem {
    let problem = Problem::new(Reason::LookupFailed, message)
        .meta("rpc", rpc)
        .meta("code", code_name(status.code()));
    // The configserver's own refusals (pxeconf's reason: not something in
    // between) stand until someone changes the inventory or the depot's
    // registration: a retry would get the same.
    let refused = match status.code() {
        Code::NotFound | Code::FailedPrecondition => true,
        Code::PermissionDenied | Code::InvalidArgument | Code::Unauthenticated => {
            crate::status::reason_of(status).is_some()
        }
        _ => false,
    };
    if refused {
        problem.precondition("LOOKUP", rpc, status.message())
    } else {
        problem.code(Code::Unavailable).retry_after(RETRY_BUSY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::reason_of;
    use tonic_types::StatusExt;

    #[test]
    fn every_error_carries_a_reason_and_retryable_ones_a_delay() {
        let stopped = Status::from(Error::Writer(WriterError::Stopped));
        assert_eq!(stopped.code(), Code::Unavailable);
        assert_eq!(reason_of(&stopped).as_deref(), Some("SHUTTING_DOWN"));
        assert_eq!(
            stopped.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(RETRY_STOPPING)
        );
        let down = Status::from(Error::Lookup {
            rpc: "GetHost",
            fqdn: "a.example.org".into(),
            status: Status::unavailable("connection refused"),
        });
        assert_eq!(down.code(), Code::Unavailable);
        assert_eq!(reason_of(&down).as_deref(), Some("LOOKUP_FAILED"));
        assert!(down.get_details_retry_info().is_some());
        // A transport failure's detail stays in the depot's log.
        let transport = Status::from(Error::Lookup {
            rpc: "GetHost",
            fqdn: "a.example.org".into(),
            status: Status::unavailable("tcp connect error: 10.1.2.3:4447: Connection refused"),
        });
        assert_eq!(
            transport.message(),
            "look-up GetHost for a.example.org at the configserver failed: UNAVAILABLE"
        );
        assert!(!format!("{:?}", transport.details()).contains("10.1.2.3"));
        let gone = Status::from(Error::Lookup {
            rpc: "GetHost",
            fqdn: "a.example.org".into(),
            status: Status::not_found("no such client"),
        });
        assert_eq!(gone.code(), Code::FailedPrecondition);
        assert!(
            gone.message().ends_with("NOT_FOUND: no such client"),
            "{gone:?}"
        );
        let info = tonic_types::StatusExt::get_details_error_info(&gone).unwrap();
        assert_eq!(info.metadata["code"], "NOT_FOUND", "{info:?}");
        // The configserver's own "not this depot's client" is no reason to
        // retry; the same code from a proxy in between may be.
        for (status, code) in [
            (
                crate::status::Problem::new(
                    crate::status::Reason::WrongDepot,
                    "a.example.org is not a client of this depot",
                )
                .into_status(),
                Code::FailedPrecondition,
            ),
            (Status::permission_denied("forbidden"), Code::Unavailable),
        ] {
            let answered = Status::from(Error::Lookup {
                rpc: "GetHost",
                fqdn: "a.example.org".into(),
                status,
            });
            assert_eq!(answered.code(), code, "{answered:?}");
        }
        let other = Status::from(Error::LookupMismatch {
            rpc: "GetHost",
            asked: Fqdn::parse("a.example.org", "fqdn").unwrap(),
        });
        assert_eq!(other.code(), Code::Internal);
        assert_eq!(reason_of(&other).as_deref(), Some("LOOKUP_FAILED"));
        let failure = gone.get_details_precondition_failure().unwrap();
        assert_eq!(failure.violations[0].subject, "GetHost");
        let invalid = Status::from(Error::LookupInvalid {
            fqdn: Fqdn::parse("a.example.org", "fqdn").unwrap(),
            error: ValidationError::new("product.pxe_config_template", "must be relative"),
        });
        assert_eq!(invalid.code(), Code::FailedPrecondition, "{invalid:?}");
        assert_eq!(reason_of(&invalid).as_deref(), Some("LOOKUP_FAILED"));
        assert!(
            invalid.get_details_bad_request().is_none(),
            "not the caller's fields"
        );
        assert!(
            invalid.message().contains("pxe_config_template"),
            "{invalid:?}"
        );
        let legacy = Status::from(Error::LegacyOnly);
        assert_eq!(legacy.code(), Code::Unimplemented);
        assert_eq!(reason_of(&legacy).as_deref(), Some("LEGACY_ONLY"));
        let io = Status::from(Error::Writer(WriterError::Io {
            path: "/secret/path".into(),
            source: std::io::Error::other("disk"),
        }));
        assert_eq!(io.code(), Code::Internal);
        assert!(!io.message().contains("secret"));
        assert_eq!(reason_of(&io).as_deref(), Some("INTERNAL"));
    }
}
