//! Local orchestrator (being written).
use clap::Args;
/// `loadtest local` options.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {}
/// Runs `loadtest local`.
pub async fn run_cli(_a: LocalArgs) -> anyhow::Result<i32> {
    Ok(0)
}
