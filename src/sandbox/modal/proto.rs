//! Generated from `proto/modal.proto` by `build.rs`.
#![allow(clippy::all, missing_docs)]
tonic::include_proto!("modal.client");
