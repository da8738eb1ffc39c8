//! Logging through `tracing`: human-readable on a terminal, JSON on request;
//! the level comes from `RUST_LOG` (default `info`). With an OTLP endpoint
//! the same spans also go to an OpenTelemetry collector, and W3C
//! `traceparent` carries a trace across the gRPC hops.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Human,
    /// One JSON object per event.
    Json,
}

/// Why trace export could not start.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {source}")]
pub struct TelemetryError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Installs the global subscriber, writing to stderr, at `info` unless
/// `RUST_LOG` says otherwise. Calling it twice is harmless.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like `init`, with another level when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default: &str) {
    install(format, default, None);
}

/// The subscriber below the layers: the level filter over the registry.
type Base = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;

/// A boxed layer over `Base`.
type BoxedLayer = Box<dyn Layer<Base> + Send + Sync>;

/// Installs the log layer, and `extra` (the export layer) when given.
fn install(format: LogFormat, default: &str, extra: Option<BoxedLayer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: BoxedLayer = match format {
        LogFormat::Human => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let layers: Vec<BoxedLayer> = std::iter::once(fmt).chain(extra).collect();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init();
}

/// The trace exporter of a server; `shutdown` flushes what is buffered.
/// Without an endpoint it holds nothing and costs nothing.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(%error, "flushing traces failed");
        }
    }
}

/// Installs the global subscriber of a server: logs as `init`, and with an
/// `otlp_endpoint` also an OpenTelemetry layer exporting spans over OTLP/gRPC
/// in batches, as `service` (e.g. `pxeconf-depot`). Must run inside the
/// tokio runtime (the exporter's channel lives there).
pub fn init_server(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    service: &'static str,
) -> Result<Telemetry, TelemetryError> {
    let Some(endpoint) = otlp_endpoint else {
        init(format);
        return Ok(Telemetry::default());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| TelemetryError {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("pxeconf"))
        .boxed();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    install(format, "info", Some(layer));
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Set once spans are exported: servers then open a span per call.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans go to a collector (`init_server` with an endpoint).
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The span of one incoming gRPC call, a child of the caller's span when
/// the call carries a W3C `traceparent` (for tonic's `trace_fn`).
pub fn server_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("grpc", rpc = %request.uri().path());
    let cx = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(cx);
    span
}

/// Wraps `message` in a request carrying the current span's `traceparent`.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    inject(request.metadata_mut());
    request
}

/// Adds the current span's W3C `traceparent` to outgoing gRPC metadata
/// (nothing when tracing export is off).
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}

/// Makes the `traceparent` of incoming gRPC metadata the parent of `span`.
pub fn set_parent(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(metadata)));
    let _ = span.set_parent(cx);
}

/// The current span's W3C `traceparent`, to store with work done later.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut fields = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    fields.remove("traceparent")
}

/// Makes a stored `traceparent` the parent of `span`.
pub fn set_parent_from(span: &tracing::Span, traceparent: &str) {
    let fields = std::collections::HashMap::from([("traceparent".to_string(), traceparent.into())]);
    let cx = TraceContextPropagator::new().extract(&fields);
    let _ = span.set_parent(cx);
}

/// Links `span` to the span a stored `traceparent` names (another trace,
/// e.g. the push that wrote a config whose read `span` is).
pub fn add_link_from(span: &tracing::Span, traceparent: &str) {
    let fields = std::collections::HashMap::from([("traceparent".to_string(), traceparent.into())]);
    let cx = TraceContextPropagator::new().extract(&fields);
    span.add_link(cx.span().span_context().clone());
}

/// Makes `span` the root of a trace of its own, whatever span it runs in
/// (for work that outlives its task's long-lived span, e.g. a read).
pub fn set_root(span: &tracing::Span) {
    let _ = span.set_parent(opentelemetry::Context::new());
}

/// Writes propagation fields into tonic metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Reads propagation fields from tonic metadata.
struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
