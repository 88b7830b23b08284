//! What a local sandbox must not reach, and that terminate leaves nothing of it running.
//! The bubblewrap tests fail (naming the install command) where bubblewrap is not usable,
//! unless `AGENT_RUNTIME_NO_BWRAP` says to run without it on purpose.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::*;

/// Whether to run the bubblewrap tests: they panic when bubblewrap is missing or unusable.
fn bubblewrap_required() -> bool {
    if std::env::var_os("AGENT_RUNTIME_NO_BWRAP").is_some() {
        eprintln!("AGENT_RUNTIME_NO_BWRAP is set: bubblewrap isolation not tested");
        return false;
    }
    if let Err(why) = bubblewrap::detect(SandboxNetwork::Host) {
        panic!(
            "bubblewrap is not usable here ({why}); install it (apt-get install bubblewrap) and allow user \
             namespaces, or set AGENT_RUNTIME_NO_BWRAP=1 to skip the isolation tests on purpose"
        );
    }
    true
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("arn-{name}-{}", uuid::Uuid::new_v4().simple()))
}

fn isolated(root: &Path, settings: LocalSettings) -> LocalProvider {
    let p = LocalProvider::new(root.to_path_buf(), &settings).unwrap();
    assert!(p.unisolated_reason().is_none(), "{:?}", p.unisolated_reason());
    p
}

fn node_settings() -> LocalSettings {
    LocalSettings { node: "node".into(), ..Default::default() }
}

/// Run `script` with `sh -c` in the sandbox: (stdout, stderr, exit code).
async fn sh(sb: &dyn Sandbox, script: &str) -> (String, String, i32) {
    let argv: Vec<String> = vec!["sh".into(), "-c".into(), script.into()];
    let mut p = sb.exec(&argv, ExecOptions::default()).await.unwrap();
    drop(p.stdin.take());
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b) = tokio::join!(p.stdout.read_to_string(&mut out), p.stderr.read_to_string(&mut err));
    a.unwrap();
    b.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), p.exit).await.expect("exits");
    (out.trim().to_string(), err.trim().to_string(), code)
}

#[tokio::test]
async fn a_sandbox_cannot_see_another_sandbox() {
    if !bubblewrap_required() {
        return;
    }
    let root = scratch("iso");
    let p = isolated(&root, LocalSettings::default());
    let (a, b) = (p.create(SandboxSpec::default()).await.unwrap(), p.create(SandboxSpec::default()).await.unwrap());
    a.write_file(Path::new("secret.txt"), b"tenant a").await.unwrap();
    let theirs = a.paths().workspace.join("secret.txt");
    let (out, _, _) = sh(&*b, &format!("cat {} 2>/dev/null; ls {}", theirs.display(), root.display())).await;
    assert!(!out.contains("tenant a"), "{out}");
    assert!(!out.contains(a.id()), "the other sandbox is listed: {out}");
    assert!(out.contains(b.id()), "{out}");
    a.terminate().await;
    b.terminate().await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn host_tmp_run_and_etc_secrets_are_not_visible() {
    if !bubblewrap_required() {
        return;
    }
    let root = scratch("iso");
    let host_file = scratch("host-file");
    std::fs::write(&host_file, "host data").unwrap();
    let p = isolated(&root, LocalSettings::default());
    let sb = p.create(SandboxSpec::default()).await.unwrap();
    let script = format!(
        "echo \"file: $(cat {} 2>/dev/null)\"; echo \"run: $(ls -A /run 2>/dev/null)\"; \
         echo \"shadow: $(cat /etc/shadow 2>/dev/null | wc -c)\"; echo x > /tmp/own && echo \"tmp: $(cat /tmp/own)\"",
        host_file.display()
    );
    let (out, _, _) = sh(&*sb, &script).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["file: ", "run: ", "shadow: 0", "tmp: x"], "/run empty, /etc/shadow masked, a private /tmp");
    // The sandbox's /tmp is its own: nothing it wrote there shows on the host.
    assert!(!Path::new("/tmp/own").exists());
    sb.terminate().await;
    let _ = std::fs::remove_file(host_file);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn a_host_unix_socket_cannot_be_reached() {
    if !bubblewrap_required() {
        return;
    }
    let dir = scratch("sock");
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let root = scratch("iso");
    let p = isolated(&root, node_settings());
    let sb = p.create(SandboxSpec::default()).await.unwrap();
    let js = format!(
        "require('net').connect({:?}).on('connect', () => {{ console.log('connected'); process.exit(0) }}).on('error', (e) => console.log(e.code))",
        sock.display().to_string()
    );
    let argv: Vec<String> = vec!["node".into(), "-e".into(), js];
    let mut proc = sb.exec(&argv, ExecOptions::default()).await.unwrap();
    let mut out = String::new();
    proc.stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out.trim(), "ENOENT");
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "a connection came in");
    sb.terminate().await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn network_none_has_only_loopback() {
    if !bubblewrap_required() {
        return;
    }
    let root = scratch("iso");
    let p = isolated(&root, LocalSettings { network: SandboxNetwork::None, ..Default::default() });
    let sb = p.create(SandboxSpec::default()).await.unwrap();
    let (out, err, code) = sh(&*sb, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await;
    assert_eq!((out.as_str(), code), ("lo", 0), "{err}");
    sb.terminate().await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn runner_code_and_packages_are_read_only_inside() {
    if !bubblewrap_required() {
        return;
    }
    let root = scratch("iso");
    let modules = scratch("host-app").join("node_modules");
    std::fs::create_dir_all(modules.join("sdk")).unwrap();
    std::fs::write(modules.join("sdk/entry.mjs"), "export {}").unwrap();
    let entry = modules.join("sdk/entry.mjs").display().to_string();
    let p = isolated(&root, LocalSettings { packages: vec![entry.clone()], ..Default::default() });
    let sb = p.create(SandboxSpec::default()).await.unwrap();
    let runner = sb.paths().app.join("runner.mjs");
    sb.write_file(&runner, b"real runner").await.unwrap();
    let script = format!(
        "rm -f {r}; echo fake > {r}; echo > {app}/new; echo x >> {e}; cat {r}; echo; cat {e}; echo; ls {host} | wc -l",
        r = runner.display(),
        app = sb.paths().app.display(),
        e = entry,
        host = modules.parent().unwrap().display()
    );
    let (out, _, _) = sh(&*sb, &script).await;
    assert_eq!(out.lines().collect::<Vec<_>>(), ["real runner", "export {}", "1"], "{out}");
    assert_eq!(std::fs::read_to_string(&runner).unwrap(), "real runner");
    assert!(!sb.paths().app.join("new").exists());
    // The workspace stays writable.
    let (out, _, _) = sh(&*sb, "echo ok > f && cat f").await;
    assert_eq!(out, "ok");
    sb.terminate().await;
    let _ = std::fs::remove_dir_all(modules.parent().unwrap());
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn reserved_environment_is_ignored_and_bwrap_not_taken_from_the_sandbox_path() {
    let root = scratch("iso");
    // A `bwrap` (and `sh`) that would run instead of the real ones if looked up on the sandbox's PATH.
    let planted = scratch("planted");
    std::fs::create_dir_all(&planted).unwrap();
    let hit = planted.join("ran");
    for name in ["bwrap", "sh"] {
        let f = planted.join(name);
        std::fs::write(&f, format!("#!/bin/sh\ntouch {}\necho planted\n", hit.display())).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut spec = SandboxSpec::default();
    spec.env.insert("PATH".into(), planted.display().to_string());
    spec.env.insert("LD_PRELOAD".into(), "/nonexistent/evil.so".into());
    spec.env.insert("AGENT_RUNTIME_SANDBOX".into(), "someone-else".into());
    spec.env.insert("KEPT".into(), "yes".into());
    let mut providers = vec![LocalProvider::plain(root.clone()).unwrap()];
    if bubblewrap_required() {
        providers.push(isolated(&root, LocalSettings::default()));
    }
    for p in providers {
        let sb = p.create(spec.clone()).await.unwrap();
        let (out, err, code) = sh(&*sb, "echo \"$PATH|${LD_PRELOAD-unset}|$AGENT_RUNTIME_SANDBOX|$KEPT\"").await;
        assert_eq!(code, 0, "{err}");
        let expected = format!("{}|unset|{}|yes", std::env::var("PATH").unwrap(), sb.id());
        assert_eq!(out, expected);
        assert!(!hit.exists(), "a program planted on the sandbox's PATH ran");
        sb.terminate().await;
    }
    let _ = std::fs::remove_dir_all(planted);
    let _ = std::fs::remove_dir_all(root);
}

/// Host pids whose command line is `sleep <secs>` (a zombie has an empty one).
fn sleepers(secs: &str) -> Vec<i32> {
    let want = format!("sleep\0{secs}\0").into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn setsid_child_is_killed(p: LocalProvider) {
    let secs = format!("3000.{}", rand::random::<u32>());
    let sb = p.create(SandboxSpec::default()).await.unwrap();
    // The daemon leaves the runner's session and process group; the runner stays up.
    let script = format!("setsid sleep {secs} </dev/null >/dev/null 2>&1 & exec sleep 3000");
    let argv: Vec<String> = vec!["sh".into(), "-c".into(), script];
    let proc = sb.exec(&argv, ExecOptions::default()).await.unwrap();
    until("the setsid child runs", || !sleepers(&secs).is_empty()).await;
    sb.terminate().await;
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), proc.exit).await.unwrap(), -9);
    until("the setsid child is gone", || sleepers(&secs).is_empty()).await;
}

#[tokio::test]
async fn terminate_kills_setsid_children_plain() {
    let root = scratch("iso");
    setsid_child_is_killed(LocalProvider::plain(root.clone()).unwrap()).await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn terminate_kills_setsid_children_bubblewrap() {
    if !bubblewrap_required() {
        return;
    }
    let root = scratch("iso");
    setsid_child_is_killed(isolated(&root, LocalSettings::default())).await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn exited_processes_are_forgotten_and_strangers_untouched() {
    let root = scratch("iso");
    let p = LocalProvider::plain(root.clone()).unwrap();
    let sb = p.create(SandboxSpec::default()).await.unwrap();
    let local = p.live.lock().unwrap().values().next().and_then(Weak::upgrade).unwrap();
    let proc = sb.exec(&["true".into()], ExecOptions::default()).await.unwrap();
    assert_eq!(proc.exit.await, 0);
    // Its pid (and process group id) is free for anyone now: nothing may be signalled by it.
    assert_eq!(local.launched.running(), 0);
    let mut stranger = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
    sb.terminate().await;
    assert!(stranger.try_wait().unwrap().is_none(), "terminate killed a process that is not the sandbox's");
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn the_sandbox_root_is_private_and_a_planted_one_refused() {
    use std::os::unix::fs::MetadataExt;
    let root = scratch("root");
    LocalProvider::plain(root.clone()).unwrap();
    assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = LocalProvider::plain(root.clone()).err().unwrap();
    assert!(e.contains("writable by group or others") && e.contains(&root.display().to_string()), "{e}");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Only root can fake another user's directory.
        std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
        let e = LocalProvider::plain(root.clone()).err().unwrap();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn a_node_installed_outside_usr_runs_inside() {
    if !bubblewrap_required() {
        return;
    }
    let root = scratch("iso");
    let prefix = scratch("nvm");
    // `env` stands in for a Node binary in an nvm-style prefix.
    let node = prefix.join("bin/node");
    std::fs::create_dir_all(node.parent().unwrap()).unwrap();
    std::fs::copy("/usr/bin/env", &node).unwrap();
    let p = isolated(&root, LocalSettings { node: node.display().to_string(), ..Default::default() });
    let sb = p.create(SandboxSpec::default()).await.unwrap();
    let argv: Vec<String> = vec![node.display().to_string(), "echo".into(), "ran".into()];
    let mut proc = sb.exec(&argv, ExecOptions::default()).await.unwrap();
    let mut out = String::new();
    proc.stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out.trim(), "ran");
    sb.terminate().await;
    let _ = std::fs::remove_dir_all(prefix);
    let _ = std::fs::remove_dir_all(root);
}
