//! Compiles `../proto` with protox (pure Rust, no system `protoc`) into client stubs only:
//! apps link the wire types and clients, never the server's service traits.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "../proto/stint/v1/common.proto",
        "../proto/stint/v1/sts.proto",
        "../proto/stint/v1/tokens.proto",
        "../proto/stint/v1/keys.proto",
    ];
    println!("cargo:rerun-if-changed=../proto");
    let fds = protox::compile(files, ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
