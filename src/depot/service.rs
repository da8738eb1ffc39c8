//! The `pxeconf.v1.Depot` gRPC service: thin handlers over `DepotCore`
//! (statuses are chosen in `super::error`).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{Instrument, Span, field, instrument};

use super::core::{Applied, DepotCore};
use super::error::Error;
use crate::auth::RequireKey;
use crate::domain::{ClientBundle, Fqdn, Secret};
use crate::proto::{self, depot_server};

/// Page size of `ListPxeConfigs` when the request names none.
const DEFAULT_PAGE: usize = 1000;
/// The largest page `ListPxeConfigs` returns.
const MAX_PAGE: usize = 10_000;
/// The most pushes one `BatchSetPxeConfigs` call may carry (a configserver
/// sends far fewer; this bounds what one call can hold in memory).
pub const MAX_BATCH: usize = 1000;

/// The Depot service with its auth check, plus reflection and health (and
/// the health's handle).
pub async fn routes(
    core: Arc<DepotCore>,
    host_key: Option<Secret>,
) -> (tonic::service::Routes, crate::server::Health) {
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(depot_server::DepotServer::with_interceptor(
        DepotService::new(core),
        RequireKey::new(host_key),
    ));
    crate::server::standard_services(routes, &["pxeconf.v1.Depot"]).await
}

/// The gRPC handlers.
pub struct DepotService {
    core: Arc<DepotCore>,
}

impl DepotService {
    /// The handlers over `core`, without auth (`routes` adds it).
    pub fn new(core: Arc<DepotCore>) -> Self {
        Self { core }
    }
}

impl DepotService {
    /// A wire bundle validated, rendered and written (pushed in its own
    /// epoch), counted either way: what both set RPCs do per bundle.
    /// The span it runs in gets the client's name: the parsed FQDN, or the
    /// raw text shortened when it is none.
    async fn apply(&self, wire: proto::ClientBundle) -> Result<Applied, Error> {
        let epoch = wire.epoch.clone();
        let raw = wire.host.as_ref().map(|h| h.id.clone());
        let result = match check_epoch(&epoch).and_then(|()| ClientBundle::try_from(wire)) {
            Ok(bundle) => {
                Span::current().record("fqdn", bundle.client.fqdn.as_str());
                self.core.set(bundle, &epoch).await
            }
            Err(invalid) => {
                if let Some(raw) = raw {
                    Span::current().record("fqdn", logged(&raw));
                }
                Err(invalid.into())
            }
        };
        self.core.count_bundle(&result);
        result
    }

    /// One push of a batch, handled as `SetPxeConfig` handles its bundle, in
    /// a span of the same name continuing the push's own trace.
    async fn set_one(&self, push: proto::PxeConfigPush) -> proto::PxeConfigPushResult {
        let wire = push.bundle.unwrap_or_default();
        let span = tracing::info_span!("set_pxe_config", depot = %self.core.depot_id, fqdn = field::Empty, revision = wire.revision);
        if !push.traceparent.is_empty() {
            crate::telemetry::set_parent_from(&span, &push.traceparent);
        }
        let result = self.apply(wire).instrument(span).await;
        super::wire::push_result(result)
    }
}

/// A push's epoch (the configserver store's id): a short token, or none.
/// The depot keeps the highest revision of every epoch it sees.
fn check_epoch(epoch: &str) -> Result<(), crate::domain::ValidationError> {
    crate::wire::check_len(epoch, crate::domain::limits::MAX_ID, "epoch")?;
    crate::wire::check_token(epoch, "epoch")
}

/// A client's name from the wire as logs show it: the FQDN when it is one,
/// else quoted and shortened (raw text could forge log lines or fill them).
fn logged(text: &str) -> String {
    match Fqdn::parse(text, "fqdn") {
        Ok(fqdn) => fqdn.to_string(),
        Err(_) => crate::domain::limits::shown(text),
    }
}

#[tonic::async_trait]
impl depot_server::Depot for DepotService {
    #[instrument(skip_all, fields(depot = %self.core.depot_id, fqdn, revision))]
    async fn set_pxe_config(
        &self,
        request: Request<proto::ClientBundle>,
    ) -> Result<Response<proto::SetPxeConfigResponse>, Status> {
        if self.core.is_legacy() {
            return Err(Error::LegacyOnly.into());
        }
        let wire = request.into_inner();
        Span::current().record("revision", wire.revision);
        Ok(Response::new(self.apply(wire).await?.into()))
    }

    #[instrument(skip_all, fields(depot = %self.core.depot_id, pushes = request.get_ref().pushes.len()))]
    async fn batch_set_pxe_configs(
        &self,
        request: Request<proto::BatchSetPxeConfigsRequest>,
    ) -> Result<Response<proto::BatchSetPxeConfigsResponse>, Status> {
        if self.core.is_legacy() {
            return Err(Error::LegacyOnly.into());
        }
        if !self.core.takes_batches() {
            return Err(Error::NoBatches.into());
        }
        let pushes = request.into_inner().pushes;
        if pushes.len() > MAX_BATCH {
            return Err(Error::BatchTooLarge {
                pushes: pushes.len(),
                max: MAX_BATCH,
            }
            .into());
        }
        // All at once: the writer takes them in one or a few rounds.
        let results =
            futures::future::join_all(pushes.into_iter().map(|push| self.set_one(push))).await;
        Ok(Response::new(proto::BatchSetPxeConfigsResponse { results }))
    }

    #[instrument(skip_all, fields(depot = %self.core.depot_id, fqdn = %logged(&request.get_ref().fqdn), revision = request.get_ref().revision))]
    async fn set_pxe_config_by_fqdn(
        &self,
        request: Request<proto::SetPxeConfigByFqdnRequest>,
    ) -> Result<Response<proto::SetPxeConfigByFqdnResponse>, Status> {
        let request = request.into_inner();
        let fqdn = Fqdn::parse(&request.fqdn, "fqdn").map_err(Error::from)?;
        check_epoch(&request.epoch).map_err(Error::from)?;
        let outcome = self
            .core
            .set_by_fqdn(fqdn, request.revision, &request.epoch)
            .await?;
        Ok(Response::new(
            proto::SetPxeConfigResponse::from(outcome).into(),
        ))
    }

    #[instrument(skip_all, fields(depot = %self.core.depot_id, fqdn = %logged(&request.get_ref().fqdn), revision = request.get_ref().revision))]
    async fn remove_pxe_config(
        &self,
        request: Request<proto::RemovePxeConfigRequest>,
    ) -> Result<Response<proto::RemovePxeConfigResponse>, Status> {
        let request = request.into_inner();
        let fqdn = Fqdn::parse(&request.fqdn, "fqdn").map_err(Error::from)?;
        check_epoch(&request.epoch).map_err(Error::from)?;
        let removed = self
            .core
            .writer()
            .remove(fqdn, request.revision, request.epoch.into())
            .await
            .map_err(Error::from)?;
        Ok(Response::new(proto::RemovePxeConfigResponse { removed }))
    }

    #[instrument(skip_all, fields(depot = %self.core.depot_id))]
    async fn list_pxe_configs(
        &self,
        request: Request<proto::ListPxeConfigsRequest>,
    ) -> Result<Response<proto::ListPxeConfigsResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = Some(request.page_token).filter(|t| !t.is_empty());
        let product =
            Some(request.product_id.trim().to_ascii_lowercase()).filter(|p| !p.is_empty());
        let page = self
            .core
            .writer()
            .list(after, limit, product)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(proto::ListPxeConfigsResponse {
            configs: page.configs.into_iter().map(Into::into).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
            total: page.total as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    //! Handler edge cases, called directly (no socket): each bad input gets
    //! its status and writes nothing. Transport and auth are tested over
    //! real sockets in tests/it/depot.rs.

    use std::path::PathBuf;

    use tokio::sync::mpsc;
    use tonic::Code;

    use super::*;

    #[test]
    fn logs_show_a_wire_name_as_an_fqdn_or_quoted_and_short() {
        assert_eq!(logged("PC1.Example.org"), "pc1.example.org");
        let forged = format!(
            "pc1\n2026-11-27T00:00:00Z INFO forged{}",
            "x".repeat(10_000)
        );
        let shown = logged(&forged);
        assert!(!shown.contains('\n') && shown.len() < 200, "{shown}");
    }
    use crate::depot::render::Renderer;
    use crate::depot::template::{TemplateConfig, Templates};
    use crate::depot::writer::{self, ReadEvent, WriterOptions};
    use crate::domain::TemplateName;
    use crate::proto::depot_server::Depot as _;

    const PXELINUX: &str = "default opsi-install\nlabel opsi-install\n  kernel install\n  append initrd=miniroot.bz2 quiet\n";

    const GRUB: &str =
        "set timeout=0\nmenuentry 'opsi' {\n  linux (pxe)/linux/install-x64 quiet\n}\n";

    /// A depot core over a temporary PXE and template directory, without a
    /// configserver and without a read watcher.
    struct Fixture {
        root: tempfile::TempDir,
        pxe: PathBuf,
        service: DepotService,
        _reads: mpsc::Receiver<ReadEvent>,
    }

    impl Fixture {
        async fn new(legacy: bool) -> Self {
            Self::with(legacy, true).await
        }

        async fn with(legacy: bool, batches: bool) -> Self {
            let root = tempfile::tempdir().unwrap();
            let pxe = root.path().join("pxe");
            let templates = root.path().join("templates");
            std::fs::create_dir_all(&pxe).unwrap();
            std::fs::create_dir_all(&templates).unwrap();
            std::fs::write(templates.join("install"), PXELINUX).unwrap();
            std::fs::write(templates.join("install-grub-x64"), GRUB).unwrap();
            std::fs::write(
                templates.join("install-elilo-x86"),
                "image=/k\n  append=\"quiet\"\n",
            )
            .unwrap();
            let name = |n: &str| TemplateName::parse(n, "t").unwrap();
            let templates = Templates::new(TemplateConfig {
                dir: templates,
                bios: name("install"),
                uefi_x86: name("install-elilo-x86"),
                uefi_x64: name("install-grub-x64"),
            })
            .unwrap();
            let (reads_tx, reads) = mpsc::channel(16);
            let options = WriterOptions {
                pxe_dir: pxe.clone(),
                io_threads: 1,
                depot_id: "depot1.example.org".into(),
                access: Default::default(),
                leftovers: Vec::new(),
                unwritten: Vec::new(),
            };
            let writer = writer::spawn_fresh(&root.path().join("state"), options, reads_tx).await;
            let depot_id = Fqdn::parse("depot1.example.org", "depot_id").unwrap();
            let core = DepotCore::new(depot_id, templates, Renderer::new(), writer)
                .with_legacy(legacy)
                .with_batches(batches);
            Self {
                root,
                pxe,
                service: DepotService::new(Arc::new(core)),
                _reads: reads,
            }
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.pxe)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }

        fn peek(&self, name: &str) -> String {
            std::fs::read_to_string(self.pxe.join(name)).unwrap()
        }

        async fn set(
            &self,
            bundle: proto::ClientBundle,
        ) -> Result<proto::SetPxeConfigResponse, Status> {
            let response = self.service.set_pxe_config(Request::new(bundle)).await?;
            Ok(response.into_inner())
        }

        async fn remove(&self, fqdn: &str, revision: u64) -> Result<bool, Status> {
            let request = proto::RemovePxeConfigRequest {
                fqdn: fqdn.into(),
                revision,
                epoch: Default::default(),
            };
            let response = self
                .service
                .remove_pxe_config(Request::new(request))
                .await?;
            Ok(response.into_inner().removed)
        }

        async fn set_by_fqdn(&self, fqdn: &str) -> Status {
            let request = proto::SetPxeConfigByFqdnRequest {
                fqdn: fqdn.into(),
                revision: 0,
                epoch: Default::default(),
            };
            self.service
                .set_pxe_config_by_fqdn(Request::new(request))
                .await
                .unwrap_err()
        }
    }

    fn mac(n: u32) -> String {
        format!("02:00:00:00:00:{n:02x}")
    }

    fn mac_file(n: u32) -> String {
        format!("01-{}", mac(n).replace(':', "-"))
    }

    fn uuid(n: u32) -> String {
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    /// A wire bundle for `client<n>.example.org` on depot1.
    fn bundle(n: u32, revision: u64) -> proto::ClientBundle {
        let fqdn = format!("client{n}.example.org");
        proto::ClientBundle {
            host: Some(proto::Host {
                id: fqdn.clone(),
                hardware_address: mac(n),
                system_uuid: uuid(n),
                ip_address: String::new(),
                opsi_host_key: format!("{:032x}", 0xfeed_0000_u128 + u128::from(n)),
            }),
            product_on_client: Some(proto::ProductOnClient {
                client_id: fqdn,
                product_id: "win10-x64".into(),
                action_request: "setup".into(),
                ..Default::default()
            }),
            product_on_depot: None,
            product: Some(proto::Product {
                id: "win10-x64".into(),
                product_version: "10.0".into(),
                package_version: "3".into(),
                pxe_config_template: String::new(),
            }),
            depot_id: "depot1.example.org".into(),
            service_address: "https://config.example.org:4447".into(),
            boot_mode: proto::BootMode::Bios as i32,
            bootimage_append: vec!["lang=de".into()],
            product_property_states: Default::default(),
            modules: Some(proto::Modules {
                uefi: true,
                secureboot: false,
            }),
            revision,
            epoch: Default::default(),
        }
    }

    fn assert_status(status: &Status, code: Code, mention: &str, what: &str) {
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(mention),
            "{what}: message {:?} should mention {mention:?}",
            status.message()
        );
    }

    #[tokio::test]
    async fn bad_input_gets_a_clear_status_and_writes_nothing() {
        let f = Fixture::new(false).await;
        // A template outside the template dir, reachable by a symlink inside it.
        let outside = f.root.path().join("outside");
        std::fs::write(&outside, PXELINUX).unwrap();
        std::os::unix::fs::symlink(&outside, f.root.path().join("templates/sneaky")).unwrap();

        type Mutation = Box<dyn Fn(&mut proto::ClientBundle)>;
        let template = |t: String| -> Mutation {
            Box::new(move |b: &mut proto::ClientBundle| {
                b.product.as_mut().unwrap().pxe_config_template = t.clone()
            })
        };
        let cases: Vec<(&str, Mutation, Code, &str)> = vec![
            (
                "no host",
                Box::new(|b| b.host = None),
                Code::InvalidArgument,
                "host",
            ),
            (
                "no product",
                Box::new(|b| b.product = None),
                Code::InvalidArgument,
                "product",
            ),
            (
                "traversal",
                template("../../etc/passwd".into()),
                Code::InvalidArgument,
                "template",
            ),
            (
                "absolute outside",
                template(outside.display().to_string()),
                Code::InvalidArgument,
                "template",
            ),
            // The depot's set-up, not the caller's name.
            (
                "symlink out",
                template("sneaky".into()),
                Code::FailedPrecondition,
                "sneaky",
            ),
            (
                "missing template",
                template("nosuch".into()),
                Code::FailedPrecondition,
                "nosuch",
            ),
            (
                "malformed MAC",
                Box::new(|b| b.host.as_mut().unwrap().hardware_address = "00:11:22:33:44".into()),
                Code::InvalidArgument,
                "host.hardware_address",
            ),
            (
                "malformed UUID",
                Box::new(|b| b.host.as_mut().unwrap().system_uuid = "1234".into()),
                Code::InvalidArgument,
                "host.system_uuid",
            ),
            (
                "malformed FQDN",
                Box::new(|b| b.host.as_mut().unwrap().id = "no_domain".into()),
                Code::InvalidArgument,
                "host.id",
            ),
            (
                "kernel argument with a space",
                Box::new(|b| b.bootimage_append.push("a b".into())),
                Code::InvalidArgument,
                "bootimage_append[1]",
            ),
            (
                "no file name",
                Box::new(|b| {
                    let h = b.host.as_mut().unwrap();
                    h.hardware_address.clear();
                    h.system_uuid.clear();
                }),
                Code::FailedPrecondition,
                "neither a MAC",
            ),
            (
                "no action",
                Box::new(|b| b.product_on_client.as_mut().unwrap().action_request = "none".into()),
                Code::FailedPrecondition,
                "no netboot action",
            ),
            (
                "elilo without the UEFI module",
                Box::new(|b| {
                    b.boot_mode = proto::BootMode::UefiX86 as i32;
                    b.modules = Some(proto::Modules::default());
                }),
                Code::FailedPrecondition,
                "uefi",
            ),
            (
                "no service address",
                Box::new(|b| b.service_address.clear()),
                Code::FailedPrecondition,
                "clientconfig.configserver.url",
            ),
            (
                "other depot",
                Box::new(|b| b.depot_id = "depot2.example.org".into()),
                Code::FailedPrecondition,
                "depot2.example.org",
            ),
        ];
        for (what, mutate, code, mention) in cases {
            let mut b = bundle(1, 1);
            mutate(&mut b);
            let status = f.set(b).await.unwrap_err();
            assert_status(&status, code, mention, what);
            assert!(f.files().is_empty(), "{what} wrote {:?}", f.files());
        }
    }

    #[tokio::test]
    async fn another_clients_mac_or_uuid_already_exists() {
        let f = Fixture::new(false).await;
        f.set(bundle(1, 1)).await.unwrap();
        let before = f.files();
        let content_before = f.peek(&mac_file(1));
        let mut thief = bundle(2, 1);
        thief.host.as_mut().unwrap().hardware_address = mac(1);
        let status = f.set(thief).await.unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists);
        assert!(
            status.message().contains("client1.example.org")
                && status.message().contains("client2.example.org")
        );
        let mut thief = bundle(3, 1);
        thief.host.as_mut().unwrap().system_uuid = uuid(1);
        let status = f.set(thief).await.unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(f.files(), before, "a conflict wrote something");
        assert_eq!(f.peek(&mac_file(1)), content_before);
    }

    #[tokio::test]
    async fn a_stale_revision_is_aborted() {
        let f = Fixture::new(false).await;
        f.set(bundle(1, 5)).await.unwrap();
        let before = f.files();
        let content_before = f.peek(&mac_file(1));
        let mut old = bundle(1, 4);
        old.bootimage_append = vec!["lang=fr".into()];
        let status = f.set(old).await.unwrap_err();
        assert_status(&status, Code::Aborted, "stale revision 4", "older set");
        assert_eq!(f.peek(&mac_file(1)), content_before);
        assert_eq!(f.files(), before);
        // A removal older than what is held is refused too, and removes nothing.
        let status = f.remove("client1.example.org", 3).await.unwrap_err();
        assert_status(&status, Code::Aborted, "stale revision 3", "older removal");
        assert_eq!(f.files(), before);
        assert!(f.remove("client1.example.org", 6).await.unwrap());
        assert!(f.files().is_empty());
        let status = f.set(bundle(1, 6)).await.unwrap_err();
        assert_status(
            &status,
            Code::Aborted,
            "already removed",
            "removed revision",
        );
    }

    #[tokio::test]
    async fn a_legacy_only_depot_does_not_implement_set_pxe_config() {
        let f = Fixture::new(true).await;
        let status = f.set(bundle(1, 1)).await.unwrap_err();
        assert_status(&status, Code::Unimplemented, "SetPxeConfigByFqdn", "legacy");
        assert!(f.files().is_empty());
    }

    #[tokio::test]
    async fn the_legacy_path_checks_the_fqdn_and_needs_a_configserver() {
        let f = Fixture::new(false).await;
        let status = f.set_by_fqdn("no_domain").await;
        assert_status(&status, Code::InvalidArgument, "fqdn", "bad FQDN");
        let status = f.set_by_fqdn("client1.example.org").await;
        assert_status(
            &status,
            Code::FailedPrecondition,
            "--configserver",
            "no configserver",
        );
        let request = proto::RemovePxeConfigRequest {
            fqdn: "no_domain".into(),
            revision: 0,
            epoch: Default::default(),
        };
        let status = f
            .service
            .remove_pxe_config(Request::new(request))
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, "fqdn", "bad FQDN to remove");
    }

    #[tokio::test]
    async fn listing_pages_and_filters_by_product() {
        let f = Fixture::new(false).await;
        for n in 0..3 {
            f.set(bundle(n, 1)).await.unwrap();
        }
        let list = |page_size: u32, page_token: &str, product_id: &str| {
            let request = proto::ListPxeConfigsRequest {
                page_size,
                page_token: page_token.into(),
                product_id: product_id.into(),
            };
            f.service.list_pxe_configs(Request::new(request))
        };
        let all = list(0, "", "").await.unwrap().into_inner();
        assert_eq!((all.configs.len(), all.total), (3, 3));
        assert!(all.next_page_token.is_empty());
        let first = list(2, "", "").await.unwrap().into_inner();
        assert_eq!(first.next_page_token, "client1.example.org");
        let rest = list(2, &first.next_page_token, "")
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.configs[0].fqdn, "client2.example.org");
        // The product filter is trimmed and case-insensitive.
        let none = list(10, "", "ubuntu").await.unwrap().into_inner();
        assert!(none.configs.is_empty());
        let some = list(10, "", " WIN10-x64 ").await.unwrap().into_inner();
        assert_eq!(some.configs.len(), 3);
    }

    /// A batch of `bundles` (no trace context).
    fn batch(bundles: Vec<proto::ClientBundle>) -> Request<proto::BatchSetPxeConfigsRequest> {
        Request::new(proto::BatchSetPxeConfigsRequest {
            pushes: bundles
                .into_iter()
                .map(|b| proto::PxeConfigPush {
                    bundle: Some(b),
                    traceparent: String::new(),
                })
                .collect(),
        })
    }

    /// A batch result's error as the status it stands for.
    fn refused(result: &proto::PxeConfigPushResult) -> Status {
        match result.result.clone() {
            Some(proto::pxe_config_push_result::Result::Error(e)) => crate::status::from_item(e),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_batch_answers_each_bundle_as_set_pxe_config_would_and_writes_the_good_ones() {
        let f = Fixture::new(false).await;
        f.set(bundle(3, 5)).await.unwrap();
        let mut bad_mac = bundle(2, 1);
        bad_mac.host.as_mut().unwrap().hardware_address = "not-a-mac".into();
        let mut elsewhere = bundle(4, 1);
        elsewhere.depot_id = "depot9.example.org".into();
        let request = batch(vec![
            bundle(1, 1),
            bad_mac,
            bundle(3, 4),
            elsewhere,
            bundle(5, 2),
        ]);
        let results = f
            .service
            .batch_set_pxe_configs(request)
            .await
            .unwrap()
            .into_inner()
            .results;
        assert_eq!(results.len(), 5, "one result per push, in order");
        for (i, n) in [(0, 1), (4, 5)] {
            match &results[i].result {
                Some(proto::pxe_config_push_result::Result::Written(w)) => {
                    assert!(w.files.contains(&mac_file(n)), "{w:?}");
                }
                other => panic!("push {i} not written: {other:?}"),
            }
        }
        assert_status(
            &refused(&results[1]),
            Code::InvalidArgument,
            "not-a-mac",
            "bad MAC",
        );
        // The stale push keeps the ABORTED details the configserver reads.
        let stale = refused(&results[2]);
        assert_status(&stale, Code::Aborted, "stale revision 4", "older set");
        let aborted = crate::status::Aborted::from_status(&stale).expect("ABORTED details");
        assert_eq!(aborted.revision, 5);
        assert_eq!(refused(&results[3]).code(), Code::FailedPrecondition);
        // Only the two good ones (and the earlier set) are on disk.
        let mut want: Vec<String> = [1, 3, 5]
            .iter()
            .flat_map(|&n| [mac_file(n), uuid(n)])
            .collect();
        want.sort();
        assert_eq!(f.files(), want);
    }

    #[tokio::test]
    async fn a_batch_over_the_limit_is_refused_whole_and_writes_nothing() {
        let f = Fixture::new(false).await;
        let bundles = (0..=MAX_BATCH as u32).map(|n| bundle(n, 1)).collect();
        let status = f
            .service
            .batch_set_pxe_configs(batch(bundles))
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, "at most 1000", "too many");
        assert!(f.files().is_empty());
        // An empty batch is no error.
        let none = f
            .service
            .batch_set_pxe_configs(batch(vec![]))
            .await
            .unwrap();
        assert!(none.into_inner().results.is_empty());
    }

    #[tokio::test]
    async fn a_legacy_depot_and_one_without_batches_answer_unimplemented() {
        let legacy = Fixture::new(true).await;
        let status = legacy
            .service
            .batch_set_pxe_configs(batch(vec![bundle(1, 1)]))
            .await
            .unwrap_err();
        assert_status(&status, Code::Unimplemented, "SetPxeConfigByFqdn", "legacy");
        assert!(legacy.files().is_empty());
        let older = Fixture::with(false, false).await;
        let status = older
            .service
            .batch_set_pxe_configs(batch(vec![bundle(1, 1)]))
            .await
            .unwrap_err();
        assert_status(&status, Code::Unimplemented, "SetPxeConfig", "no batches");
        assert!(older.files().is_empty());
        older.set(bundle(1, 1)).await.unwrap();
    }
}
