//! The generated `pxeconf.v1` wire types and services: the public API.
//! Nothing outside `convert` and the service modules should need these.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("pxeconf.v1");

/// The encoded file descriptor set of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/pxeconf_descriptor.bin"));
