//! Job parameters: `[params]` values from TOML, and values given on the command line or in SQL
//! tests, typed by the parameter's declared default.

use datafusion::common::ScalarValue;

/// A `[params]` value from TOML as a SQL value.
pub fn param_value(v: &toml::Value) -> std::result::Result<ScalarValue, String> {
    Ok(match v {
        toml::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        toml::Value::Integer(i) => ScalarValue::Int64(Some(*i)),
        toml::Value::Float(f) => ScalarValue::Float64(Some(*f)),
        toml::Value::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        toml::Value::Datetime(d) => ScalarValue::Utf8(Some(d.to_string())),
        other => {
            return Err(format!(
                "expected a string, number, boolean or date, found {}",
                other.type_str()
            ));
        }
    })
}

/// Parse a parameter value given on the command line (or in a SQL test) as the type of the
/// spec's default. A string default that is `latest` or a `YYYY-MM-DD` date makes the parameter a
/// date: the value must then be `latest`, `today` or a valid date, so a typo never silently empties a table.
pub fn parse_param(default: &ScalarValue, text: &str) -> std::result::Result<ScalarValue, String> {
    let is_date_like = |s: &str| {
        matches!(s, "latest" | "today") || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
    };
    if let ScalarValue::Utf8(Some(d)) = default
        && is_date_like(d)
        && !is_date_like(text)
    {
        return Err(format!("`{text}` is not a date (YYYY-MM-DD) or `latest`"));
    }
    ScalarValue::try_from_string(text.to_string(), &default.data_type())
        .map_err(|e| format!("`{text}` is not a valid {}: {e}", default.data_type()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_params_reject_typos() {
        let latest = ScalarValue::Utf8(Some("latest".into()));
        assert_eq!(
            parse_param(&latest, "2026-10-31").unwrap(),
            ScalarValue::Utf8(Some("2026-10-31".into()))
        );
        assert!(parse_param(&latest, "latest").is_ok());
        assert_eq!(
            parse_param(&latest, "2026-13-01").unwrap_err(),
            "`2026-13-01` is not a date (YYYY-MM-DD) or `latest`"
        );
        assert_eq!(
            parse_param(&ScalarValue::Int64(Some(90)), "60").unwrap(),
            ScalarValue::Int64(Some(60))
        );
        assert!(parse_param(&ScalarValue::Int64(Some(90)), "sixty").is_err());
    }
}
