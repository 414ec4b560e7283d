//! Secret files in the data directory: the generated pepper and admin token.
//!
//! A file contains the secret's text and a trailing newline, so that
//! `$(cat FILE)` in a shell gives the secret. Files are created with mode
//! 0600 in the `open` call itself, so they are never readable by others,
//! not even between creation and a later `chmod`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use zeroize::Zeroizing;

/// Creates the data directory with mode 0700 unless it exists. A path
/// that exists as a file fails with "not a directory", rather than the
/// bare "File exists" of the directory call.
pub fn create_dir(path: &Path) -> io::Result<()> {
    if fs::metadata(path).is_ok_and(|metadata| !metadata.is_dir()) {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "the path exists and is not a directory; pass a directory or a path \
             that does not exist yet",
        ));
    }
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Writes a new secret file with mode 0600, failing with
/// [`io::ErrorKind::AlreadyExists`] if the file exists.
///
/// The file and its directory entry are flushed to disk before this
/// returns, so a secret that the store already depends on survives a crash.
pub fn create(path: &Path, secret: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;

    let mut contents = Zeroizing::new(String::with_capacity(secret.len() + 1));
    contents.push_str(secret);
    contents.push('\n');
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;

    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a secret file, without the trailing line break; `None` if the
/// file does not exist.
///
/// Logs a warning when group or others may read the file.
pub fn read(path: &Path) -> io::Result<Option<Zeroizing<String>>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };

    warn_if_exposed(path);

    let secret = text.trim_end_matches(['\n', '\r']);
    Ok(Some(Zeroizing::new(secret.to_owned())))
}

/// Logs a warning when a secret file exists and group or others may read
/// it. A file that is missing or cannot be inspected is left to the
/// caller's own read, if any.
pub fn warn_if_exposed(path: &Path) {
    let Ok(metadata) = fs::metadata(path) else {
        return;
    };
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "secret file is readable by group or others; run chmod 600 on it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_file_has_mode_0600_and_reads_back() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("secret");

        create(&path, "s3cret").expect("file is created");

        let mode = fs::metadata(&path).expect("metadata").mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_to_string(&path).expect("readable"), "s3cret\n");
        assert_eq!(
            read(&path)
                .expect("readable")
                .as_deref()
                .map(String::as_str),
            Some("s3cret")
        );
    }

    #[test]
    fn create_never_overwrites() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("secret");
        create(&path, "first").expect("file is created");

        let second = create(&path, "second");

        assert_eq!(
            second.expect_err("must fail").kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read_to_string(&path).expect("readable"), "first\n");
    }

    #[test]
    fn missing_file_reads_as_none() {
        let dir = tempfile::tempdir().expect("temporary directory");

        let read = read(&dir.path().join("absent")).expect("no error");

        assert!(read.is_none());
    }
}
