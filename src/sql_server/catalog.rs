//! What the SQL servers serve: a catalog `retention` whose schemas are `public` (every job's
//! curated table and `_runs`), `closed` (the month-close snapshots and logs) and, when asked,
//! `raw` (the sources). A curated table is read at its latest Delta version: each query that
//! names it looks for newer commits first, so a publish is visible to the next query, and a query
//! already streaming keeps the snapshot it started on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};
use deltalake::DeltaTable;
use url::Url;

use crate::error::Result;
use crate::plan::workspace::Workspace;
use crate::store::Stores;
use crate::store::delta;
use crate::store::system::{CLOSE_LOG, CLOSED_RECORDS, RUNS_TABLE, snapshot_table};

/// The catalog (the database, to a Postgres client) the servers expose.
pub const CATALOG: &str = "retention";
/// Job tables and `_runs`.
pub const PUBLIC: &str = "public";
/// Month-close snapshots (by their job table's name) and the close logs.
pub const CLOSED: &str = "closed";
/// The raw sources, when served.
pub const RAW: &str = "raw";

/// One served table: where it lives and what it means.
#[derive(Debug, Clone)]
pub struct ServedTable {
    /// Location of the Delta table.
    pub url: Url,
    /// One sentence on what the table holds (the job spec's `description`).
    pub description: String,
    /// Column name and description.
    pub columns: BTreeMap<String, String>,
}

/// A schema of Delta tables, each read at its latest version when a query names it.
#[derive(Debug)]
pub struct DeltaSchema {
    stores: Stores,
    tables: BTreeMap<String, ServedTable>,
    /// The newest snapshot seen of each published table.
    loaded: Mutex<HashMap<String, DeltaTable>>,
    /// Tables found published at the last look (listed by `table_names`).
    published: RwLock<BTreeSet<String>>,
}

impl DeltaSchema {
    pub fn new(stores: Stores, tables: BTreeMap<String, ServedTable>) -> DeltaSchema {
        DeltaSchema {
            stores,
            tables,
            loaded: Mutex::new(HashMap::new()),
            published: RwLock::new(BTreeSet::new()),
        }
    }

    /// Look at every table again: which are published now (new tables appear in listings).
    pub async fn refresh(&self) -> Result<()> {
        for name in self.tables.keys() {
            self.latest(name).await?;
        }
        Ok(())
    }

    /// The table's latest version, or `None` while it has never been published.
    async fn latest(&self, name: &str) -> Result<Option<DeltaTable>> {
        let Some(served) = self.tables.get(name) else {
            return Ok(None);
        };
        let cached = self.loaded.lock().expect("lock").get(name).cloned();
        let table = match cached {
            Some(mut table) => {
                table
                    .update_incremental(None)
                    .await
                    .map_err(|e| crate::error::Error::storage(&served.url, e))?;
                Some(table)
            }
            None => delta::open(&self.stores, &served.url).await?,
        };
        let mut published = self.published.write().expect("lock");
        match &table {
            Some(t) => {
                published.insert(name.to_string());
                self.loaded
                    .lock()
                    .expect("lock")
                    .insert(name.to_string(), t.clone());
            }
            None => {
                published.remove(name);
            }
        }
        Ok(table)
    }

    /// The descriptions of this schema's tables.
    pub fn described(&self) -> impl Iterator<Item = (&String, &ServedTable)> {
        self.tables.iter()
    }
}

#[async_trait]
impl SchemaProvider for DeltaSchema {
    fn table_names(&self) -> Vec<String> {
        self.published
            .read()
            .expect("lock")
            .iter()
            .cloned()
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self
            .latest(name)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
        else {
            return Ok(None);
        };
        let provider = delta::provider(&table)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.published.read().expect("lock").contains(name)
    }
}

/// The served catalog: fixed schemas, made once at start.
#[derive(Debug)]
pub struct ServedCatalog {
    schemas: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
    /// The Delta schemas, refreshed on an interval.
    pub delta_schemas: Vec<(String, Arc<DeltaSchema>)>,
}

impl ServedCatalog {
    /// The catalog of `ws`'s curated store, with the sources as `raw` when `serve_raw`.
    pub async fn new(ws: &Workspace, serve_raw: bool) -> Result<ServedCatalog> {
        let stores = ws.engine.stores.clone();
        let (public, closed) = curated_tables(ws)?;
        let mut schemas: BTreeMap<String, Arc<dyn SchemaProvider>> = BTreeMap::new();
        let mut delta_schemas = vec![];
        for (name, tables) in [(PUBLIC, public), (CLOSED, closed)] {
            let schema = Arc::new(DeltaSchema::new(stores.clone(), tables));
            schema.refresh().await?;
            schemas.insert(name.to_string(), schema.clone());
            delta_schemas.push((name.to_string(), schema));
        }
        if serve_raw {
            let raw = Arc::new(MemorySchemaProvider::new());
            let names = ws.sources.iter().map(|s| s.name.clone());
            for (name, provider) in ws.source_providers(names).await {
                match provider {
                    Ok(p) => {
                        raw.register_table(name, p)?;
                    }
                    Err(e) => tracing::warn!(source = %name, error = %e, "source not served"),
                }
            }
            schemas.insert(RAW.to_string(), raw);
        }
        Ok(ServedCatalog {
            schemas: RwLock::new(schemas),
            delta_schemas,
        })
    }

    /// Look at every Delta table again.
    pub async fn refresh(&self) -> Result<()> {
        for (_, schema) in &self.delta_schemas {
            schema.refresh().await?;
        }
        Ok(())
    }
}

impl CatalogProvider for ServedCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.schemas.read().expect("lock").keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas.read().expect("lock").get(name).cloned()
    }

    /// Used once, when the server adds `pg_catalog` (SQL that creates schemas is refused).
    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        Ok(self
            .schemas
            .write()
            .expect("lock")
            .insert(name.to_string(), schema))
    }
}

/// The `public` and `closed` tables of `ws`: name as served, location and descriptions.
type Schemas = (BTreeMap<String, ServedTable>, BTreeMap<String, ServedTable>);

fn curated_tables(ws: &Workspace) -> Result<Schemas> {
    let mut public = BTreeMap::new();
    let mut closed = BTreeMap::new();
    for node in &ws.graph.nodes {
        let spec = &node.spec;
        let served = ServedTable {
            url: ws.table_url(&spec.table)?,
            description: spec.description.clone(),
            columns: spec.columns.clone(),
        };
        if spec.close.is_some() {
            let snapshot = ServedTable {
                url: ws.table_url(&snapshot_table(&spec.table))?,
                description: format!(
                    "{} Rows of closed months, as they were frozen by close-month.",
                    spec.description
                ),
                ..served.clone()
            };
            closed.insert(spec.table.clone(), snapshot);
        }
        public.insert(spec.table.clone(), served);
    }
    let system = |table: &str, description: &str| -> Result<ServedTable> {
        Ok(ServedTable {
            url: ws.table_url(table)?,
            description: description.to_string(),
            columns: BTreeMap::new(),
        })
    };
    public.insert(
        RUNS_TABLE.to_string(),
        system(
            RUNS_TABLE,
            "The run ledger: one row per job run, with its outcome, rows written and the table version it published.",
        )?,
    );
    closed.insert(
        CLOSE_LOG.to_string(),
        system(
            CLOSE_LOG,
            "The month-close log: one row per close and re-open of a month.",
        )?,
    );
    closed.insert(
        CLOSED_RECORDS.to_string(),
        system(
            CLOSED_RECORDS,
            "The record ids (ledger entry ids, for one) frozen into each closed month's snapshots.",
        )?,
    );
    Ok((public, closed))
}
