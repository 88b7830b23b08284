//! Generated from `proto/modal.proto` by `build.rs`.
#![allow(clippy::all, missing_docs)]
tonic::include_proto!("modal.client");

/// The task command router (exec path of newer official SDKs).
pub mod router {
    tonic::include_proto!("modal.task_command_router");
}
