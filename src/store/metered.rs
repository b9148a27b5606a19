//! Every object store request counted by kind, and optionally slowed by a fixed latency (what a
//! cloud store costs per request, 20 to 50 ms, brought to a local disk for a benchmark). The
//! counts tell footer reads (a GET of a file's tail) from data reads (a GET of a byte range) and
//! whole-object reads (Delta logs, CSV files).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Requests made through the stores of one process, by kind.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// GETs of a byte range that ends at the file's end (a Parquet footer).
    pub tail_gets: AtomicU64,
    /// GETs of a byte range inside a file (Parquet pages).
    pub range_gets: AtomicU64,
    /// GETs of a whole object (Delta log entries, CSV files, leases), and HEADs.
    pub whole_gets: AtomicU64,
    /// LIST calls (each may be several pages on a cloud store).
    pub lists: AtomicU64,
    /// PUTs, multipart uploads, copies, renames and deletes.
    pub writes: AtomicU64,
    /// GETs by the table folder they read (`lake/raw/orders`: partitions and logs left out).
    pub gets_by_folder: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// LIST calls by the prefix they list.
    pub lists_by_prefix: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// A snapshot of `RequestCounts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub tail_gets: u64,
    pub range_gets: u64,
    pub whole_gets: u64,
    pub lists: u64,
    pub writes: u64,
}

impl Requests {
    pub fn total(&self) -> u64 {
        self.tail_gets + self.range_gets + self.whole_gets + self.lists + self.writes
    }

    /// The requests made since `earlier`.
    pub fn since(&self, earlier: &Requests) -> Requests {
        Requests {
            tail_gets: self.tail_gets - earlier.tail_gets,
            range_gets: self.range_gets - earlier.range_gets,
            whole_gets: self.whole_gets - earlier.whole_gets,
            lists: self.lists - earlier.lists,
            writes: self.writes - earlier.writes,
        }
    }
}

impl RequestCounts {
    pub fn snapshot(&self) -> Requests {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Requests {
            tail_gets: get(&self.tail_gets),
            range_gets: get(&self.range_gets),
            whole_gets: get(&self.whole_gets),
            lists: get(&self.lists),
            writes: get(&self.writes),
        }
    }
}

/// The folder of the table `location` belongs to: its parent, without partition folders
/// (`dt=...`) and `_delta_log`.
fn table_folder(location: &StorePath) -> String {
    let parts: Vec<&str> = location.as_ref().split('/').collect();
    let mut end = parts.len().saturating_sub(1);
    while end > 0 && (parts[end - 1].contains('=') || parts[end - 1] == "_delta_log") {
        end -= 1;
    }
    parts[..end].join("/")
}

/// A store that counts every request into `counts` and waits `latency` before each.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<RequestCounts>,
    latency: Duration,
}

impl std::fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>, counts: Arc<RequestCounts>, latency: Duration) -> Self {
        MeteredStore {
            inner,
            counts,
            latency,
        }
    }

    async fn request(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    fn listed(&self, prefix: Option<&StorePath>) {
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        let mut by_prefix = self.counts.lists_by_prefix.lock().expect("not poisoned");
        *by_prefix.entry(prefix).or_default() += 1;
    }

    fn write(&self) -> impl Future<Output = ()> + '_ {
        self.request(&self.counts.writes)
    }
}

#[async_trait::async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.write().await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.write().await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let whole = options.range.is_none();
        let result = self.inner.get_opts(location, options).await;
        // A range that ends at the object's end is its tail: a Parquet footer.
        let counter = match &result {
            _ if whole => &self.counts.whole_gets,
            Ok(r) if r.range.end == r.meta.size && r.range.start > 0 => &self.counts.tail_gets,
            _ => &self.counts.range_gets,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *self
            .counts
            .gets_by_folder
            .lock()
            .expect("not poisoned")
            .entry(table_folder(location))
            .or_default() += 1;
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        let (counts, latency) = (self.counts.clone(), self.latency);
        let counted = locations
            .then(move |l| {
                let counts = counts.clone();
                async move {
                    counts.writes.fetch_add(1, Ordering::Relaxed);
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    l
                }
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counts.lists.fetch_add(1, Ordering::Relaxed);
        self.listed(prefix);
        let inner = self.inner.list(prefix);
        let latency = self.latency;
        futures::stream::once(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
        })
        .flat_map(move |_| futures::stream::empty())
        .chain(inner)
        .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        self.listed(prefix);
        self.request(&self.counts.lists).await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.write().await;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.write().await;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::GetRange;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn each_request_is_counted_by_kind() {
        let counts = Arc::new(RequestCounts::default());
        let store = MeteredStore::new(Arc::new(InMemory::new()), counts.clone(), Duration::ZERO);
        let path = StorePath::from("raw/orders/dt=2026-01-01/part-0.parquet");
        store
            .put(&path, PutPayload::from(vec![7u8; 100]))
            .await
            .unwrap();
        store.head(&path).await.unwrap();
        store.get(&path).await.unwrap();
        store.get_range(&path, 10..20).await.unwrap();
        store.get_range(&path, 92..100).await.unwrap();
        store
            .get_opts(
                &path,
                GetOptions {
                    range: Some(GetRange::Suffix(8)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let listed: Vec<ObjectMeta> = store.list(Some(&"raw".into())).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        store.delete(&path).await.unwrap();
        assert_eq!(
            counts.snapshot(),
            Requests {
                tail_gets: 2,
                range_gets: 1,
                whole_gets: 2,
                lists: 1,
                writes: 2
            }
        );
        assert_eq!(counts.snapshot().total(), 8);
    }

    #[test]
    fn gets_are_grouped_by_table_folder() {
        let f = |p: &str| table_folder(&StorePath::from(p));
        assert_eq!(
            f("lake/raw/orders/dt=2026-01-01/part-0.parquet"),
            "lake/raw/orders"
        );
        assert_eq!(
            f("curated/cohort_retention/_delta_log/00000000000000000001.json"),
            "curated/cohort_retention"
        );
        assert_eq!(f("curated/t/a=1/b=2/x.parquet"), "curated/t");
        assert_eq!(f("top.json"), "");
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_waits_the_latency() {
        let counts = Arc::new(RequestCounts::default());
        let store = MeteredStore::new(Arc::new(InMemory::new()), counts, Duration::from_millis(20));
        let path = StorePath::from("a");
        let started = tokio::time::Instant::now();
        store.put(&path, PutPayload::from(vec![1u8])).await.unwrap();
        store.get(&path).await.unwrap();
        let _: Vec<ObjectMeta> = store.list(None).try_collect().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(60));
    }
}
