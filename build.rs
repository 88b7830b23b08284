// Compiles proto/modal.proto (our subset of Modal's control-plane API) with protox, a pure-Rust
// protobuf compiler, so building needs no `protoc`. The server half is generated too: the fake
// control plane in `fake-modal/` serves it in tests.
fn main() {
    println!("cargo:rerun-if-changed=proto/modal.proto");
    let fds = protox::compile(["modal.proto"], ["proto"]).expect("proto/modal.proto compiles");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate Modal gRPC code");
}
