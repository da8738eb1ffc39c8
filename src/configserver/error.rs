//! Why a configserver request failed, and the one mapping to gRPC codes.

use tonic::Status;

use super::store::StoreError;
use crate::domain::ValidationError;
use crate::status::{Problem, RETRY_BUSY, Reason};

/// Why a configserver request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A depot asked about another depot's business.
    #[error("depot {caller} may not act for depot {target}")]
    WrongDepot {
        /// The authenticated depot.
        caller: String,
        /// The depot named in the request.
        target: String,
    },
    /// A depot asked about something that is not its own (a client of
    /// another depot, a product not installed on it); the message names
    /// what was asked for, never whose it is.
    #[error("{0}")]
    Denied(String),
    /// The request cannot be served in the current state.
    #[error("{0}")]
    Precondition(String),
}

impl Error {
    /// Something the request names does not exist.
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Error::Store(StoreError::NotFound {
            what,
            id: id.into(),
        })
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        problem(err).into_status()
    }
}

/// The error as a [`Problem`]: the code, the reason, the details.
fn problem(err: Error) -> Problem {
    let message = err.to_string();
    match err {
        Error::Invalid(e) => Problem::invalid(&e),
        Error::Store(StoreError::NotFound { what, id }) => Problem::new(Reason::NotFound, message)
            .meta("kind", what)
            .meta("id", id),
        Error::Store(StoreError::AlreadyExists {
            what, id, other, ..
        }) => {
            let reason = if what.contains("hardware") {
                Reason::MacConflict
            } else {
                Reason::UuidConflict
            };
            Problem::new(reason, message)
                .meta("client", id)
                .meta("other", other)
        }
        Error::Store(StoreError::Duplicate { what, id, .. }) => {
            Problem::new(Reason::HostKeyConflict, message).meta(what, id)
        }
        Error::Store(StoreError::HostIdTaken { what, id, other }) => {
            Problem::new(Reason::HostIdConflict, message)
                .meta("kind", what)
                .meta("id", id)
                .meta("other", other)
        }
        Error::WrongDepot { .. } | Error::Denied(_) => Problem::new(Reason::WrongDepot, message),
        Error::Precondition(why) => {
            Problem::new(Reason::NotDeliverable, message).precondition("CLIENT", "", why)
        }
        // A busy database is a moment's trouble: the caller retries.
        Error::Store(ref e) if e.is_busy() => {
            tracing::warn!(error = %message, "database busy");
            Problem::new(
                Reason::DatabaseBusy,
                "the configserver's database is busy; retry",
            )
            .retry_after(RETRY_BUSY)
        }
        // Database trouble is ours: the detail goes to the log.
        Error::Store(_) => {
            tracing::error!(error = %message, "configserver internal error");
            Problem::new(
                Reason::Internal,
                "internal error on the configserver; its log has the detail",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::reason_of;
    use tonic::Code;

    #[test]
    fn codes_are_chosen_on_purpose_and_internals_stay_in_the_log() {
        let invalid = Status::from(Error::from(ValidationError::new("fqdn", "bad")));
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert!(invalid.message().contains("fqdn"), "{}", invalid.message());
        assert_eq!(
            Status::from(Error::not_found("client", "x.example.org")).code(),
            Code::NotFound
        );
        let corrupt = Status::from(Error::Store(StoreError::Corrupt {
            what: "client",
            id: "secret-detail".into(),
            message: "bad".into(),
        }));
        assert_eq!(corrupt.code(), Code::Internal);
        assert!(!corrupt.message().contains("secret-detail"));
        let busy = Status::from(Error::Store(StoreError::Db(sqlx::Error::PoolTimedOut)));
        assert_eq!(busy.code(), Code::Unavailable, "{busy:?}");
        // Every error carries its reason; a retryable one the delay.
        use tonic_types::StatusExt;
        assert_eq!(reason_of(&busy).as_deref(), Some("DATABASE_BUSY"));
        assert_eq!(
            busy.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(RETRY_BUSY)
        );
        assert_eq!(reason_of(&corrupt).as_deref(), Some("INTERNAL"));
        assert_eq!(reason_of(&invalid).as_deref(), Some("INVALID_FIELD"));
        let fields: Vec<String> = invalid
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["fqdn"]);
        let mac = Status::from(Error::Store(StoreError::AlreadyExists {
            what: "hardware address",
            value: "00:11:22:33:44:55".into(),
            id: "a.example.org".into(),
            other: "b.example.org".into(),
        }));
        assert_eq!(mac.code(), Code::AlreadyExists);
        assert_eq!(reason_of(&mac).as_deref(), Some("MAC_CONFLICT"));
        let info = mac.get_details_error_info().unwrap();
        assert_eq!(info.metadata["other"], "b.example.org");
        let host = Status::from(Error::Store(StoreError::HostIdTaken {
            what: "client",
            id: "d1.example.org".into(),
            other: "depot",
        }));
        assert_eq!(host.code(), Code::AlreadyExists);
        assert_eq!(reason_of(&host).as_deref(), Some("HOST_ID_CONFLICT"));
        assert!(host.message().contains("depot"), "{}", host.message());
        let why = Status::from(Error::Precondition("no product".into()));
        let failure = why.get_details_precondition_failure().unwrap();
        assert_eq!(failure.violations[0].r#type, "CLIENT");
    }
}
