//! The file API (`ContainerFilesystemExec`): the operations themselves and their stored results.
//!
//! Operations run when the exec is created; `…GetOutput` only replays the stored result, which
//! must stay re-readable because the official SDK re-asks up to ten times when it sees an error.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use agent_runtime::sandbox::modal::proto as pb;

/// Largest `output` chunk of a read result.
const CHUNK: usize = 1 << 20;

/// errno-style failure, as Modal's `SystemErrorMessage`.
#[derive(Clone, Debug)]
pub struct FsError {
    pub code: i32,
    pub message: String,
}

impl FsError {
    fn new(code: i32, what: &str) -> FsError {
        FsError { code, message: format!("{what}: {}", strerror(code)) }
    }

    fn from_io(err: &io::Error, what: &str) -> FsError {
        FsError::new(err.raw_os_error().unwrap_or(libc::EIO), what)
    }

    /// An operation on a file descriptor this fake never handed out (or already closed).
    pub fn bad_descriptor(fd: &str) -> FsError {
        FsError::new(libc::EBADF, fd)
    }
}

fn strerror(code: i32) -> String {
    // io::Error's text is strerror plus " (os error N)"; keep only the strerror part.
    let text = io::Error::from_raw_os_error(code).to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Stored outcome of one filesystem exec.
#[derive(Clone, Debug)]
pub struct FsResult {
    pub output: Vec<Vec<u8>>,
    pub error: Option<FsError>,
}

impl FsResult {
    pub fn ok(output: Vec<Vec<u8>>) -> FsResult {
        FsResult { output, error: None }
    }

    pub fn err(error: FsError) -> FsResult {
        FsResult { output: Vec::new(), error: Some(error) }
    }

    /// The single batch `…GetOutput` answers with (the stream ends after it).
    ///
    /// An error batch has `eof` unset: the official SDK checks `eof` before `error` and would
    /// otherwise report success (e.g. for opening a missing file). That is also what the SDK was
    /// observed doing against Modal (ten re-asks after an error, so no `eof` there either).
    pub fn batch(&self) -> pb::FilesystemRuntimeOutputBatch {
        pb::FilesystemRuntimeOutputBatch {
            output: self.output.clone(),
            error: self
                .error
                .as_ref()
                .map(|e| pb::SystemErrorMessage { error_code: e.code, error_message: e.message.clone() }),
            batch_index: 1,
            eof: self.error.is_none(),
        }
    }
}

/// Opens `host` (the translation of the sandbox path `shown`, which error messages use) with a
/// Python-style mode: r, w, a, r+, w+, a+ (a `b` is accepted and ignored).
pub fn open(host: &Path, shown: &str, mode: &str) -> Result<File, FsError> {
    let mut opts = OpenOptions::new();
    match mode.replace('b', "").as_str() {
        "r" => opts.read(true),
        "w" => opts.write(true).create(true).truncate(true),
        "a" => opts.append(true).create(true),
        "r+" => opts.read(true).write(true),
        "w+" => opts.read(true).write(true).create(true).truncate(true),
        "a+" => opts.read(true).append(true).create(true),
        _ => return Err(FsError { code: libc::EINVAL, message: format!("invalid mode: {mode:?}") }),
    };
    // Linux lets a directory be opened read-only; Modal (like Python's open) refuses.
    if host.is_dir() {
        return Err(FsError::new(libc::EISDIR, shown));
    }
    opts.open(host).map_err(|e| FsError::from_io(&e, shown))
}

/// Reads `n` bytes, or to EOF, from the current position, in chunks of at most 1 MiB.
/// An empty read yields no chunks at all.
pub fn read(file: &mut File, n: Option<u32>, fd: &str) -> Result<Vec<Vec<u8>>, FsError> {
    let mut data = Vec::new();
    let res = match n {
        Some(n) => file.take(n.into()).read_to_end(&mut data),
        None => file.read_to_end(&mut data),
    };
    res.map_err(|e| FsError::from_io(&e, fd))?;
    Ok(data.chunks(CHUNK).map(<[u8]>::to_vec).collect())
}

pub fn write(file: &mut File, data: &[u8], fd: &str) -> Result<(), FsError> {
    file.write_all(data).map_err(|e| FsError::from_io(&e, fd))
}

pub fn flush(file: &mut File, fd: &str) -> Result<(), FsError> {
    file.flush().map_err(|e| FsError::from_io(&e, fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_errno() {
        let dir = std::env::temp_dir();
        let missing = dir.join(format!("fake-modal-missing-{}", uuid::Uuid::new_v4()));
        assert_eq!(open(&missing, "/x", "r").unwrap_err().code, 2);
        assert_eq!(open(&dir, "/tmp", "r").unwrap_err().code, 21);
        assert_eq!(open(&dir, "/tmp", "w").unwrap_err().code, 21);
        assert!(open(&missing, "/x", "r").unwrap_err().message.starts_with("/x: No such file"));
    }
}
