//! Compiles etcd's v3 API and Flotilla's own messages (log entries, peer wire format) from
//! `proto/` with protox (a pure-Rust protobuf compiler), so that no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(
        [
            "rpc.proto",
            "kv.proto",
            "internal.proto",
            "raftpb.proto",
            "v3lock.proto",
            "v3election.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Rationale: entry payloads and snapshot data decoded from a frame buffer then share
        // that buffer instead of being copied into fresh vectors.
        .bytes(".raftpb")
        .compile_fds(descriptors)?;
    Ok(())
}
