//! The `pxeconf` subcommands: server roles and operator verbs.

pub mod admin;
pub mod demo;
mod error;
pub mod lab;
pub mod loadtest;
pub mod opsi;
mod serve;
pub mod tftp;

pub use error::CliError;
pub use serve::{run_configserver, run_depot};
