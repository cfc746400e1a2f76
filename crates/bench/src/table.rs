//! Markdown tables and number formatting for the report.

use std::fmt::Write as _;

/// One markdown table with a heading and optional notes under it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// `### title` above the table.
    pub title: String,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows; a short row is padded with empty cells.
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table (method, caveats).
    pub notes: Vec<String>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(title: &str, headers: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            ..Table::default()
        }
    }

    /// Append a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Append a note line.
    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// The table as GitHub-flavoured markdown. `|` inside cells is escaped.
    pub fn render(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|");
        let mut out = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(out, "### {}\n", self.title);
        }
        let w = self.headers.len().max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let line = |cells: &[String]| {
            let mut l = String::from("|");
            for i in 0..w {
                let _ = write!(l, " {} |", cell(cells.get(i).map_or("", String::as_str)));
            }
            l
        };
        let _ = writeln!(out, "{}", line(&self.headers));
        let _ = writeln!(out, "|{}", "---|".repeat(w));
        for r in &self.rows {
            let _ = writeln!(out, "{}", line(r));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "{n}");
            }
        }
        out
    }
}

/// Milliseconds with sub-ms resolution: `0.183`, `12.4`, `123`.
pub fn fmt_ms(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.3}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Microseconds from seconds: `12.3 µs`, `1,234 µs`; below 1 µs, nanoseconds (`86 ns`).
pub fn fmt_us(secs: f64) -> String {
    let us = secs * 1e6;
    if us < 1.0 {
        format!("{:.0} ns", us * 1e3)
    } else if us < 100.0 {
        format!("{us:.1} µs")
    } else {
        format!("{} µs", thousands(us.round() as u64))
    }
}

/// An integer with `,` thousands separators.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A ratio `a / b` as `38.2×`; `–` if either side is missing or `b` is zero.
pub fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => {
            let r = a / b;
            if r >= 100.0 {
                format!("{r:.0}×")
            } else {
                format!("{r:.1}×")
            }
        }
        _ => "–".into(),
    }
}

/// `PASS` or `MISS`.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_github_markdown_with_padding_and_escapes() {
        let mut t = Table::new("Latency", &["daemon", "median"]);
        t.row(vec!["knockd".into(), "38.0".into()]);
        t.row(vec!["a|b".into()]);
        t.note("N=30");
        assert_eq!(
            t.render(),
            "### Latency\n\n| daemon | median |\n|---|---|\n| knockd | 38.0 |\n| a\\|b |  |\n\nN=30\n"
        );
    }

    #[test]
    fn formats_numbers_for_humans() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_ms(0.18349), "0.183");
        assert_eq!(fmt_ms(38.04), "38.0");
        assert_eq!(fmt_ms(123.5), "124");
        assert_eq!(fmt_ratio(Some(38.0), Some(0.2)), "190×");
        assert_eq!(fmt_ratio(Some(3.0), Some(2.0)), "1.5×");
        assert_eq!(fmt_ratio(Some(3.0), None), "–");
        assert_eq!(fmt_us(0.000_012_34), "12.3 µs");
        assert_eq!(fmt_us(0.001_234), "1,234 µs");
        assert_eq!(fmt_us(0.000_000_086), "86 ns");
    }
}
