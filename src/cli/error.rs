//! How a subcommand fails: any error, printed by `main` as one line.

/// A subcommand failure, printed as one line.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;
