//! The integration tests, as one binary so a change links once: real servers
//! on port 0, real SQLite files, real directories and real tools.

mod admin_cli;
mod common;
mod configserver;
mod depot;
mod modules;
mod operator;
mod paths;
mod properties;
mod readme;
mod scale;
mod security;
mod store;
