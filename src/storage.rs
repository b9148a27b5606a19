//! Object stores behind the raw and curated roots: one `ObjectStore` per bucket, built from the
//! environment (credentials never leave it) or injected by tests, shared by DataFusion and Delta.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use url::Url;

use crate::error::{Error, Result};

/// The set of object stores a project reaches, keyed by `scheme://bucket`.
#[derive(Clone, Default)]
pub struct Stores {
    by_root: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .by_root
            .lock()
            .expect("stores lock")
            .keys()
            .cloned()
            .collect();
        f.debug_struct("Stores").field("roots", &keys).finish()
    }
}

impl Stores {
    /// Use `store` for every URL under `root` (e.g. `memory://` or `s3://bucket`), instead of
    /// building one from the environment. Tests inject `InMemory` or a failing store this way.
    pub fn inject(&self, root: &Url, store: Arc<dyn ObjectStore>) {
        self.by_root
            .lock()
            .expect("stores lock")
            .insert(root_key(root), store);
    }

    /// The store serving `url` (built on first use), and the path of `url` inside it.
    pub fn store_for(&self, url: &Url) -> Result<(Arc<dyn ObjectStore>, StorePath)> {
        let key = root_key(url);
        let path = StorePath::from_url_path(url.path()).map_err(|e| Error::Storage {
            location: url.to_string(),
            message: redact(&e.to_string()),
        })?;
        let mut map = self.by_root.lock().expect("stores lock");
        if let Some(store) = map.get(&key) {
            return Ok((store.clone(), path));
        }
        let store = build_store(url)?;
        map.insert(key, store.clone());
        Ok((store, path))
    }

    /// Register the stores for `urls` with a DataFusion runtime so scans resolve them.
    pub fn register_with(&self, runtime: &RuntimeEnv, urls: &[&Url]) -> Result<()> {
        for url in urls {
            let (store, _) = self.store_for(url)?;
            let root = object_store_url(url)?;
            runtime.register_object_store(root.as_ref(), store);
        }
        Ok(())
    }
}

/// `scheme://host` of a URL: the key one object store serves.
pub fn root_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""))
}

/// DataFusion's name for the store serving `url`.
pub fn object_store_url(url: &Url) -> Result<ObjectStoreUrl> {
    ObjectStoreUrl::parse(root_key(url)).map_err(|e| Error::Storage {
        location: url.to_string(),
        message: e.to_string(),
    })
}

fn build_store(url: &Url) -> Result<Arc<dyn ObjectStore>> {
    let bucket = url.host_str().unwrap_or("");
    let fail = |e: object_store::Error| Error::Storage {
        location: url.to_string(),
        message: redact(&e.to_string()),
    };
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => Arc::new(LocalFileSystem::new()),
        "memory" => Arc::new(InMemory::new()),
        "s3" | "s3a" => Arc::new(
            AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(fail)?,
        ),
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(fail)?,
        ),
        "az" | "abfss" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(fail)?,
        ),
        other => {
            return Err(Error::Storage {
                location: url.to_string(),
                message: format!("unsupported scheme `{other}`"),
            });
        }
    };
    Ok(store)
}

/// Register Delta Lake's handlers for cloud schemes (idempotent).
pub fn register_delta_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        deltalake::aws::register_handlers(None);
        deltalake::gcp::register_handlers(None);
        deltalake::azure::register_handlers(None);
    });
}

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
    fn same_bucket_same_store() {
        let stores = Stores::default();
        let (a, pa) = stores
            .store_for(&Url::parse("memory:///raw/orders").unwrap())
            .unwrap();
        let (b, pb) = stores
            .store_for(&Url::parse("memory:///curated/x").unwrap())
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(pa.as_ref(), "raw/orders");
        assert_eq!(pb.as_ref(), "curated/x");
    }
}
