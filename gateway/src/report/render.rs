//! The report as a terminal table (aligned, with a totals row; colour only when asked) or CSV.
//!
//! Both read the same [`Report`] the JSON form prints, so the three never disagree: the table
//! rounds for reading (tokens with separators, dollars to the cent), CSV keeps the API's numbers
//! exactly as JSON writes them.

use serde_json::Value;

use super::{Kind, Report};

/// The numbers every row has, in table order: (CSV/API name, table header).
const NUMBERS: [(&str, &str); 6] = [
    ("input", "Input"),
    ("output", "Output"),
    ("cacheWrite", "Cache write"),
    ("cacheRead", "Cache read"),
    ("totalTokens", "Total tokens"),
    ("totalCost", "Cost (USD)"),
];

/// Every number of OpenClaw's totals, in the API's order: the CSV columns.
pub const TOTALS_FIELDS: [&str; 11] = [
    "input",
    "output",
    "cacheRead",
    "cacheWrite",
    "totalTokens",
    "totalCost",
    "inputCost",
    "outputCost",
    "cacheReadCost",
    "cacheWriteCost",
    "missingCostEntries",
];

/// Longest text cell in the table; longer ones are cut with an ellipsis (never in CSV or JSON).
const MAX_TEXT: usize = 48;

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1234.5` → `$1,234.50`.
pub fn dollars(v: f64) -> String {
    let cents = (v * 100.0).round();
    let sign = if cents < 0.0 { "-" } else { "" };
    let cents = cents.abs() as u64;
    format!("{sign}${}.{:02}", thousands(cents / 100), cents % 100)
}

/// The numbers of a row: its `totals` object (API's byModel/byAgent shape) or the row itself.
pub fn numbers(row: &Value) -> &Value {
    row.get("totals").filter(|t| t.is_object()).unwrap_or(row)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The label columns of a report: (CSV/JSON name, table header).
fn labels(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::Daily => &[("date", "Date")],
        Kind::Weekly => &[("week", "Week of"), ("startDate", "From"), ("endDate", "To")],
        Kind::Monthly => &[("month", "Month")],
        Kind::Session => &[
            ("session", "Session"),
            ("agentId", "Agent"),
            ("model", "Model"),
            ("lastActivity", "Last activity"),
        ],
        Kind::Model => &[("provider", "Provider"), ("model", "Model"), ("count", "Messages")],
        Kind::Agent => &[("agentId", "Agent")],
    }
}

/// A label cell for the table.
fn label_cell(report: &Report, name: &str, row: &Value) -> String {
    match (report.kind, name) {
        (Kind::Session, "session") => {
            let label = row["label"].as_str().filter(|l| !l.is_empty());
            text(label.map_or(&row["key"], |_| &row["label"]))
        }
        (Kind::Session, "lastActivity") => {
            let zone = jiff::tz::TimeZone::get(&report.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
            row["lastActivity"]
                .as_i64()
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map(|t| zone.to_datetime(t).strftime("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default()
        }
        (Kind::Model, "count") => row["count"].as_u64().map(thousands).unwrap_or_default(),
        _ => text(&row[name]),
    }
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(MAX_TEXT - 1).collect();
    out.push('…');
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}

/// ANSI styles, or nothing.
struct Paint(bool);

impl Paint {
    fn style(&self, code: &str, text: &str) -> String {
        if self.0 { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }
}

/// The aligned table, a totals row, and the report's warnings under it.
pub fn table(report: &Report, colour: bool) -> String {
    let paint = Paint(colour);
    let kind = report.kind;
    let mut headers: Vec<(&str, Align)> = labels(kind)
        .iter()
        .map(|(name, header)| (*header, if *name == "count" { Align::Right } else { Align::Left }))
        .collect();
    headers.extend(NUMBERS.iter().map(|(_, h)| (*h, Align::Right)));
    let number_cells = |values: &Value| -> Vec<String> {
        NUMBERS
            .iter()
            .map(|(name, _)| match *name {
                "totalCost" => dollars(values[*name].as_f64().unwrap_or(0.0)),
                _ => thousands(values[*name].as_u64().unwrap_or(0)),
            })
            .collect()
    };
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|row| {
            let mut cells: Vec<String> =
                labels(kind).iter().map(|(name, _)| cut(&label_cell(report, name, row))).collect();
            cells.extend(number_cells(numbers(row)));
            cells
        })
        .collect();
    let mut total: Vec<String> = vec![String::new(); labels(kind).len()];
    total[0] = "Total".to_owned();
    total.extend(number_cells(&report.totals));

    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for cells in rows.iter().chain([&total]) {
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(&headers)
            .map(|((cell, width), (_, align))| {
                let pad = " ".repeat(width - cell.chars().count());
                if *align == Align::Right { format!("{pad}{cell}") } else { format!("{cell}{pad}") }
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let rule: String = widths.iter().map(|w| "─".repeat(*w)).collect::<Vec<_>>().join("  ");

    let mut out = String::new();
    out.push_str(&paint.style("1", &report.title()));
    out.push('\n');
    let header_cells: Vec<String> = headers.iter().map(|(h, _)| (*h).to_owned()).collect();
    out.push_str(&paint.style("36", &line(&header_cells)));
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    if rows.is_empty() {
        out.push_str(&paint.style("2", "(no usage in this range)"));
        out.push('\n');
    }
    for cells in &rows {
        out.push_str(&line(cells));
        out.push('\n');
    }
    out.push_str(&rule);
    out.push('\n');
    out.push_str(&paint.style("1;33", &line(&total)));
    out.push('\n');
    if let Some(note) = report.footnote() {
        out.push_str(&note);
        out.push('\n');
    }
    for warning in &report.warnings {
        out.push_str(&paint.style("33", &format!("warning: {warning}")));
        out.push('\n');
    }
    out
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// One header line and one line per row: the label columns, then every number of the API's
/// totals as the API writes it. No totals line (the JSON has them).
pub fn csv(report: &Report) -> String {
    let kind = report.kind;
    let label_names: Vec<&str> = labels(kind)
        .iter()
        .map(|(name, _)| match (kind, *name) {
            (Kind::Session, "session") => "key",
            (Kind::Session, "lastActivity") => "lastActivity",
            _ => name,
        })
        .collect();
    let mut out = String::new();
    let header: Vec<&str> = label_names.iter().copied().chain(TOTALS_FIELDS).collect();
    out.push_str(&header.join(","));
    out.push('\n');
    for row in &report.rows {
        let values = numbers(row);
        let cells: Vec<String> = label_names
            .iter()
            .map(|name| csv_field(&text(&row[*name])))
            .chain(TOTALS_FIELDS.iter().map(|name| match &values[*name] {
                Value::Null => "0".to_owned(),
                v => v.to_string(),
            }))
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(2_782_715), "2,782,715");
        assert_eq!(dollars(3.89421041), "$3.89");
        assert_eq!(dollars(1234.5), "$1,234.50");
        assert_eq!(dollars(0.004), "$0.00");
        assert_eq!(dollars(0.005), "$0.01");
        assert_eq!(dollars(-2.5), "-$2.50");
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("main"), "main");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cut(&"x".repeat(60)).chars().count(), MAX_TEXT);
    }
}
