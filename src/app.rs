//! The assembled pipeline: an engine with every layer's hook installed (month close's overlay),
//! and the workspace loaded on it. The CLI and the tests open projects through here.

use std::sync::Arc;

use crate::close::overlay::CloseOverlay;
use crate::engine::session::Engine;
use crate::error::Result;
use crate::plan::workspace::Workspace;
use crate::project::config::Project;
use crate::store::Stores;

/// The engine for `project` over `stores`, with month close's overlay installed.
pub fn engine(project: Project, stores: Stores) -> Result<Engine> {
    Ok(Engine::new(project, stores)?.with_hook(Arc::new(CloseOverlay)))
}

/// Load the project's workspace on a fully assembled engine.
pub fn workspace(project: Project, stores: Stores) -> Result<Workspace> {
    Workspace::load(engine(project, stores)?)
}
