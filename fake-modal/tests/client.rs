//! The Rust Modal provider (agent_runtime::sandbox::modal) against the fake control plane,
//! including the faults a real network and a real Modal produce.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_runtime::sandbox::modal::{
    BuildLimits, Credentials, ModalProvider, ModalSettings, ReopenPolicy, SandboxSettings,
};
use agent_runtime::sandbox::{lines, ExecOptions, FileEventKind, Sandbox, SandboxProvider, SandboxSpec};
use fake_modal::{FakeConfig, FakeModal, Faults};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    fake: FakeModal,
    provider: ModalProvider,
    root: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.fake.terminate_all();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn setup(faults: Faults) -> Setup {
    setup_with(faults, SandboxSettings::default(), "ak-test").await
}

async fn setup_with(faults: Faults, sandbox: SandboxSettings, token_id: &str) -> Setup {
    let root = std::env::temp_dir().join(format!("fake-modal-client-{}", uuid::Uuid::new_v4().simple()));
    let fake = FakeModal::start(FakeConfig { root: root.clone(), faults, ..FakeConfig::default() })
        .await
        .expect("fake starts");
    let creds = Credentials { token_id: token_id.into(), token_secret: "as-secret-value".into() };
    let settings = ModalSettings { server_url: fake.url(), app_name: "client-test".into(), sandbox };
    let provider = ModalProvider::new(creds, settings).expect("provider");
    Setup { fake, provider, root }
}

fn faults(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut x = Faults::default();
    f(&mut x);
    x
}

async fn run(sb: &dyn Sandbox, argv: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let mut p = sb.exec(&argv, ExecOptions::default()).await.expect("exec");
    let mut w = p.stdin.take().unwrap();
    w.write_all(stdin).await.unwrap();
    w.shutdown().await.unwrap();
    drop(w);
    let (mut out, mut err) = (Vec::new(), String::new());
    let (a, b) = tokio::join!(p.stdout.read_to_end(&mut out), p.stderr.read_to_string(&mut err));
    a.unwrap();
    b.unwrap();
    (p.exit.await, out, err)
}

fn methods(fake: &FakeModal, name: &str) -> usize {
    fake.records().iter().filter(|r| r["method"] == name).count()
}

#[tokio::test]
async fn sandbox_operations_round_trip() {
    let s = setup(Faults::default()).await;
    let mut env = BTreeMap::new();
    env.insert("GREETING".to_string(), "hi".to_string());
    let sb = s.provider.create(SandboxSpec { env }).await.expect("sandbox");
    assert!(sb.id().starts_with("sb-"));
    assert!(!sb.uses_host_toolchain());

    let (code, out, err) =
        run(&*sb, &["sh", "-c", "cat; echo \"$GREETING $IS_SANDBOX\"; echo oops >&2; exit 4"], b"input ").await;
    assert_eq!((code, String::from_utf8(out).unwrap(), err), (4, "input hi 1\n".to_string(), "oops\n".to_string()));

    sb.write_file(Path::new("/workspace/a/b.txt"), b"hello").await.unwrap();
    assert_eq!(sb.read_file(Path::new("a/b.txt")).await.unwrap().as_deref(), Some(&b"hello"[..]));
    assert_eq!(sb.read_file(Path::new("/workspace/nope.txt")).await.unwrap(), None);
    assert!(sb.read_file(Path::new("/etc/passwd")).await.is_err(), "outside the sandbox's directories");
    assert!(sb.read_file(Path::new("/workspace/../etc/passwd")).await.is_err());

    let files = vec![
        ("/workspace/x/1.txt".into(), b"one".to_vec()),
        ("/root/.claude/settings.json".into(), b"{}".to_vec()),
        ("/workspace/2.txt".into(), "zwei ✓".as_bytes().to_vec()),
    ];
    sb.write_files(&files).await.expect("bulk write");
    assert_eq!(sb.list_files(Path::new("/workspace")).await.unwrap(), vec!["2.txt", "a/b.txt", "x/1.txt"]);
    assert_eq!(sb.list_files(Path::new("/workspace/none")).await.unwrap(), Vec::<String>::new());
    assert_eq!(sb.read_file(Path::new("/root/.claude/settings.json")).await.unwrap().as_deref(), Some(&b"{}"[..]));

    // Per-exec environment travels as an ephemeral secret.
    let mut opts = ExecOptions { cwd: Some("/workspace/x".into()), env: BTreeMap::new() };
    opts.env.insert("ONLY_HERE".into(), "yes".into());
    let argv = ["sh", "-c", "echo $ONLY_HERE; ls"].map(String::from).to_vec();
    let mut p = sb.exec(&argv, opts).await.unwrap();
    drop(p.stdin.take());
    let mut out = String::new();
    p.stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "yes\n1.txt\n");

    // Metadata and removal, never through links (the workspace file API uses them).
    let meta = sb.file_meta(Path::new("/workspace/a/b.txt")).await.unwrap().expect("meta of a file");
    assert_eq!(meta.size, 5);
    assert!(meta.modified_ms.unwrap() > 0);
    assert_eq!(sb.file_meta(Path::new("/workspace/a")).await.unwrap(), None, "a directory");
    let listed = sb.list_files_meta(Path::new("/workspace")).await.unwrap();
    let names: Vec<_> = listed.iter().map(|(p, m)| (p.as_str(), m.size)).collect();
    assert_eq!(names, [("2.txt", 8), ("a/b.txt", 5), ("x/1.txt", 3)]);
    assert!(listed.iter().all(|(_, m)| m.modified_ms.unwrap() > 0));
    assert_eq!(sb.file_meta(Path::new("/workspace/none.txt")).await.unwrap(), None);
    // Separate arguments: the fake translates sandbox paths only where an argument starts with one.
    assert_eq!(run(&*sb, &["ln", "-s", "/workspace/a", "/workspace/link"], b"").await.0, 0);
    assert_eq!(run(&*sb, &["ln", "-s", "/workspace/2.txt", "/workspace/l2"], b"").await.0, 0);
    assert_eq!(sb.file_meta(Path::new("/workspace/link/b.txt")).await.unwrap(), None, "through a link");
    assert_eq!(sb.file_meta(Path::new("/workspace/l2")).await.unwrap(), None, "a link");
    assert!(sb.remove_file(Path::new("/workspace/link/b.txt")).await.is_err(), "through a link");
    assert!(sb.remove_file(Path::new("/workspace/l2")).await.unwrap(), "the link itself");
    assert_eq!(sb.read_file(Path::new("/workspace/2.txt")).await.unwrap().as_deref(), Some("zwei ✓".as_bytes()));
    assert!(sb.remove_file(Path::new("/workspace/x/1.txt")).await.unwrap());
    assert!(!sb.remove_file(Path::new("/workspace/x/1.txt")).await.unwrap());
    assert!(sb.remove_file(Path::new("/workspace/a")).await.is_err(), "a directory");

    assert_eq!(sb.poll().await, None);
    sb.terminate().await;
    assert_eq!(sb.poll().await, Some(137));
    assert!(sb.exec(&argv, ExecOptions::default()).await.is_err(), "no exec after terminate");
}

#[tokio::test]
async fn watch_reports_changes_under_the_workspace() {
    let s = setup(Faults::default()).await;
    let sb = s.provider.create(SandboxSpec::default()).await.unwrap();
    sb.write_file(Path::new("/workspace/before.txt"), b"0").await.unwrap();
    let mut events = sb.watch(Path::new("/workspace")).await.unwrap();
    // The watcher takes its first snapshot when it starts; wait until it has by creating files
    // until one is reported.
    let root = s.fake.sandbox_root(sb.id()).unwrap();
    let mut seen = Vec::new();
    for i in 0..100 {
        std::fs::write(root.join(format!("workspace/new-{i}.txt")), "x").unwrap();
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
            seen.push(e);
            break;
        }
    }
    assert_eq!(seen.first().map(|e| e.kind), Some(FileEventKind::Created));
    std::fs::remove_file(root.join("workspace/before.txt")).unwrap();
    let deleted = loop {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("event in time").unwrap();
        if e.kind == FileEventKind::Deleted {
            break e;
        }
    };
    assert_eq!(deleted.path, "before.txt");
}

#[tokio::test]
async fn transient_failures_are_retried_without_doing_things_twice() {
    let f = faults(|f| {
        f.unavailable_once = vec!["AppGetOrCreate".into(), "SandboxCreate".into()];
        f.lost_response_once = vec!["ContainerExec".into(), "SecretGetOrCreate".into()];
    });
    let s = setup(f).await;
    let sb = s.provider.create(SandboxSpec::default()).await.expect("created despite failures");
    assert_eq!(s.fake.sandbox_ids().len(), 1, "one sandbox");
    let (code, _, _) = run(&*sb, &["sh", "-c", "echo x >> \"$1\"", "sh", "/workspace/count"], b"").await;
    assert_eq!(code, 0);
    let count = sb.read_file(Path::new("/workspace/count")).await.unwrap().unwrap();
    assert_eq!(count, b"x\n", "the command ran once although its response was lost");
    let keys: Vec<_> = s
        .fake
        .records()
        .iter()
        .filter(|r| r["method"] == "ContainerExec" && r["request"]["command"][0] == "sh")
        .map(|r| r["headers"]["x-idempotency-key"].clone())
        .collect();
    assert_eq!(keys.len(), 2, "one retry");
    assert_eq!(keys[0], keys[1], "with the same idempotency key");
}

#[tokio::test]
async fn output_survives_cut_streams_and_split_characters() {
    let s = setup(faults(|f| {
        f.cut_output_once = true;
        f.split_utf8 = true;
    }))
    .await;
    let sb = s.provider.create(SandboxSpec::default()).await.unwrap();
    let text = "héllo wörld ✓ 日本語\n".repeat(50);
    let argv = ["sh", "-c", "cat"].map(String::from).to_vec();
    let mut p = sb.exec(&argv, ExecOptions::default()).await.unwrap();
    let mut w = p.stdin.take().unwrap();
    w.write_all(text.as_bytes()).await.unwrap();
    w.shutdown().await.unwrap();
    drop(w);
    let mut rx = lines(p.stdout);
    let mut got = String::new();
    while let Some(l) = rx.recv().await {
        got.push_str(&l);
        got.push('\n');
    }
    assert_eq!(got, text);
    assert!(methods(&s.fake, "ContainerExecGetOutput") > 2, "a stream was reopened");
    let (code, out, _) = run(&*sb, &["seq", "1", "20000"], b"").await;
    assert_eq!(code, 0);
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[tokio::test]
async fn slow_image_builds_and_late_task_ids_are_waited_for() {
    let s = setup(faults(|f| {
        f.image_build_ms = 300;
        f.image_join_cut_once = true;
        f.task_id_empty_times = 3;
    }))
    .await;
    let sb = s.provider.create(SandboxSpec::default()).await.expect("ready in the end");
    assert!(methods(&s.fake, "ImageJoinStreaming") >= 2, "the join stream was reopened");
    assert!(methods(&s.fake, "SandboxGetTaskId") >= 4);
    let (code, out, _) = run(&*sb, &["echo", "ok"], b"").await;
    assert_eq!((code, out), (0, b"ok\n".to_vec()));
    // The image is built once per provider.
    let images = methods(&s.fake, "ImageGetOrCreate");
    s.provider.create(SandboxSpec::default()).await.unwrap();
    assert_eq!(methods(&s.fake, "ImageGetOrCreate"), images);
}

#[tokio::test]
async fn errors_say_what_to_fix_and_never_show_the_secret() {
    let s = setup_with(Faults::default(), SandboxSettings::default(), "ak-bad-1234567").await;
    let e = s.provider.create(SandboxSpec::default()).await.err().expect("bad tokens").to_string();
    assert!(e.contains("Modal rejected the credentials for token id ak-bad-1…"), "{e}");
    assert!(!e.contains("as-secret-value") && !e.contains("1234567"), "{e}");

    let s = setup(faults(|f| f.image_build_fail = Some("E: Unable to locate package nodejs".into()))).await;
    let e = s.provider.create(SandboxSpec::default()).await.err().unwrap().to_string();
    assert!(e.contains("Modal image build failed") && e.contains("E: Unable to locate package nodejs"), "{e}");
    assert!(e.contains("last build log lines"), "{e}");

    let quick = SandboxSettings { ready_timeout: Duration::from_millis(1200), ..SandboxSettings::default() };
    let s = setup_with(faults(|f| f.task_id_never = true), quick, "ak-test").await;
    let e = s.provider.create(SandboxSpec::default()).await.err().unwrap().to_string();
    assert!(e.contains("did not start within 1 s"), "{e}");
    assert_eq!(methods(&s.fake, "SandboxTerminate"), 1, "the sandbox that never started is terminated");
}

#[tokio::test]
async fn a_sandbox_terminated_from_outside_polls_as_ended() {
    let s = setup(Faults::default()).await;
    let sb: Arc<dyn Sandbox> = s.provider.create(SandboxSpec::default()).await.unwrap();
    assert_eq!(sb.poll().await, None);
    assert!(s.fake.terminate_sandbox(sb.id()));
    assert_eq!(sb.poll().await, Some(137));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_all_terminates_live_sandboxes() {
    let s = setup(Faults::default()).await;
    let a = s.provider.create(SandboxSpec::default()).await.unwrap();
    let b = s.provider.create(SandboxSpec::default()).await.unwrap();
    let provider = &s.provider;
    tokio::task::block_in_place(|| provider.kill_all());
    assert_eq!(a.poll().await, Some(137));
    assert_eq!(b.poll().await, Some(137));
}

#[tokio::test]
async fn the_command_router_is_used_when_the_task_offers_one() {
    let s = setup(faults(|f| {
        f.router = true;
        f.router_unauthenticated_once = true;
        f.router_cut_stdio_once = true;
    }))
    .await;
    let sb = s.provider.create(SandboxSpec::default()).await.unwrap();
    let text = "héllo ✓\n".repeat(2000);
    let (code, out, err) = run(&*sb, &["sh", "-c", "cat; echo err >&2; exit 5"], text.as_bytes()).await;
    assert_eq!((code, String::from_utf8(out).unwrap(), err), (5, text, "err\n".to_string()));
    // Files still go through the file API; listing and uploads are execs, now via the router.
    sb.write_files(&[("/workspace/r.txt".into(), b"via router".to_vec())]).await.unwrap();
    assert_eq!(sb.list_files(Path::new("/workspace")).await.unwrap(), vec!["r.txt"]);
    assert_eq!(methods(&s.fake, "ContainerExec"), 0, "no classic exec");
    assert!(methods(&s.fake, "TaskExecStart") >= 3);
    assert!(methods(&s.fake, "TaskGetCommandRouterAccess") >= 2, "the token was refreshed after UNAUTHENTICATED");
}

/// Short pauses so a test of the give-up path takes well under a second.
fn quick_reopen() -> ReopenPolicy {
    ReopenPolicy {
        first_delay: Duration::from_millis(40),
        max_delay: Duration::from_millis(160),
        max_failures: 4,
        healthy_after: Duration::from_secs(10),
    }
}

/// Arrival times of the requests of `method` that match `filter`.
fn times(fake: &FakeModal, method: &str, filter: impl Fn(&serde_json::Value) -> bool) -> Vec<std::time::Instant> {
    fake.timed_records().into_iter().filter(|(r, _)| r["method"] == method && filter(r)).map(|(_, t)| t).collect()
}

/// Consecutive gaps are at least half of each backoff step (the jitter's lower bound).
fn assert_spaced(at: &[std::time::Instant], steps_ms: &[u64]) {
    assert_eq!(at.len(), steps_ms.len() + 1, "{at:?}");
    for (w, step) in at.windows(2).zip(steps_ms) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(step / 2), "gap {gap:?} for a {step} ms step");
    }
}

#[tokio::test]
async fn an_image_log_stream_that_keeps_closing_ends_in_a_clear_error_after_spaced_reopens() {
    let settings = SandboxSettings {
        image: BuildLimits { timeout: Duration::from_secs(60), reopen: quick_reopen() },
        ..SandboxSettings::default()
    };
    let s = setup_with(
        faults(|f| {
            f.image_build_ms = 60_000;
            f.image_join_close_always = true;
        }),
        settings,
        "ak-test",
    )
    .await;
    let created = tokio::time::timeout(Duration::from_secs(20), s.provider.create(SandboxSpec::default()))
        .await
        .expect("gives up in time instead of reopening forever");
    let e = created.err().expect("no image, no sandbox").to_string();
    assert!(e.contains("Modal image build im-") && e.contains("failed 5 times in a row without progress"), "{e}");
    assert_spaced(&times(&s.fake, "ImageJoinStreaming", |_| true), &[40, 80, 160, 160]);
    assert!(s.fake.sandbox_ids().is_empty());
}

#[tokio::test]
async fn one_image_build_serves_every_creation_even_when_the_first_is_cancelled() {
    let s = setup(faults(|f| f.image_build_ms = 600)).await;
    // The first creation is given up while the image is building...
    let first = tokio::time::timeout(Duration::from_millis(150), s.provider.create(SandboxSpec::default())).await;
    assert!(first.is_err(), "still building");
    assert_eq!(methods(&s.fake, "ImageGetOrCreate"), 1);
    // ...and the build goes on for the next ones, which wait for it together.
    let (a, b) = tokio::join!(s.provider.create(SandboxSpec::default()), s.provider.create(SandboxSpec::default()));
    a.expect("first waiter");
    b.expect("second waiter");
    assert_eq!(
        methods(&s.fake, "ImageGetOrCreate"),
        2,
        "one call per layer: the build was neither restarted nor repeated"
    );
}

#[tokio::test]
async fn a_build_past_its_deadline_fails_clearly_and_is_not_kept() {
    let settings = SandboxSettings {
        image: BuildLimits { timeout: Duration::from_millis(300), reopen: ReopenPolicy::default() },
        ..SandboxSettings::default()
    };
    // Log lines keep coming (progress), so only the deadline can end the wait.
    let s = setup_with(faults(|f| f.image_build_ms = 30_000), settings, "ak-test").await;
    let e = s.provider.create(SandboxSpec::default()).await.err().expect("deadline").to_string();
    assert!(e.contains("did not finish within 300ms") && e.contains("last build log lines"), "{e}");
    assert_eq!(methods(&s.fake, "ImageGetOrCreate"), 1);
    // The failure is not cached: the next creation asks again.
    assert!(s.provider.create(SandboxSpec::default()).await.is_err());
    assert_eq!(methods(&s.fake, "ImageGetOrCreate"), 2);
}

#[tokio::test]
async fn exec_output_streams_that_keep_closing_are_reopened_a_bounded_number_of_times() {
    let settings = SandboxSettings { output_reopen: quick_reopen(), ..SandboxSettings::default() };
    let s = setup_with(faults(|f| f.output_close_always = true), settings, "ak-test").await;
    let sb = s.provider.create(SandboxSpec::default()).await.unwrap();
    let mut p = sb.exec(&["echo".to_string(), "hi".to_string()], ExecOptions::default()).await.unwrap();
    drop(p.stdin.take());
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), p.stdout.read_to_end(&mut out))
        .await
        .expect("the reader gives up instead of reopening forever")
        .unwrap();
    assert!(out.is_empty(), "the fake never delivers output here");
    let stdout = times(&s.fake, "ContainerExecGetOutput", |r| r["request"]["file_descriptor"] == 1);
    assert_spaced(&stdout, &[40, 80, 160, 160]);
}

#[tokio::test]
async fn a_refused_auth_token_is_replaced_once_for_all_callers() {
    let s = setup(Faults::default()).await;
    let sb = s.provider.create(SandboxSpec::default()).await.unwrap();
    assert_eq!(methods(&s.fake, "AuthTokenGet"), 1);
    // The server stops accepting the cached token well before its `exp` (rotation, revocation).
    s.fake.revoke_auth_tokens();
    let (a, b) = tokio::join!(run(&*sb, &["echo", "a"], b""), run(&*sb, &["echo", "b"], b""));
    assert_eq!((a.0, a.1), (0, b"a\n".to_vec()));
    assert_eq!((b.0, b.1), (0, b"b\n".to_vec()));
    sb.write_file(Path::new("/workspace/t.txt"), b"still works").await.expect("file API with the new token");
    assert_eq!(methods(&s.fake, "AuthTokenGet"), 2, "one refresh, shared by every refused call");
}

#[tokio::test]
async fn concurrent_router_calls_refused_together_refresh_the_router_token_once() {
    let s = setup(faults(|f| f.router = true)).await;
    let sb = s.provider.create(SandboxSpec::default()).await.unwrap();
    assert_eq!(run(&*sb, &["true"], b"").await.0, 0);
    let before = methods(&s.fake, "TaskGetCommandRouterAccess");
    s.fake.revoke_router_tokens();
    let argvs: Vec<[String; 2]> = (0..6).map(|i| ["echo".to_string(), i.to_string()]).collect();
    let argvs: Vec<[&str; 2]> = argvs.iter().map(|[a, b]| [a.as_str(), b.as_str()]).collect();
    let runs = futures::future::join_all(argvs.iter().map(|argv| run(&*sb, argv, b""))).await;
    for (i, (code, out, _)) in runs.into_iter().enumerate() {
        assert_eq!((code, String::from_utf8(out).unwrap()), (0, format!("{i}\n")));
    }
    assert_eq!(methods(&s.fake, "TaskGetCommandRouterAccess"), before + 1, "one refresh for all");
}

/// The agent owns its container's files: links, FIFOs and big files in the workspace must not
/// make the runtime read outside the workspace, block, or hold more than the limit.
#[tokio::test]
async fn reads_and_listings_never_follow_links_and_reads_are_bounded() {
    use agent_runtime::sandbox::FileRead;
    let s = setup(Faults::default()).await;
    let sb = s.provider.create(SandboxSpec::default()).await.unwrap();
    let root = s.fake.sandbox_root(sb.id()).unwrap();
    let ws = root.join("workspace");
    std::fs::create_dir_all(ws.join("real")).unwrap();
    std::fs::write(ws.join("real/x.txt"), "x").unwrap();
    std::fs::write(ws.join("ok.txt"), "fine").unwrap();
    std::fs::write(ws.join("big.bin"), vec![7u8; 64 * 1024]).unwrap();
    std::fs::write(root.join("root/secret.txt"), "top secret").unwrap();
    // What an agent would plant: its process environment, a parent-directory link, `/`, a FIFO.
    std::os::unix::fs::symlink("/proc/self/environ", ws.join("env.txt")).unwrap();
    std::os::unix::fs::symlink(root.join("root"), ws.join("home")).unwrap();
    std::os::unix::fs::symlink("/", ws.join("everything")).unwrap();
    let fifo = std::ffi::CString::new(ws.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

    let read = |p: &'static str, limit: u64| {
        let sb = sb.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), sb.read_regular(Path::new(p), limit))
                .await
                .unwrap_or_else(|_| panic!("reading {p} must not block"))
                .expect("read answers")
        }
    };
    let skipped = |r: FileRead, why: &str| match r {
        FileRead::Skipped(w) => assert!(w.contains(why), "{w:?} should say {why:?}"),
        // Never print what was read: it may be an environment with secrets.
        FileRead::Content(b) => panic!("expected skipped ({why}), got {} bytes of content", b.len()),
        FileRead::Missing => panic!("expected skipped ({why}), got missing"),
    };
    skipped(read("env.txt", 1 << 20).await, "symbolic link");
    skipped(read("home/secret.txt", 1 << 20).await, "symbolic link");
    skipped(read("everything/etc/hostname", 1 << 20).await, "symbolic link");
    skipped(read("fifo", 1 << 20).await, "not a regular file");
    skipped(read("real", 1 << 20).await, "not a regular file");
    skipped(read("big.bin", 1000).await, "larger than 1000 bytes");
    skipped(read("ok.txt", 3).await, "larger than 3 bytes");
    assert_eq!(read("ok.txt", 4).await, FileRead::Content(b"fine".to_vec()));
    assert_eq!(read("/workspace/big.bin", 64 * 1024).await, FileRead::Content(vec![7u8; 64 * 1024]));
    assert_eq!(read("nope.txt", 10).await, FileRead::Missing);
    assert!(sb.read_file(Path::new("env.txt")).await.is_err(), "the runtime's own reads refuse links too");

    // Listing: regular files only, links neither listed nor followed, a linked directory is empty.
    let listed = sb.list_files(Path::new("/workspace")).await.unwrap();
    assert_eq!(listed, vec!["big.bin", "ok.txt", "real/x.txt"]);
    assert!(sb.list_files(Path::new("/workspace/home")).await.unwrap().is_empty());
    assert!(sb.list_files(Path::new("/workspace/everything/")).await.unwrap().is_empty());
}

/// The watcher script itself (as it runs in a sandbox): a watched directory that is, or later
/// becomes, a link is not walked; it stops with an error instead.
#[tokio::test]
async fn the_watcher_does_not_walk_through_a_linked_directory() {
    let dir = std::env::temp_dir().join(format!("watch-link-{}", uuid::Uuid::new_v4().simple()));
    let (ws, elsewhere) = (dir.join("workspace"), dir.join("elsewhere"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("secret.txt"), "s").unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox/watch.mjs");
    let watch = |target: &Path| {
        tokio::process::Command::new("node")
            .arg(&script)
            .arg(target)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs")
    };
    let finished = |child: tokio::process::Child| async move {
        let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .expect("the watcher stops instead of walking the link")
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let link = dir.join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let (code, out, err) = finished(watch(&link)).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("symbolic link") && !out.contains("secret"), "{out} {err}");

    // Started on a real directory that the agent then replaces with a link.
    let mut child = watch(&ws);
    let mut stdout = child.stdout.take().unwrap();
    // Wait for the watcher's first snapshot: create files until one is reported.
    let mut first = [0u8; 64];
    for i in 0.. {
        assert!(i < 100, "the watcher never reported");
        std::fs::write(ws.join(format!("f{i}.txt")), "x").unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), stdout.read(&mut first)).await {
            assert!(n > 0);
            break;
        }
    }
    std::fs::remove_dir_all(&ws).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &ws).unwrap();
    child.stdout = None;
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_to_string(&mut rest)).await.expect("stops").unwrap();
    let (code, _, err) = finished(child).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(!rest.contains("secret"), "nothing from behind the link is reported: {rest}");
    let _ = std::fs::remove_dir_all(&dir);
}
