//! Machine-readable error details both roles share, in the `google.rpc`
//! types every gRPC client and grpcurl understand: each error carries an
//! `ErrorInfo` (domain `pxeconf`, a stable [`Reason`], metadata); an invalid
//! argument a `BadRequest` with one `FieldViolation` per bad field; a failed
//! precondition a `PreconditionFailure`; UNAVAILABLE and RESOURCE_EXHAUSTED a
//! `RetryInfo` with the delay the server wants. Built and read in this one
//! place ([`Problem`]) so that every role agrees on the words.

mod aborted;
mod item;
mod problem;
mod reason;

pub use aborted::{AbortReason, Aborted};
pub use item::{from_item, to_item};
pub use problem::{Problem, reason_of, violation_lines};
pub use reason::{
    DOMAIN, EPOCH_METADATA, META_EPOCH, META_HIGHEST, META_REVISION, RETRY_BUSY, RETRY_STOPPING,
    Reason,
};

/// A status as one short line for a log, `UNAUTHENTICATED: wrong host key`,
/// with its causes when it has any (`UNKNOWN: transport error: …`); tonic's
/// own `Display` spells out the code's description.
pub struct Brief<'a>(pub &'a tonic::Status);

impl std::fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = format!("{}: {}", code_name(self.0.code()), self.0.message());
        f.write_str(&with_causes(line, std::error::Error::source(self.0)))
    }
}

/// The canonical name of a gRPC code, as the gRPC docs write it
/// (`NOT_FOUND`; grpcurl prints Go's `NotFound`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `line`, then each cause from `source` on that it does not already say,
/// `: `-joined.
pub fn with_causes(
    mut line: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod brief_tests {
    use super::Brief;

    #[test]
    fn a_status_is_one_line_with_its_causes_once() {
        let refused = tonic::Status::unauthenticated("wrong host key");
        assert_eq!(
            Brief(&refused).to_string(),
            "UNAUTHENTICATED: wrong host key"
        );
        let mut broken = tonic::Status::unknown("transport error");
        broken.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection reset",
        )));
        assert_eq!(
            Brief(&broken).to_string(),
            "UNKNOWN: transport error: connection reset"
        );
    }
}
