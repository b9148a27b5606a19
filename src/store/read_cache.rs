//! Small Parquet files read whole, once, and served from memory to every later read: on a cloud
//! store each request is a round trip (20 to 50 ms), and a run reads each daily file several
//! times (its footer, then its pages, in every job that scans it).
//!
//! A file is cached only when its size and ETag are known from a listing or an earlier read, it
//! is a `.parquet` file no larger than the per-file limit, and the read carries no condition. The
//! whole object is fetched with `If-Match` on the known ETag and kept under the key (path, size,
//! ETag), so a file rewritten in place is a new key; a write through this store forgets the path.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Files larger than this are always read by range.
pub const FILE_LIMIT: u64 = 8 << 20;

/// The cache's key: a file as one listing or read saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    root: String,
    path: StorePath,
    size: u64,
    e_tag: Option<String>,
}

#[derive(Clone)]
struct ByteWeighter;

impl quick_cache::Weighter<Key, Bytes> for ByteWeighter {
    fn weight(&self, _key: &Key, bytes: &Bytes) -> u64 {
        bytes.len().max(1) as u64
    }
}

/// What the cache did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCacheStats {
    /// Reads answered from memory.
    pub hits: u64,
    /// Files fetched whole (one GET each).
    pub fills: u64,
    /// Bytes those fills fetched.
    pub filled_bytes: u64,
}

/// The bytes of small files, bounded by a capacity, shared by every store of a process.
pub struct ReadCache {
    entries: quick_cache::sync::Cache<Key, Bytes, ByteWeighter>,
    file_limit: u64,
    hits: AtomicU64,
    fills: AtomicU64,
    filled_bytes: AtomicU64,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("capacity", &self.entries.capacity())
            .field("stats", &self.stats())
            .finish()
    }
}

impl ReadCache {
    /// A cache of at most `capacity` bytes; a file over an eighth of it, or over `FILE_LIMIT`,
    /// is never cached.
    pub fn new(capacity: u64) -> ReadCache {
        ReadCache {
            entries: quick_cache::sync::Cache::with_weighter(4096, capacity, ByteWeighter),
            file_limit: FILE_LIMIT.min(capacity / 8),
            hits: AtomicU64::new(0),
            fills: AtomicU64::new(0),
            filled_bytes: AtomicU64::new(0),
        }
    }

    /// The bytes it may hold.
    pub fn capacity(&self) -> u64 {
        self.entries.capacity()
    }

    pub fn stats(&self) -> ReadCacheStats {
        ReadCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            fills: self.fills.load(Ordering::Relaxed),
            filled_bytes: self.filled_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Where the stores of a process find the cache: none until the engine turns it on.
pub type ReadCacheSlot = Arc<RwLock<Option<Arc<ReadCache>>>>;

/// A store whose small Parquet files are read whole once and then served from the cache.
#[derive(Debug)]
pub struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    root: String,
    cache: ReadCacheSlot,
    /// Size and ETag of each small Parquet file, as last listed or read.
    known: Arc<Mutex<HashMap<StorePath, ObjectMeta>>>,
}

impl std::fmt::Display for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadCached({})", self.inner)
    }
}

impl CachedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, root: String, cache: ReadCacheSlot) -> CachedStore {
        CachedStore {
            inner,
            root,
            cache,
            known: Arc::default(),
        }
    }

    fn cache(&self) -> Option<Arc<ReadCache>> {
        self.cache.read().expect("not poisoned").clone()
    }

    /// Remember `meta` when its file could be cached.
    fn learn(known: &Mutex<HashMap<StorePath, ObjectMeta>>, meta: &ObjectMeta) {
        if meta.location.extension() == Some("parquet") && meta.size <= FILE_LIMIT {
            let mut known = known.lock().expect("not poisoned");
            known.insert(meta.location.clone(), meta.clone());
        }
    }

    fn forget(&self, location: &StorePath) {
        self.known.lock().expect("not poisoned").remove(location);
    }

    /// The cache and the file's known meta, when this read may be served from memory.
    fn cacheable(
        &self,
        location: &StorePath,
        options: &GetOptions,
    ) -> Option<(Arc<ReadCache>, ObjectMeta)> {
        let plain = options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none()
            && !options.head;
        if !plain {
            return None;
        }
        let cache = self.cache()?;
        let meta = self
            .known
            .lock()
            .expect("not poisoned")
            .get(location)?
            .clone();
        (meta.size > 0 && meta.size <= cache.file_limit).then_some((cache, meta))
    }

    /// The whole file, from memory or fetched once (concurrent readers wait for one fetch).
    async fn whole(&self, cache: &ReadCache, meta: &ObjectMeta) -> object_store::Result<Bytes> {
        let key = Key {
            root: self.root.clone(),
            path: meta.location.clone(),
            size: meta.size,
            e_tag: meta.e_tag.clone(),
        };
        let mut fetched = false;
        let bytes = cache
            .entries
            .get_or_insert_async(&key, async {
                fetched = true;
                let options = GetOptions {
                    if_match: meta.e_tag.clone(),
                    ..GetOptions::default()
                };
                let result = self.inner.get_opts(&meta.location, options).await?;
                let bytes = result.bytes().await?;
                if bytes.len() as u64 != meta.size {
                    return Err(object_store::Error::Precondition {
                        path: meta.location.to_string(),
                        source: format!("{} bytes where {} were listed", bytes.len(), meta.size)
                            .into(),
                    });
                }
                Ok(bytes)
            })
            .await?;
        let counter = if fetched {
            cache
                .filled_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            &cache.fills
        } else {
            &cache.hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(bytes)
    }
}

/// `bytes[range]` as a store's answer.
fn served(meta: ObjectMeta, bytes: Bytes, range: Range<u64>) -> GetResult {
    let slice = bytes.slice(range.start as usize..range.end as usize);
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(slice) }).boxed()),
        meta,
        range,
        attributes: Default::default(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.forget(location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.forget(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if let Some((cache, meta)) = self.cacheable(location, &options) {
            let range = match &options.range {
                None => Ok(0..meta.size),
                Some(r) => r.as_range(meta.size),
            };
            if let Ok(range) = range {
                match self.whole(&cache, &meta).await {
                    Ok(bytes) => return Ok(served(meta, bytes, range)),
                    // Changed or gone since it was listed: read it as asked, and learn it anew.
                    Err(_) => self.forget(location),
                }
            }
        }
        let result = self.inner.get_opts(location, options).await?;
        CachedStore::learn(&self.known, &result.meta);
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        let known = self.known.clone();
        let forgotten = locations
            .inspect(move |l| {
                if let Ok(l) = l {
                    known.lock().expect("not poisoned").remove(l);
                }
            })
            .boxed();
        self.inner.delete_stream(forgotten)
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let known = self.known.clone();
        self.inner
            .list(prefix)
            .inspect(move |m| {
                if let Ok(m) = m {
                    CachedStore::learn(&known, m);
                }
            })
            .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await?;
        for m in &listed.objects {
            CachedStore::learn(&self.known, m);
        }
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.forget(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.forget(from);
        self.forget(to);
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::metered::{MeteredStore, RequestCounts, Requests};
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use std::time::Duration;

    /// A cached store over a counted `InMemory`, the memory underneath, and the counts.
    fn stores(capacity: Option<u64>) -> (CachedStore, Arc<InMemory>, Arc<RequestCounts>) {
        let memory = Arc::new(InMemory::new());
        let counts = Arc::new(RequestCounts::default());
        let metered = Arc::new(MeteredStore::new(
            memory.clone(),
            counts.clone(),
            Duration::ZERO,
        ));
        let slot: ReadCacheSlot =
            Arc::new(RwLock::new(capacity.map(|c| Arc::new(ReadCache::new(c)))));
        (
            CachedStore::new(metered, "memory://".into(), slot),
            memory,
            counts,
        )
    }

    fn file(bytes: &[u8]) -> PutPayload {
        PutPayload::from(bytes.to_vec())
    }

    fn gets(counts: &RequestCounts) -> u64 {
        let r: Requests = counts.snapshot();
        r.tail_gets + r.range_gets + r.whole_gets
    }

    async fn list(store: &CachedStore) {
        let _: Vec<ObjectMeta> = store.list(None).try_collect().await.unwrap();
    }

    #[tokio::test]
    async fn a_listed_small_file_is_fetched_once_and_every_range_served_from_it() {
        let (store, memory, counts) = stores(Some(1 << 20));
        let path = StorePath::from("raw/orders/dt=2026-01-01/part-0.parquet");
        let content: Vec<u8> = (0..200u8).collect();
        memory.put(&path, file(&content)).await.unwrap();
        list(&store).await;
        let tail = store
            .get_opts(
                &path,
                GetOptions {
                    range: Some(object_store::GetRange::Suffix(8)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(tail.range, 192..200);
        assert_eq!(tail.bytes().await.unwrap().as_ref(), &content[192..]);
        assert_eq!(
            store.get_range(&path, 10..20).await.unwrap().as_ref(),
            &content[10..20]
        );
        let ranges = store.get_ranges(&path, &[0..4, 100..150]).await.unwrap();
        assert_eq!(ranges[1].as_ref(), &content[100..150]);
        assert_eq!(
            store.get(&path).await.unwrap().bytes().await.unwrap().len(),
            200
        );
        assert_eq!(gets(&counts), 1, "one whole GET for every read");
        // The two ranges were coalesced into one read.
        let stats = store.cache().unwrap().stats();
        assert_eq!(
            stats,
            ReadCacheStats {
                hits: 3,
                fills: 1,
                filled_bytes: 200
            }
        );
    }

    #[tokio::test]
    async fn a_file_not_listed_is_learned_from_its_first_read() {
        let (store, memory, counts) = stores(Some(1 << 20));
        let path = StorePath::from("curated/t/part-1.parquet");
        memory.put(&path, file(&[7u8; 64])).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                store.get_range(&path, 60..64).await.unwrap().as_ref(),
                &[7u8; 4]
            );
        }
        // The first read by range, the second fetched the whole file, the third from memory.
        assert_eq!(gets(&counts), 2);
    }

    #[tokio::test]
    async fn large_files_other_files_conditional_reads_and_an_off_cache_go_to_the_store() {
        let (store, memory, counts) = stores(Some(1 << 20));
        let big = StorePath::from("raw/big.parquet");
        let log = StorePath::from("curated/t/_delta_log/_last_checkpoint");
        memory
            .put(&big, file(&vec![1u8; (1 << 20) / 8 + 1]))
            .await
            .unwrap();
        memory.put(&log, file(b"{}")).await.unwrap();
        list(&store).await;
        for _ in 0..2 {
            store.get_range(&big, 0..4).await.unwrap();
            store.get(&log).await.unwrap();
        }
        let small = StorePath::from("raw/small.parquet");
        memory.put(&small, file(b"abcdef")).await.unwrap();
        list(&store).await;
        let conditional = GetOptions {
            if_none_match: Some("x".into()),
            ..Default::default()
        };
        store.get_opts(&small, conditional).await.unwrap();
        assert_eq!(gets(&counts), 5);

        let (off, memory, counts) = stores(None);
        memory.put(&small, file(b"abcdef")).await.unwrap();
        list(&off).await;
        off.get_range(&small, 0..2).await.unwrap();
        off.get_range(&small, 2..4).await.unwrap();
        assert_eq!(gets(&counts), 2);
    }

    #[tokio::test]
    async fn a_file_rewritten_in_place_is_read_anew() {
        let (store, memory, _) = stores(Some(1 << 20));
        let path = StorePath::from("raw/orders/part-0.parquet");
        memory.put(&path, file(b"first")).await.unwrap();
        list(&store).await;
        assert_eq!(
            store.get_range(&path, 0..5).await.unwrap().as_ref(),
            b"first"
        );
        // Rewritten through this store: forgotten, then read and learned again.
        store.put(&path, file(b"second")).await.unwrap();
        assert_eq!(
            store.get_range(&path, 0..6).await.unwrap().as_ref(),
            b"second"
        );
        // Rewritten behind its back (another writer) with the same size: the listing gives a
        // new ETag, so a new key.
        memory.put(&path, file(b"third!")).await.unwrap();
        list(&store).await;
        assert_eq!(
            store.get_range(&path, 0..6).await.unwrap().as_ref(),
            b"third!"
        );
        // Rewritten again after that listing: what was cached is served until the next listing
        // (a run reads its sources as listed).
        memory.put(&path, file(b"fourth")).await.unwrap();
        assert_eq!(
            store.get_range(&path, 0..6).await.unwrap().as_ref(),
            b"third!"
        );
        list(&store).await;
        assert_eq!(
            store.get_range(&path, 0..6).await.unwrap().as_ref(),
            b"fourth"
        );
        // Rewritten between a listing and the first read: the fetch's If-Match fails, and the
        // read goes to the store as asked.
        let other = StorePath::from("raw/orders/part-1.parquet");
        memory.put(&other, file(b"fifth")).await.unwrap();
        list(&store).await;
        memory.put(&other, file(b"sixth")).await.unwrap();
        assert_eq!(
            store.get_range(&other, 0..5).await.unwrap().as_ref(),
            b"sixth"
        );
    }

    #[tokio::test]
    async fn concurrent_readers_of_one_file_share_one_fetch() {
        let (store, memory, counts) = stores(Some(1 << 20));
        let path = StorePath::from("raw/orders/part-0.parquet");
        memory.put(&path, file(&[3u8; 1000])).await.unwrap();
        list(&store).await;
        let reads = (0..16u64).map(|i| store.get_range(&path, i * 10..i * 10 + 10));
        let all = futures::future::try_join_all(reads).await.unwrap();
        assert!(all.iter().all(|b| b.as_ref() == [3u8; 10]));
        assert_eq!(gets(&counts), 1);
    }
}
