//! Compiles `proto/` with protox (no system `protoc`) and emits the descriptor set
//! that gRPC reflection serves.

use std::path::PathBuf;

use protox::prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["privledger/v1/privledger.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("privledger_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // The audit stream hands the stored body over without copying it.
        .bytes(".privledger.v1.Entry.body")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
