//! What a figure of the report is: its chart, its one-line reading and the rows it was drawn
//! from; and a listing, rows shown as an HTML table.

use std::collections::BTreeMap;

use crate::report::chart::Series;
use crate::report::data::Frame;

/// One figure: its chart, its reading, and the rows it was drawn from (the page's JSON island).
#[derive(Debug, Clone)]
pub struct Figure {
    /// Its key in the JSON island and its HTML id.
    pub id: &'static str,
    /// The curated table it reads.
    pub table: &'static str,
    pub svg: String,
    pub reading: String,
    pub data: Frame,
}

/// A table of rows shown as HTML (the open close items).
#[derive(Debug, Clone)]
pub struct Listing {
    pub id: &'static str,
    pub table: &'static str,
    pub caption: String,
    pub data: Frame,
}

/// The parameters every query may bind: `$month`, the last month shown.
pub type Params = BTreeMap<&'static str, String>;

/// The distinct values of `column`, in first-seen order.
pub fn distinct(data: &Frame, column: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in data.column(column) {
        if !out.iter().any(|o| o == c.text()) {
            out.push(c.text().to_string());
        }
    }
    out
}

/// The series `name`, from column `column` of `data`.
pub fn series(data: &Frame, column: &str, name: &str) -> Series {
    Series {
        name: name.to_string(),
        values: data.numbers(column),
    }
}
