//! [`Problem`]: one error as a status with pxeconf's `google.rpc` details.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

use super::reason::{DOMAIN, Reason};
use crate::domain::ValidationError;

/// One error as a status with pxeconf's details: the code, a message for
/// people, and for programs the reason, metadata, field violations,
/// precondition failures and a retry delay.
#[derive(Debug, Clone)]
pub struct Problem {
    code: Code,
    reason: Reason,
    message: String,
    metadata: HashMap<String, String>,
    violations: Vec<(String, String)>,
    preconditions: Vec<(String, String, String)>,
    retry: Option<Duration>,
}

impl Problem {
    /// A problem with `reason`, answered with the reason's code.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            code: reason.code(),
            reason,
            message: message.into(),
            metadata: HashMap::new(),
            violations: vec![],
            preconditions: vec![],
            retry: None,
        }
    }

    /// INVALID_ARGUMENT for `e`, with one field violation per bad field.
    pub fn invalid(e: &ValidationError) -> Self {
        e.violations().fold(
            Self::new(Reason::InvalidField, e.to_string()),
            |p, (f, m)| p.violation(f, m),
        )
    }

    /// The same with another code (a reason some roles answer differently).
    pub fn code(mut self, code: Code) -> Self {
        self.code = code;
        self
    }

    /// Adds `ErrorInfo` metadata.
    pub fn meta(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }

    /// Adds a `BadRequest.FieldViolation`: `field` as the wire names it
    /// (`host.hardware_address`), and what is wrong with it.
    pub fn violation(mut self, field: impl Into<String>, description: impl Into<String>) -> Self {
        self.violations.push((field.into(), description.into()));
        self
    }

    /// Adds a `PreconditionFailure.Violation`: its `kind` (`TEMPLATE`,
    /// `MODULE`, …), the subject it is about, and what is wrong.
    pub fn precondition(
        mut self,
        kind: &str,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.preconditions
            .push((kind.to_owned(), subject.into(), description.into()));
        self
    }

    /// Adds a `RetryInfo`: retry after `delay`.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry = Some(delay);
        self
    }

    /// The status, details attached.
    pub fn into_status(self) -> Status {
        let mut details =
            ErrorDetails::with_error_info(self.reason.as_str(), DOMAIN, self.metadata);
        if !self.violations.is_empty() {
            details.set_bad_request(
                self.violations
                    .into_iter()
                    .map(|(f, d)| FieldViolation::new(f, d))
                    .collect::<Vec<_>>(),
            );
        }
        if !self.preconditions.is_empty() {
            details.set_precondition_failure(
                self.preconditions
                    .into_iter()
                    .map(|(k, s, d)| PreconditionViolation::new(k, s, d))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(delay) = self.retry {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(self.code, self.message, details)
    }
}

impl From<Problem> for Status {
    fn from(p: Problem) -> Self {
        p.into_status()
    }
}

/// The pxeconf reason of `status`, if it carries one (domain `pxeconf`).
pub fn reason_of(status: &Status) -> Option<String> {
    let info = status.get_details_error_info()?;
    (info.domain == DOMAIN).then_some(info.reason)
}

/// The field violations of `status` as `field: description` lines, one per
/// bad field, for people (the admin verbs print them).
pub fn violation_lines(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}
