//! `results/NAME/report.html`: one self-contained file per run — the verdict, the command, the
//! machine, the charts inline and the table — that opens from disk with no server, no network
//! and no script, and can be attached to an issue or an email.

use std::fmt::Write as _;
use std::path::Path;

/// At most this many rows of a CSV go into the report; the CSV next to it has them all.
const MAX_TABLE_ROWS: usize = 2000;

/// Writes `dir/report.html` from the run's verdict and the `charts` (SVG) and `tables` (CSV)
/// the experiment already wrote into `dir`.
pub fn write(
    dir: &Path,
    title: &str,
    verdict: &[String],
    charts: &[&str],
    tables: &[&str],
) -> Result<(), String> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · c10k-lab</title>\n<style>{STYLE}</style></head>\n<body>\n<h1>{t}</h1>\n",
        t = escape(title)
    );
    let _ = writeln!(
        html,
        "<p class=\"small\">command: <code>{}</code><br>machine: {}</p>",
        escape(&super::harness::command_line()),
        escape(&super::harness::machine())
    );
    html.push_str("<div class=\"verdict\">\n");
    for line in verdict {
        let _ = writeln!(html, "<p>{}</p>", escape(line));
    }
    html.push_str("</div>\n");
    for chart in charts {
        let path = dir.join(chart);
        let svg = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let start = svg.find("<svg").unwrap_or(0);
        let _ = writeln!(html, "<figure>{}</figure>", &svg[start..]);
    }
    for table in tables {
        let path = dir.join(table);
        let csv = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let _ = writeln!(html, "<h2>{}</h2>", escape(table));
        html.push_str(&csv_table(&csv));
    }
    html.push_str("</body></html>\n");
    let path = dir.join("report.html");
    std::fs::write(&path, html).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

const STYLE: &str = "body{font:17px/1.4 system-ui,sans-serif;margin:16px 24px;color:#111}\
h1{font-size:26px}.small{color:#555;font-size:15px}\
.verdict{border-left:6px solid #0072B2;background:#eef5fb;padding:6px 14px}.verdict p{white-space:pre-line}\
figure{margin:12px 0}figure svg{max-width:100%;height:auto}\
table{border-collapse:collapse;font-size:14px;font-variant-numeric:tabular-nums}\
th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}\
th{position:sticky;top:0;background:#fff}";

/// A CSV (no quoted commas: the experiments write none) as an HTML table.
fn csv_table(csv: &str) -> String {
    let mut lines = csv.lines();
    let mut out = String::from("<table>\n<tr>");
    for cell in lines.next().unwrap_or("").split(',') {
        let _ = write!(out, "<th>{}</th>", escape(cell));
    }
    out.push_str("</tr>\n");
    let body: Vec<&str> = lines.collect();
    for line in body.iter().take(MAX_TABLE_ROWS) {
        out.push_str("<tr>");
        for cell in line.split(',') {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    if body.len() > MAX_TABLE_ROWS {
        let _ = writeln!(
            out,
            "<p class=\"small\">the first {MAX_TABLE_ROWS} of {} rows; the CSV has them all</p>",
            body.len()
        );
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_becomes_an_escaped_table() {
        let t = csv_table("a,b\n1,<2>\n");
        assert!(t.contains("<th>a</th><th>b</th>"));
        assert!(t.contains("<td>1</td><td>&lt;2&gt;</td>"));
    }
}
