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
use prometheus_client::registry::{Metric, Registry};

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

/// `metric`, after registering a handle to it (they share their values).
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
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
        let mut r = Registry::with_prefix("pxeconf");
        let latency =
            Family::<RpcLatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        Arc::new(Self {
            pushes: registered(
                &mut r,
                "pushes",
                "Pushes from the configserver to depots",
                Family::default(),
            ),
            queue_depth: registered(
                &mut r,
                "dispatch_queue_depth",
                "Pushes owed to a depot",
                Family::default(),
            ),
            lookups: registered(
                &mut r,
                "lookups",
                "Legacy look-ups served, by RPC",
                Family::default(),
            ),
            pending_configs: registered(
                &mut r,
                "pending_configs",
                "PXE configs a depot holds",
                Family::default(),
            ),
            tftp_reads: registered(
                &mut r,
                "tftp_reads",
                "TFTP reads of PXE configs seen by a depot",
                Family::default(),
            ),
            config_writes: registered(
                &mut r,
                "config_writes",
                "PXE config writes on a depot",
                Family::default(),
            ),
            read_reports: registered(
                &mut r,
                "read_reports",
                "Read reports sent by a depot",
                Family::default(),
            ),
            rpc_latency: registered(
                &mut r,
                "rpc_duration_seconds",
                "Served gRPC call latency",
                latency,
            ),
            registry: r,
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
