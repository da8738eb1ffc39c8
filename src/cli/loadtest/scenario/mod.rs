//! The measured scenarios: `bulk`, `boot`, `trickle`, `direct`.

pub mod boot;
pub mod bulk;
pub mod direct;
pub mod trickle;

use super::channel::AdminClient;
use crate::cli::error::CliError;
use crate::proto;

/// How many of a call's clients are asked for the reason they wait, at
/// most: one per depot.
const WAITING_ASKED: usize = 256;

/// Stops a run whose clients cannot get a config: an Admin write of the
/// actions of `of` clients answered `waiting` (their depot is not
/// registered, or their config cannot be built — the product missing on the
/// depot, no service address), so they would never be delivered, and the
/// run would wait out `--timeout` for them. `asked` are the clients whose
/// status may say why (one per depot of the call); the error names the
/// first that does, and its reason.
pub async fn stop_if_waiting(
    admin: &mut AdminClient,
    asked: &[&str],
    of: usize,
    waiting: u64,
) -> Result<(), CliError> {
    if waiting == 0 {
        return Ok(());
    }
    let mut why = None;
    for fqdn in asked.iter().take(WAITING_ASKED) {
        let status = admin
            .get_client_status(proto::GetClientStatusRequest {
                fqdn: (*fqdn).to_owned(),
            })
            .await?
            .into_inner();
        let blocked = status
            .deliveries
            .iter()
            .find_map(crate::wire::blocked_reason);
        let said = match blocked {
            Some(reason) => reason,
            None if !status.note.is_empty() => status.note.as_str(),
            None => continue,
        };
        // The reasons mostly name the client already.
        why = Some(if said.starts_with(fqdn) {
            said.to_owned()
        } else {
            format!("{fqdn}: {said}")
        });
        break;
    }
    let why = why.unwrap_or_else(|| "`pxeconf status CLIENT` says why".to_owned());
    let who = if of == 1 {
        "a client gets no config".to_owned()
    } else {
        format!("{waiting} of the {of} clients of an Admin call get no config")
    };
    Err(format!("{who}, so the run stops: {why}").into())
}
