//! The integration tests, as one binary so a change links once: real servers
//! on port 0, real SQLite files, real directories and real tools.

mod admin_cli;
mod apidoc;
mod common;
mod configserver;
mod contract;
mod depot;
mod errors;
mod loadtest;
mod modules;
mod operator;
mod opsi;
mod paths;
mod properties;
mod readme;
mod reliability;
mod replicas;
mod scale;
mod security;
mod store;
mod traces;
