//! Compiles etcd's v3 API from `proto/` with protox (a pure-Rust protobuf compiler), so that
//! no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["rpc.proto", "kv.proto", "internal.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
