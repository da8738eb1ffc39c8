//! One push over a depot's channel: `SetPxeConfig` with the bundle (the new
//! path), `SetPxeConfigByFqdn` (the legacy path) or `RemovePxeConfig`, and
//! what the answer means for the worker.

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use super::runtime::Capability;
use super::settings::DispatchSettings;
use crate::auth::AttachKey;
use crate::configserver::store::{DepotRecord, Job, Loaded, PushOp, PushPath, UsedTemplate};
use crate::proto;
use crate::status::{AbortReason, Aborted};
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
    /// The client read that revision or a newer one (`ALREADY_READ`).
    AlreadyRead,
    /// The depot has seen a newer revision (`NEWER_HELD`, `REMOVED`).
    Superseded(Aborted),
    /// The depot refused this client's push (it answered: it is up).
    Rejected(String),
    /// No bundle could be built: no call was made (counted as refused).
    Unbuilt(String),
    /// The depot failed on its side (disk full, read-only directory): retried
    /// soon, so that the push lands shortly after the cause is gone.
    Local(String),
}

impl PushResult {
    /// The `result` label of the push counter.
    pub(super) fn label(&self) -> &'static str {
        match self {
            PushResult::Delivered => "ok",
            PushResult::Unimplemented => "unimplemented",
            PushResult::Unreachable(_) => "unavailable",
            PushResult::AlreadyRead => "already_read",
            PushResult::Superseded(_) => "superseded",
            PushResult::Rejected(_) | PushResult::Unbuilt(_) => "rejected",
            PushResult::Local(_) => "depot_error",
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
    /// For a delivered set: the template the depot used, and why.
    pub(super) template: Option<UsedTemplate>,
}

/// Sends one loaded push the way `capability` says.
pub(super) async fn push_one(
    client: DepotClient,
    loaded: Loaded,
    capability: Capability,
    epoch: String,
) -> Outcome {
    push_in(client, loaded, capability, epoch, None).await
}

/// [`push_one`] in `span` when given (a batched push sent on its own keeps
/// its batch span), else in a `push` span of its own.
async fn push_in(
    client: DepotClient,
    loaded: Loaded,
    capability: Capability,
    epoch: String,
    span: Option<tracing::Span>,
) -> Outcome {
    let Loaded {
        client_id,
        revision,
        job,
        traceparent,
    } = loaded;
    let mut template = None;
    let (op, path, result) = match job {
        // No bundle could be built: refused without a call, counted as a set.
        Err(error) => (PushOp::Set, PushPath::New, PushResult::Unbuilt(error)),
        Ok(job) => {
            let path = if capability == Capability::Legacy {
                PushPath::Legacy
            } else {
                PushPath::New
            };
            let op = job.op();
            let push = Push {
                fqdn: &client_id,
                revision,
                epoch,
            };
            let span = span.unwrap_or_else(|| {
                let span = tracing::info_span!("push", fqdn = %client_id, revision, legacy = path == PushPath::Legacy);
                // The call that made the push owed (stored with its outbox
                // row) is the parent: one trace from that call to the
                // depot's write.
                if let Some(traceparent) = &traceparent {
                    crate::telemetry::set_parent_from(&span, traceparent);
                }
                span
            });
            let result = match call(client, push, job, path).instrument(span).await {
                Ok(used) => {
                    template = used;
                    PushResult::Delivered
                }
                Err(result) => result,
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
        template,
    }
}

/// The most pushes one `BatchSetPxeConfigs` call carries.
pub(super) const MAX_BATCH: usize = 64;

/// What a batch came to.
#[derive(Debug)]
pub(super) struct BatchOutcome {
    /// One per push, in any order.
    pub(super) outcomes: Vec<Outcome>,
    /// The depot answered the batch UNIMPLEMENTED (each push then went as
    /// `SetPxeConfig`).
    pub(super) refused: bool,
}

/// Whether `loaded` can go in a batch: a set with its bundle.
pub(super) fn batchable(loaded: &Loaded) -> bool {
    matches!(loaded.job, Ok(Job::Set(_)))
}

/// Sends `batch` (sets with their bundles, see [`batchable`]) in one
/// `BatchSetPxeConfigs` — or a few, when the bundles together exceed
/// [`MAX_BATCH_BYTES`]: each push's result is classified exactly as its own
/// `SetPxeConfig`'s would be, and one too large to send is refused without
/// a call, as there. A depot that answers UNIMPLEMENTED gets each
/// push as `SetPxeConfig` at once, the way `capability` says.
pub(super) async fn push_batch(
    client: DepotClient,
    batch: Vec<Loaded>,
    capability: Capability,
    epoch: String,
) -> BatchOutcome {
    // Each push keeps its own span, a child of the call that made it owed,
    // and the depot's handling of its bundle continues that span's trace.
    let spans: Vec<tracing::Span> = batch
        .iter()
        .map(|loaded| {
            let span = tracing::info_span!("push", fqdn = %loaded.client_id, revision = loaded.revision, legacy = false);
            if let Some(traceparent) = &loaded.traceparent {
                crate::telemetry::set_parent_from(&span, traceparent);
            }
            span
        })
        .collect();
    let mut outcome = BatchOutcome {
        outcomes: Vec::new(),
        refused: false,
    };
    let mut sized = Vec::with_capacity(batch.len());
    for (loaded, span) in batch.into_iter().zip(spans) {
        let push = wire_push(&loaded, &span, &epoch);
        let size = prost::Message::encoded_len(&push);
        match too_large(size) {
            Some(refused) => outcome.outcomes.push(batched(loaded, refused, None)),
            None => sized.push((Batched { loaded, push, span }, size)),
        }
    }
    let sent = chunks(sized, MAX_BATCH_BYTES)
        .into_iter()
        .map(|chunk| send_chunk(client.clone(), chunk, capability, epoch.clone()));
    for chunk in futures::future::join_all(sent).await {
        outcome.outcomes.extend(chunk.outcomes);
        outcome.refused |= chunk.refused;
    }
    outcome
}

/// One push of a batch: what was loaded, its wire form, and its span.
struct Batched {
    loaded: Loaded,
    push: proto::PxeConfigPush,
    span: tracing::Span,
}

/// The most bytes of bundles one `BatchSetPxeConfigs` carries (a quarter of
/// gRPC's usual 4 MiB message limit); a larger batch is sent as several.
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;

/// `items` with their sizes, in order, in runs of at most `max` bytes (an
/// item larger than `max` alone).
fn chunks<T>(items: impl IntoIterator<Item = (T, usize)>, max: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for (item, size) in items {
        match out.last_mut() {
            Some(chunk) if bytes + size <= max => {
                chunk.push(item);
                bytes += size;
            }
            _ => {
                out.push(vec![item]);
                bytes = size;
            }
        }
    }
    out
}

/// The wire form of a batched set, carrying `span`'s trace context.
fn wire_push(loaded: &Loaded, span: &tracing::Span, epoch: &str) -> proto::PxeConfigPush {
    let bundle = match &loaded.job {
        Ok(Job::Set(bundle)) => {
            let mut bundle = proto::ClientBundle::from(bundle.as_ref());
            bundle.epoch = epoch.to_owned();
            Some(bundle)
        }
        // Never batched (see `batchable`); an empty push would be refused.
        _ => None,
    };
    let traceparent = crate::telemetry::exporting()
        .then(|| span.in_scope(crate::telemetry::current_traceparent))
        .flatten()
        .unwrap_or_default();
    proto::PxeConfigPush {
        bundle,
        traceparent,
    }
}

/// One `BatchSetPxeConfigs` call of `chunk`.
async fn send_chunk(
    client: DepotClient,
    chunk: Vec<Batched>,
    capability: Capability,
    epoch: String,
) -> BatchOutcome {
    let mut batch = Vec::with_capacity(chunk.len());
    let mut pushes = Vec::with_capacity(chunk.len());
    let mut spans = Vec::with_capacity(chunk.len());
    for b in chunk {
        batch.push(b.loaded);
        pushes.push(b.push);
        spans.push(b.span);
    }
    let request = proto::BatchSetPxeConfigsRequest { pushes };
    let call_span = tracing::info_span!("push_batch", pushes = batch.len());
    let answer = {
        let mut client = client.clone();
        async move {
            client
                .batch_set_pxe_configs(crate::telemetry::request(request))
                .await
        }
        .instrument(call_span)
        .await
    };
    let results = match answer {
        Ok(answer) => answer.into_inner().results,
        Err(status) if status.code() == Code::Unimplemented => {
            let outcomes =
                futures::future::join_all(batch.into_iter().zip(spans).map(|(loaded, span)| {
                    push_in(
                        client.clone(),
                        loaded,
                        capability,
                        epoch.clone(),
                        Some(span),
                    )
                }))
                .await;
            return BatchOutcome {
                outcomes,
                refused: true,
            };
        }
        Err(status) => {
            let result = classify(&status, PushPath::New);
            let outcomes = batch
                .into_iter()
                .map(|loaded| batched(loaded, result.clone(), None))
                .collect();
            return BatchOutcome {
                outcomes,
                refused: false,
            };
        }
    };
    BatchOutcome {
        outcomes: outcomes_of(batch, results),
        refused: false,
    }
}

/// What each push of `batch` came to, by the depot's `results`.
fn outcomes_of(batch: Vec<Loaded>, results: Vec<proto::PxeConfigPushResult>) -> Vec<Outcome> {
    let (got, sent) = (results.len(), batch.len());
    // Results match pushes by position: an answer of another length says
    // nothing reliable about any push, which all go out again later.
    if got != sent {
        let result = PushResult::Rejected(format!(
            "the depot answered {got} results for {sent} pushes"
        ));
        return batch
            .into_iter()
            .map(|loaded| batched(loaded, result.clone(), None))
            .collect();
    }
    batch
        .into_iter()
        .zip(results)
        .map(|(loaded, answer)| {
            use proto::pxe_config_push_result::Result as Item;
            let (result, template) = match answer.result {
                Some(Item::Written(written)) => (PushResult::Delivered, used_template(written)),
                Some(Item::Error(error)) => (
                    classify(&crate::status::from_item(error), PushPath::New),
                    None,
                ),
                None => (
                    PushResult::Rejected("the depot's result for this push is empty".into()),
                    None,
                ),
            };
            batched(loaded, result, template)
        })
        .collect()
}

/// The outcome of a batched set.
fn batched(loaded: Loaded, result: PushResult, template: Option<UsedTemplate>) -> Outcome {
    Outcome {
        client_id: loaded.client_id,
        revision: loaded.revision,
        op: PushOp::Set,
        path: PushPath::New,
        result,
        template,
    }
}

/// What every push names: the client, the revision and the store's epoch.
struct Push<'a> {
    fqdn: &'a str,
    revision: u64,
    epoch: String,
}

/// The RPC of `job` on `path`, in the caller's `push` span. A remove is
/// the same RPC on both paths; only a set differs (the whole bundle, or
/// the FQDN to look up). A failure comes classified.
async fn call(
    mut client: DepotClient,
    push: Push<'_>,
    job: Job,
    path: PushPath,
) -> Result<Option<UsedTemplate>, PushResult> {
    let Push {
        fqdn,
        revision,
        epoch,
    } = push;
    let fqdn = fqdn.to_owned();
    let answer = match (job, path) {
        (Job::Remove, _) => {
            let request = proto::RemovePxeConfigRequest {
                fqdn,
                revision,
                epoch,
            };
            client
                .remove_pxe_config(crate::telemetry::request(request))
                .await
                .map(|_| None)
        }
        (Job::Set(_), PushPath::Legacy) => {
            let request = proto::SetPxeConfigByFqdnRequest {
                fqdn,
                revision,
                epoch,
            };
            client
                .set_pxe_config_by_fqdn(crate::telemetry::request(request))
                .await
                .map(|answer| used_template(answer.into_inner().into()))
        }
        (Job::Set(bundle), PushPath::New) => {
            let mut request = proto::ClientBundle::from(bundle.as_ref());
            request.epoch = epoch;
            if let Some(refused) = too_large(prost::Message::encoded_len(&request)) {
                return Err(refused);
            }
            client
                .set_pxe_config(crate::telemetry::request(request))
                .await
                .map(|answer| used_template(answer.into_inner()))
        }
    };
    answer.map_err(|status| classify(&status, path))
}

/// The largest bundle sent, in bytes. A depot takes messages of up to
/// gRPC's usual 4 MiB (tonic's default limit); a batched bundle goes
/// wrapped in a push and the request (a few bytes and a traceparent), hence
/// the kibibyte to spare. A larger one is refused here, saying what to
/// change: sent, it crossed the network at each retry for the depot to
/// answer OUT_OF_RANGE ("decoded message length too large").
pub(super) const MAX_BUNDLE_BYTES: usize = (4 << 20) - 1024;

/// The refusal of a bundle of `size` bytes, if it is too large to send.
fn too_large(size: usize) -> Option<PushResult> {
    (size > MAX_BUNDLE_BYTES).then(|| {
        PushResult::Unbuilt(format!(
            "the bundle is {size} bytes, more than the {MAX_BUNDLE_BYTES} a depot takes in one \
             message: fewer or shorter property values or bootimage append items"
        ))
    })
}

/// The template a set's answer names; none when nothing was written (the
/// legacy path's removal of a client without an action).
fn used_template(answer: proto::SetPxeConfigResponse) -> Option<UsedTemplate> {
    (!answer.template.is_empty()).then(|| UsedTemplate {
        name: depot_text(&answer.template),
        reason: depot_text(&answer.template_reason),
    })
}

/// The longest text of a depot's answer the store keeps.
const DEPOT_TEXT_MAX: usize = 1024;

/// A depot's text as the store keeps it: without NUL characters (PostgreSQL
/// refuses them in text and JSON, and a result the store always refuses
/// would be retried for good, holding up every other result) and at most
/// [`DEPOT_TEXT_MAX`] bytes.
fn depot_text(text: &str) -> String {
    let mut kept: String = text.chars().filter(|c| *c != '\0').collect();
    if kept.len() > DEPOT_TEXT_MAX {
        let mut end = DEPOT_TEXT_MAX;
        while !kept.is_char_boundary(end) {
            end -= 1;
        }
        kept.truncate(end);
    }
    kept
}

/// What a failed call on `path` means.
fn classify(status: &tonic::Status, path: PushPath) -> PushResult {
    let message = || {
        format!(
            "{}: {}",
            crate::status::code_name(status.code()),
            depot_text(status.message())
        )
    };
    match status.code() {
        // Never "delivered": the reason says what became of the revision.
        Code::Aborted => match Aborted::from_status(status) {
            Some(a) if a.reason == AbortReason::AlreadyRead => PushResult::AlreadyRead,
            Some(a) => PushResult::Superseded(a),
            None => PushResult::Rejected(message()),
        },
        Code::Internal | Code::DataLoss => PushResult::Local(message()),
        // The depot answered; its look-up of this one client failed (a
        // legacy depot asking back): that client waits, not the depot —
        // and another client's delivery meanwhile must not end a backoff
        // the depot never needed.
        Code::Unavailable
            if crate::status::reason_of(status).as_deref() == Some("LOOKUP_FAILED") =>
        {
            PushResult::Local(message())
        }
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
    fn a_depots_text_is_kept_without_nul_and_bounded() {
        use proto::pxe_config_push_result::Result as Item;
        let loaded = |n: u64| Loaded {
            client_id: format!("c{n}.example.org"),
            revision: n,
            job: Ok(Job::Remove),
            traceparent: None,
        };
        let long = "ä".repeat(DEPOT_TEXT_MAX);
        let results = vec![
            proto::PxeConfigPushResult {
                result: Some(Item::Written(proto::SetPxeConfigResponse {
                    template: "inst\0all".into(),
                    template_reason: format!("why\0{long}"),
                    ..Default::default()
                })),
            },
            proto::PxeConfigPushResult {
                result: Some(Item::Error(crate::status::to_item(
                    &tonic::Status::invalid_argument("bad\0input"),
                ))),
            },
        ];
        let outcomes = outcomes_of(vec![loaded(1), loaded(2)], results);
        let used = outcomes[0].template.as_ref().unwrap();
        assert_eq!(used.name, "install");
        assert!(!used.reason.contains('\0') && used.reason.starts_with("why"));
        assert!(used.reason.len() <= DEPOT_TEXT_MAX && used.reason.len() > DEPOT_TEXT_MAX - 2);
        match &outcomes[1].result {
            PushResult::Rejected(message) => assert!(message.ends_with("badinput"), "{message}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn batch_results_match_pushes_by_position_or_not_at_all() {
        use proto::pxe_config_push_result::Result as Item;
        let loaded = |n: u64| Loaded {
            client_id: format!("c{n}.example.org"),
            revision: n,
            job: Ok(Job::Remove),
            traceparent: None,
        };
        let written = || proto::PxeConfigPushResult {
            result: Some(Item::Written(proto::SetPxeConfigResponse {
                template: "install".into(),
                ..Default::default()
            })),
        };
        let refused = || proto::PxeConfigPushResult {
            result: Some(Item::Error(crate::status::to_item(
                &tonic::Status::invalid_argument("bad"),
            ))),
        };
        let results = |o: Vec<Outcome>| -> Vec<(String, &'static str)> {
            o.into_iter()
                .map(|o| (o.client_id, o.result.label()))
                .collect()
        };
        let all = outcomes_of(
            vec![loaded(1), loaded(2), loaded(3)],
            vec![
                written(),
                refused(),
                proto::PxeConfigPushResult { result: None },
            ],
        );
        assert_eq!(
            results(all),
            [
                ("c1.example.org".into(), "ok"),
                ("c2.example.org".into(), "rejected"),
                ("c3.example.org".into(), "rejected")
            ]
        );
        // One result missing: none of the three counts as delivered.
        let short = outcomes_of(
            vec![loaded(1), loaded(2), loaded(3)],
            vec![written(), written()],
        );
        assert!(
            short.iter().all(|o| o.result.label() == "rejected"),
            "{short:?}"
        );
        assert_eq!(short.len(), 3);
        let long = outcomes_of(vec![loaded(1)], vec![written(), written()]);
        assert_eq!(long[0].result.label(), "rejected");
    }

    #[test]
    fn batches_are_cut_by_size_in_order() {
        let sized =
            |sizes: &[usize]| -> Vec<Vec<usize>> { chunks(sizes.iter().copied().enumerate(), 10) };
        assert_eq!(sized(&[]), Vec::<Vec<usize>>::new());
        assert_eq!(sized(&[3, 3, 3]), vec![vec![0, 1, 2]]);
        assert_eq!(
            sized(&[4, 6, 1, 9, 2]),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        // One larger than the limit goes alone, the next starts afresh.
        assert_eq!(sized(&[2, 25, 3]), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn answers_are_classified_by_code_and_path() {
        let status = |code| tonic::Status::new(code, "why");
        // An ABORTED without pxeconf's details is no delivery.
        assert_eq!(
            classify(&status(Code::Aborted), PushPath::New),
            PushResult::Rejected("ABORTED: why".into())
        );
        let aborted = |reason| Aborted {
            reason,
            revision: 9,
            epoch: "e".into(),
            highest: 12,
        };
        let read = aborted(AbortReason::AlreadyRead).to_status("read");
        assert_eq!(classify(&read, PushPath::Legacy), PushResult::AlreadyRead);
        for reason in [AbortReason::NewerHeld, AbortReason::Removed] {
            let status = aborted(reason).to_status("newer");
            assert_eq!(
                classify(&status, PushPath::New),
                PushResult::Superseded(aborted(reason))
            );
        }
        assert_eq!(
            classify(&status(Code::Internal), PushPath::New),
            PushResult::Local("INTERNAL: why".into())
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
            PushResult::Unreachable("UNAVAILABLE: why".into())
        );
        assert_eq!(
            classify(&status(Code::InvalidArgument), PushPath::New),
            PushResult::Rejected("INVALID_ARGUMENT: why".into())
        );
        // A legacy depot whose look-up failed answered: its client waits.
        let lookup = crate::status::Problem::new(crate::status::Reason::LookupFailed, "why")
            .code(Code::Unavailable)
            .into_status();
        assert_eq!(
            classify(&lookup, PushPath::Legacy),
            PushResult::Local("UNAVAILABLE: why".into())
        );
    }
}
