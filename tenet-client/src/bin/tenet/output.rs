//! Output of `tenet`: aligned tables for people, JSON for scripts.

use std::io::{self, Write};

use serde::Serialize;
use time::OffsetDateTime;
use unicode_width::UnicodeWidthStr as _;

/// Writes `value` as pretty JSON and a line break.
pub fn json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Writes rows under a header, each column as wide as its widest cell.
///
/// Widths are terminal columns, so that names with wide characters (most
/// CJK characters and emoji take two columns) keep the columns aligned.
pub fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.width()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.width());
        }
    }

    let header: Vec<String> = header.iter().map(|cell| (*cell).to_owned()).collect();
    write_row(out, &widths, &header)?;
    for row in rows {
        write_row(out, &widths, row)?;
    }
    Ok(())
}

/// Writes one row, with no spaces after its last cell even when that cell
/// is empty.
fn write_row(out: &mut impl Write, widths: &[usize], row: &[String]) -> io::Result<()> {
    let mut line = String::new();
    for (cell, width) in row.iter().zip(widths) {
        line.push_str(cell);
        let padding = width - cell.width();
        line.extend(std::iter::repeat_n(' ', padding + 2));
    }
    writeln!(out, "{}", line.trim_end())
}

/// Writes `label: value` lines, with the values aligned.
pub fn fields(out: &mut impl Write, pairs: &[(&str, String)]) -> io::Result<()> {
    let width = pairs
        .iter()
        .map(|(label, _)| label.len() + 1)
        .max()
        .unwrap_or(0);
    for (label, value) in pairs {
        let line = format!("{:width$} {value}", format!("{label}:"));
        writeln!(out, "{}", line.trim_end())?;
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
    fn wide_characters_keep_columns_aligned() {
        let rows = vec![
            vec!["東京".to_owned(), "a".to_owned()],
            vec!["ab".to_owned(), "b".to_owned()],
        ];
        let mut out = Vec::new();

        table(&mut out, &["NAME", "ID"], &rows).expect("written");

        let text = String::from_utf8(out).expect("UTF-8");
        // The terminal column where the last cell of each line starts.
        let columns: Vec<usize> = text
            .lines()
            .map(|line| line[..line.rfind(' ').expect("a separator") + 1].width())
            .collect();
        assert_eq!(columns, [6, 6, 6], "{text}");
    }

    #[test]
    fn lines_end_without_spaces() {
        let mut out = Vec::new();

        table(
            &mut out,
            &["NAME", "SCOPES"],
            &[vec!["a".to_owned(), String::new()]],
        )
        .expect("written");
        fields(
            &mut out,
            &[("name", "a".to_owned()), ("scopes", String::new())],
        )
        .expect("written");

        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(text, "NAME  SCOPES\na\nname:   a\nscopes:\n");
    }

    #[test]
    fn times_keep_three_fractional_digits() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_796_446_692_120_000_000)
            .expect("valid time");
        let whole = OffsetDateTime::from_unix_timestamp(1_798_761_600).expect("valid time");

        assert_eq!(time(at), "2026-12-05T04:58:12.120Z");
        assert_eq!(time(whole), "2027-01-01T00:00:00.000Z");
    }
}
