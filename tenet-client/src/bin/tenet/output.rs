//! Output of `tenet`: aligned tables for people, JSON for scripts.

use std::io::{self, Write};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// Formats a time as RFC 3339.
pub fn time(value: OffsetDateTime) -> String {
    value.format(&Rfc3339).unwrap_or_else(|_| value.to_string())
}

/// Formats an optional value, with `-` for none.
pub fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}
