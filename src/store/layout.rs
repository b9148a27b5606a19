//! Rewriting a curated table's files without changing a row (`retention optimize`): small files
//! compacted into few near the target size, or each partition's files Z-ordered by the columns
//! its readers filter on, in one Delta commit marked as no data change.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::optimize::OptimizeType;
use futures::TryStreamExt;
use url::Url;

use crate::error::{Error, Result};
use crate::project::spec::FileLayout;
use crate::store::delta::{ATTEMPT_KEY, SLOT_KEY, writer_properties_for};

/// Delta's default target file size (`delta.targetFileSize`), used when a table sets none.
pub const DEFAULT_TARGET_SIZE: u64 = 100 << 20;

/// How `optimize` lays a table out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Z-order each partition's files by these columns; empty: only compact small files.
    pub zorder_by: Vec<String>,
    /// Files are compacted up to this size.
    pub target_size: NonZeroU64,
    /// The job's row groups and bloom filters, which the rewritten files keep.
    pub files: FileLayout,
}

/// The files a rewrite removes (planned) or removed and added (done).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Partitions with at least one file rewritten.
    pub partitions: u64,
    pub files_removed: u64,
    pub bytes_removed: u64,
    /// Zero in a plan.
    pub files_added: u64,
    /// The table's files before.
    pub files_before: u64,
}

/// What `layout` would rewrite in `table`: with Z-order, every file of every partition; else the
/// files under the target size in partitions that have two or more of them (Delta then bins
/// them by size, so a plan is an upper bound: a bin left with one file is not rewritten).
pub async fn plan(table: &DeltaTable, layout: &Layout) -> Result<Rewrite> {
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| Error::storage(table.table_url(), e))?;
    let mut by_partition: BTreeMap<BTreeMap<String, Option<String>>, Vec<u64>> = BTreeMap::new();
    for f in &files {
        let key = f.partition_values_map().into_iter().collect();
        by_partition
            .entry(key)
            .or_default()
            .push(f.size().max(0) as u64);
    }
    let mut rewrite = Rewrite {
        files_before: files.len() as u64,
        ..Rewrite::default()
    };
    for sizes in by_partition.values() {
        let chosen: Vec<u64> = if layout.zorder_by.is_empty() {
            let small: Vec<u64> = sizes
                .iter()
                .copied()
                .filter(|s| *s <= layout.target_size.get())
                .collect();
            if small.len() < 2 { Vec::new() } else { small }
        } else {
            sizes.clone()
        };
        if !chosen.is_empty() {
            rewrite.partitions += 1;
            rewrite.files_removed += chosen.len() as u64;
            rewrite.bytes_removed += chosen.iter().sum::<u64>();
        }
    }
    Ok(rewrite)
}

/// Rewrite `table` as `layout` says, in one commit. The latest commit's daemon slot and lease
/// token are carried onto it, so a daemon still finds that slot published.
pub async fn optimize(table: DeltaTable, url: &Url, layout: &Layout) -> Result<Rewrite> {
    let mut metadata = slot_metadata(&table).await;
    metadata.insert("retention.operation".into(), "optimize".into());
    let kind = if layout.zorder_by.is_empty() {
        OptimizeType::Compact
    } else {
        OptimizeType::ZOrder(layout.zorder_by.clone())
    };
    let (_, metrics) = table
        .optimize()
        .with_type(kind)
        .with_target_size(layout.target_size)
        .with_writer_properties(writer_properties_for(&layout.files, None))
        .with_commit_properties(CommitProperties::default().with_metadata(metadata))
        .await
        .map_err(|e| Error::storage(url, e))?;
    Ok(Rewrite {
        partitions: metrics.partitions_optimized,
        files_removed: metrics.num_files_removed,
        bytes_removed: metrics.files_removed.total_size.max(0) as u64,
        files_added: metrics.num_files_added,
        // Every active file is considered (no partition filter is given).
        files_before: metrics.total_considered_files as u64,
    })
}

/// The daemon's slot and lease token from the table's latest commit, if it has them.
async fn slot_metadata(table: &DeltaTable) -> serde_json::Map<String, serde_json::Value> {
    use futures::StreamExt;
    let mut out = serde_json::Map::new();
    if let Some(Ok(commit)) = table.history(Some(1)).next().await {
        for key in [SLOT_KEY, ATTEMPT_KEY] {
            if let Some(v) = commit.info.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Stores;
    use crate::store::delta::{handle, last_slot, open, provider};
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use deltalake::protocol::SaveMode;
    use std::sync::Arc;

    fn batch(ids: &[i64], region: &str) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
        ]));
        let regions = StringArray::from(vec![region; ids.len()]);
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(regions)],
        )
        .unwrap()
    }

    async fn rows(table: &DeltaTable) -> Vec<String> {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", provider(table).await.unwrap())
            .unwrap();
        let df = ctx
            .sql("select id, region from t order by id")
            .await
            .unwrap();
        let text =
            datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
                .unwrap()
                .to_string();
        text.lines().map(str::to_string).collect()
    }

    /// Three appends by a daemon's slot run into partition `eu`, one into `us`.
    async fn appended(stores: &Stores, url: &Url) -> DeltaTable {
        let mut table = handle(stores, url).unwrap();
        let slot = [
            (
                SLOT_KEY.to_string(),
                serde_json::json!("2026-12-01T06:00:00+00:00"),
            ),
            (ATTEMPT_KEY.to_string(), serde_json::json!(7)),
        ];
        for (ids, region) in [
            (&[3, 1][..], "eu"),
            (&[2], "eu"),
            (&[5], "eu"),
            (&[4], "us"),
        ] {
            table = table
                .write(vec![batch(ids, region)])
                .with_save_mode(SaveMode::Append)
                .with_partition_columns(["region"])
                .with_commit_properties(CommitProperties::default().with_metadata(slot.clone()))
                .await
                .unwrap();
        }
        table
    }

    fn layout(zorder_by: &[&str]) -> Layout {
        Layout {
            zorder_by: zorder_by.iter().map(|c| c.to_string()).collect(),
            target_size: NonZeroU64::new(DEFAULT_TARGET_SIZE).unwrap(),
            files: FileLayout::default(),
        }
    }

    #[tokio::test]
    async fn compaction_merges_each_partitions_small_files_and_keeps_the_slot() {
        let stores = Stores::default();
        let url = Url::parse("memory:///curated/t/").unwrap();
        let table = appended(&stores, &url).await;
        let before = rows(&table).await;
        let slot = last_slot(&table).await;
        assert!(slot.is_some());
        let planned = plan(&table, &layout(&[])).await.unwrap();
        assert_eq!(
            planned,
            Rewrite {
                partitions: 1,
                files_removed: 3,
                bytes_removed: planned.bytes_removed,
                files_added: 0,
                files_before: 4
            }
        );
        assert!(planned.bytes_removed > 0);
        let done = optimize(table, &url, &layout(&[])).await.unwrap();
        assert_eq!(
            (done.partitions, done.files_removed, done.files_added),
            (1, 3, 1)
        );
        assert_eq!(done.bytes_removed, planned.bytes_removed);
        assert_eq!(done.files_before, planned.files_before);
        let after = open(&stores, &url).await.unwrap().unwrap();
        assert_eq!(after.version(), Some(4));
        assert_eq!(after.get_file_uris().unwrap().count(), 2);
        assert_eq!(rows(&after).await, before);
        assert_eq!(
            last_slot(&after).await,
            slot,
            "a daemon still finds its slot"
        );
    }

    #[tokio::test]
    async fn z_order_rewrites_every_partition_and_refuses_bad_columns() {
        let stores = Stores::default();
        let url = Url::parse("memory:///curated/z/").unwrap();
        let table = appended(&stores, &url).await;
        let before = rows(&table).await;
        let planned = plan(&table, &layout(&["id"])).await.unwrap();
        assert_eq!((planned.partitions, planned.files_removed), (2, 4));
        let done = optimize(table, &url, &layout(&["id"])).await.unwrap();
        assert_eq!((done.files_removed, done.files_added), (4, 2));
        let after = open(&stores, &url).await.unwrap().unwrap();
        assert_eq!(rows(&after).await, before);
        let e = optimize(after, &url, &layout(&["region"]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("partition columns"), "{e}");
        let after = open(&stores, &url).await.unwrap().unwrap();
        let e = optimize(after, &url, &layout(&["nope"])).await.unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
