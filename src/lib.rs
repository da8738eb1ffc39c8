//! pxeconf: one-time PXE netboot configurations for many clients across many
//! depot servers. A configserver collects everything a depot needs into one
//! `ClientBundle` and pushes it; the depot renders and writes the PXE file,
//! watches for the TFTP read and reports it back.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod configserver;
pub mod depot;
pub mod domain;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod transport;
pub mod wire;
