//! JSON form of received requests, for golden-file comparisons between clients.
//!
//! prost messages have no serde support, so each request type is converted by hand. Every field
//! is present (proto3 defaults included) so a missing field on one client shows up as a value
//! difference; unset optionals are `null`, enums are numbers, bytes are base64 except bulk data
//! (`data`), which is reduced to `{"len": N}`.

use std::collections::BTreeMap;

use agent_runtime::sandbox::modal::proto::{
    self as pb, container_filesystem_exec_request::FileExecRequestOneof, router as rpb,
};
use base64::Engine;
use serde_json::{json, Value};
use tonic::metadata::MetadataMap;

/// Converts a request message to its recorded JSON form.
pub trait ToJson {
    fn to_json(&self) -> Value;
}

/// One record: the method, its headers and the request.
pub fn entry(method: &str, meta: &MetadataMap, req: &impl ToJson) -> Value {
    json!({ "method": method, "headers": headers_json(meta), "request": req.to_json() })
}

/// The headers worth recording, with secrets redacted.
pub fn headers_json(meta: &MetadataMap) -> Value {
    let mut out = BTreeMap::new();
    for kv in meta.iter() {
        let tonic::metadata::KeyAndValueRef::Ascii(key, value) = kv else {
            continue;
        };
        let key = key.as_str();
        let wanted = key.starts_with("x-modal-")
            || key == "x-idempotency-key"
            || key == "x-retry-attempt"
            || key == "authorization";
        if !wanted {
            continue;
        }
        let value = if key == "x-modal-token-secret" || key == "x-modal-auth-token" || key == "authorization" {
            "<redacted>".to_string()
        } else {
            value.to_str().unwrap_or("<non-ascii>").to_string()
        };
        out.insert(key.to_string(), Value::String(value));
    }
    json!(out)
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn len(bytes: &[u8]) -> Value {
    json!({ "len": bytes.len() })
}

fn opt<T: ToJson>(v: &Option<T>) -> Value {
    v.as_ref().map_or(Value::Null, ToJson::to_json)
}

impl ToJson for pb::AuthTokenGetRequest {
    fn to_json(&self) -> Value {
        json!({})
    }
}

impl ToJson for pb::AppGetOrCreateRequest {
    fn to_json(&self) -> Value {
        json!({
            "app_name": self.app_name,
            "environment_name": self.environment_name,
            "object_creation_type": self.object_creation_type,
        })
    }
}

impl ToJson for pb::BaseImage {
    fn to_json(&self) -> Value {
        json!({ "image_id": self.image_id, "docker_tag": self.docker_tag })
    }
}

impl ToJson for pb::Image {
    fn to_json(&self) -> Value {
        json!({
            "base_images": self.base_images.iter().map(ToJson::to_json).collect::<Vec<_>>(),
            "dockerfile_commands": self.dockerfile_commands,
            "secret_ids": self.secret_ids,
        })
    }
}

impl ToJson for pb::ImageGetOrCreateRequest {
    fn to_json(&self) -> Value {
        json!({
            "image": opt(&self.image),
            "app_id": self.app_id,
            "force_build": self.force_build,
            "builder_version": self.builder_version,
        })
    }
}

impl ToJson for pb::ImageJoinStreamingRequest {
    fn to_json(&self) -> Value {
        json!({
            "image_id": self.image_id,
            "timeout": self.timeout,
            "last_entry_id": self.last_entry_id,
        })
    }
}

impl ToJson for pb::SecretGetOrCreateRequest {
    fn to_json(&self) -> Value {
        let env: BTreeMap<_, _> = self.env_dict.iter().collect();
        json!({
            "deployment_name": self.deployment_name,
            "environment_name": self.environment_name,
            "object_creation_type": self.object_creation_type,
            "env_dict": env,
        })
    }
}

impl ToJson for pb::Resources {
    fn to_json(&self) -> Value {
        json!({ "memory_mb": self.memory_mb, "milli_cpu": self.milli_cpu })
    }
}

impl ToJson for pb::SchedulerPlacement {
    fn to_json(&self) -> Value {
        json!({ "regions": self.regions })
    }
}

impl ToJson for pb::NetworkAccess {
    fn to_json(&self) -> Value {
        json!({
            "network_access_type": self.network_access_type,
            "allowed_cidrs": self.allowed_cidrs,
        })
    }
}

impl ToJson for pb::Sandbox {
    fn to_json(&self) -> Value {
        json!({
            "entrypoint_args": self.entrypoint_args,
            "image_id": self.image_id,
            "secret_ids": self.secret_ids,
            "resources": opt(&self.resources),
            "timeout_secs": self.timeout_secs,
            "workdir": self.workdir,
            "scheduler_placement": opt(&self.scheduler_placement),
            "network_access": opt(&self.network_access),
            "cloud_provider_str": self.cloud_provider_str,
            "verbose": self.verbose,
            "name": self.name,
            "idle_timeout_secs": self.idle_timeout_secs,
        })
    }
}

impl ToJson for pb::SandboxCreateRequest {
    fn to_json(&self) -> Value {
        json!({ "app_id": self.app_id, "definition": opt(&self.definition) })
    }
}

impl ToJson for pb::SandboxGetTaskIdRequest {
    fn to_json(&self) -> Value {
        json!({
            "sandbox_id": self.sandbox_id,
            "timeout": self.timeout,
            "wait_until_ready": self.wait_until_ready,
        })
    }
}

impl ToJson for pb::SandboxWaitRequest {
    fn to_json(&self) -> Value {
        json!({ "sandbox_id": self.sandbox_id, "timeout": self.timeout })
    }
}

impl ToJson for pb::SandboxTerminateRequest {
    fn to_json(&self) -> Value {
        json!({ "sandbox_id": self.sandbox_id })
    }
}

impl ToJson for pb::ContainerExecRequest {
    fn to_json(&self) -> Value {
        json!({
            "task_id": self.task_id,
            "command": self.command,
            "runtime_debug": self.runtime_debug,
            "stdout_output": self.stdout_output,
            "stderr_output": self.stderr_output,
            "timeout_secs": self.timeout_secs,
            "workdir": self.workdir,
            "secret_ids": self.secret_ids,
        })
    }
}

impl ToJson for pb::ContainerExecGetOutputRequest {
    fn to_json(&self) -> Value {
        json!({
            "exec_id": self.exec_id,
            "timeout": self.timeout,
            "last_batch_index": self.last_batch_index,
            "file_descriptor": self.file_descriptor,
            "get_raw_bytes": self.get_raw_bytes,
        })
    }
}

impl ToJson for pb::RuntimeInputMessage {
    fn to_json(&self) -> Value {
        json!({
            "message": b64(&self.message),
            "message_index": self.message_index,
            "eof": self.eof,
        })
    }
}

impl ToJson for pb::ContainerExecPutInputRequest {
    fn to_json(&self) -> Value {
        json!({ "exec_id": self.exec_id, "input": opt(&self.input) })
    }
}

impl ToJson for pb::ContainerExecWaitRequest {
    fn to_json(&self) -> Value {
        json!({ "exec_id": self.exec_id, "timeout": self.timeout })
    }
}

impl ToJson for pb::ContainerFileOpenRequest {
    fn to_json(&self) -> Value {
        json!({ "file_descriptor": self.file_descriptor, "path": self.path, "mode": self.mode })
    }
}

impl ToJson for pb::ContainerFileWriteRequest {
    fn to_json(&self) -> Value {
        json!({ "file_descriptor": self.file_descriptor, "data": len(&self.data) })
    }
}

impl ToJson for pb::ContainerFileReadRequest {
    fn to_json(&self) -> Value {
        json!({ "file_descriptor": self.file_descriptor, "n": self.n })
    }
}

impl ToJson for pb::ContainerFileFlushRequest {
    fn to_json(&self) -> Value {
        json!({ "file_descriptor": self.file_descriptor })
    }
}

impl ToJson for pb::ContainerFileCloseRequest {
    fn to_json(&self) -> Value {
        json!({ "file_descriptor": self.file_descriptor })
    }
}

impl ToJson for pb::ContainerFilesystemExecRequest {
    fn to_json(&self) -> Value {
        // The oneof is flattened like the proto fields it consists of: one member set, the others null.
        let mut v = json!({
            "file_open_request": null,
            "file_write_request": null,
            "file_read_request": null,
            "file_flush_request": null,
            "file_close_request": null,
            "task_id": self.task_id,
        });
        let (name, body) = match &self.file_exec_request_oneof {
            Some(FileExecRequestOneof::FileOpenRequest(r)) => ("file_open_request", r.to_json()),
            Some(FileExecRequestOneof::FileWriteRequest(r)) => ("file_write_request", r.to_json()),
            Some(FileExecRequestOneof::FileReadRequest(r)) => ("file_read_request", r.to_json()),
            Some(FileExecRequestOneof::FileFlushRequest(r)) => ("file_flush_request", r.to_json()),
            Some(FileExecRequestOneof::FileCloseRequest(r)) => ("file_close_request", r.to_json()),
            None => return v,
        };
        v[name] = body;
        v
    }
}

impl ToJson for pb::ContainerFilesystemExecGetOutputRequest {
    fn to_json(&self) -> Value {
        json!({ "exec_id": self.exec_id, "timeout": self.timeout })
    }
}

impl ToJson for pb::TaskGetCommandRouterAccessRequest {
    fn to_json(&self) -> Value {
        json!({ "task_id": self.task_id })
    }
}

impl ToJson for rpb::TaskExecStartRequest {
    fn to_json(&self) -> Value {
        json!({
            "task_id": self.task_id,
            "exec_id": self.exec_id,
            "command_args": self.command_args,
            "stdout_config": self.stdout_config,
            "stderr_config": self.stderr_config,
            "timeout_secs": self.timeout_secs,
            "workdir": self.workdir,
            "secret_ids": self.secret_ids,
            "runtime_debug": self.runtime_debug,
        })
    }
}

impl ToJson for rpb::TaskExecStdinWriteRequest {
    fn to_json(&self) -> Value {
        json!({
            "task_id": self.task_id,
            "exec_id": self.exec_id,
            "offset": self.offset,
            "data": len(&self.data),
            "eof": self.eof,
        })
    }
}

impl ToJson for rpb::TaskExecStdioReadRequest {
    fn to_json(&self) -> Value {
        json!({
            "task_id": self.task_id,
            "exec_id": self.exec_id,
            "offset": self.offset,
            "file_descriptor": self.file_descriptor,
        })
    }
}

impl ToJson for rpb::TaskExecWaitRequest {
    fn to_json(&self) -> Value {
        json!({ "task_id": self.task_id, "exec_id": self.exec_id })
    }
}

impl ToJson for rpb::TaskExecPollRequest {
    fn to_json(&self) -> Value {
        json!({ "task_id": self.task_id, "exec_id": self.exec_id })
    }
}
