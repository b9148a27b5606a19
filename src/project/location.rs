//! Storage locations as written in project files and flags: a URL whose scheme an object store
//! serves (`object_store::ObjectStoreScheme` decides), or a local path.

use std::path::{Path, PathBuf};

use object_store::ObjectStoreScheme;
use url::Url;

/// What a location may be, for messages.
const EXPECTED: &str = "file, memory, s3, s3a, gs, az, abfss";

/// Parse a storage location: a URL with a known scheme, or a local path (relative to `root`).
/// The result always ends in `/` so table names join under it.
pub fn parse_location(root: &Path, text: &str) -> std::result::Result<Url, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("missing value: expected a URL (file://, s3://, gs://, az://, memory://) or a local path".into());
    }
    let mut url = if text.contains("://") {
        let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
        check_scheme(text, &url)?;
        url
    } else {
        let path = root.join(text);
        let path = std::path::absolute(&path).map_err(|e| format!("`{text}`: {e}"))?;
        let path = normalize(&path);
        Url::from_directory_path(&path)
            .map_err(|_| format!("`{text}` is not a usable local path"))?
    };
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// The object store must be one we build (not plain HTTP), and cloud URLs name their bucket.
fn check_scheme(text: &str, url: &Url) -> std::result::Result<(), String> {
    match ObjectStoreScheme::parse(url) {
        Ok((ObjectStoreScheme::Http, _)) | Err(_)
            if !url.host_str().unwrap_or("").is_empty()
                || !matches!(url.scheme(), "s3" | "s3a" | "gs" | "az" | "abfss") =>
        {
            Err(format!(
                "`{text}`: unsupported scheme `{}`; expected one of {EXPECTED}",
                url.scheme()
            ))
        }
        Err(_) => Err(format!("`{text}`: a bucket or container name is required")),
        Ok(_) => Ok(()),
    }
}

/// Remove `.` and `..` components without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_required() {
        let err = parse_location(Path::new("/"), "s3:///nobucket").unwrap_err();
        assert!(err.contains("bucket"), "{err}");
    }

    #[test]
    fn schemes() {
        for ok in [
            "s3://b/raw",
            "s3a://b/raw",
            "gs://b/x",
            "az://c/x",
            "abfss://c@acct.dfs.core.windows.net/x",
            "memory:///x",
            "file:///tmp/x",
        ] {
            assert!(parse_location(Path::new("/"), ok).is_ok(), "{ok}");
        }
        let e = parse_location(Path::new("/"), "ftp://x/y").unwrap_err();
        assert_eq!(
            e,
            "`ftp://x/y`: unsupported scheme `ftp`; expected one of file, memory, s3, s3a, gs, az, abfss"
        );
        assert!(
            parse_location(Path::new("/"), "https://example.com/x")
                .unwrap_err()
                .contains("unsupported scheme `https`")
        );
        assert_eq!(
            parse_location(Path::new("/p"), "./lake/../raw")
                .unwrap()
                .as_str(),
            "file:///p/raw/"
        );
    }
}
