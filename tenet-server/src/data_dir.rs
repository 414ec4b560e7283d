//! The lock on the data directory, which keeps two servers from running on
//! one SQLite data directory at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use crate::error::Error;

/// File in the data directory that a running server holds locked. It
/// contains the process id of the server that last took the lock.
pub const LOCK_FILE: &str = "lock";

/// An exclusive lock on `<data-dir>/lock`, held until this value is
/// dropped.
///
/// The operating system releases the lock when its process exits, also
/// after a crash, so a lock file left behind never blocks a later start.
// NOTE: tested on a local file system only. On a network file system the
// lock may not exclude a server that runs on another host.
#[derive(Debug)]
pub struct DataDirLock {
    /// The locked file; closing it releases the lock.
    _file: File,
}

impl DataDirLock {
    /// Takes the lock without waiting and writes this process's id into
    /// the file.
    ///
    /// Fails with [`Error::DataDirLocked`], naming the directory and the
    /// process id that the holder wrote, when another process has it
    /// locked.
    pub fn acquire(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(LOCK_FILE);
        let io_error = |action, source| Error::Io {
            action,
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| io_error("open the lock file", source))?;

        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::DataDirLocked {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_error("lock", source)),
        }

        write_holder(&mut file).map_err(|source| io_error("write the process id to", source))?;
        tracing::debug!(path = %path.display(), "locked the data directory");
        Ok(Self { _file: file })
    }
}

/// Replaces the file's contents with this process's id.
fn write_holder(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())
}

/// Reads the process id that the lock's holder wrote; `None` when the file
/// contains none, such as while the holder is still writing it.
fn read_holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");

        let second = DataDirLock::acquire(dir.path());

        match second {
            Err(Error::DataDirLocked {
                dir: locked,
                holder,
            }) => {
                assert_eq!(locked, dir.path());
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected DataDirLocked, got {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).expect("lock after release");
    }
}
