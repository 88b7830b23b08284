//! `fake-modal`: runs the fake Modal control plane as a process, for tests outside Rust.
//!
//! Prints one line `{"url":"http://127.0.0.1:PORT","port":PORT}` when ready, then reads commands
//! from stdin, one per line, answering one JSON line each:
//!   terminate <sandbox_id>   terminate-all
//! Exits (killing every sandbox process) when stdin closes or on SIGTERM/SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use fake_modal::{FakeConfig, FakeModal, Faults};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: fake-modal [--root DIR] [--node-modules DIR] [--record FILE] [--faults JSON] [--port N]
  --faults defaults to $FAKE_MODAL_FAULTS; --root defaults to a fresh temp dir (removed on exit)";

struct Args {
    config: FakeConfig,
    port: u16,
    /// The root was made up here, so it is ours to remove.
    temp_root: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut config = FakeConfig::default();
    let mut root = None;
    let mut port = 0;
    let mut faults = std::env::var("FAKE_MODAL_FAULTS").ok().filter(|s| !s.trim().is_empty());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{flag} needs a value\n{USAGE}")),
        };
        match flag.as_str() {
            "--root" => root = Some(PathBuf::from(value)),
            "--node-modules" => config.node_modules = Some(PathBuf::from(value)),
            "--record" => config.record = Some(PathBuf::from(value)),
            "--faults" => faults = Some(value),
            "--port" => port = value.parse().map_err(|_| format!("bad --port {value:?}"))?,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if let Some(json) = faults {
        config.faults = serde_json::from_str::<Faults>(&json).map_err(|e| format!("bad faults JSON: {e}"))?;
    }
    let temp_root = root.is_none();
    if let Some(root) = root {
        config.root = root;
    }
    Ok(Args { config, port, temp_root })
}

/// Writes one line to stdout; a vanished reader is not worth a panic.
fn say_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

fn say(value: serde_json::Value) {
    say_line(&value.to_string());
}

fn command(fake: &FakeModal, line: &str) -> serde_json::Value {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("terminate"), Some(id)) => {
            if fake.terminate_sandbox(id) {
                json!({ "ok": true })
            } else {
                json!({ "ok": false, "error": format!("unknown sandbox {id}") })
            }
        }
        (Some("terminate-all"), None) => {
            fake.terminate_all();
            json!({ "ok": true })
        }
        _ => json!({ "ok": false, "error": format!("unknown command {line:?}") }),
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let root = args.config.root.clone();
    let fake = match FakeModal::start_on(args.config, SocketAddr::from(([127, 0, 0, 1], args.port))).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-modal: cannot start: {e}");
            std::process::exit(1);
        }
    };
    // Written by hand to keep the documented key order (serde_json sorts keys).
    say_line(&format!(r#"{{"url":"{}","port":{}}}"#, fake.url(), fake.addr().port()));

    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => say(command(&fake, line.trim())),
                _ => break,
            },
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    fake.shutdown().await;
    if args.temp_root {
        let _ = std::fs::remove_dir_all(&root);
    }
    // Exit right away: the runtime would otherwise wait for the blocking stdin reader.
    std::process::exit(0);
}
