//! Shared by the `engine` and `sql` test binaries: the repository's own project as a workspace.

use std::path::Path;
use std::sync::Arc;

use retention::plan::workspace::Workspace;
use retention::project::config::{Overrides, Project};
use retention::store::Stores;

/// The repository's project, on in-memory stores (the SQL tests read no files).
pub fn repository_workspace() -> Arc<Workspace> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let over = Overrides::with_storage(
        Some("memory:///raw/".into()),
        Some("memory:///curated/".into()),
    );
    let project = Project::load(root, &over).unwrap();
    Arc::new(retention::app::workspace(project, Stores::default()).unwrap())
}
