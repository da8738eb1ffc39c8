//! Compiles `proto/` with protox (pure Rust, no `protoc` needed) and generates
//! the tonic services, plus an encoded descriptor set for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds migrations/ at compile time: a new file there
    // must rebuild the crate even when no source changed.
    println!("cargo:rerun-if-changed=migrations");
    let files = [
        "proto/pxeconf/v1/bundle.proto",
        "proto/pxeconf/v1/depot.proto",
        "proto/pxeconf/v1/configserver.proto",
        "proto/pxeconf/v1/admin.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("pxeconf_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The vendored `google.rpc.Status` is tonic-types' type, the one
        // `tonic::Status` details are encoded with.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds(fds)?;
    Ok(())
}
