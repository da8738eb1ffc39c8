//! What operators are told about deliveries and depots: push rows and the
//! dispatcher's runtime state become the Admin service's status messages.

use std::collections::HashMap;

use super::dispatch::DepotRuntime;
use super::store::{DepotCounts, DepotRecord, PushOp, PushRecord};
use crate::domain::Client;
use crate::proto;
use crate::wire::timestamp;

/// The state of a push row, as operators see it. A push owed to an
/// unreachable depot is failed with the depot's error, whether or not it was
/// tried itself.
pub(super) fn delivery(p: PushRecord, runtime: Option<&DepotRuntime>) -> proto::Delivery {
    use proto::DeliveryState as S;
    if !p.blocked.is_empty() {
        return blocked(p);
    }
    let owed = p.revision > p.delivered_revision;
    let depot_down = runtime.filter(|rt| owed && !rt.reachable);
    let error = match depot_down {
        Some(rt) if p.last_error.is_empty() => rt.last_error.clone(),
        _ if owed => p.last_error,
        _ => String::new(),
    };
    let state = match p.op {
        PushOp::Remove if owed => S::Queued,
        PushOp::Remove => S::Removed,
        PushOp::Set if p.read_revision >= p.revision => S::Read,
        PushOp::Set if !owed => S::Delivered,
        PushOp::Set if !error.is_empty() => S::Failed,
        PushOp::Set => S::Queued,
    };
    let next_retry = match depot_down {
        // An unreachable depot is retried on its own schedule, not the row's.
        Some(rt) => rt.next_retry,
        None => p.next_attempt_at.filter(|_| owed),
    };
    proto::Delivery {
        depot_id: p.depot_id,
        state: state as i32,
        operation: p.op.as_str().to_owned(),
        revision: p.revision,
        delivered_revision: p.delivered_revision,
        product_id: p.product_id,
        updated_at: Some(timestamp(p.updated_at)),
        delivered_at: p.delivered_at.map(timestamp),
        read_at: p.read_at.map(timestamp),
        read_recorded_at: p.read_recorded_at.map(timestamp),
        error,
        next_retry: next_retry.map(timestamp),
        attempts: p.attempts,
        path: p.path.map(|p| p.as_str().to_owned()).unwrap_or_default(),
        read_file_present: p.read_files_present && p.read_revision >= p.revision,
        template: p.template,
        template_reason: p.template_reason,
    }
}

/// A config the inventory blocks (its product is not on the depot, the
/// client has no service address): a terminal failure with the reason,
/// retried when the inventory changes, not on a schedule. What the depot
/// may have held is removed meanwhile.
fn blocked(p: PushRecord) -> proto::Delivery {
    proto::Delivery {
        depot_id: p.depot_id,
        state: proto::DeliveryState::Failed as i32,
        operation: "set".to_owned(),
        revision: p.revision,
        delivered_revision: p.delivered_revision,
        product_id: p.product_id,
        updated_at: Some(timestamp(p.updated_at)),
        delivered_at: p.delivered_at.map(timestamp),
        read_at: p.read_at.map(timestamp),
        read_recorded_at: p.read_recorded_at.map(timestamp),
        error: p.blocked,
        next_retry: None,
        attempts: p.attempts,
        path: p.path.map(|p| p.as_str().to_owned()).unwrap_or_default(),
        read_file_present: Default::default(),
        template: String::new(),
        template_reason: String::new(),
    }
}

/// A depot as `ListDepots` shows it, with its `counts`.
pub(super) fn depot_status(
    d: DepotRecord,
    runtime: &HashMap<String, DepotRuntime>,
    counts: &HashMap<String, DepotCounts>,
) -> proto::DepotStatus {
    let id = d.id.to_string();
    let rt = runtime.get(&id).cloned().unwrap_or_default();
    let counts = counts.get(&id).copied().unwrap_or_default();
    proto::DepotStatus {
        id,
        endpoint: d.endpoint.to_string(),
        description: d.description,
        // Not before the first answer: a depot never called since this
        // configserver started is not known to be up.
        reachable: rt.reachable && rt.last_contact.is_some(),
        capability: rt.shown_capability().as_str().to_owned(),
        queued: counts.owed,
        delivered: counts.held,
        last_error: rt.last_error,
        last_contact: rt.last_contact.map(timestamp),
        pushes_new: rt.pushes_new,
        pushes_legacy: rt.pushes_legacy,
        batches: rt.batches,
        pushed_by: String::new(),
        blocked: counts.blocked,
    }
}

/// Why a client gets no PXE config, if something in the inventory says so:
/// `active` whether it has a netboot action, `depot` its depot and whether
/// that is registered.
pub(super) fn client_note(client: &Client, active: bool, depot: Option<(&str, bool)>) -> String {
    match depot {
        _ if !active => "no netboot action request".to_owned(),
        None => {
            "no depot: clientconfig.depot.id has no value for this client and no default".to_owned()
        }
        Some((d, false)) => format!("depot {d} is not registered"),
        _ if client.pxe_file_names().is_empty() => {
            "neither MAC address (00:00:00:… is a placeholder) nor system UUID: the depot cannot name a PXE config file"
                .to_owned()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::configserver::store::PushPath;
    use proto::DeliveryState as S;

    /// A placeholder MAC (`00:00:00:…`) names no PXE file: a client with
    /// it and no UUID is told why it gets no config, as one with neither.
    #[test]
    fn a_client_with_only_a_placeholder_mac_is_told_it_cannot_be_named() {
        use crate::domain::{Fqdn, Mac, SystemUuid};
        let client = |mac: &str, uuid: Option<&str>| Client {
            fqdn: Fqdn::parse("pc1.example.org", "id").unwrap(),
            mac: Some(Mac::parse(mac, "mac").unwrap()),
            uuid: uuid.map(|u| SystemUuid::parse(u, "uuid").unwrap()),
            ip_address: String::new(),
            host_key: crate::domain::Secret::new("k"),
        };
        let depot = Some(("depot1.example.org", true));
        let note = client_note(&client("00:00:00:12:34:56", None), true, depot);
        assert!(note.contains("cannot name a PXE config file"), "{note}");
        let uuid = "4c4c4544-0042-3110-8030-b1c04f000001";
        assert_eq!(
            client_note(&client("00:00:00:12:34:56", Some(uuid)), true, depot),
            ""
        );
        assert_eq!(
            client_note(&client("02:00:00:12:34:56", None), true, depot),
            ""
        );
    }

    fn row(op: PushOp, revision: u64, delivered: u64, read: u64) -> PushRecord {
        PushRecord {
            client_id: "c.example.org".into(),
            depot_id: "d.example.org".into(),
            op,
            product_id: "win".into(),
            revision,
            delivered_revision: delivered,
            read_revision: read,
            path: (delivered > 0).then_some(PushPath::Legacy),
            attempts: 0,
            last_error: String::new(),
            next_attempt_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(9)),
            updated_at: SystemTime::UNIX_EPOCH,
            delivered_at: None,
            read_at: None,
            read_recorded_at: None,
            blocked: String::new(),
            template: String::new(),
            template_reason: String::new(),
            read_files_present: false,
        }
    }

    fn state(d: &proto::Delivery) -> S {
        S::try_from(d.state).unwrap()
    }

    #[test]
    fn rows_show_their_state_and_a_down_depot_fails_what_it_owes() {
        assert_eq!(state(&delivery(row(PushOp::Set, 2, 1, 0), None)), S::Queued);
        let delivered = delivery(row(PushOp::Set, 2, 2, 0), None);
        assert_eq!(
            (state(&delivered), delivered.path.as_str()),
            (S::Delivered, "legacy")
        );
        assert_eq!(delivered.next_retry, None, "nothing owed, nothing to retry");
        assert_eq!(state(&delivery(row(PushOp::Set, 2, 2, 2), None)), S::Read);
        assert_eq!(
            state(&delivery(row(PushOp::Remove, 3, 2, 2), None)),
            S::Queued
        );
        let removed = delivery(row(PushOp::Remove, 3, 3, 2), None);
        assert_eq!(
            (state(&removed), removed.operation.as_str()),
            (S::Removed, "remove")
        );
        assert_eq!(delivery(row(PushOp::Set, 1, 0, 0), None).path, "");

        let down = DepotRuntime {
            reachable: false,
            last_error: "UNAVAILABLE: refused".into(),
            next_retry: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(60)),
            ..DepotRuntime::default()
        };
        let failed = delivery(row(PushOp::Set, 2, 1, 0), Some(&down));
        assert_eq!(state(&failed), S::Failed);
        assert_eq!(failed.error, "UNAVAILABLE: refused");
        assert_eq!(failed.next_retry.map(|t| t.seconds), Some(60));
        // Delivered rows are not the depot's failure.
        assert_eq!(
            state(&delivery(row(PushOp::Set, 2, 2, 0), Some(&down))),
            S::Delivered
        );
    }

    #[test]
    fn a_blocked_config_is_a_terminal_failure_with_its_reason() {
        let mut r = row(PushOp::Remove, 3, 3, 0);
        r.blocked = "product win is not installed on depot d.example.org".into();
        let d = delivery(r, None);
        assert_eq!(
            (state(&d), d.operation.as_str(), d.error.as_str()),
            (
                S::Failed,
                "set",
                "product win is not installed on depot d.example.org"
            )
        );
        assert_eq!(
            d.next_retry, None,
            "retried by an inventory change, not a timer"
        );
    }

    #[test]
    fn the_template_and_its_reason_are_shown() {
        let mut r = row(PushOp::Set, 2, 2, 0);
        r.template = "install-grub-x64".into();
        r.template_reason = "no product template; the uefi-x64 default".into();
        let d = delivery(r, None);
        assert_eq!(
            (d.template.as_str(), d.template_reason.as_str()),
            (
                "install-grub-x64",
                "no product template; the uefi-x64 default"
            )
        );
    }
}
