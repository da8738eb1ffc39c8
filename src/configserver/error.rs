//! Why a configserver request failed, and the one mapping to gRPC codes.

use tonic::Status;

use super::store::StoreError;
use crate::domain::ValidationError;

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
        let message = err.to_string();
        match err {
            Error::Invalid(_) => Status::invalid_argument(message),
            Error::Store(StoreError::NotFound { .. }) => Status::not_found(message),
            Error::Store(StoreError::AlreadyExists { .. } | StoreError::Duplicate { .. }) => {
                Status::already_exists(message)
            }
            Error::WrongDepot { .. } | Error::Denied(_) => Status::permission_denied(message),
            Error::Precondition(_) => Status::failed_precondition(message),
            // A busy database is a moment's trouble: the caller retries.
            Error::Store(ref e) if e.is_busy() => {
                tracing::warn!(error = %message, "database busy");
                Status::unavailable("the configserver's database is busy; retry")
            }
            // Database trouble is ours: the detail goes to the log.
            Error::Store(_) => {
                tracing::error!(error = %message, "configserver internal error");
                Status::internal("internal error on the configserver; its log has the detail")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    }
}
