//! Resident memory of the current process, from `/proc/self/status`.

use std::fs;
use std::io;

/// Returns the resident set size (`VmRSS`) of this process, in bytes.
///
/// Reads Linux's `/proc`, so it fails with [`io::ErrorKind::NotFound`]
/// elsewhere, and also when the `VmRSS` line is missing or invalid.
pub fn resident_bytes() -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    parse_vm_rss(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "/proc/self/status has no valid VmRSS line; resident memory is only read on Linux",
        )
    })
}

/// Parses the `VmRSS:   1234 kB` line of a status file into bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let kibibytes: u64 = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(kibibytes * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_line_parses_to_bytes() {
        let status = "Name:\tbench\nVmRSS:\t    2048 kB\nThreads:\t1\n";

        assert_eq!(parse_vm_rss(status), Some(2 * 1024 * 1024));
    }

    #[test]
    fn status_without_vm_rss_is_none() {
        assert_eq!(parse_vm_rss("Name:\tbench\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn own_resident_memory_is_positive() {
        let bytes = resident_bytes().expect("VmRSS of this process");

        assert!(bytes > 0);
    }
}
