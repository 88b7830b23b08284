//! Reading and writing single files in a Modal sandbox through the file API (`open`, `read`,
//! `write`, `close`, each a "filesystem exec" whose result is fetched with a second call).
//! Behind [`FileTransport`] so an exec-based implementation can replace it when Modal retires
//! these calls.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use super::client::{Connection, MResult, ModalError};
use super::proto::container_filesystem_exec_request::FileExecRequestOneof as Op;
use super::proto::{
    ContainerFileCloseRequest, ContainerFileOpenRequest, ContainerFileReadRequest, ContainerFileWriteRequest,
    ContainerFilesystemExecGetOutputRequest, ContainerFilesystemExecRequest,
};

/// errno of "no such file or directory".
const NOENT: i32 = 2;

#[async_trait]
pub trait FileTransport: Send + Sync + 'static {
    /// `None` when the file does not exist.
    async fn read(&self, task_id: &str, path: &str) -> MResult<Option<Vec<u8>>>;
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
    async fn read(&self, task_id: &str, path: &str) -> MResult<Option<Vec<u8>>> {
        let fd = match self.open(task_id, path, "r").await? {
            Ok(fd) => fd,
            Err((NOENT, _)) => return Ok(None),
            Err(e) => return Err(fs_error("open", path, e)),
        };
        let op = Op::FileReadRequest(ContainerFileReadRequest { file_descriptor: fd.clone(), n: None });
        let data = self.op(task_id, op).await?.1;
        self.close(task_id, &fd).await?;
        data.map(Some).map_err(|e| fs_error("read", path, e))
    }

    async fn write(&self, task_id: &str, path: &str, data: &[u8]) -> MResult<()> {
        let fd = self.open(task_id, path, "w").await?.map_err(|e| fs_error("open", path, e))?;
        let op = Op::FileWriteRequest(ContainerFileWriteRequest { file_descriptor: fd.clone(), data: data.to_vec() });
        let written = self.op(task_id, op).await?.1;
        self.close(task_id, &fd).await?;
        written.map(|_| ()).map_err(|e| fs_error("write", path, e))
    }
}
