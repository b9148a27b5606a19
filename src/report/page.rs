//! The report as one self-contained HTML page: inline CSS and SVG, a Content-Security-Policy that
//! forbids every fetch, the rows behind each figure in a JSON island
//! (`<script type="application/json" id="report-data">`, never executed), and a footer naming
//! each table read with its Delta version.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::report::data::{Frame, TableVersion};
use crate::report::figure::{Figure, Listing};

/// One section of the page: a heading, its figures and its listings.
pub struct Section {
    pub heading: &'static str,
    pub figures: Vec<Figure>,
    pub listings: Vec<Listing>,
}

/// Everything the page shows.
pub struct Page {
    pub title: String,
    /// The last month shown (`--month`), or `None` for everything published.
    pub month: Option<String>,
    pub generated_at: DateTime<Utc>,
    pub sections: Vec<Section>,
    pub tables: Vec<TableVersion>,
}

const STYLE: &str = "
body{font-family:sans-serif;margin:0 auto;max-width:1000px;padding:16px 24px;color:#1a1a1a;background:#fff}
h1{font-size:26px;margin:8px 0 4px}
h2{font-size:20px;margin:32px 0 8px;border-bottom:2px solid #0072b2;padding-bottom:4px}
.meta{color:#555;margin:0 0 16px}
figure{margin:16px 0 24px}
figure svg{max-width:100%;height:auto;display:block}
p.reading{margin:4px 0 0;font-size:15px}
p.reading b{color:#0072b2}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:bold;padding:4px 0}
footer{margin-top:40px;color:#555;font-size:13px;border-top:1px solid #ccc;padding-top:8px}
";

/// Escape text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn rows_json(frame: &Frame) -> Value {
    json!({ "columns": frame.columns, "rows": frame.texts() })
}

/// The JSON island's text: every figure's and listing's rows as exact text, the tables read and
/// their versions. `<` is written as `\u003c`, so nothing in it can close the script element.
pub fn island(page: &Page) -> String {
    let mut figures = serde_json::Map::new();
    let mut listings = serde_json::Map::new();
    for s in &page.sections {
        for f in &s.figures {
            let mut v = rows_json(&f.data);
            v["table"] = json!(f.table);
            v["reading"] = json!(f.reading);
            figures.insert(f.id.to_string(), v);
        }
        for l in &s.listings {
            let mut v = rows_json(&l.data);
            v["table"] = json!(l.table);
            listings.insert(l.id.to_string(), v);
        }
    }
    let doc = json!({
        "title": page.title,
        "month": page.month,
        "generated_at": page.generated_at.to_rfc3339(),
        "tables": page.tables,
        "figures": figures,
        "listings": listings,
    });
    doc.to_string().replace('<', "\\u003c")
}

fn listing_html(l: &Listing) -> String {
    let mut out = format!(
        "<table id=\"{}\"><caption>{} <small>(from {})</small></caption><tr>",
        l.id,
        escape(&l.caption),
        escape(l.table)
    );
    for c in &l.data.columns {
        out.push_str(&format!("<th>{}</th>", escape(c)));
    }
    out.push_str("</tr>");
    for row in &l.data.rows {
        out.push_str("<tr>");
        for cell in row {
            let class = if cell.number.is_some() {
                " class=\"num\""
            } else {
                ""
            };
            out.push_str(&format!("<td{class}>{}</td>", escape(cell.text())));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// The whole page.
pub fn render(page: &Page) -> String {
    let mut body = String::new();
    for s in &page.sections {
        body.push_str(&format!("<h2>{}</h2>\n", escape(s.heading)));
        for f in &s.figures {
            body.push_str(&format!(
                "<figure id=\"{}\">{}<p class=\"reading\"><b>What this says:</b> {}</p></figure>\n",
                f.id,
                f.svg,
                escape(&f.reading)
            ));
        }
        for l in &s.listings {
            body.push_str(&listing_html(l));
            body.push('\n');
        }
    }
    let tables: Vec<String> = page
        .tables
        .iter()
        .map(|t| format!("{} v{}", escape(&t.name), t.version))
        .collect();
    let scope = match &page.month {
        Some(m) => format!("months through {}", escape(m)),
        None => "every month published".to_string(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body>\n\
<h1>{title}</h1><p class=\"meta\">Curated tables, {scope}. Generated {generated}.</p>\n{body}\
<footer>Every number on this page comes from these curated tables, read at the Delta version shown: {tables}. \
The rows behind each figure are in the page's <code>report-data</code> JSON.</footer>\n\
<script type=\"application/json\" id=\"report-data\">{island}</script>\n</body></html>\n",
        title = escape(&page.title),
        generated = page.generated_at.format("%Y-%m-%d %H:%M UTC"),
        tables = tables.join(", "),
        island = island(page),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::data::Cell;

    fn page() -> Page {
        let data = Frame {
            columns: vec!["name".into(), "amount".into()],
            rows: vec![vec![
                Cell {
                    text: Some("</script><b>x".into()),
                    number: None,
                },
                Cell {
                    text: Some("12.30".into()),
                    number: Some(12.3),
                },
            ]],
        };
        Page {
            title: "Report".into(),
            month: Some("2026-10".into()),
            generated_at: DateTime::parse_from_rfc3339("2026-11-02T07:00:00Z")
                .unwrap()
                .to_utc(),
            sections: vec![Section {
                heading: "Money",
                figures: vec![Figure {
                    id: "f",
                    table: "t",
                    svg: "<svg></svg>".into(),
                    reading: "a & b".into(),
                    data: data.clone(),
                }],
                listings: vec![Listing {
                    id: "l",
                    table: "t",
                    caption: "c".into(),
                    data,
                }],
            }],
            tables: vec![TableVersion {
                name: "t".into(),
                version: 7,
            }],
        }
    }

    #[test]
    fn the_island_keeps_exact_text_and_cannot_close_its_script() {
        let html = render(&page());
        let start = html.find("id=\"report-data\">").unwrap() + 17;
        let end = start + html[start..].find("</script>").unwrap();
        let doc: Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(doc["figures"]["f"]["rows"][0][0], "</script><b>x");
        assert_eq!(doc["figures"]["f"]["rows"][0][1], "12.30");
        assert_eq!(doc["tables"][0]["version"], 7);
        assert_eq!(doc["month"], "2026-10");
        // The listing's text is escaped in the HTML table.
        assert!(html.contains("<td>&lt;/script&gt;&lt;b&gt;x</td><td class=\"num\">12.30</td>"));
        assert!(html.contains("What this says:</b> a &amp; b"));
        assert!(html.contains("t v7"));
    }
}
