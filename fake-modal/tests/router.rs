//! The task command router through the raw generated clients: access via the control plane,
//! then plaintext router calls on the same port with only a bearer token.

mod common;

use agent_runtime::sandbox::modal::proto::{
    self as pb,
    router::{
        self as rpb, task_command_router_client::TaskCommandRouterClient, task_exec_poll_response,
        task_exec_wait_response::ExitStatus, TaskExecStderrConfig, TaskExecStdioFileDescriptor as Fd,
        TaskExecStdoutConfig,
    },
};
use base64::Engine;
use common::{code_of, Harness};
use fake_modal::Faults;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

fn router_on() -> Faults {
    Faults { router: true, ..Faults::default() }
}

/// A router client for one task, holding the JWT from `TaskGetCommandRouterAccess`.
struct Router {
    client: TaskCommandRouterClient<Channel>,
    task: String,
    jwt: String,
}

async fn access(h: &mut Harness, task: &str) -> Result<pb::TaskGetCommandRouterAccessResponse, Status> {
    let req = pb::TaskGetCommandRouterAccessRequest { task_id: task.into() };
    h.client.task_get_command_router_access(h.req(req)).await.map(|r| r.into_inner())
}

impl Router {
    async fn connect(h: &mut Harness, task: &str) -> Router {
        let access = access(h, task).await.expect("router access");
        assert_eq!(access.url, format!("https://{}", h.fake.addr()));
        // The URL says https, but a router on localhost is spoken to in plaintext.
        let client = TaskCommandRouterClient::connect(h.fake.url()).await.expect("connect router");
        Router { client, task: task.into(), jwt: access.jwt }
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert("authorization", format!("Bearer {}", self.jwt).parse().unwrap());
        req
    }

    fn start_req(&self, exec_id: &str, argv: &[&str]) -> rpb::TaskExecStartRequest {
        rpb::TaskExecStartRequest {
            task_id: self.task.clone(),
            exec_id: exec_id.into(),
            command_args: argv.iter().map(|s| s.to_string()).collect(),
            stdout_config: TaskExecStdoutConfig::Pipe as i32,
            stderr_config: TaskExecStderrConfig::Pipe as i32,
            ..Default::default()
        }
    }

    async fn start(&mut self, exec_id: &str, argv: &[&str]) -> Result<(), Status> {
        let req = self.req(self.start_req(exec_id, argv));
        self.client.task_exec_start(req).await.map(|_| ())
    }

    async fn stdin(&mut self, exec_id: &str, offset: u64, data: &[u8], eof: bool) -> Result<(), Status> {
        let msg = rpb::TaskExecStdinWriteRequest {
            task_id: self.task.clone(),
            exec_id: exec_id.into(),
            offset,
            data: data.to_vec(),
            eof,
        };
        let req = self.req(msg);
        self.client.task_exec_stdin_write(req).await.map(|_| ())
    }

    /// One stdio stream from `offset`: the chunks received and how the stream ended.
    async fn read_once(&mut self, exec_id: &str, fd: Fd, offset: u64) -> (Vec<Vec<u8>>, Result<(), Status>) {
        let msg = rpb::TaskExecStdioReadRequest {
            task_id: self.task.clone(),
            exec_id: exec_id.into(),
            offset,
            file_descriptor: fd as i32,
        };
        let req = self.req(msg);
        let mut stream = match self.client.task_exec_stdio_read(req).await {
            Ok(resp) => resp.into_inner(),
            Err(status) => return (vec![], Err(status)),
        };
        let mut chunks = vec![];
        loop {
            match stream.message().await {
                Ok(Some(msg)) => chunks.push(msg.data),
                Ok(None) => return (chunks, Ok(())),
                Err(status) => return (chunks, Err(status)),
            }
        }
    }

    /// Reads one fd to its end, reopening at `offset + bytes received` after UNAVAILABLE like
    /// the SDK does. Returns (bytes, number of streams opened).
    async fn read_all(&mut self, exec_id: &str, fd: Fd) -> (Vec<u8>, usize) {
        let (mut data, mut streams) = (Vec::new(), 0);
        loop {
            streams += 1;
            assert!(streams < 10, "too many reopens");
            let (chunks, end) = self.read_once(exec_id, fd, data.len() as u64).await;
            data.extend(chunks.concat());
            match end {
                Ok(()) => return (data, streams),
                Err(status) if status.code() == Code::Unavailable => continue,
                Err(status) => panic!("stdio read failed: {status:?}"),
            }
        }
    }

    async fn wait(&mut self, exec_id: &str) -> Option<ExitStatus> {
        let req = self.req(rpb::TaskExecWaitRequest { task_id: self.task.clone(), exec_id: exec_id.into() });
        self.client.task_exec_wait(req).await.unwrap().into_inner().exit_status
    }

    async fn poll(&mut self, exec_id: &str) -> Option<task_exec_poll_response::ExitStatus> {
        let req = self.req(rpb::TaskExecPollRequest { task_id: self.task.clone(), exec_id: exec_id.into() });
        self.client.task_exec_poll(req).await.unwrap().into_inner().exit_status
    }
}

fn jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn exec_through_router_pipes_stdin_stdout_stderr_and_exit_code() {
    let mut h = Harness::start(router_on()).await;
    let (_, task) = h.sandbox(&[]).await;
    let mut r = Router::connect(&mut h, &task).await;
    let claims = jwt_claims(&r.jwt);
    assert_eq!(claims["task_id"], task.as_str());
    assert!(claims["exp"].as_u64().unwrap() > 1_700_000_000);

    r.start("e-1", &["sh", "-c", "cat; echo err >&2; exit 3"]).await.unwrap();
    assert_eq!(r.poll("e-1").await, None, "still waiting for stdin");
    r.stdin("e-1", 0, b"in", false).await.unwrap();
    // A retried write (same offset) must not reach the process twice; an overlapping one only
    // adds its new part.
    r.stdin("e-1", 0, b"in", false).await.unwrap();
    r.stdin("e-1", 1, b"n\n", false).await.unwrap();
    assert_eq!(code_of(r.stdin("e-1", 9, b"gap", false).await), Code::InvalidArgument);
    r.stdin("e-1", 3, b"", true).await.unwrap();

    let (out, streams) = r.read_all("e-1", Fd::Stdout).await;
    assert_eq!((out.as_slice(), streams), (&b"in\n"[..], 1));
    let (err, _) = r.read_all("e-1", Fd::Stderr).await;
    assert_eq!(err, b"err\n");
    assert_eq!(r.wait("e-1").await, Some(ExitStatus::Code(3)));
    assert_eq!(r.poll("e-1").await, Some(task_exec_poll_response::ExitStatus::Code(3)));

    // Output stays readable from any byte offset; at or past the end the stream just ends.
    let (chunks, end) = r.read_once("e-1", Fd::Stdout, 1).await;
    assert_eq!((chunks.concat(), end.is_ok()), (b"n\n".to_vec(), true));
    let (chunks, end) = r.read_once("e-1", Fd::Stdout, 3).await;
    assert!(chunks.is_empty() && end.is_ok());
    assert_eq!(h.fake.running_processes(), 0);

    // Router calls are recorded like control-plane calls, the bearer token redacted.
    let records = h.fake.records();
    let start = records.iter().find(|r| r["method"] == "TaskExecStart").expect("start recorded");
    assert_eq!(start["headers"], serde_json::json!({ "authorization": "<redacted>" }));
    assert_eq!(start["request"]["exec_id"], "e-1");
    let methods: Vec<&str> = records.iter().filter_map(|r| r["method"].as_str()).collect();
    for m in ["TaskGetCommandRouterAccess", "TaskExecStdinWrite", "TaskExecStdioRead", "TaskExecWait", "TaskExecPoll"] {
        assert!(methods.contains(&m), "{m} not recorded: {methods:?}");
    }
}

#[tokio::test]
async fn router_requires_a_token_for_the_task() {
    let mut h = Harness::start(router_on()).await;
    let (_, task) = h.sandbox(&[]).await;
    let (_, other_task) = h.sandbox(&[]).await;
    let mut r = Router::connect(&mut h, &task).await;

    let bare = Request::new(r.start_req("e-1", &["true"]));
    assert_eq!(code_of(r.client.task_exec_start(bare).await), Code::Unauthenticated);
    let mut forged = Request::new(r.start_req("e-1", &["true"]));
    forged.metadata_mut().insert("authorization", "Bearer not-a-token".parse().unwrap());
    assert_eq!(code_of(r.client.task_exec_start(forged).await), Code::Unauthenticated);
    // A token is only good for the task it was issued for.
    let mut wrong_task = r.start_req("e-1", &["true"]);
    wrong_task.task_id = other_task;
    assert_eq!(code_of(r.client.task_exec_start(r.req(wrong_task)).await), Code::Unauthenticated);

    let req = r.req(rpb::TaskExecWaitRequest { task_id: task.clone(), exec_id: "nope".into() });
    assert_eq!(code_of(r.client.task_exec_wait(req).await), Code::NotFound);
    assert_eq!(code_of(access(&mut h, "ta-nope").await), Code::NotFound);
    // Without x-modal-* credentials the access call itself is refused.
    let req = Request::new(pb::TaskGetCommandRouterAccessRequest { task_id: task.clone() });
    assert_eq!(code_of(h.client.task_get_command_router_access(req).await), Code::Unauthenticated);
}

#[tokio::test]
async fn router_off_refuses_access() {
    let mut h = Harness::start(Faults::default()).await;
    let (_, task) = h.sandbox(&[]).await;
    let status = access(&mut h, &task).await.expect_err("no router");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "command router is not available for this task");
}

#[tokio::test]
async fn start_is_idempotent_per_exec_id() {
    let mut h = Harness::start(router_on()).await;
    let (sandbox, task) = h.sandbox(&[]).await;
    let mut r = Router::connect(&mut h, &task).await;
    let argv = ["sh", "-c", "echo x >> \"$1\"", "sh", "/workspace/f"];
    r.start("e-1", &argv).await.unwrap();
    r.start("e-1", &argv).await.unwrap();
    assert_eq!(r.wait("e-1").await, Some(ExitStatus::Code(0)));
    // A duplicate process would append a second line; give one the time to.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let root = h.fake.sandbox_root(&sandbox).unwrap();
    assert_eq!(std::fs::read_to_string(root.join("workspace/f")).unwrap(), "x\n");
}

#[tokio::test]
async fn stdio_configs_spawn_failure_and_termination() {
    let mut h = Harness::start(router_on()).await;
    let (sandbox, task) = h.sandbox(&[]).await;
    let mut r = Router::connect(&mut h, &task).await;

    // stderr merged into stdout, in the order written.
    let mut req = r.start_req("merged", &["sh", "-c", "echo a; echo b >&2; echo c"]);
    req.stderr_config = TaskExecStderrConfig::Stdout as i32;
    r.client.task_exec_start(r.req(req)).await.unwrap();
    assert_eq!(r.read_all("merged", Fd::Stdout).await.0, b"a\nb\nc\n");
    assert_eq!(r.read_all("merged", Fd::Stderr).await.0, b"");

    // Discarded output reads as empty.
    let mut req = r.start_req("null", &["sh", "-c", "echo out; echo err >&2"]);
    req.stdout_config = TaskExecStdoutConfig::Devnull as i32;
    r.client.task_exec_start(r.req(req)).await.unwrap();
    assert_eq!(r.read_all("null", Fd::Stdout).await.0, b"");
    assert_eq!(r.read_all("null", Fd::Stderr).await.0, b"err\n");

    r.start("missing", &["no-such-program-xyz"]).await.unwrap();
    assert_eq!(r.read_all("missing", Fd::Stderr).await.0, b"no-such-program-xyz: command not found\n");
    assert_eq!(r.wait("missing").await, Some(ExitStatus::Code(127)));

    // A killed process reports its signal; a finished sandbox starts nothing.
    r.start("sleeper", &["sleep", "60"]).await.unwrap();
    assert!(h.fake.terminate_sandbox(&sandbox));
    assert_eq!(r.wait("sleeper").await, Some(ExitStatus::Signal(9)));
    assert_eq!(code_of(r.start("late", &["true"]).await), Code::FailedPrecondition);
}

#[tokio::test]
async fn expired_token_fault_needs_fresh_access() {
    let faults = Faults { router_unauthenticated_once: true, ..router_on() };
    let mut h = Harness::start(faults).await;
    let (_, task) = h.sandbox(&[]).await;
    let mut r = Router::connect(&mut h, &task).await;
    let status = r.start("e-1", &["true"]).await.expect_err("first router call fails");
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "token expired"));
    // What the SDK does: fetch access again (same URL) and retry once.
    let again = access(&mut h, &task).await.unwrap();
    assert_eq!(again.url, format!("https://{}", h.fake.addr()));
    assert_ne!(again.jwt, r.jwt);
    r.jwt = again.jwt;
    r.start("e-1", &["true"]).await.unwrap();
    assert_eq!(r.wait("e-1").await, Some(ExitStatus::Code(0)));
}

#[tokio::test]
async fn cut_stdio_fault_resumes_at_byte_offset() {
    let faults = Faults { router_cut_stdio_once: true, ..router_on() };
    let mut h = Harness::start(faults).await;
    let (_, task) = h.sandbox(&[]).await;
    let mut r = Router::connect(&mut h, &task).await;
    for exec in ["e-1", "e-2"] {
        r.start(exec, &["sh", "-c", "printf abc; sleep 0.2; printf def"]).await.unwrap();
        // Each exec's first stream with data is cut after its first chunk.
        let (chunks, end) = r.read_once(exec, Fd::Stdout, 0).await;
        assert_eq!(chunks, vec![b"abc".to_vec()]);
        assert_eq!(end.expect_err("cut").code(), Code::Unavailable);
        let (chunks, end) = r.read_once(exec, Fd::Stdout, 3).await;
        assert_eq!((chunks.concat(), end.is_ok()), (b"def".to_vec(), true));
    }
    assert_eq!(r.read_all("e-1", Fd::Stdout).await, (b"abcdef".to_vec(), 1));
}

#[tokio::test]
async fn router_methods_obey_unary_faults() {
    // A start whose response is lost is retried with the same exec id: one process only.
    let faults = Faults { lost_response_once: vec!["TaskExecStart".into()], ..router_on() };
    let mut h = Harness::start(faults).await;
    let (sandbox, task) = h.sandbox(&[]).await;
    let mut r = Router::connect(&mut h, &task).await;
    let argv = ["sh", "-c", "echo x >> \"$1\"", "sh", "/workspace/f"];
    assert_eq!(code_of(r.start("e-1", &argv).await), Code::Unavailable);
    r.start("e-1", &argv).await.unwrap();
    assert_eq!(r.wait("e-1").await, Some(ExitStatus::Code(0)));
    let root = h.fake.sandbox_root(&sandbox).unwrap();
    assert_eq!(std::fs::read_to_string(root.join("workspace/f")).unwrap(), "x\n");
}
