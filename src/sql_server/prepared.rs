//! Flight SQL prepared statements without server state: the handle a client holds is the SQL
//! itself, and after it binds parameters (DoPut) the updated handle carries the SQL and the bound
//! row as Arrow IPC. Parameters are positional (`$1`, `$2`, ...), typed from the plan, and bound
//! to the plan as DataFusion parameter values, never spliced into the text.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::DataFrame;

/// Marks a handle that carries bound parameters (a plain handle is the SQL's UTF-8 text).
const BOUND: &[u8] = b"retention-bound-v1\0";

/// A prepared statement as its handle carries it.
#[derive(Debug, Clone)]
pub struct PreparedHandle {
    pub sql: String,
    /// The bound row (one row; a column per parameter, in order), once the client bound one.
    pub params: Option<RecordBatch>,
}

fn bad(message: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(message.into())
}

impl PreparedHandle {
    /// A handle without parameters bound.
    pub fn new(sql: impl Into<String>) -> PreparedHandle {
        PreparedHandle {
            sql: sql.into(),
            params: None,
        }
    }

    /// The handle's bytes: the SQL alone, or the marker, the SQL's length, the SQL and the row.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let Some(params) = &self.params else {
            return Ok(self.sql.clone().into_bytes());
        };
        let mut out = BOUND.to_vec();
        out.extend((self.sql.len() as u64).to_le_bytes());
        out.extend(self.sql.as_bytes());
        let mut writer = StreamWriter::try_new(&mut out, &params.schema())?;
        writer.write(params)?;
        writer.finish()?;
        drop(writer);
        Ok(out)
    }

    /// Read a handle made by `encode`.
    pub fn decode(bytes: &[u8]) -> Result<PreparedHandle> {
        let Some(rest) = bytes.strip_prefix(BOUND) else {
            let sql =
                std::str::from_utf8(bytes).map_err(|_| bad("the statement handle is not UTF-8"))?;
            return Ok(PreparedHandle::new(sql));
        };
        let (len, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("the statement handle is cut short"))?;
        let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| bad("bad handle"))?;
        if rest.len() < len {
            return Err(bad("the statement handle is cut short"));
        }
        let (sql, ipc) = rest.split_at(len);
        let sql = std::str::from_utf8(sql).map_err(|_| bad("the statement handle is not UTF-8"))?;
        let mut reader = StreamReader::try_new(ipc, None)?;
        let params = reader
            .next()
            .transpose()?
            .ok_or_else(|| bad("the statement handle has no parameter row"))?;
        Ok(PreparedHandle {
            sql: sql.to_string(),
            params: Some(params),
        })
    }

    /// This handle with `batch` bound: exactly one row, one column per parameter.
    pub fn bind(&self, batch: RecordBatch) -> Result<PreparedHandle> {
        if batch.num_rows() != 1 {
            return Err(bad(format!(
                "bind exactly one row of parameters (got {}); run the statement once per row",
                batch.num_rows()
            )));
        }
        Ok(PreparedHandle {
            sql: self.sql.clone(),
            params: Some(batch),
        })
    }

    /// `df` (planned from this handle's SQL) with the bound row as its parameter values.
    pub fn apply(&self, df: DataFrame) -> Result<DataFrame> {
        let Some(params) = &self.params else {
            return Ok(df);
        };
        let values = params
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0))
            .collect::<Result<Vec<_>>>()?;
        df.with_param_values(ParamValues::from(values))
    }
}

/// The parameters of a planned statement as the Flight SQL parameter schema: fields `$1`, `$2`,
/// ... in order, typed from the plan (text where the plan leaves a type open).
pub fn parameter_schema(df: &DataFrame) -> Result<Schema> {
    let types: HashMap<String, Option<DataType>> = df.logical_plan().get_parameter_types()?;
    let mut named: Vec<(usize, String, DataType)> = types
        .into_iter()
        .map(|(name, t)| {
            let index = name
                .trim_start_matches('$')
                .parse::<usize>()
                .map_err(|_| bad(format!("parameter `{name}`: use positional $1, $2, ...")))?;
            Ok((index, name, t.unwrap_or(DataType::Utf8)))
        })
        .collect::<Result<_>>()?;
    named.sort_by_key(|(i, _, _)| *i);
    Ok(Schema::new(
        named
            .into_iter()
            .map(|(_, name, t)| Arc::new(Field::new(name, t, true)))
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::prelude::SessionContext;

    fn row() -> RecordBatch {
        RecordBatch::try_from_iter([
            ("$1", Arc::new(StringArray::from(vec!["search"])) as _),
            ("$2", Arc::new(Int64Array::from(vec![2])) as _),
        ])
        .unwrap()
    }

    #[test]
    fn a_handle_round_trips_with_and_without_parameters() {
        let plain = PreparedHandle::new("SELECT 1");
        assert_eq!(plain.encode().unwrap(), b"SELECT 1");
        assert!(
            PreparedHandle::decode(b"SELECT 1")
                .unwrap()
                .params
                .is_none()
        );
        let bound = plain.bind(row()).unwrap();
        let back = PreparedHandle::decode(&bound.encode().unwrap()).unwrap();
        assert_eq!(back.sql, "SELECT 1");
        assert_eq!(back.params.unwrap(), row());
        let two = RecordBatch::try_from_iter([("$1", Arc::new(Int64Array::from(vec![1, 2])) as _)])
            .unwrap();
        assert!(
            plain
                .bind(two)
                .unwrap_err()
                .to_string()
                .contains("exactly one row")
        );
        let mut cut = bound.encode().unwrap();
        cut.truncate(BOUND.len() + 4);
        assert!(PreparedHandle::decode(&cut).is_err());
    }

    #[tokio::test]
    async fn parameters_are_typed_from_the_plan_and_bound_as_values() {
        let ctx = SessionContext::new();
        let sql = "SELECT * FROM (VALUES ('search', 1), ('social', 2), ('search', 3)) AS t(channel, n) \
                   WHERE channel = $1 AND n > $2";
        let df = ctx.sql(sql).await.unwrap();
        let schema = parameter_schema(&df).unwrap();
        let fields: Vec<(String, DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            fields,
            [
                ("$1".into(), DataType::Utf8),
                ("$2".into(), DataType::Int64)
            ]
        );
        let handle = PreparedHandle::new(sql).bind(row()).unwrap();
        let out = handle.apply(df).unwrap().collect().await.unwrap();
        let n: Vec<i64> = out
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(n, [3]);
    }
}
