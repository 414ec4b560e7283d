//! Output of `tenet`: aligned tables for people, JSON for scripts.

use std::io::{self, Write};

use serde::Serialize;
use time::OffsetDateTime;

/// Writes `value` as pretty JSON and a line break.
pub fn json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Writes rows under a header, each column as wide as its widest cell.
pub fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let header: Vec<String> = header.iter().map(|cell| (*cell).to_owned()).collect();
    write_row(out, &widths, &header)?;
    for row in rows {
        write_row(out, &widths, row)?;
    }
    Ok(())
}

fn write_row(out: &mut impl Write, widths: &[usize], row: &[String]) -> io::Result<()> {
    let last = row.len().saturating_sub(1);
    for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
        if index == last {
            write!(out, "{cell}")?;
        } else {
            let padding = width - cell.chars().count();
            write!(out, "{cell}{:padding$}  ", "")?;
        }
    }
    writeln!(out)
}

/// Writes `label: value` lines, with the values aligned.
pub fn fields(out: &mut impl Write, pairs: &[(&str, String)]) -> io::Result<()> {
    let width = pairs
        .iter()
        .map(|(label, _)| label.len() + 1)
        .max()
        .unwrap_or(0);
    for (label, value) in pairs {
        writeln!(out, "{:width$} {value}", format!("{label}:"))?;
    }
    Ok(())
}

/// Formats a time as the API sends it: RFC 3339 in UTC with three
/// fractional digits, so that columns of times align and sort as text.
pub fn time(value: OffsetDateTime) -> String {
    tenet_core::timestamp::format(value)
}

/// Formats an optional value, with `-` for none.
pub fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_three_fractional_digits() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_796_446_692_120_000_000)
            .expect("valid time");
        let whole = OffsetDateTime::from_unix_timestamp(1_798_761_600).expect("valid time");

        assert_eq!(time(at), "2026-12-05T04:58:12.120Z");
        assert_eq!(time(whole), "2027-01-01T00:00:00.000Z");
    }
}
