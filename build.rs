//! Compiles `proto/` with protox (no system `protoc`): our own API, served and with a
//! descriptor set for gRPC reflection, and the parts of etcd's API that cluster mode
//! calls (vendored under `proto/etcd/`, client stubs only).

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
    let etcd = protox::compile(
        [
            "etcd/api/etcdserverpb/rpc.proto",
            "etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        // Batch values travel from the watch into the ledger without a copy.
        .bytes(".mvccpb.KeyValue.value")
        .build_server(false)
        .build_client(true)
        .compile_fds(etcd)?;
    Ok(())
}
