//! The host side of the runner protocol (docs/RUNNER.md): a session's long-lived agent process
//! in its sandbox, driven by JSON lines on stdin and read as JSON lines on stdout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::sandbox::{output_lines, OutputLine, Process, MAX_LINE_BYTES};
use crate::sync::Locked as _;

/// A control line from the runner (`{"type":"runner","event":...}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunnerEvent {
    Ready,
    #[serde(rename_all = "camelCase")]
    TurnEnd {
        turn_id: String,
        status: String,
        #[serde(default)]
        error: Option<RunnerError>,
    },
    #[serde(rename_all = "camelCase")]
    Permission {
        request_id: String,
        #[serde(default)]
        kind: PermissionKind,
        tool_name: String,
        #[serde(default)]
        tool_use_id: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(rename_all = "camelCase")]
    Steered {
        message_id: String,
        delivered: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunnerError {
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionKind {
    #[default]
    Tool,
    Question,
}

/// One stdout line: the runner's own control line, or the agent's output for the converter.
#[derive(Debug)]
pub enum RunnerLine {
    Control(RunnerEvent),
    Agent(String),
}

impl RunnerLine {
    pub fn parse(line: String) -> Self {
        // The runners write control lines with `type` first; agent output never starts so.
        if line.starts_with("{\"type\":\"runner\"") {
            if let Ok(ev) = serde_json::from_str::<RunnerEvent>(&line) {
                return RunnerLine::Control(ev);
            }
        }
        RunnerLine::Agent(line)
    }
}

/// Writes to a runner's stdin; a cheap handle for whoever needs to reach the running agent.
/// Weak: the runner's stdin closes (and an idle runner exits) when the [`Runner`] is dropped.
#[derive(Clone)]
pub struct RunnerWriter(mpsc::WeakUnboundedSender<String>);

impl RunnerWriter {
    /// Send one host message; false if the runner is gone.
    pub fn send(&self, msg: &Value) -> bool {
        self.0.upgrade().is_some_and(|tx| tx.send(msg.to_string()).is_ok())
    }
}

/// A started runner process.
pub struct Runner {
    /// `None` once its input was closed.
    tx: Option<mpsc::UnboundedSender<String>>,
    /// Its stdout, line by line (read by the turn that runs).
    pub lines: mpsc::Receiver<OutputLine>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_overflow: Arc<AtomicBool>,
    exit: Shared<BoxFuture<'static, i32>>,
    kill: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The sandbox it runs in.
    pub sandbox_id: String,
    /// Its settings (the `start` line without `ask`): a runner started with other settings
    /// (model, tools) is replaced; `ask` changes by `policy` lines.
    pub start: Value,
}

impl Runner {
    /// Take over `proc` and send it `start` with `ask` (whether tool calls come to the host).
    pub fn new(mut proc: Process, start: Value, ask: bool, sandbox_id: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        if let Some(mut stdin) = proc.stdin.take() {
            tokio::spawn(async move {
                while let Some(mut line) = rx.recv().await {
                    line.push('\n');
                    if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                        return;
                    }
                }
                // Every sender is gone: end of input, the runner exits once idle.
                let _ = stdin.shutdown().await;
            });
        }
        let mut line = start.clone();
        line["ask"] = Value::Bool(ask);
        let _ = tx.send(line.to_string());
        let lines = output_lines(std::mem::replace(&mut proc.stdout, Box::pin(tokio::io::empty())), MAX_LINE_BYTES);
        let mut stderr =
            output_lines(std::mem::replace(&mut proc.stderr, Box::pin(tokio::io::empty())), MAX_LINE_BYTES);
        // The last lines of stderr, for error messages (a few, each cut short).
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_overflow = Arc::new(AtomicBool::new(false));
        tokio::spawn({
            let (tail, overflow) = (stderr_tail.clone(), stderr_overflow.clone());
            async move {
                while let Some(item) = stderr.recv().await {
                    let OutputLine::Line(l) = item else {
                        overflow.store(true, Ordering::SeqCst);
                        return;
                    };
                    tracing::debug!(line = %l, "runner stderr");
                    let mut t = tail.locked();
                    if t.len() == 10 {
                        t.pop_front();
                    }
                    t.push_back(l.chars().take(2000).collect::<String>());
                }
            }
        });
        let exit = std::mem::replace(&mut proc.exit, futures::future::ready(0).boxed()).shared();
        Self { tx: Some(tx), lines, stderr_tail, stderr_overflow, exit, kill: proc.kill.clone(), sandbox_id, start }
    }

    pub fn writer(&self) -> RunnerWriter {
        match &self.tx {
            Some(tx) => RunnerWriter(tx.downgrade()),
            None => RunnerWriter(mpsc::unbounded_channel().0.downgrade()),
        }
    }

    pub fn send(&self, msg: &Value) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(msg.to_string()).is_ok())
    }

    /// End its input: an idle runner exits.
    pub fn close_input(&mut self) {
        self.tx = None;
    }

    /// Its exit code, once it has exited.
    pub fn exited(&self) -> Option<i32> {
        self.exit.clone().now_or_never()
    }

    /// Resolves when it exits.
    pub fn exit(&self) -> Shared<BoxFuture<'static, i32>> {
        self.exit.clone()
    }

    /// Kill it where the provider can (see [`Process::kill`]); false if it cannot.
    pub fn kill(&self) -> bool {
        match &self.kill {
            Some(k) => {
                k();
                true
            }
            None => false,
        }
    }

    /// The last lines it wrote to stderr, joined.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail.locked().iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// A stderr line went over the line limit.
    pub fn stderr_overflowed(&self) -> bool {
        self.stderr_overflow.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_are_told_from_agent_output() {
        let l = RunnerLine::parse(r#"{"type":"runner","event":"turn_end","turnId":"t","status":"interrupted"}"#.into());
        assert!(matches!(l, RunnerLine::Control(RunnerEvent::TurnEnd { status, .. }) if status == "interrupted"));
        let l = RunnerLine::parse(
            r#"{"type":"runner","event":"permission","requestId":"r","kind":"question","toolName":"AskUserQuestion","toolUseId":"u","input":{"questions":[]}}"#.into(),
        );
        assert!(matches!(l, RunnerLine::Control(RunnerEvent::Permission { kind: PermissionKind::Question, .. })));
        for agent in [r#"{"type":"assistant","message":{}}"#, r#"{"type":"runner","event":"unknown"}"#, "not json"] {
            assert!(matches!(RunnerLine::parse(agent.into()), RunnerLine::Agent(_)), "{agent}");
        }
    }
}
