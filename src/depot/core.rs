//! The depot's shared core: validate a bundle against this depot, render it,
//! hand it to the writer; the legacy path looks the bundle up first.

use std::sync::Arc;

use tracing::Instrument;

use super::error::{BUNDLE_OK, Error};
use super::links::PushLinks;
use super::marker;
use super::render::Renderer;
use super::template::Templates;
use super::upstream::client::Upstream;
use super::writer::{Rendered, SetOutcome, WriterError, WriterHandle};
use crate::domain::{ActionRequest, ClientBundle, Fqdn};
use crate::metrics::{Metrics, WriteLabels};

/// A config written: what the writer holds, and why its template was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The writer's outcome.
    pub outcome: SetOutcome,
    /// Why the template was chosen (empty when nothing was written).
    pub template_reason: String,
}

/// The depot's shared core: render a bundle, hand it to the writer.
pub struct DepotCore {
    /// This depot's id.
    pub depot_id: Fqdn,
    legacy: bool,
    batches: bool,
    templates: Templates,
    renderer: Renderer,
    writer: WriterHandle,
    upstream: Option<Upstream>,
    links: Arc<PushLinks>,
    metrics: Option<Arc<Metrics>>,
}

impl DepotCore {
    /// A core over its parts: serving `SetPxeConfig`, without a configserver
    /// (so without legacy look-ups).
    pub fn new(
        depot_id: Fqdn,
        templates: Templates,
        renderer: Renderer,
        writer: WriterHandle,
    ) -> Self {
        Self {
            depot_id,
            legacy: false,
            batches: true,
            templates,
            renderer,
            writer,
            upstream: None,
            links: Arc::default(),
            metrics: None,
        }
    }

    /// The same core in legacy-only mode (`SetPxeConfig` answers
    /// UNIMPLEMENTED) when `legacy` is true.
    pub fn with_legacy(mut self, legacy: bool) -> Self {
        self.legacy = legacy;
        self
    }

    /// The same core answering `BatchSetPxeConfigs` UNIMPLEMENTED (as
    /// depots before it did) when `batches` is false.
    pub fn with_batches(mut self, batches: bool) -> Self {
        self.batches = batches;
        self
    }

    /// The same core counting the bundles it is asked to write in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts a bundle the depot was asked to write, by what became of it
    /// (`ok`, or [`Error::label`]).
    pub fn count_bundle<T>(&self, result: &Result<T, Error>) {
        let Some(metrics) = &self.metrics else { return };
        let result = match result {
            Ok(_) => BUNDLE_OK.to_owned(),
            Err(e) => e.label().to_owned(),
        };
        metrics
            .bundles_received
            .get_or_create(&WriteLabels {
                depot: self.depot_id.to_string(),
                result,
            })
            .inc();
    }

    /// The same core looking clients up at `upstream` on the legacy path.
    pub fn with_upstream(mut self, upstream: Option<Upstream>) -> Self {
        self.upstream = upstream;
        self
    }

    /// Renders and writes a client's config, pushed in `epoch` (the
    /// configserver store's; empty: none).
    pub async fn set(&self, bundle: ClientBundle, epoch: &str) -> Result<Applied, Error> {
        if let Some(bundle_depot) = &bundle.depot_id
            && bundle_depot != &self.depot_id
        {
            return Err(Error::WrongDepot {
                bundle: bundle_depot.clone(),
                this: self.depot_id.clone(),
            });
        }
        if bundle.action_request == ActionRequest::None {
            return Err(Error::NoAction {
                fqdn: bundle.client.fqdn.clone(),
                product: bundle.product.id.to_string(),
            });
        }
        let files = bundle.client.pxe_file_names();
        if files.is_empty() {
            return Err(WriterError::NoFileNames {
                fqdn: bundle.client.fqdn.clone(),
            }
            .into());
        }
        // Written without `service=`, the config would boot an image that
        // reaches nothing, and its read would still turn the action `none`:
        // the action lost, nothing installed.
        if !crate::domain::opsi::names_service(&bundle.service_address) {
            return Err(Error::NoService {
                fqdn: bundle.client.fqdn.clone(),
            });
        }
        let picked = self.templates.pick(&bundle)?;
        let (template, template_reason) = (picked.template, picked.reason);
        let content = tracing::info_span!("render", template = %template.name)
            .in_scope(|| self.renderer.render(&template.text, &bundle))?;
        // The marker goes in here, after rendering, so that both paths
        // write it the same way.
        let content = marker::stamp(&content, &bundle.client.fqdn, bundle.revision);
        // Only when traces are exported: the read of this config links here.
        let noted = crate::telemetry::exporting().then(|| bundle.client.fqdn.clone());
        let revision = bundle.revision;
        let outcome = self
            .writer
            .set(Rendered {
                fqdn: bundle.client.fqdn,
                product_id: bundle.product.id,
                action_request: bundle.action_request,
                revision: bundle.revision,
                files,
                content: content.into(),
                template: template.name.clone(),
                epoch: Arc::from(epoch),
            })
            // The caller's wait for the writer round that makes it durable.
            .instrument(tracing::info_span!("write"))
            .await?;
        // A retried push of the config held wrote nothing: the read links
        // to the push that did.
        if let Some(fqdn) = noted.filter(|_| outcome.written) {
            self.links.note(&fqdn, revision);
        }
        Ok(Applied {
            outcome,
            template_reason,
        })
    }

    /// The legacy path: looks the client up at the configserver and writes
    /// its config; removes it when the client has no netboot action.
    pub async fn set_by_fqdn(
        &self,
        fqdn: Fqdn,
        revision: u64,
        epoch: &str,
    ) -> Result<Applied, Error> {
        let upstream = self.upstream.as_ref().ok_or(Error::NoConfigServer)?;
        match upstream.lookup_bundle(&fqdn, revision).await? {
            Some(bundle) => self.set(bundle, epoch).await,
            None => {
                self.writer.remove(fqdn, revision, Arc::from(epoch)).await?;
                Ok(Applied {
                    outcome: SetOutcome {
                        files: Vec::new(),
                        template: String::new(),
                        revision,
                        written: false,
                    },
                    template_reason: String::new(),
                })
            }
        }
    }

    /// The writer, for removal and listing.
    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    /// Which push wrote each held config, for the links of their reads.
    pub fn links(&self) -> Arc<PushLinks> {
        self.links.clone()
    }

    /// Whether `SetPxeConfig` is switched off.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Whether `BatchSetPxeConfigs` is served.
    pub fn takes_batches(&self) -> bool {
        self.batches && !self.legacy
    }
}
