//! One push over a depot's channel: `SetPxeConfig` with the bundle (the new
//! path), `SetPxeConfigByFqdn` (the legacy path) or `RemovePxeConfig`, and
//! what the answer means for the worker.

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::runtime::Capability;
use super::settings::DispatchSettings;
use crate::auth::AttachKey;
use crate::configserver::store::{DepotRecord, Job, Loaded, PushOp, PushPath};
use crate::proto;
use crate::transport::ChannelOptions;

/// A depot's client over its one long-lived channel.
pub(super) type DepotClient =
    proto::depot_client::DepotClient<InterceptedService<Channel, AttachKey>>;

/// A lazily connecting client for `depot` (TLS for an `https://` endpoint);
/// each call has the push timeout.
pub(super) fn connect(
    depot: &DepotRecord,
    settings: &DispatchSettings,
) -> Result<DepotClient, String> {
    let options = ChannelOptions {
        call_timeout: Some(settings.timeout),
        ..ChannelOptions::default()
    };
    let channel = crate::transport::channel(&depot.endpoint, settings.tls.as_ref(), options)
        .map_err(|e| e.to_string())?;
    let auth = AttachKey::new(&depot.host_key).map_err(|e| e.to_string())?;
    Ok(proto::depot_client::DepotClient::with_interceptor(
        channel, auth,
    ))
}

/// What a push came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PushResult {
    /// The depot holds (or removed) the revision, or a newer one.
    Delivered,
    /// The depot does not implement `SetPxeConfig`.
    Unimplemented,
    /// The depot could not be reached or could not take calls.
    Unreachable(String),
    /// The depot refused this client's push; or no bundle could be built.
    Rejected(String),
}

impl PushResult {
    /// The `result` label of the push counter.
    pub(super) fn label(&self) -> &'static str {
        match self {
            PushResult::Delivered => "ok",
            PushResult::Unimplemented => "unimplemented",
            PushResult::Unreachable(_) => "unavailable",
            PushResult::Rejected(_) => "rejected",
        }
    }
}

/// The result of one push.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) client_id: String,
    pub(super) revision: u64,
    pub(super) op: PushOp,
    pub(super) path: PushPath,
    pub(super) result: PushResult,
}

/// Sends one loaded push the way `capability` says.
pub(super) async fn push_one(
    client: DepotClient,
    loaded: Loaded,
    capability: Capability,
) -> Outcome {
    let Loaded {
        client_id,
        revision,
        job,
    } = loaded;
    let (op, path, result) = match job {
        // No bundle could be built: refused without a call, counted as a set.
        Err(error) => (PushOp::Set, PushPath::New, PushResult::Rejected(error)),
        Ok(job) => {
            let path = if capability == Capability::Legacy {
                PushPath::Legacy
            } else {
                PushPath::New
            };
            let op = job.op();
            let result = match call(client, &client_id, revision, job, path).await {
                Ok(()) => PushResult::Delivered,
                Err(status) => classify(&status, path),
            };
            (op, path, result)
        }
    };
    Outcome {
        client_id,
        revision,
        op,
        path,
        result,
    }
}

/// The RPC of `job` on `path`. A remove is the same RPC on both paths;
/// only a set differs (the whole bundle, or the FQDN to look up).
async fn call(
    mut client: DepotClient,
    fqdn: &str,
    revision: u64,
    job: Job,
    path: PushPath,
) -> Result<(), tonic::Status> {
    let fqdn = fqdn.to_owned();
    match (job, path) {
        (Job::Remove, _) => {
            let request = proto::RemovePxeConfigRequest {
                fqdn,
                revision,
                epoch: Default::default(),
            };
            client.remove_pxe_config(request).await.map(drop)
        }
        (Job::Set(_), PushPath::Legacy) => {
            let request = proto::SetPxeConfigByFqdnRequest {
                fqdn,
                revision,
                epoch: Default::default(),
            };
            client.set_pxe_config_by_fqdn(request).await.map(drop)
        }
        (Job::Set(bundle), PushPath::New) => {
            let request = proto::ClientBundle::from(bundle.as_ref());
            client.set_pxe_config(request).await.map(drop)
        }
    }
}

/// What a failed call on `path` means.
fn classify(status: &tonic::Status, path: PushPath) -> PushResult {
    let message = || format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        // The depot already holds a newer revision or has seen this one read.
        Code::Aborted => PushResult::Delivered,
        Code::Unimplemented if path == PushPath::New => PushResult::Unimplemented,
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::Unimplemented => PushResult::Unreachable(message()),
        _ => PushResult::Rejected(message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_code_and_path() {
        let status = |code| tonic::Status::new(code, "why");
        assert_eq!(
            classify(&status(Code::Aborted), PushPath::New),
            PushResult::Delivered
        );
        assert_eq!(
            classify(&status(Code::Unimplemented), PushPath::New),
            PushResult::Unimplemented
        );
        // A legacy depot that lacks the legacy RPC too cannot take calls.
        assert_eq!(
            classify(&status(Code::Unimplemented), PushPath::Legacy).label(),
            "unavailable"
        );
        assert_eq!(
            classify(&status(Code::Unavailable), PushPath::New),
            PushResult::Unreachable("Unavailable: why".into())
        );
        assert_eq!(
            classify(&status(Code::InvalidArgument), PushPath::New),
            PushResult::Rejected("InvalidArgument: why".into())
        );
    }
}
