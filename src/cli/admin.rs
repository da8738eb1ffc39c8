//! PLACEHOLDER: replaced by the real module before it is committed.
#![allow(missing_docs)]
use super::CliError;
#[derive(Debug, clap::Args)]
pub struct ImportArgs {}
#[derive(Debug, clap::Args)]
pub struct SetActionArgs {}
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}
#[derive(Debug, clap::Args)]
pub struct DepotsArgs {}
#[derive(Debug, clap::Args)]
pub struct PendingArgs {}
pub async fn import(_a: ImportArgs) -> Result<(), CliError> {
    Err("not built yet".into())
}
pub async fn set_action(_a: SetActionArgs) -> Result<(), CliError> {
    Err("not built yet".into())
}
pub async fn status(_a: StatusArgs) -> Result<(), CliError> {
    Err("not built yet".into())
}
pub async fn depots(_a: DepotsArgs) -> Result<(), CliError> {
    Err("not built yet".into())
}
pub async fn pending(_a: PendingArgs) -> Result<(), CliError> {
    Err("not built yet".into())
}
