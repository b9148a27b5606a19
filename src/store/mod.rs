//! Storage: the object stores behind the raw and curated roots (one per bucket, built from the
//! URL and the environment by `object_store::parse_url_opts`, or injected by tests), the curated
//! Delta tables on them, the names and schemas of the tables the engine keeps itself, and the
//! slot leases of the daemons.

pub mod delta;
pub mod delta_files;
pub mod layout;
pub mod lease;
pub mod local_files;
pub mod metered;
pub mod read_cache;
pub mod system;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use url::Url;

use crate::error::{Error, Result};
use crate::store::metered::{MeteredStore, RequestCounts, Requests};
use crate::store::read_cache::{CachedStore, ReadCache, ReadCacheSlot, ReadCacheStats};

/// The set of object stores a project reaches, keyed by `scheme://bucket`. Every store is
/// metered: its requests are counted, and slowed by `latency` when one is set (benchmarks). Above
/// the meter sits the read cache of small Parquet files, once the engine turns it on.
#[derive(Clone, Default)]
pub struct Stores {
    by_root: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
    counts: Arc<RequestCounts>,
    latency: std::time::Duration,
    read_cache: ReadCacheSlot,
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
    /// Stores that wait `latency` before every request, as a cloud store's round trip would.
    pub fn with_latency(latency: std::time::Duration) -> Stores {
        Stores {
            latency,
            ..Stores::default()
        }
    }

    /// The requests made through these stores so far.
    pub fn requests(&self) -> Requests {
        self.counts.snapshot()
    }

    /// GETs so far by the table folder they read (`lake/raw/orders`).
    pub fn gets_by_folder(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts
            .gets_by_folder
            .lock()
            .expect("not poisoned")
            .clone()
    }

    /// LIST calls by the prefix they listed.
    pub fn lists_by_prefix(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts
            .lists_by_prefix
            .lock()
            .expect("not poisoned")
            .clone()
    }

    /// The per-request latency these stores add (zero unless a benchmark set one).
    pub fn latency(&self) -> std::time::Duration {
        self.latency
    }

    /// Serve small Parquet files from a cache of `capacity` bytes (`None`: read every time). A
    /// cache of that capacity already there is kept with what it holds (a second engine on the
    /// same stores).
    pub fn set_read_cache(&self, capacity: Option<u64>) {
        let mut slot = self.read_cache.write().expect("not poisoned");
        if slot.as_ref().map(|c| c.capacity()) != capacity {
            *slot = capacity.map(|c| Arc::new(ReadCache::new(c)));
        }
    }

    /// What the read cache did so far (zeros when it is off).
    pub fn read_cache_stats(&self) -> ReadCacheStats {
        let slot = self.read_cache.read().expect("not poisoned");
        slot.as_ref().map(|c| c.stats()).unwrap_or_default()
    }

    fn metered(&self, root: String, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        let metered = Arc::new(MeteredStore::new(store, self.counts.clone(), self.latency));
        Arc::new(CachedStore::new(metered, root, self.read_cache.clone()))
    }

    /// Use `store` for every URL under `root` (e.g. `memory://` or `s3://bucket`), instead of
    /// building one from the environment. Tests inject `InMemory` or a failing store this way.
    pub fn inject(&self, root: &Url, store: Arc<dyn ObjectStore>) {
        self.by_root
            .lock()
            .expect("stores lock")
            .insert(root_key(root), self.metered(root_key(root), store));
    }

    /// The store serving `url` (built on first use), and the path of `url` inside it.
    pub fn store_for(&self, url: &Url) -> Result<(Arc<dyn ObjectStore>, StorePath)> {
        let key = root_key(url);
        let path = StorePath::from_url_path(url.path()).map_err(|e| Error::storage(url, e))?;
        let mut map = self.by_root.lock().expect("stores lock");
        if let Some(store) = map.get(&key) {
            return Ok((store.clone(), path));
        }
        let store = self.metered(key.clone(), build_store(url)?);
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

/// A runtime's object stores that finds the stores it was not given: a bucket a query names is
/// served by `Stores`, built from the URL and the environment on first use (a cluster worker,
/// which reads whatever roots its coordinators plan over).
#[derive(Debug)]
pub struct DiscoveringRegistry {
    known: Arc<dyn datafusion::execution::object_store::ObjectStoreRegistry>,
    stores: Stores,
}

impl DiscoveringRegistry {
    pub fn new(
        known: Arc<dyn datafusion::execution::object_store::ObjectStoreRegistry>,
        stores: Stores,
    ) -> DiscoveringRegistry {
        DiscoveringRegistry { known, stores }
    }
}

impl datafusion::execution::object_store::ObjectStoreRegistry for DiscoveringRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        let (store, _) = self
            .stores
            .store_for(url)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        self.known.register_store(url, store.clone());
        Ok(store)
    }
}

/// `scheme://host` of a URL: the key one object store serves.
pub fn root_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""))
}

/// DataFusion's name for the store serving `url`.
pub fn object_store_url(url: &Url) -> Result<ObjectStoreUrl> {
    ObjectStoreUrl::parse(root_key(url)).map_err(|e| Error::storage(url, e))
}

/// Configuration for cloud stores from the environment, as each builder's `from_env` reads it:
/// `AWS_*`, `GOOGLE_*`, `AZURE_*`, and the two unprefixed names they also read (`SERVICE_ACCOUNT`
/// for GCS, `IDENTITY_ENDPOINT` for Azure managed identity). Credentials stay in the process.
fn env_options() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| {
            ["AWS_", "GOOGLE_", "AZURE_"]
                .iter()
                .any(|p| k.starts_with(p))
                || k == "SERVICE_ACCOUNT"
                || k == "IDENTITY_ENDPOINT"
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

fn build_store(url: &Url) -> Result<Arc<dyn ObjectStore>> {
    if url.scheme() == "file" {
        // What `parse_url_opts` builds for a file URL, listed with fewer system calls.
        return Ok(Arc::new(local_files::LocalFiles::default()));
    }
    let (store, _) =
        object_store::parse_url_opts(url, env_options()).map_err(|e| Error::storage(url, e))?;
    Ok(Arc::from(store))
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_worker_finds_a_bucket_it_was_not_given() {
        use datafusion::execution::object_store::{
            DefaultObjectStoreRegistry, ObjectStoreRegistry,
        };
        let stores = Stores::default();
        let registry =
            DiscoveringRegistry::new(Arc::new(DefaultObjectStoreRegistry::new()), stores.clone());
        let url = Url::parse("memory:///").unwrap();
        let found = registry.get_store(&url).unwrap();
        let (served, _) = stores.store_for(&url).unwrap();
        assert!(Arc::ptr_eq(&found, &served), "the project's own store");
        assert!(Arc::ptr_eq(&found, &registry.get_store(&url).unwrap()));
        let e = registry
            .get_store(&Url::parse("ftp://nowhere/").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ftp"), "{e}");
    }

    #[test]
    fn a_second_engine_keeps_the_read_cache() {
        let stores = Stores::default();
        let cache = || stores.read_cache.read().unwrap().clone();
        stores.set_read_cache(Some(1 << 20));
        let first = cache().unwrap();
        stores.set_read_cache(Some(1 << 20));
        assert!(Arc::ptr_eq(&first, &cache().unwrap()), "same size: kept");
        stores.set_read_cache(Some(2 << 20));
        assert_eq!(cache().unwrap().capacity(), 2 << 20);
        assert!(!Arc::ptr_eq(&first, &cache().unwrap()));
        stores.set_read_cache(None);
        assert!(cache().is_none());
    }
}
