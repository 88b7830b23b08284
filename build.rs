// Compiles proto/modal.proto and proto/modal_router.proto (our subsets of Modal's control-plane
// and task-command-router APIs) with protox, a pure-Rust
// protobuf compiler, so building needs no `protoc`. The server half is generated too: the fake
// control plane in `fake-modal/` serves it in tests.
fn main() {
    println!("cargo:rerun-if-changed=proto/modal.proto");
    println!("cargo:rerun-if-changed=proto/modal_router.proto");
    let fds = protox::compile(["modal.proto", "modal_router.proto"], ["proto"]).expect("proto files compile");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate Modal gRPC code");
}
