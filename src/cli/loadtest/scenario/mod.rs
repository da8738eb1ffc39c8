//! The measured scenarios: `bulk`, `boot`, `trickle`, `direct`.

pub mod boot;
pub mod bulk;
pub mod direct;
pub mod trickle;

use super::channel::AdminClient;
use crate::cli::error::CliError;
use crate::proto;

/// How many of a call's clients are asked for the reason they wait.
const WAITING_ASKED: usize = 32;

/// Stops a run whose clients cannot get a config: an Admin write of
/// `clients`' actions answered `waiting` (their depot is not registered, or
/// their config cannot be built — the product missing on the depot, no
/// service address), so they would never be delivered, and the run would
/// wait out `--timeout` for them. The error names the first such client
/// and the reason its status gives.
pub async fn stop_if_waiting(
    admin: &mut AdminClient,
    clients: &[&str],
    waiting: u64,
) -> Result<(), CliError> {
    if waiting == 0 {
        return Ok(());
    }
    let mut why = None;
    for fqdn in clients.iter().take(WAITING_ASKED) {
        let status = admin
            .get_client_status(proto::GetClientStatusRequest {
                fqdn: (*fqdn).to_owned(),
            })
            .await?
            .into_inner();
        let blocked = status
            .deliveries
            .iter()
            .find(|d| d.state == proto::DeliveryState::Failed as i32 && d.next_retry.is_none());
        let said = match blocked {
            Some(d) => &d.error,
            None if !status.note.is_empty() => &status.note,
            None => continue,
        };
        // The reasons mostly name the client already.
        why = Some(if said.starts_with(fqdn) {
            said.clone()
        } else {
            format!("{fqdn}: {said}")
        });
        break;
    }
    let why = why.unwrap_or_else(|| format!("see `pxeconf status {}`", clients[0]));
    Err(format!(
        "{waiting} of the {} clients of an Admin call get no config, so the run stops: {why}",
        clients.len()
    )
    .into())
}
