//! The worker's check of a depot: its own list of the configs it holds
//! (`ListPxeConfigs`, never a secret) against the outbox. Run when the
//! worker starts and when the depot's endpoint changes, until one listing
//! succeeds; the store turns every difference into a push.

use std::collections::HashMap;

use tonic::Code;

use super::acks::AckSender;
use super::push::DepotClient;
use crate::configserver::store::{Owed, Store};
use crate::proto;

/// Configs listed per page (the depot's largest page).
const PAGE: u32 = 10_000;

/// Why a check did not happen.
#[derive(Debug)]
pub(super) enum VerifyFailure {
    /// The depot cannot list (an old depot): no check, nothing to retry.
    Unsupported,
    /// The depot or the store failed; retry later.
    Failed(String),
    /// No answer from the depot (down, or no route) to the check started
    /// then; retry later.
    Unanswered(String, std::time::SystemTime),
    /// The depot's endpoint changed during the check: what was listed is
    /// another endpoint's, and the store was not asked.
    Moved,
}

/// Lists what the depot holds (client → revision; read configs whose files
/// are still present count as not held) and lets the store compare, once
/// every push result recorded before is in the store (a delivery the store
/// does not know of yet would look owed, and so not be sent again) and if
/// the endpoint listed is still the depot's (`current`).
pub(super) async fn verify(
    mut client: DepotClient,
    store: Store,
    acks: AckSender,
    depot_id: String,
    current: impl Fn() -> bool,
) -> Result<Vec<Owed>, VerifyFailure> {
    let started = std::time::SystemTime::now();
    let mut held = HashMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_pxe_configs(proto::ListPxeConfigsRequest {
                page_size: PAGE,
                page_token: token,
                product_id: String::new(),
            })
            .await
            .map_err(|status| {
                let error = format!(
                    "{}: {}",
                    crate::status::code_name(status.code()),
                    status.message()
                );
                match status.code() {
                    Code::Unimplemented => VerifyFailure::Unsupported,
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Unknown
                    | Code::Cancelled => VerifyFailure::Unanswered(error, started),
                    _ => VerifyFailure::Failed(error),
                }
            })?
            .into_inner();
        let read = proto::PxeConfigState::ReadFilePresent as i32;
        held.extend(
            page.configs
                .into_iter()
                .filter(|c| c.state != read)
                .map(|c| (c.fqdn, c.revision)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    acks.flush()
        .await
        .map_err(|()| VerifyFailure::Failed("the configserver is stopping".into()))?;
    if !current() {
        return Err(VerifyFailure::Moved);
    }
    store
        .verify_depot(&depot_id, &held)
        .await
        .map_err(|e| VerifyFailure::Failed(e.to_string()))
}
