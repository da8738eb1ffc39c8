//! A value that failed validation, naming the field as the wire does; one
//! error can name several bad fields (a request is checked whole, so the
//! caller learns every bad field at once).

use std::fmt;

/// At most this many bad fields are named in one error: a bulk write of
/// 100,000 bad clients must not answer with a 100,000-line status.
pub const MAX_VIOLATIONS: usize = 100;

/// A value that failed validation: which field, and why; and any further
/// bad fields of the same request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The field path as the wire names it, e.g. `host.hardware_address`.
    pub field: String,
    /// What is wrong with it, naming the offending value where it is not secret.
    pub message: String,
    /// Further bad fields (path, message), in request order.
    pub others: Vec<(String, String)>,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            others: Vec::new(),
        }
    }

    /// The same error with `prefix.` put before every field path.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        for (field, _) in &mut self.others {
            *field = format!("{prefix}.{field}");
        }
        self
    }

    /// Every bad field: (path, message), the first one first.
    pub fn violations(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.field.as_str(), self.message.as_str()))
            .chain(self.others.iter().map(|(f, m)| (f.as_str(), m.as_str())))
    }

    /// One error naming every field of `errors` (at most
    /// [`MAX_VIOLATIONS`]), or `Ok` when there are none.
    pub fn join(errors: impl IntoIterator<Item = ValidationError>) -> Result<(), ValidationError> {
        let mut joined: Option<ValidationError> = None;
        for e in errors {
            match &mut joined {
                None => joined = Some(e),
                Some(j) => {
                    j.others.push((e.field, e.message));
                    j.others.extend(e.others);
                    j.others.truncate(MAX_VIOLATIONS - 1);
                }
            }
        }
        joined.map_or(Ok(()), Err)
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)?;
        // The message names a few; BadRequest names them all.
        for (field, message) in self.others.iter().take(4) {
            write!(f, "; {field}: {message}")?;
        }
        if self.others.len() > 4 {
            write!(f, "; and {} more", self.others.len() - 4)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_errors_name_every_field_within_a_prefix_and_are_capped() {
        assert_eq!(ValidationError::join([]), Ok(()));
        let e = ValidationError::join([
            ValidationError::new("id", "bad"),
            ValidationError::new("hardware_address", "short"),
        ])
        .unwrap_err()
        .within("clients[3]");
        let all: Vec<_> = e.violations().collect();
        assert_eq!(
            all,
            [
                ("clients[3].id", "bad"),
                ("clients[3].hardware_address", "short")
            ]
        );
        assert_eq!(
            e.to_string(),
            "clients[3].id: bad; clients[3].hardware_address: short"
        );
        let many = ValidationError::join(
            (0..500).map(|i| ValidationError::new(format!("ids[{i}]"), "bad")),
        )
        .unwrap_err();
        assert_eq!(many.violations().count(), MAX_VIOLATIONS);
        assert!(
            many.to_string()
                .ends_with(&format!("and {} more", MAX_VIOLATIONS - 5))
        );
    }
}
