//! The data directory of the SQLite store: the lock that keeps two servers
//! from running on one directory at once, and the modes of the directory
//! and the database files.
//!
//! The database contains tenant names, key metadata, key digests and the
//! audit trail, so its files get mode 0600 like the secret files, and an
//! existing directory that group or others may read gets a warning.

use std::fs::{self, File, OpenOptions, Permissions, TryLockError};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

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

/// Fails with [`Error::DataDirLocked`] when another process holds the lock
/// on `dir`, like [`DataDirLock::acquire`], but creates and writes no file.
///
/// A missing lock file passes, and so does one that cannot be opened or
/// locked for another reason, which [`DataDirLock::acquire`] reports. A
/// free lock is taken and released at once, so a start that tries to take
/// it at that moment fails as if a server held it.
pub fn check_not_locked(dir: &Path) -> Result<(), Error> {
    let Ok(mut file) = File::open(dir.join(LOCK_FILE)) else {
        return Ok(());
    };
    match file.try_lock() {
        Err(TryLockError::WouldBlock) => Err(Error::DataDirLocked {
            dir: dir.to_path_buf(),
            holder: read_holder(&mut file),
        }),
        Ok(()) | Err(TryLockError::Error(_)) => Ok(()),
    }
}

/// Suffixes of the database file and of the files that SQLite keeps next
/// to it in WAL mode.
const DATABASE_FILE_SUFFIXES: [&str; 3] = ["", "-wal", "-shm"];

/// Logs a warning, naming the `chmod` that fixes it, when group or others
/// have any access to the data directory. The directory keeps its mode,
/// because an operator may have chosen it for a mounted volume.
pub fn warn_if_exposed(dir: &Path) -> Result<(), Error> {
    let metadata = fs::metadata(dir).map_err(|source| Error::Io {
        action: "read the mode of",
        path: dir.to_path_buf(),
        source,
    })?;
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %dir.display(),
            mode = format_args!("{mode:o}"),
            "the data directory is accessible to group or others; run chmod 700 on it"
        );
    }
    Ok(())
}

/// Creates the SQLite database file with mode 0600 unless it exists, and
/// sets mode 0600 on the database file and its `-wal` and `-shm` files
/// where group or others have access.
///
/// Creating the file first means that SQLite never creates it with the
/// umask's mode, and SQLite gives the `-wal` and `-shm` files it creates
/// the mode of the database file. A file whose mode cannot be changed,
/// such as one that another user owns, gets a warning naming the `chmod`
/// that fixes it, and the server starts anyway.
pub fn restrict_database_files(database: &Path) -> Result<(), Error> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(database)
        .map_err(|source| Error::Io {
            action: "create the database file",
            path: database.to_path_buf(),
            source,
        })?;

    for suffix in DATABASE_FILE_SUFFIXES {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        restrict_file(&PathBuf::from(name));
    }
    Ok(())
}

/// Sets mode 0600 on `path` when group or others have access, and logs
/// what it did. A missing file is skipped.
fn restrict_file(path: &Path) {
    let mode = match fs::metadata(path) {
        Ok(metadata) => metadata.mode() & 0o777,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return,
        Err(err) => {
            tracing::warn!(
                path = %path.display(),
                error = %err,
                "failed to read the mode of a database file; run chmod 600 on it"
            );
            return;
        }
    };
    if mode & 0o077 == 0 {
        return;
    }
    match fs::set_permissions(path, Permissions::from_mode(0o600)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "the database file was accessible to group or others; set its mode to 600"
        ),
        Err(err) => tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            error = %err,
            "the database file is accessible to group or others and its mode could not be \
             changed; run chmod 600 on it"
        ),
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

    #[test]
    fn lock_check_names_the_holder_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("temporary directory");

        check_not_locked(dir.path()).expect("no lock file");
        assert!(!dir.path().join(LOCK_FILE).exists());

        let lock = DataDirLock::acquire(dir.path()).expect("lock");
        match check_not_locked(dir.path()) {
            Err(Error::DataDirLocked { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected DataDirLocked, got {other:?}"),
        }

        drop(lock);
        check_not_locked(dir.path()).expect("released lock");
        DataDirLock::acquire(dir.path()).expect("lock after the check");
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("file exists").mode() & 0o777
    }

    #[test]
    fn missing_database_file_is_created_0600() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let database = dir.path().join("tenet.db");

        restrict_database_files(&database).expect("files are restricted");

        assert_eq!(mode(&database), 0o600);
        assert_eq!(fs::metadata(&database).expect("file exists").len(), 0);
        assert!(!dir.path().join("tenet.db-wal").exists());
    }

    #[test]
    fn readable_database_files_become_0600() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let database = dir.path().join("tenet.db");
        for name in ["tenet.db", "tenet.db-wal", "tenet.db-shm", "other"] {
            let path = dir.path().join(name);
            fs::write(&path, b"contents").expect("file is written");
            fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("mode is set");
        }

        restrict_database_files(&database).expect("files are restricted");

        for name in ["tenet.db", "tenet.db-wal", "tenet.db-shm"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
        }
        assert_eq!(mode(&dir.path().join("other")), 0o644);
        assert_eq!(fs::read(&database).expect("readable"), b"contents");
    }
}
