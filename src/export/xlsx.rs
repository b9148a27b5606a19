//! A month of the reconciliation as one XLSX workbook: a summary sheet (every program x cost
//! center row, totals by program and by cost center, variance highlighted) and a detail sheet
//! (every ledger entry with its mapping), currency formats, widths fitted to the values.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Decimal128Array, RecordBatch,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type};
use datafusion::arrow::util::display::array_value_to_string;
use rust_xlsxwriter::{Color, ExcelDateTime, Format, FormatBorder, Workbook, Worksheet, XlsxError};

use crate::error::{Error, Result};
use crate::export::{MonthExport, create_dir, read_month, write_atomically};
use crate::plan::workspace::Workspace;
use crate::values::Month;

/// Write `<table>_<month>.xlsx` into `dir`: a summary sheet (every program x cost center row,
/// totals by program and by cost center, variance highlighted) and a detail sheet (every ledger
/// entry reconciled in the month with its mapping).
pub async fn export_month_xlsx(
    ws: &Workspace,
    table: &str,
    month: &Month,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let m = read_month(ws, table, month).await?;
    create_dir(dir)?;
    let path = dir.join(format!("{table}_{}.xlsx", m.month));
    let currency = reporting_currency(&m.summary).unwrap_or_else(|| "USD".into());
    let bytes = workbook(&m, &currency).map_err(|e| Error::Export {
        path: path.clone(),
        message: e.to_string(),
        source: Some(Box::new(e)),
    })?;
    write_atomically(&path, &bytes)?;
    Ok(vec![path])
}

/// Any table's rows as a one-sheet workbook: a title row, then the rows with typed cells (money
/// in the table's `reporting_currency` when it has one), an autofilter and fitted widths.
pub(crate) fn table_workbook(
    title: &str,
    batches: &[RecordBatch],
) -> std::result::Result<Vec<u8>, XlsxError> {
    let s = Styles::new(&reporting_currency(batches).unwrap_or_default());
    let mut wb = Workbook::new();
    let sheet = wb.add_worksheet();
    sheet.set_name("Data")?;
    sheet.write_string_with_format(0, 0, title, &s.title)?;
    let mut widths = Widths::default();
    write_table(sheet, &s, 2, batches, &|_, _, _| None, &mut widths)?;
    finish_sheet(sheet, &widths)?;
    wb.save_to_buffer()
}

fn reporting_currency(batches: &[RecordBatch]) -> Option<String> {
    let b = batches.iter().find(|b| b.num_rows() > 0)?;
    let i = b.schema().index_of("reporting_currency").ok()?;
    array_value_to_string(b.column(i), 0).ok()
}

/// Cell formats of the workbook.
struct Styles {
    header: Format,
    title: Format,
    money: Format,
    /// An amount in the entry's own currency (named in its `currency` column).
    amount: Format,
    rate: Format,
    integer: Format,
    percent: Format,
    date: Format,
    text: Format,
    over: Format,
    under: Format,
    total_label: Format,
    total_money: Format,
}

impl Styles {
    fn new(currency: &str) -> Styles {
        // Accounting style: thousands separators, two decimals, negatives in parentheses.
        let money = format!("#,##0.00 \"{currency}\";[Red](#,##0.00) \"{currency}\"");
        Styles {
            header: Format::new()
                .set_bold()
                .set_background_color(Color::RGB(0xD9E1F2))
                .set_border_bottom(FormatBorder::Thin),
            title: Format::new().set_bold().set_font_size(14),
            money: Format::new().set_num_format(&money),
            amount: Format::new().set_num_format("#,##0.00;[Red](#,##0.00)"),
            rate: Format::new().set_num_format("0.00000000"),
            integer: Format::new().set_num_format("0"),
            percent: Format::new().set_num_format("0.00\"%\""),
            date: Format::new().set_num_format("yyyy-mm-dd"),
            text: Format::new(),
            over: Format::new()
                .set_num_format(&money)
                .set_background_color(Color::RGB(0xFFC7CE))
                .set_font_color(Color::RGB(0x9C0006)),
            under: Format::new()
                .set_num_format(&money)
                .set_background_color(Color::RGB(0xFFEB9C))
                .set_font_color(Color::RGB(0x9C5700)),
            total_label: Format::new().set_bold().set_border_top(FormatBorder::Thin),
            total_money: Format::new()
                .set_bold()
                .set_num_format(&money)
                .set_border_top(FormatBorder::Thin),
        }
    }
}

/// Money columns in the entry's own currency rather than the reporting currency.
const ENTRY_CURRENCY_COLUMNS: [&str; 2] = ["amount", "planned_amount"];

/// A Decimal128 cell as f64 for Excel (which stores every number as a double: amounts below
/// 10^13 keep every cent).
fn decimal_f64(a: &Decimal128Array, row: usize) -> f64 {
    let scale = a.scale() as i32;
    a.value(row) as f64 / 10f64.powi(scale)
}

/// Write one batch-set as a table at `first_row`, typed cells; returns the next free row.
/// `highlight` picks a format for a money cell from its row (variance highlighting).
fn write_table(
    sheet: &mut Worksheet,
    s: &Styles,
    first_row: u32,
    batches: &[RecordBatch],
    highlight: &dyn Fn(&RecordBatch, usize, &str) -> Option<Format>,
    widths: &mut Widths,
) -> std::result::Result<u32, XlsxError> {
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        return Ok(first_row);
    };
    for (c, f) in schema.fields().iter().enumerate() {
        sheet.write_string_with_format(first_row, c as u16, f.name(), &s.header)?;
        widths.see(c as u16, f.name().len() + 2);
    }
    let mut row = first_row + 1;
    for b in batches {
        for r in 0..b.num_rows() {
            for (c, f) in schema.fields().iter().enumerate() {
                let col = c as u16;
                let a = b.column(c);
                if a.is_null(r) {
                    continue;
                }
                // Displayed width: the value, plus separators and the currency code for money.
                let shown = array_value_to_string(a, r).map(|t| t.len()).unwrap_or(8);
                let extra = match a.data_type() {
                    DataType::Decimal128(_, 2) => 10,
                    _ => 0,
                };
                widths.see(col, shown + extra);
                match a.data_type() {
                    DataType::Decimal128(_, scale) => {
                        let d = a
                            .as_any()
                            .downcast_ref::<Decimal128Array>()
                            .expect("decimal");
                        let fmt = if f.name().ends_with("_pct") {
                            s.percent.clone()
                        } else if *scale > 2 {
                            s.rate.clone()
                        } else if ENTRY_CURRENCY_COLUMNS.contains(&f.name().as_str()) {
                            s.amount.clone()
                        } else {
                            highlight(b, r, f.name()).unwrap_or_else(|| s.money.clone())
                        };
                        sheet.write_number_with_format(row, col, decimal_f64(d, r), &fmt)?;
                    }
                    t if t.is_integer() => {
                        let v = cast(a, &DataType::Int64)
                            .map(|c| c.as_primitive::<Int64Type>().value(r))
                            .unwrap_or_default();
                        sheet.write_number_with_format(row, col, v as f64, &s.integer)?;
                    }
                    DataType::Float64 => {
                        let v = a.as_primitive::<Float64Type>().value(r);
                        let fmt = if f.name().ends_with("_pct") {
                            &s.percent
                        } else {
                            &s.rate
                        };
                        sheet.write_number_with_format(row, col, v, fmt)?;
                    }
                    DataType::Date32 => {
                        let days = a
                            .as_any()
                            .downcast_ref::<Date32Array>()
                            .expect("date")
                            .value(r);
                        let d = Date32Type::to_naive_date_opt(days).unwrap_or_default();
                        let x = ExcelDateTime::from_ymd(
                            chrono::Datelike::year(&d) as u16,
                            chrono::Datelike::month(&d) as u8,
                            chrono::Datelike::day(&d) as u8,
                        )?;
                        sheet.write_date_with_format(row, col, &x, &s.date)?;
                    }
                    DataType::Boolean => {
                        let v = a
                            .as_any()
                            .downcast_ref::<BooleanArray>()
                            .expect("bool")
                            .value(r);
                        sheet.write_boolean(row, col, v)?;
                    }
                    _ => {
                        let text = array_value_to_string(a, r).unwrap_or_default();
                        sheet.write_string_with_format(row, col, text, &s.text)?;
                    }
                }
            }
            row += 1;
        }
    }
    if row > first_row + 1 {
        sheet.autofilter(first_row, 0, row - 1, schema.fields().len() as u16 - 1)?;
    }
    Ok(row)
}

/// Totals of the summary's money columns, grouped by a text column.
fn totals_by(batches: &[RecordBatch], key: &str, money: &[&str]) -> Vec<(String, Vec<i128>)> {
    let mut out: std::collections::BTreeMap<String, Vec<i128>> = Default::default();
    for b in batches {
        let Ok(k) = b.schema().index_of(key) else {
            continue;
        };
        for r in 0..b.num_rows() {
            let name = array_value_to_string(b.column(k), r).unwrap_or_default();
            let sums = out.entry(name).or_insert_with(|| vec![0; money.len()]);
            for (i, m) in money.iter().enumerate() {
                if let Ok(c) = b.schema().index_of(m)
                    && let Some(d) = b.column(c).as_any().downcast_ref::<Decimal128Array>()
                    && !d.is_null(r)
                {
                    sums[i] += d.value(r);
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The widest displayed text per column, in characters.
#[derive(Default)]
struct Widths(Vec<usize>);

impl Widths {
    fn see(&mut self, col: u16, chars: usize) {
        let col = col as usize;
        if self.0.len() <= col {
            self.0.resize(col + 1, 0);
        }
        self.0[col] = self.0[col].max(chars);
    }
}

/// Column widths from the contents (the title row left out), the header row frozen, and a
/// landscape page one sheet wide for printing.
fn finish_sheet(sheet: &mut Worksheet, widths: &Widths) -> std::result::Result<(), XlsxError> {
    for (col, chars) in widths.0.iter().enumerate() {
        sheet.set_column_width(col as u16, (*chars as f64 + 1.0).clamp(8.0, 60.0))?;
    }
    sheet.set_freeze_panes(3, 0)?;
    sheet.set_landscape();
    sheet.set_print_fit_to_pages(1, 0);
    Ok(())
}

fn workbook(m: &MonthExport, currency: &str) -> std::result::Result<Vec<u8>, XlsxError> {
    let s = Styles::new(currency);
    let mut wb = Workbook::new();
    let status_of = |b: &RecordBatch, r: usize| -> Option<String> {
        let i = b.schema().index_of("status").ok()?;
        array_value_to_string(b.column(i), r).ok()
    };
    let highlight = |b: &RecordBatch, r: usize, column: &str| -> Option<Format> {
        if column != "variance" {
            return None;
        }
        match status_of(b, r).as_deref() {
            Some("over") => Some(s.over.clone()),
            Some("under") => Some(s.under.clone()),
            _ => None,
        }
    };
    {
        let sheet = wb.add_worksheet();
        sheet.set_name("Summary")?;
        let state = match m.snapshot {
            Some(n) => format!("closed, snapshot {n}"),
            None => "open: preliminary, may still change".into(),
        };
        let mut widths = Widths::default();
        let next = write_table(sheet, &s, 2, &m.summary, &highlight, &mut widths)?;
        // Totals by program and by cost center, then the grand total.
        let money = ["planned", "actual", "variance", "prior_period_adjustments"];
        let mut row = next + 1;
        for (key, label) in [
            ("program_name", "Totals by program"),
            ("cost_center", "Totals by cost center"),
        ] {
            sheet.write_string_with_format(row, 0, label, &s.header)?;
            widths.see(0, label.len() + 2);
            for (i, m) in money.iter().enumerate() {
                sheet.write_string_with_format(row, 1 + i as u16, *m, &s.header)?;
            }
            row += 1;
            for (name, sums) in totals_by(&m.summary, key, &money) {
                sheet.write_string(row, 0, &name)?;
                widths.see(0, name.len());
                for (i, v) in sums.iter().enumerate() {
                    let fmt = if money[i] == "variance" && *v > 0 {
                        &s.over
                    } else {
                        &s.money
                    };
                    sheet.write_number_with_format(row, 1 + i as u16, *v as f64 / 100.0, fmt)?;
                    widths.see(1 + i as u16, format!("{:.2}", *v as f64 / 100.0).len() + 10);
                }
                row += 1;
            }
            row += 1;
        }
        sheet.write_string_with_format(row, 0, "Total", &s.total_label)?;
        for (i, v) in totals_by(&m.summary, "reporting_currency", &money)
            .first()
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            sheet.write_number_with_format(row, 1 + i as u16, *v as f64 / 100.0, &s.total_money)?;
            widths.see(1 + i as u16, format!("{:.2}", *v as f64 / 100.0).len() + 11);
        }
        finish_sheet(sheet, &widths)?;
        // The title after the widths are fitted, so it does not widen the first column.
        sheet.write_string_with_format(
            0,
            0,
            format!("Budget reconciliation {} ({currency}), {state}", m.month),
            &s.title,
        )?;
    }
    {
        let sheet = wb.add_worksheet();
        sheet.set_name("Detail")?;
        let mut widths = Widths::default();
        write_table(sheet, &s, 2, &m.detail, &|_, _, _| None, &mut widths)?;
        finish_sheet(sheet, &widths)?;
        sheet.write_string_with_format(
            0,
            0,
            format!(
                "Every ledger entry reconciled in {} with its mapping; amounts in the entry's currency and in {currency}",
                m.month
            ),
            &s.title,
        )?;
    }
    wb.save_to_buffer()
}
