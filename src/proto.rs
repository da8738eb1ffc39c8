//! The generated `pxeconf.v1` wire types and services: the public API.
//! Nothing outside the wire conversions and the service modules should need these.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("pxeconf.v1");

pub mod compat;

/// The encoded file descriptor set of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/pxeconf_descriptor.bin"));

/// The legacy look-up RPCs, in the order a legacy depot makes them (and metrics count them).
pub const LEGACY_LOOKUPS: &[&str] = &[
    "GetHost",
    "GetNetbootProductOnClients",
    "GetProductOnDepot",
    "GetProduct",
    "GetConfigStates",
    "GetProductPropertyStates",
    "GetModules",
];
