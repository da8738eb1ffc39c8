//! PLACEHOLDER: replaced by the real module before it is committed.
#![allow(missing_docs)]
#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {}
pub async fn run(_args: LoadtestArgs) -> Result<(), super::CliError> {
    Err("not built yet".into())
}
