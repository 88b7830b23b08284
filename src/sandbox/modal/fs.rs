//! Single files in a Modal sandbox. Writes go through the file API (`open`, `write`, `close`,
//! each a "filesystem exec" whose result is fetched with a second call), behind
//! [`FileTransport`] so an exec-based implementation can replace it when Modal retires these
//! calls. Reads are [`read_regular`]: a small script run in the sandbox, because the file API
//! follows links, opens FIFOs (and blocks on them) and returns whole files.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::client::{Connection, MResult, ModalError};
use super::exec::{ExecRequest, ExecTransport};
use super::proto::container_filesystem_exec_request::FileExecRequestOneof as Op;
use super::proto::{
    ContainerFileCloseRequest, ContainerFileOpenRequest, ContainerFileWriteRequest,
    ContainerFilesystemExecGetOutputRequest, ContainerFilesystemExecRequest,
};
use crate::sandbox::FileRead;

#[async_trait]
pub trait FileTransport: Send + Sync + 'static {
    /// The parent directory must exist.
    async fn write(&self, task_id: &str, path: &str, data: &[u8]) -> MResult<()>;
}

pub struct ClassicFiles {
    conn: Connection,
}

impl ClassicFiles {
    pub fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// One operation: start it, then collect its output. `Err(code, message)` inside `Ok` is a
    /// file-system error (errno-like), kept apart from transport failures.
    async fn op(&self, task_id: &str, op: Op) -> MResult<(Option<String>, Result<Vec<u8>, (i32, String)>)> {
        let req = ContainerFilesystemExecRequest { task_id: task_id.into(), file_exec_request_oneof: Some(op) };
        let started = self
            .conn
            .unary("ContainerFilesystemExec", req, |mut c, r| async move { c.container_filesystem_exec(r).await })
            .await?;
        let req = ContainerFilesystemExecGetOutputRequest { exec_id: started.exec_id.clone(), timeout: 55.0 };
        let mut data = Vec::new();
        // The result stays readable on the server, so a broken stream is simply asked again.
        for _ in 0..3 {
            let mut stream = self
                .conn
                .stream(
                    "ContainerFilesystemExecGetOutput",
                    req.clone(),
                    Duration::from_secs(70),
                    |mut c, r| async move { c.container_filesystem_exec_get_output(r).await },
                )
                .await?;
            data.clear();
            while let Some(Ok(batch)) = stream.next().await {
                if let Some(e) = batch.error {
                    return Ok((started.file_descriptor, Err((e.error_code, e.error_message))));
                }
                for chunk in batch.output {
                    data.extend_from_slice(&chunk);
                }
                if batch.eof {
                    return Ok((started.file_descriptor, Ok(data)));
                }
            }
        }
        Err(ModalError {
            code: tonic::Code::Unavailable,
            message: format!("Modal file operation {} returned no result", started.exec_id),
        })
    }

    async fn open(&self, task_id: &str, path: &str, mode: &str) -> MResult<Result<String, (i32, String)>> {
        let op = Op::FileOpenRequest(ContainerFileOpenRequest {
            file_descriptor: None,
            path: path.into(),
            mode: mode.into(),
        });
        Ok(match self.op(task_id, op).await? {
            (Some(fd), Ok(_)) => Ok(fd),
            (None, Ok(_)) => Err((0, "open returned no file descriptor".into())),
            (_, Err(e)) => Err(e),
        })
    }

    async fn close(&self, task_id: &str, fd: &str) -> MResult<()> {
        let op = Op::FileCloseRequest(ContainerFileCloseRequest { file_descriptor: fd.into() });
        self.op(task_id, op).await?.1.map(|_| ()).map_err(|e| fs_error("close", fd, e))
    }
}

fn fs_error(what: &str, path: &str, (code, message): (i32, String)) -> ModalError {
    ModalError {
        code: tonic::Code::Internal,
        message: format!("{what} {path:?} in the Modal sandbox failed (errno {code}): {message}"),
    }
}

#[async_trait]
impl FileTransport for ClassicFiles {
    async fn write(&self, task_id: &str, path: &str, data: &[u8]) -> MResult<()> {
        let fd = self.open(task_id, path, "w").await?.map_err(|e| fs_error("open", path, e))?;
        let op = Op::FileWriteRequest(ContainerFileWriteRequest { file_descriptor: fd.clone(), data: data.to_vec() });
        let written = self.op(task_id, op).await?.1;
        self.close(task_id, &fd).await?;
        written.map(|_| ()).map_err(|e| fs_error("write", path, e))
    }
}

/// Reads one file in the sandbox (argv: path, limit). It opens without following a final link
/// and without blocking on a FIFO, checks what it opened (a regular file, every directory on
/// the way a real directory, the path still naming the same inode: no link anywhere), checks
/// the size before reading, and reads at most limit + 1 bytes. The first line of its output
/// says what it found: `F` (the content follows), `M` (missing) or `S <reason>` (skipped).
const READ_SCRIPT: &str = r#"
const fs = require('fs'), path = require('path'), C = fs.constants;
const want = path.resolve(process.argv[1]), limit = Number(process.argv[2]);
function put(b) {
  for (let o = 0; o < b.length; ) {
    try { o += fs.writeSync(1, b, o, b.length - o); }
    catch (e) { if (e.code !== 'EAGAIN') throw e; Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5); }
  }
}
const done = (line) => { put(Buffer.from(line + '\n')); process.exit(0); };
let fd;
try { fd = fs.openSync(want, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY); }
catch (e) {
  if (e.code === 'ENOENT' || e.code === 'ENOTDIR') done('M');
  if (e.code === 'ELOOP') done('S is a symbolic link');
  throw e;
}
const st = fs.fstatSync(fd);
if (!st.isFile()) done('S is not a regular file');
for (let d = path.dirname(want); ; d = path.dirname(d)) {
  const s = fs.lstatSync(d);
  if (!s.isDirectory()) done('S is reached through a symbolic link');
  if (d === path.dirname(d)) break;
}
const now = fs.lstatSync(want, { throwIfNoEntry: false });
if (!now || now.dev !== st.dev || now.ino !== st.ino) done('S changed while being read');
if (st.size > limit) done(`S larger than ${limit} bytes`);
put(Buffer.from('F\n'));
const buf = Buffer.alloc(Math.min(1 << 20, limit + 1));
for (let left = limit + 1; left > 0; ) {
  const n = fs.readSync(fd, buf, 0, Math.min(buf.length, left), null);
  if (n === 0) break;
  put(buf.subarray(0, n));
  left -= n;
}
"#;

/// Longest first line of the read script's answer.
const HEADER_MAX: u64 = 512;
/// A read that takes longer is abandoned (a sandbox must not hold the runtime forever).
const READ_TIMEOUT: Duration = Duration::from_secs(600);

/// A regular file of at most `limit` bytes at `path` (absolute), never through a symbolic link
/// and never a FIFO, device or socket; the runtime holds at most `limit` + a few bytes of it,
/// whatever the sandbox answers.
pub async fn read_regular(exec: &dyn ExecTransport, task_id: &str, path: &str, limit: u64) -> MResult<FileRead> {
    let failed = |message: String| ModalError { code: tonic::Code::Internal, message };
    let argv = ["node", "-e", READ_SCRIPT, "--", path, &limit.to_string()].map(String::from).to_vec();
    let req = ExecRequest { task_id: task_id.into(), argv, workdir: None, secret_ids: vec![] };
    let read = async {
        let mut p = exec.exec(req).await?;
        drop(p.stdin.take());
        let mut out = Vec::new();
        let mut err = Vec::new();
        let io = |e: std::io::Error| failed(format!("reading {path:?} in the Modal sandbox: {e}"));
        let mut stdout = (&mut p.stdout).take(HEADER_MAX + limit + 1);
        let mut stderr = (&mut p.stderr).take(4096);
        let (o, e) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        o.map_err(io)?;
        e.map_err(io)?;
        let Some(nl) = out.iter().take(HEADER_MAX as usize).position(|b| *b == b'\n') else {
            return Err(failed(format!(
                "reading {path:?} in the Modal sandbox failed: {}",
                String::from_utf8_lossy(&err).trim()
            )));
        };
        let header = String::from_utf8_lossy(&out[..nl]).into_owned();
        match header.split_once(' ').map_or((header.as_str(), ""), |(k, r)| (k, r)) {
            ("M", _) => Ok(FileRead::Missing),
            ("S", why) => Ok(FileRead::Skipped(why.to_string())),
            ("F", _) => {
                let content = out.split_off(nl + 1);
                if content.len() as u64 > limit {
                    return Ok(FileRead::Skipped(format!("larger than {limit} bytes")));
                }
                match p.exit.await {
                    0 => Ok(FileRead::Content(content)),
                    code => Err(failed(format!(
                        "reading {path:?} in the Modal sandbox failed (exit {code}): {}",
                        String::from_utf8_lossy(&err).trim()
                    ))),
                }
            }
            _ => Err(failed(format!("reading {path:?} in the Modal sandbox: unexpected answer {header:?}"))),
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.unwrap_or_else(|_| {
        Err(ModalError {
            code: tonic::Code::DeadlineExceeded,
            message: format!("reading {path:?} in the Modal sandbox took longer than {READ_TIMEOUT:?}"),
        })
    })
}
