//! Prometheus metrics for both roles, one registry per process.
//!
//! Families are labelled by depot so that a process hosting several depots
//! (the demo, the tests) keeps their series apart.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a depot.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DepotLabel {
    /// The depot id.
    pub depot: String,
}

/// Labels of a push from the configserver to a depot.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// The depot id.
    pub depot: String,
    /// `new` or `legacy`.
    pub path: String,
    /// `set` or `remove`.
    pub op: String,
    /// `ok`, `stale`, `rejected`, `unavailable`, `unimplemented`, `error`.
    pub result: String,
}

/// Labels of a configserver look-up RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabel {
    /// The RPC name, e.g. `GetHost`.
    pub rpc: String,
}

/// Labels of a served RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLatencyLabels {
    /// The gRPC path, e.g. `/pxeconf.v1.Depot/SetPxeConfig`.
    pub path: String,
    /// The gRPC status code name, e.g. `Ok`.
    pub code: String,
}

/// Labels of a depot's config write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// The depot id.
    pub depot: String,
    /// `ok` or the error kind.
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s covers a loopback no-op up to a push stuck behind a busy disk.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

/// All series pxeconf exports.
pub struct Metrics {
    registry: Registry,
    /// Pushes from the configserver, by depot, path, operation and result.
    pub pushes: Family<PushLabels, Counter>,
    /// Pushes owed to a depot.
    pub queue_depth: Family<DepotLabel, Gauge>,
    /// Legacy look-ups served by the configserver, by RPC.
    pub lookups: Family<RpcLabel, Counter>,
    /// PXE configs a depot holds.
    pub pending_configs: Family<DepotLabel, Gauge>,
    /// TFTP reads a depot saw.
    pub tftp_reads: Family<DepotLabel, Counter>,
    /// Config writes on a depot, by result.
    pub config_writes: Family<WriteLabels, Counter>,
    /// Read reports a depot sent, by result.
    pub read_reports: Family<WriteLabels, Counter>,
    /// Served RPC latency in seconds, by path and status code.
    pub rpc_latency: Family<RpcLatencyLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("pxeconf");
        let pushes = Family::<PushLabels, Counter>::default();
        let queue_depth = Family::<DepotLabel, Gauge>::default();
        let lookups = Family::<RpcLabel, Counter>::default();
        let pending_configs = Family::<DepotLabel, Gauge>::default();
        let tftp_reads = Family::<DepotLabel, Counter>::default();
        let config_writes = Family::<WriteLabels, Counter>::default();
        let read_reports = Family::<WriteLabels, Counter>::default();
        let rpc_latency =
            Family::<RpcLatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "pushes",
            "Pushes from the configserver to depots",
            pushes.clone(),
        );
        registry.register(
            "dispatch_queue_depth",
            "Pushes owed to a depot",
            queue_depth.clone(),
        );
        registry.register("lookups", "Legacy look-ups served, by RPC", lookups.clone());
        registry.register(
            "pending_configs",
            "PXE configs a depot holds",
            pending_configs.clone(),
        );
        registry.register(
            "tftp_reads",
            "TFTP reads of PXE configs seen by a depot",
            tftp_reads.clone(),
        );
        registry.register(
            "config_writes",
            "PXE config writes on a depot",
            config_writes.clone(),
        );
        registry.register(
            "read_reports",
            "Read reports sent by a depot",
            read_reports.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "Served gRPC call latency",
            rpc_latency.clone(),
        );
        Arc::new(Self {
            registry,
            pushes,
            queue_depth,
            lookups,
            pending_configs,
            tftp_reads,
            config_writes,
            read_reports,
            rpc_latency,
        })
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The look-up count for one RPC name.
    pub fn lookup_count(&self, rpc: &str) -> u64 {
        self.lookups
            .get_or_create(&RpcLabel {
                rpc: rpc.to_owned(),
            })
            .get()
    }

    /// The look-ups of every RPC summed.
    pub fn lookups_total(&self) -> u64 {
        crate::proto::LEGACY_LOOKUPS
            .iter()
            .map(|rpc| self.lookup_count(rpc))
            .sum()
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until
/// `shutdown` completes.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
