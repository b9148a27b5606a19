//! Credential redaction at the process boundary: error text and log lines pass through here once,
//! where they leave the process (stderr, the run ledger), never deeper in the code.

use std::io::Write;

/// Names of environment variables whose values are secrets.
fn is_secret_var(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    (n.starts_with("AWS_")
        || n.starts_with("AZURE_")
        || n.starts_with("GOOGLE_")
        || n.starts_with("RETENTION_"))
        && (n.contains("SECRET")
            || n.contains("TOKEN")
            || n.contains("KEY")
            || n.contains("PASSWORD")
            || n.contains("SAS"))
}

/// Replace every secret from the environment, and any URL user-info, with `***`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for (name, value) in std::env::vars() {
        if value.len() >= 4 && is_secret_var(&name) {
            out = out.replace(&value, "***");
        }
    }
    // user:password@ in URLs
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("://") {
        cleaned.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            cleaned.push_str("***@");
            rest = &rest[at + 1..];
        }
    }
    cleaned.push_str(rest);
    cleaned
}

/// An error's text as it may leave the process: its message, redacted.
pub fn error_text(e: &dyn std::fmt::Display) -> String {
    redact(&e.to_string())
}

/// A log writer that redacts every line before it reaches `inner` (stderr for the binary).
pub struct RedactingWriter<W: Write> {
    inner: W,
}

impl<W: Write> RedactingWriter<W> {
    pub fn new(inner: W) -> Self {
        RedactingWriter { inner }
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.inner.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `tracing_subscriber` writer factory: stderr behind redaction.
pub fn redacted_stderr() -> RedactingWriter<std::io::Stderr> {
    RedactingWriter::new(std::io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo() {
        assert_eq!(
            redact("GET http://user:pw@host/a failed"),
            "GET http://***@host/a failed"
        );
        assert_eq!(redact("s3://bucket/key"), "s3://bucket/key");
    }

    #[test]
    fn log_lines_are_redacted_on_write() {
        let mut out = Vec::new();
        {
            let mut w = RedactingWriter::new(&mut out);
            w.write_all(b"open s3://key:secret@bucket/x\n").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "open s3://***@bucket/x\n");
    }
}
