//! Compiles `proto/` with protox (pure Rust, so no system `protoc`) and feeds the result to
//! tonic's generator. The encoded descriptor set is kept for gRPC server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/stint/v1/common.proto",
        "proto/stint/v1/sts.proto",
        "proto/stint/v1/tokens.proto",
        "proto/stint/v1/iam.proto",
        "proto/stint/v1/audit.proto",
        "proto/stint/v1/keys.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("stint_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
