//! Test harness: a fake plus a raw generated gRPC client carrying Modal's metadata.
#![allow(dead_code)]

use std::path::PathBuf;

use agent_runtime::sandbox::modal::proto::{self as pb, modal_client_client::ModalClientClient};
use fake_modal::{FakeConfig, FakeModal, Faults};
use tonic::transport::Channel;
use tonic::{Code, Request};

pub struct Harness {
    pub fake: FakeModal,
    pub client: ModalClientClient<Channel>,
    pub root: PathBuf,
    token: String,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.fake.terminate_all();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Adds the static credential headers (no auth token).
pub fn with_credentials<T>(msg: T, token_id: &str) -> Request<T> {
    let mut req = Request::new(msg);
    let meta = req.metadata_mut();
    meta.insert("x-modal-token-id", token_id.parse().unwrap());
    meta.insert("x-modal-token-secret", "as-test".parse().unwrap());
    meta.insert("x-modal-client-type", "8".parse().unwrap());
    req
}

impl Harness {
    pub async fn start(faults: Faults) -> Harness {
        Self::start_config(FakeConfig { faults, ..FakeConfig::default() }).await
    }

    /// Starts with `config`, but always in a fresh temp root (removed on drop).
    pub async fn start_config(mut config: FakeConfig) -> Harness {
        let root = std::env::temp_dir().join(format!("fake-modal-test-{}", uuid::Uuid::new_v4()));
        config.root = root.clone();
        let fake = FakeModal::start(config).await.expect("fake starts");
        let mut client = ModalClientClient::connect(fake.url()).await.expect("connect");
        let token = client
            .auth_token_get(with_credentials(pb::AuthTokenGetRequest {}, "ak-test"))
            .await
            .expect("auth token")
            .into_inner()
            .token;
        Harness { fake, client, root, token }
    }

    /// A request with all auth headers.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = with_credentials(msg, "ak-test");
        req.metadata_mut().insert("x-modal-auth-token", self.token.parse().unwrap());
        req
    }

    /// Same, with an idempotency key (as the SDK sends on unary calls).
    pub fn req_key<T>(&self, msg: T, key: &str) -> Request<T> {
        let mut req = self.req(msg);
        req.metadata_mut().insert("x-idempotency-key", key.parse().unwrap());
        req
    }

    /// Creates a sandbox (workdir `/workspace`), returns (sandbox id, task id).
    pub async fn sandbox(&mut self, env: &[(&str, &str)]) -> (String, String) {
        let mut secret_ids = vec![];
        if !env.is_empty() {
            let env_dict = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let req = pb::SecretGetOrCreateRequest { object_creation_type: 5, env_dict, ..Default::default() };
            let secret = self.client.secret_get_or_create(self.req(req)).await.unwrap().into_inner();
            secret_ids.push(secret.secret_id);
        }
        let definition = pb::Sandbox {
            entrypoint_args: vec!["sleep".into(), "48h".into()],
            secret_ids,
            timeout_secs: 86400,
            workdir: Some("/workspace".into()),
            idle_timeout_secs: Some(900),
            ..Default::default()
        };
        let req = pb::SandboxCreateRequest { app_id: "ap-1".into(), definition: Some(definition) };
        let sandbox_id = self.client.sandbox_create(self.req(req)).await.unwrap().into_inner().sandbox_id;
        let req = pb::SandboxGetTaskIdRequest { sandbox_id: sandbox_id.clone(), ..Default::default() };
        let task_id = self.client.sandbox_get_task_id(self.req(req)).await.unwrap().into_inner().task_id.unwrap();
        (sandbox_id, task_id)
    }

    pub async fn exec(&mut self, task_id: &str, argv: &[&str], workdir: Option<&str>) -> String {
        let req = pb::ContainerExecRequest {
            task_id: task_id.into(),
            command: argv.iter().map(|s| s.to_string()).collect(),
            workdir: workdir.map(String::from),
            ..Default::default()
        };
        self.client.container_exec(self.req(req)).await.unwrap().into_inner().exec_id
    }

    /// Reads one fd to the batch carrying `exit_code`, reopening the stream like the SDK does.
    /// Returns (bytes, exit code, number of batches, number of streams opened).
    pub async fn output(&mut self, exec_id: &str, fd: pb::FileDescriptor) -> (Vec<u8>, i32, usize, usize) {
        let (mut data, mut last, mut batches, mut streams) = (Vec::new(), 0, 0, 0);
        loop {
            streams += 1;
            assert!(streams < 50, "too many reconnects");
            let req = pb::ContainerExecGetOutputRequest {
                exec_id: exec_id.into(),
                timeout: 5.0,
                last_batch_index: last,
                file_descriptor: fd as i32,
                get_raw_bytes: true,
            };
            let mut stream = self.client.container_exec_get_output(self.req(req)).await.unwrap().into_inner();
            while let Some(batch) = stream.message().await.unwrap() {
                last = batch.batch_index;
                for item in batch.items {
                    batches += 1;
                    data.extend(item.message_bytes);
                }
                if let Some(code) = batch.exit_code {
                    return (data, code, batches, streams);
                }
            }
        }
    }

    pub async fn wait_exec(&mut self, exec_id: &str, timeout: f32) -> pb::ContainerExecWaitResponse {
        let req = pb::ContainerExecWaitRequest { exec_id: exec_id.into(), timeout };
        self.client.container_exec_wait(self.req(req)).await.unwrap().into_inner()
    }

    /// One file operation: returns (file descriptor from the unary answer, the output batch).
    pub async fn fs(
        &mut self,
        task_id: &str,
        op: pb::container_filesystem_exec_request::FileExecRequestOneof,
    ) -> (Option<String>, pb::FilesystemRuntimeOutputBatch) {
        let req = pb::ContainerFilesystemExecRequest { task_id: task_id.into(), file_exec_request_oneof: Some(op) };
        let resp = self.client.container_filesystem_exec(self.req(req)).await.unwrap().into_inner();
        (resp.file_descriptor, self.fs_output(&resp.exec_id).await)
    }

    pub async fn fs_output(&mut self, exec_id: &str) -> pb::FilesystemRuntimeOutputBatch {
        let req = pb::ContainerFilesystemExecGetOutputRequest { exec_id: exec_id.into(), timeout: 5.0 };
        let mut stream = self.client.container_filesystem_exec_get_output(self.req(req)).await.unwrap().into_inner();
        let batch = stream.message().await.unwrap().expect("one batch");
        // Success batches carry eof; error batches must not (see the fake's fs module).
        assert_eq!(batch.eof, batch.error.is_none());
        assert!(stream.message().await.unwrap().is_none(), "exactly one batch");
        batch
    }
}

pub fn code_of<T: std::fmt::Debug>(res: Result<T, tonic::Status>) -> Code {
    res.expect_err("call should fail").code()
}
