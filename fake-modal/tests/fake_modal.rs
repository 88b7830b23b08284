//! End-to-end tests of the fake through the generated tonic client.

mod common;

use std::time::Duration;

use agent_runtime::sandbox::modal::proto::{
    self as pb, container_filesystem_exec_request::FileExecRequestOneof as Op, generic_result::GenericStatus,
};
use common::{code_of, with_credentials, Harness};
use fake_modal::{FakeConfig, Faults};
use tonic::Code;

fn put(exec_id: &str, index: u64, message: &[u8], eof: bool) -> pb::ContainerExecPutInputRequest {
    pb::ContainerExecPutInputRequest {
        exec_id: exec_id.into(),
        input: Some(pb::RuntimeInputMessage { message: message.to_vec(), message_index: index, eof }),
    }
}

#[tokio::test]
async fn exec_pipes_stdin_stdout_stderr_and_exit_code() {
    let mut h = Harness::start(Faults::default()).await;
    let (_, task) = h.sandbox(&[]).await;
    let exec = h.exec(&task, &["sh", "-c", "cat; echo err >&2; exit 3"], None).await;

    h.client.container_exec_put_input(h.req(put(&exec, 1, b"hello\n", false))).await.unwrap();
    // A retried write (same index) must not reach the process twice.
    h.client.container_exec_put_input(h.req(put(&exec, 1, b"hello\n", false))).await.unwrap();
    h.client.container_exec_put_input(h.req(put(&exec, 2, b"", true))).await.unwrap();

    let (out, code, _, _) = h.output(&exec, pb::FileDescriptor::Stdout).await;
    assert_eq!(String::from_utf8(out).unwrap(), "hello\n");
    assert_eq!(code, 3);
    let (err, _, _, _) = h.output(&exec, pb::FileDescriptor::Stderr).await;
    assert_eq!(String::from_utf8(err).unwrap(), "err\n");
    let wait = h.wait_exec(&exec, 10.0).await;
    assert_eq!((wait.completed, wait.exit_code), (true, Some(3)));

    // Output stays re-readable from any index: from the last batch only the exit batch remains.
    let (again, code, batches, _) = h.output(&exec, pb::FileDescriptor::Stdout).await;
    assert_eq!((again.as_slice(), code, batches), (&b"hello\n"[..], 3, 1));
    assert_eq!(h.fake.running_processes(), 0);
}

#[tokio::test]
async fn exec_wait_long_polls_and_unknown_program_reports_127() {
    let mut h = Harness::start(Faults::default()).await;
    let (_, task) = h.sandbox(&[]).await;
    let exec = h.exec(&task, &["sleep", "0.3"], None).await;
    let first = h.wait_exec(&exec, 0.0).await;
    assert_eq!((first.completed, first.exit_code), (false, None));
    let done = h.wait_exec(&exec, 10.0).await;
    assert_eq!((done.completed, done.exit_code), (true, Some(0)));

    let exec = h.exec(&task, &["no-such-program-xyz", "arg"], None).await;
    let (err, code, _, _) = h.output(&exec, pb::FileDescriptor::Stderr).await;
    assert_eq!(String::from_utf8(err).unwrap(), "no-such-program-xyz: command not found\n");
    assert_eq!(code, 127);
    assert_eq!(h.wait_exec(&exec, 1.0).await.exit_code, Some(127));

    let req =
        pb::ContainerExecRequest { task_id: "ta-nope".into(), command: vec!["true".into()], ..Default::default() };
    assert_eq!(code_of(h.client.container_exec(h.req(req)).await), Code::NotFound);
}

#[tokio::test]
async fn file_api_round_trip_and_errors() {
    let mut h = Harness::start(Faults::default()).await;
    let (sandbox, task) = h.sandbox(&[]).await;
    let root = h.fake.sandbox_root(&sandbox).unwrap();
    let open = |path: &str, mode: &str| {
        Op::FileOpenRequest(pb::ContainerFileOpenRequest {
            file_descriptor: None,
            path: path.into(),
            mode: mode.into(),
        })
    };
    let close = |fd: &str| Op::FileCloseRequest(pb::ContainerFileCloseRequest { file_descriptor: fd.into() });

    let (fd, batch) = h.fs(&task, open("/workspace/notes.txt", "w")).await;
    assert!(batch.error.is_none());
    let fd = fd.expect("open returns a descriptor");
    let write = Op::FileWriteRequest(pb::ContainerFileWriteRequest {
        file_descriptor: fd.clone(),
        data: b"h\xc3\xa9llo".to_vec(),
    });
    assert!(h.fs(&task, write).await.1.error.is_none());
    assert!(h.fs(&task, close(&fd)).await.1.error.is_none());
    assert_eq!(std::fs::read(root.join("workspace/notes.txt")).unwrap(), b"h\xc3\xa9llo");

    let (fd, _) = h.fs(&task, open("/workspace/notes.txt", "r")).await;
    let fd = fd.unwrap();
    let read = Op::FileReadRequest(pb::ContainerFileReadRequest { file_descriptor: fd.clone(), n: None });
    let (_, batch) = h.fs(&task, read).await;
    assert_eq!(batch.output.concat(), b"h\xc3\xa9llo");
    h.fs(&task, close(&fd)).await;

    // Empty file: zero chunks.
    std::fs::write(root.join("workspace/empty"), b"").unwrap();
    let (fd, _) = h.fs(&task, open("/workspace/empty", "r")).await;
    let read = Op::FileReadRequest(pb::ContainerFileReadRequest { file_descriptor: fd.unwrap(), n: None });
    assert!(h.fs(&task, read).await.1.output.is_empty());

    // Missing file: errno 2, and the result can be fetched again (the SDK re-asks).
    let req = pb::ContainerFilesystemExecRequest {
        task_id: task.clone(),
        file_exec_request_oneof: Some(open("/workspace/missing", "r")),
    };
    let resp = h.client.container_filesystem_exec(h.req(req)).await.unwrap().into_inner();
    assert_eq!(resp.file_descriptor, None);
    for _ in 0..3 {
        let err = h.fs_output(&resp.exec_id).await.error.expect("error batch");
        assert_eq!(err.error_code, 2);
        assert!(err.error_message.contains("/workspace/missing"), "{}", err.error_message);
    }
    let (_, batch) = h.fs(&task, open("/workspace", "r")).await;
    assert_eq!(batch.error.unwrap().error_code, 21);
    let (_, batch) = h.fs(&task, close("fd-999")).await;
    assert_eq!(batch.error.unwrap().error_code, 9);
}

#[tokio::test]
async fn terminate_kills_processes_and_reports_terminated() {
    let mut h = Harness::start(Faults::default()).await;
    let (sandbox, task) = h.sandbox(&[]).await;
    // The background child is in the same process group, so it must die too.
    let exec = h.exec(&task, &["sh", "-c", "sleep 100 & sleep 100"], None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.fake.running_processes(), 1);

    let poll = pb::SandboxWaitRequest { sandbox_id: sandbox.clone(), timeout: 0.0 };
    assert_eq!(h.client.sandbox_wait(h.req(poll.clone())).await.unwrap().into_inner().result, None);

    let term = pb::SandboxTerminateRequest { sandbox_id: sandbox.clone() };
    let first = h.client.sandbox_terminate(h.req(term.clone())).await.unwrap().into_inner();
    assert_eq!(first.existing_result, None);
    let again = h.client.sandbox_terminate(h.req(term)).await.unwrap().into_inner();
    assert_eq!(again.existing_result.unwrap().status, GenericStatus::Terminated as i32);

    let wait = pb::SandboxWaitRequest { sandbox_id: sandbox.clone(), timeout: 10.0 };
    let result = h.client.sandbox_wait(h.req(wait)).await.unwrap().into_inner().result.unwrap();
    assert_eq!(result.status, GenericStatus::Terminated as i32);

    // Output ends (pipes closed by the kill of the whole group) with the SIGKILL exit code.
    let (_, code, _, _) = h.output(&exec, pb::FileDescriptor::Stdout).await;
    assert_eq!(code, 137);
    assert_eq!(h.fake.running_processes(), 0);

    let req = pb::SandboxGetTaskIdRequest { sandbox_id: sandbox.clone(), ..Default::default() };
    let task_resp = h.client.sandbox_get_task_id(h.req(req)).await.unwrap().into_inner();
    assert_eq!((task_resp.task_id, task_resp.task_result.map(|r| r.status)), (None, Some(3)));
    let req = pb::ContainerExecRequest { task_id: task, command: vec!["true".into()], ..Default::default() };
    assert_eq!(code_of(h.client.container_exec(h.req(req)).await), Code::FailedPrecondition);
}

#[tokio::test]
async fn external_terminate_wakes_waiters() {
    let mut h = Harness::start(Faults::default()).await;
    let (sandbox, _) = h.sandbox(&[]).await;
    let fake = h.fake.clone();
    let id = sandbox.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(fake.terminate_sandbox(&id));
    });
    let wait = pb::SandboxWaitRequest { sandbox_id: sandbox, timeout: 10.0 };
    let started = std::time::Instant::now();
    let result = h.client.sandbox_wait(h.req(wait)).await.unwrap().into_inner().result.unwrap();
    assert_eq!(result.status, GenericStatus::Terminated as i32);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!h.fake.terminate_sandbox("sb-unknown"));
}

#[tokio::test]
async fn paths_env_and_workdir_are_translated() {
    let mut h = Harness::start(Faults::default()).await;
    let (sandbox, task) = h.sandbox(&[("CONFIG_DIR", "/app/config"), ("PLAIN", "/usr/bin")]).await;
    let root = h.fake.sandbox_root(&sandbox).unwrap();
    let r = root.to_string_lossy().to_string();

    let exec = h.exec(&task, &["sh", "-c", "pwd"], Some("/workspace")).await;
    assert_eq!(
        String::from_utf8(h.output(&exec, pb::FileDescriptor::Stdout).await.0).unwrap(),
        format!("{r}/workspace\n")
    );
    // No exec workdir: the sandbox definition's (/workspace).
    let exec = h.exec(&task, &["pwd"], None).await;
    assert_eq!(
        String::from_utf8(h.output(&exec, pb::FileDescriptor::Stdout).await.0).unwrap(),
        format!("{r}/workspace\n")
    );
    let exec = h.exec(&task, &["pwd"], Some("/")).await;
    assert_eq!(String::from_utf8(h.output(&exec, pb::FileDescriptor::Stdout).await.0).unwrap(), format!("{r}\n"));

    let script = r#"printf '%s|%s|%s|%s|%s' "$HOME" "$TMPDIR" "$CONFIG_DIR" "$PLAIN" "$LANG""#;
    let exec = h.exec(&task, &["sh", "-c", script], None).await;
    let out = String::from_utf8(h.output(&exec, pb::FileDescriptor::Stdout).await.0).unwrap();
    assert_eq!(out, format!("{r}/root|{r}/tmp|{r}/app/config|/usr/bin|C.UTF-8"));

    // argv: sandbox paths rewritten, host paths (/bin/sh) kept.
    std::fs::write(root.join("app/hello.txt"), "from app\n").unwrap();
    let exec = h.exec(&task, &["/bin/sh", "-c", "cat \"$0\"", "/app/hello.txt"], None).await;
    assert_eq!(h.output(&exec, pb::FileDescriptor::Stdout).await.0, b"from app\n");
    let secret = h.fake.secret_env("st-1").unwrap();
    assert_eq!(secret.get("CONFIG_DIR").map(String::as_str), Some("/app/config"));
    assert_eq!(h.fake.sandbox_ids(), vec![sandbox.clone()]);
    assert!(sandbox.len() == 25 && sandbox[3..].chars().all(|c| c.is_ascii_alphanumeric()));
}

#[tokio::test]
async fn credentials_are_checked() {
    let mut h = Harness::start(Faults::default()).await;
    let bad = h.client.auth_token_get(with_credentials(pb::AuthTokenGetRequest {}, "ak-bad-1")).await;
    assert_eq!(code_of(bad), Code::Unauthenticated);
    let no_creds = h.client.auth_token_get(tonic::Request::new(pb::AuthTokenGetRequest {})).await;
    assert_eq!(code_of(no_creds), Code::Unauthenticated);
    let app = pb::AppGetOrCreateRequest { app_name: "a".into(), object_creation_type: 1, ..Default::default() };
    let no_token = h.client.app_get_or_create(with_credentials(app.clone(), "ak-test")).await;
    assert_eq!(code_of(no_token), Code::Unauthenticated);

    let id = h.client.app_get_or_create(h.req(app.clone())).await.unwrap().into_inner().app_id;
    assert_eq!(id, h.client.app_get_or_create(h.req(app)).await.unwrap().into_inner().app_id);
    let lookup = pb::AppGetOrCreateRequest { app_name: "other".into(), ..Default::default() };
    assert_eq!(code_of(h.client.app_get_or_create(h.req(lookup)).await), Code::NotFound);
}

#[tokio::test]
async fn retries_with_idempotency_key_do_not_repeat_work() {
    let faults = Faults {
        lost_response_once: vec!["SandboxCreate".into(), "ContainerExec".into()],
        unavailable_once: vec!["SecretGetOrCreate".into()],
        ..Faults::default()
    };
    let mut h = Harness::start(faults).await;
    let secret = pb::SecretGetOrCreateRequest { object_creation_type: 5, ..Default::default() };
    let unavailable = h.client.secret_get_or_create(h.req_key(secret.clone(), "k-secret")).await;
    assert_eq!(code_of(unavailable), Code::Unavailable);
    assert_eq!(
        h.client.secret_get_or_create(h.req_key(secret, "k-secret")).await.unwrap().into_inner().secret_id,
        "st-1"
    );

    let create = pb::SandboxCreateRequest { app_id: "ap-1".into(), definition: Some(pb::Sandbox::default()) };
    let lost = h.client.sandbox_create(h.req_key(create.clone(), "k-create")).await;
    assert_eq!(code_of(lost), Code::Unavailable);
    let sandbox = h.client.sandbox_create(h.req_key(create.clone(), "k-create")).await.unwrap().into_inner().sandbox_id;
    assert_eq!(h.fake.sandbox_ids(), vec![sandbox.clone()]);
    let again = h.client.sandbox_create(h.req_key(create.clone(), "k-create")).await.unwrap().into_inner().sandbox_id;
    assert_eq!(again, sandbox);
    let other = h.client.sandbox_create(h.req_key(create, "k-other")).await.unwrap().into_inner().sandbox_id;
    assert_ne!(other, sandbox);

    let req = pb::SandboxGetTaskIdRequest { sandbox_id: sandbox.clone(), ..Default::default() };
    let task = h.client.sandbox_get_task_id(h.req(req)).await.unwrap().into_inner().task_id.unwrap();
    // The lost ContainerExec already started the process; the retry must not start another.
    let exec = pb::ContainerExecRequest {
        task_id: task,
        command: vec!["sh".into(), "-c".into(), "echo started >> \"$TMPDIR/log\"".into()],
        ..Default::default()
    };
    assert_eq!(code_of(h.client.container_exec(h.req_key(exec.clone(), "k-exec")).await), Code::Unavailable);
    let exec_id = h.client.container_exec(h.req_key(exec, "k-exec")).await.unwrap().into_inner().exec_id;
    assert_eq!(h.wait_exec(&exec_id, 10.0).await.exit_code, Some(0));
    let root = h.fake.sandbox_root(&sandbox).unwrap();
    assert_eq!(std::fs::read_to_string(root.join("tmp/log")).unwrap(), "started\n");

    let records = h.fake.records();
    let creates: Vec<_> = records.iter().filter(|r| r["method"] == "SandboxCreate").collect();
    assert_eq!(creates.len(), 4);
    assert_eq!(creates[0]["headers"]["x-idempotency-key"], "k-create");
    assert_eq!(creates[0]["headers"]["x-modal-token-secret"], "<redacted>");
    assert_eq!(creates[0]["headers"]["x-modal-auth-token"], "<redacted>");
    assert_eq!(creates[0]["request"]["definition"]["workdir"], serde_json::Value::Null);
    assert_eq!(creates[0]["request"]["definition"]["timeout_secs"], 0);
}

#[tokio::test]
async fn output_resumes_after_cut_and_split_utf8() {
    let faults = Faults { cut_output_once: true, split_utf8: true, ..Faults::default() };
    let mut h = Harness::start(faults).await;
    let (_, task) = h.sandbox(&[]).await;
    let exec = h.exec(&task, &["printf", "h\u{e9}llo \u{2713}"], None).await;
    let (out, code, batches, streams) = h.output(&exec, pb::FileDescriptor::Stdout).await;
    assert_eq!(String::from_utf8(out).unwrap(), "h\u{e9}llo \u{2713}");
    assert_eq!(code, 0);
    assert!(batches >= 10, "non-ASCII output is split into 1-byte batches ({batches})");
    assert!(streams >= 2, "the first stream was cut");
}

#[tokio::test]
async fn slow_image_build_streams_logs_and_resumes() {
    let faults = Faults { image_build_ms: 200, image_join_cut_once: true, ..Faults::default() };
    let mut h = Harness::start(faults).await;
    let image = pb::Image {
        dockerfile_commands: vec!["FROM base".into(), "RUN echo hi".into(), "WORKDIR /app".into()],
        ..Default::default()
    };
    let req = pb::ImageGetOrCreateRequest {
        image: Some(image),
        app_id: "ap-1".into(),
        builder_version: "2024.10".into(),
        ..Default::default()
    };
    let first = h.client.image_get_or_create(h.req(req.clone())).await.unwrap().into_inner();
    assert!(first.image_id.starts_with("im-") && first.result.is_none());

    let (mut last, mut logs, mut result, mut streams) = (String::new(), String::new(), None, 0);
    while result.is_none() {
        streams += 1;
        let join = pb::ImageJoinStreamingRequest {
            image_id: first.image_id.clone(),
            timeout: 5.0,
            last_entry_id: last.clone(),
        };
        let mut stream = h.client.image_join_streaming(h.req(join)).await.unwrap().into_inner();
        while let Some(msg) = stream.message().await.unwrap() {
            if !msg.entry_id.is_empty() {
                last = msg.entry_id.clone();
            }
            logs.extend(msg.task_logs.iter().map(|l| l.data.clone()));
            if msg.result.is_some() {
                assert!(msg.eof);
                result = msg.result;
            }
        }
    }
    assert_eq!(streams, 2, "first stream cut after one entry");
    assert_eq!(logs, "Step 1/3 : FROM base\nStep 2/3 : RUN echo hi\nStep 3/3 : WORKDIR /app\n");
    assert_eq!(result.unwrap().status, GenericStatus::Success as i32);

    let cached = h.client.image_get_or_create(h.req(req)).await.unwrap().into_inner();
    assert_eq!(cached.image_id, first.image_id);
    assert_eq!(cached.result.unwrap().status, GenericStatus::Success as i32);
}

#[tokio::test]
async fn failing_image_build_and_task_id_polling() {
    let faults = Faults { image_build_fail: Some("boom: exit 1".into()), task_id_empty_times: 2, ..Faults::default() };
    let mut h = Harness::start(faults).await;
    let image = pb::Image { dockerfile_commands: vec!["FROM x".into()], ..Default::default() };
    let req = pb::ImageGetOrCreateRequest { image: Some(image), ..Default::default() };
    let id = h.client.image_get_or_create(h.req(req)).await.unwrap().into_inner().image_id;
    let join = pb::ImageJoinStreamingRequest { image_id: id, timeout: 5.0, last_entry_id: String::new() };
    let mut stream = h.client.image_join_streaming(h.req(join)).await.unwrap().into_inner();
    let (mut logs, mut result) = (String::new(), None);
    while let Some(msg) = stream.message().await.unwrap() {
        logs.extend(msg.task_logs.iter().map(|l| l.data.clone()));
        result = result.or(msg.result);
    }
    assert!(logs.contains("boom: exit 1"));
    let result = result.unwrap();
    assert_eq!((result.status, result.exception.as_str()), (GenericStatus::Failure as i32, "boom: exit 1"));

    let create = pb::SandboxCreateRequest { app_id: "ap-1".into(), definition: Some(pb::Sandbox::default()) };
    let sandbox_id = h.client.sandbox_create(h.req(create)).await.unwrap().into_inner().sandbox_id;
    let req = pb::SandboxGetTaskIdRequest { sandbox_id, ..Default::default() };
    let mut answers = vec![];
    for _ in 0..3 {
        answers.push(h.client.sandbox_get_task_id(h.req(req.clone())).await.unwrap().into_inner().task_id);
    }
    assert_eq!(answers, vec![None, None, Some("ta-1".to_string())]);
}

#[tokio::test]
async fn node_modules_link_and_record_file() {
    let dir = std::env::temp_dir().join(format!("fake-modal-test-aux-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("node_modules/pkg")).unwrap();
    let record = dir.join("record.jsonl");
    let config = FakeConfig {
        node_modules: Some(dir.join("node_modules")),
        record: Some(record.clone()),
        ..FakeConfig::default()
    };
    let mut h = Harness::start_config(config).await;
    let (_, task) = h.sandbox(&[]).await;
    let exec = h.exec(&task, &["ls", "/app/node_modules"], None).await;
    assert_eq!(h.output(&exec, pb::FileDescriptor::Stdout).await.0, b"pkg\n");

    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&record).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, h.fake.records());
    let methods: Vec<_> = lines.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(&methods[..4], ["AuthTokenGet", "SandboxCreate", "SandboxGetTaskId", "ContainerExec"]);
    assert_eq!(lines[3]["request"]["command"], serde_json::json!(["ls", "/app/node_modules"]));
    assert_eq!(lines[3]["request"]["workdir"], serde_json::Value::Null);
    assert_eq!(lines[4]["request"]["get_raw_bytes"], true);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn binary_prints_url_and_obeys_stdin_commands() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-modal"))
        .args(["--faults", r#"{"split_utf8":true}"#])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port = ready["port"].as_u64().unwrap();
    assert!(line.starts_with(r#"{"url":"http://127.0.0.1:"#), "{line}");
    assert_eq!(ready["url"], format!("http://127.0.0.1:{port}"));

    for (command, answer) in [("terminate-all", r#"{"ok":true}"#), ("terminate sb-unknown", r#""ok":false"#)] {
        writeln!(stdin, "{command}").unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains(answer), "{command}: {line}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
