//! `retention validate`: every spec, contract and SQL checked without reading data, and the
//! schedule checked for jobs that would read a stale upstream.

use crate::error::Result;
use crate::plan::workspace::Workspace;

pub const EXAMPLES: &str =
    "Examples:\n  retention validate\n  retention -C examples/online_retail validate";

pub async fn run(ws: Workspace) -> Result<()> {
    let outputs = ws.validate().await?;
    for p in crate::serve::slots::order_problems(&ws, ws.engine.clock.now())? {
        tracing::warn!("{p}");
        eprintln!("warning: {p}");
    }
    println!(
        "ok: {} source(s), {} job(s) planned against their contracts",
        ws.sources.len(),
        outputs.len()
    );
    Ok(())
}
