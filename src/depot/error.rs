//! Why a depot request failed or the depot could not start, and the one
//! place depot errors become gRPC statuses.

use std::path::PathBuf;

use tonic::Status;
use tracing::error;

use super::render::RenderError;
use super::template::TemplateError;
use super::writer::{JournalError, SeenState, WriterError};
use crate::domain::{Fqdn, ValidationError};
use crate::status::{AbortReason, Aborted};

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
    /// The legacy path needs a configserver.
    #[error(
        "no configserver is configured; legacy look-ups by FQDN are impossible (start the depot with --configserver)"
    )]
    NoConfigServer,
    /// This depot runs in legacy-only mode.
    #[error("this depot runs in legacy mode; use SetPxeConfigByFqdn")]
    LegacyOnly,
    /// A look-up at the configserver failed.
    #[error("look-up {rpc} for {fqdn} at the configserver failed: {status}")]
    Lookup {
        /// The look-up RPC.
        rpc: &'static str,
        /// The client.
        fqdn: String,
        /// What the configserver answered.
        status: tonic::Status,
    },
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
    /// The state directory is unusable for the depot.
    #[error("state directory {path}: {why}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::Invalid(_) => Status::invalid_argument(message),
            Error::Template(TemplateError::Escapes { .. }) => Status::invalid_argument(message),
            Error::Template(
                TemplateError::Missing { .. } | TemplateError::PxelinuxForUefi { .. },
            ) => Status::failed_precondition(message),
            Error::Render(RenderError::UefiNotLicensed { .. }) => {
                Status::failed_precondition(message)
            }
            Error::Writer(WriterError::Stale {
                held,
                state,
                epoch,
                highest,
                ..
            }) => Aborted {
                reason: match state {
                    SeenState::Held => AbortReason::NewerHeld,
                    SeenState::Read => AbortReason::AlreadyRead,
                    SeenState::Removed => AbortReason::Removed,
                },
                revision: held,
                epoch,
                highest,
            }
            .to_status(message),
            Error::Writer(WriterError::Conflict { .. }) => Status::already_exists(message),
            Error::Writer(WriterError::NoFileNames { .. })
            | Error::WrongDepot { .. }
            | Error::NoAction { .. }
            | Error::NoConfigServer => Status::failed_precondition(message),
            Error::Writer(WriterError::Stopped) => Status::unavailable(message),
            Error::LegacyOnly => Status::unimplemented(message),
            Error::Lookup { ref status, .. } => match status.code() {
                tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
                    Status::failed_precondition(message)
                }
                _ => Status::unavailable(message),
            },
            // File system trouble is ours, not the caller's: the detail goes
            // to the log, the caller learns that it happened.
            Error::Writer(WriterError::Io { .. })
            | Error::Template(TemplateError::Io { .. } | TemplateError::Dir { .. })
            | Error::Render(RenderError::Hash(_)) => {
                error!(error = %message, "depot internal error");
                Status::internal("internal error on the depot; the depot log has the detail")
            }
        }
    }
}
