//! The Rust Modal client driving a control plane at `MODAL_SERVER_URL` (normally the fake):
//!
//! - `modal-scenario scenario`: the reference's sequence of calls (the one
//!   `__test__/modal/official-scenario.mjs` makes with the official SDK); prints the outcomes.
//! - `modal-scenario bench N`: create a sandbox, then N exec round trips and N 1 MB file
//!   write+read pairs; prints latencies (ms) and peak RSS (KiB) as one JSON line.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use agent_runtime::sandbox::modal::{server_url, Credentials, ModalProvider, ModalSettings};
use agent_runtime::sandbox::{ExecOptions, Sandbox, SandboxProvider, SandboxSpec};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn run(sb: &dyn Sandbox, argv: &[&str], cwd: Option<&str>, stdin: &[u8]) -> (i32, String, String) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let opts = ExecOptions { cwd: cwd.map(Into::into), env: BTreeMap::new() };
    let mut p = sb.exec(&argv, opts).await.expect("exec starts");
    let mut w = p.stdin.take().expect("stdin");
    w.write_all(stdin).await.expect("stdin write");
    w.shutdown().await.expect("stdin close");
    drop(w);
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b) = tokio::join!(p.stdout.read_to_string(&mut out), p.stderr.read_to_string(&mut err));
    a.expect("stdout");
    b.expect("stderr");
    (p.exit.await, out, err)
}

fn provider() -> ModalProvider {
    let creds = Credentials { token_id: "ak-test".into(), token_secret: "as-test".into() };
    let app_name = std::env::var("MODAL_APP").unwrap_or_else(|_| "agent-runtime".into());
    ModalProvider::new(creds, ModalSettings { server_url: server_url(), app_name, sandbox: Default::default() })
        .expect("provider")
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn scenario() -> serde_json::Value {
    let p = provider();
    let sb: Arc<dyn Sandbox> = p.create(SandboxSpec::default()).await.expect("sandbox");
    sb.write_file(Path::new("/workspace/dir/a.txt"), "hello ✓".as_bytes()).await.expect("write");
    let read = sb
        .read_file(Path::new("/workspace/dir/a.txt"))
        .await
        .expect("read")
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let missing = sb.read_file(Path::new("/workspace/missing.txt")).await.expect("read missing");
    let (code, stdout, stderr) = run(&*sb, &["sh", "-c", "cat; echo err 1>&2; exit 3"], None, b"in").await;
    let (_, ls, _) = run(&*sb, &["ls", "-1"], Some("/workspace/dir"), b"").await;
    let poll_before = sb.poll().await;
    sb.terminate().await;
    let poll_after = sb.poll().await;
    json!({
        "sandboxId": sb.id(), "read": read, "missing": missing.is_none(), "stdout": stdout, "stderr": stderr,
        "code": code, "ls": ls.trim(), "pollBefore": poll_before, "pollAfter": poll_after,
    })
}

async fn bench(n: usize) -> serde_json::Value {
    let p = provider();
    let t = Instant::now();
    let sb = p.create(SandboxSpec::default()).await.expect("sandbox");
    run(&*sb, &["true"], None, b"").await;
    let create_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut exec_ms = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let (code, out, _) = run(&*sb, &["echo", "ping"], None, b"").await;
        assert_eq!((code, out.as_str()), (0, "ping\n"));
        exec_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mb: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut file_ms = Vec::new();
    for i in 0..n {
        let path = format!("/workspace/bench-{i}.bin");
        let t = Instant::now();
        sb.write_file(Path::new(&path), &mb).await.expect("write");
        let back = sb.read_file(Path::new(&path)).await.expect("read").expect("exists");
        assert_eq!(back.len(), mb.len());
        file_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    sb.terminate().await;
    json!({ "createMs": create_ms, "execMs": exec_ms, "fileMs": file_ms, "peakRssKiB": peak_rss_kib() })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = match args.get(1).map(String::as_str) {
        Some("bench") => bench(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10)).await,
        _ => scenario().await,
    };
    println!("{out}");
}
