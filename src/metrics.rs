//! Prometheus metrics for both roles, one registry per process.
//!
//! Families are labelled by depot so that a process hosting several depots
//! (the demo, the tests) keeps their series apart.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

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

/// Labels naming a server of this process (`depot`, `configserver`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    /// The server's role.
    pub server: String,
}

/// Labels of a connection the server closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// The server's role.
    pub server: String,
    /// `limit`, `evicted`, `handshake_timeout`, `tls_error`, `silent`, `idle`.
    pub reason: String,
}

/// Labels of a refused caller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// The gRPC service (a known one, else `other`), or `tls`.
    pub service: String,
    /// `unauthenticated`, `permission_denied` or `handshake`.
    pub reason: String,
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
    /// Bundles a depot was asked to write (each `SetPxeConfig`, each bundle
    /// of a `BatchSetPxeConfigs`), by result: `ok`, `aborted`, `refused` or
    /// `internal`.
    pub bundles_received: Family<WriteLabels, Counter>,
    /// Read reports a depot sent, by result.
    pub read_reports: Family<WriteLabels, Counter>,
    /// Served RPC latency in seconds, by path and status code.
    pub rpc_latency: Family<RpcLatencyLabels, Histogram, fn() -> Histogram>,
    /// Open connections, by server.
    pub connections: Family<ServerLabel, Gauge>,
    /// Connections the server closed, by server and reason.
    pub connections_closed: Family<ConnLabels, Counter>,
    /// Refused callers, by service and reason.
    pub auth_failures: Family<AuthLabels, Counter>,
    /// When a server's TLS certificate ends, Unix seconds (a TLS server's only).
    pub tls_certificate_expiry: Family<ServerLabel, Gauge>,
}

/// The results a depot's counters can show, each created at zero when it
/// starts: none for a family the depot never counts (a legacy-only depot
/// takes no bundles, one without a configserver sends no reports — series
/// that can never move would read as stuck).
#[derive(Debug, Clone, Copy)]
pub struct DepotResults<'a> {
    /// `pxeconf_config_writes_total`'s.
    pub writes: &'a [&'a str],
    /// `pxeconf_bundles_received_total`'s.
    pub bundles: &'a [&'a str],
    /// `pxeconf_read_reports_total`'s.
    pub reports: &'a [&'a str],
}

impl Metrics {
    /// A fresh registry with every family registered.
    // One entry per family, names and help side by side: longer than 60
    // lines, but splitting it would only scatter the list.
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
            bundles_received: registered(
                &mut r,
                "bundles_received",
                "Bundles a depot was asked to write (SetPxeConfig, or one of a BatchSetPxeConfigs), by result",
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
            connections: registered(
                &mut r,
                "connections",
                "Open gRPC connections",
                Family::default(),
            ),
            connections_closed: registered(
                &mut r,
                "connections_closed",
                "gRPC connections the server closed: limit, evicted, handshake_timeout, tls_error, silent, idle",
                Family::default(),
            ),
            auth_failures: registered(
                &mut r,
                "auth_failures",
                "Refused callers: a missing or wrong key or certificate, a failed TLS handshake",
                Family::default(),
            ),
            tls_certificate_expiry: registered(
                &mut r,
                "tls_certificate_expiry_timestamp_seconds",
                "When the server's TLS certificate in use ends, in Unix seconds",
                Family::default(),
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

    /// Creates the series of the depot `depot` at zero, every result of
    /// each family in `results` (error results too). A series is born at
    /// its first sample otherwise, and until then an alert on `rate()` or
    /// `increase()` sees no data rather than none happening — the first
    /// failed write would not raise it.
    pub fn announce_depot(&self, depot: &str, results: &DepotResults<'_>) {
        let label = DepotLabel {
            depot: depot.to_owned(),
        };
        let _ = self.pending_configs.get_or_create(&label);
        let _ = self.tftp_reads.get_or_create(&label);
        for (family, names) in [
            (&self.config_writes, results.writes),
            (&self.bundles_received, results.bundles),
            (&self.read_reports, results.reports),
        ] {
            for result in names {
                let _ = family.get_or_create(&WriteLabels {
                    depot: depot.to_owned(),
                    result: (*result).to_owned(),
                });
            }
        }
    }

    /// Creates the configserver's look-up series at zero, one per legacy
    /// RPC: "0 look-ups" is what the new path should show, and a scrape can
    /// only show it with the series there.
    pub fn announce_configserver(&self) {
        for rpc in crate::proto::LEGACY_LOOKUPS {
            let _ = self.lookups.get_or_create(&RpcLabel {
                rpc: (*rpc).to_owned(),
            });
        }
    }

    /// Counts a refused caller of `service`.
    pub fn auth_failure(&self, service: &str, reason: &str) {
        self.auth_failures
            .get_or_create(&AuthLabels {
                service: service.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
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

/// Every RPC path pxeconf serves (`/package.Service/Method`): its own
/// services, health and reflection, from their descriptor sets.
fn known_paths() -> &'static HashSet<String> {
    static PATHS: LazyLock<HashSet<String>> = LazyLock::new(|| {
        use prost::Message;
        let sets = [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut paths = HashSet::new();
        for bytes in sets {
            // The sets are embedded at build time; one that does not decode
            // leaves its paths under "other".
            let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        paths.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        paths
    });
    &PATHS
}

/// The metrics label of a request path: the path itself when pxeconf
/// serves it, else `other` (a caller cannot grow the label set).
pub fn rpc_label(path: &str) -> &str {
    if known_paths().contains(path) {
        path
    } else {
        "other"
    }
}

/// The service of a known path (`pxeconf.v1.Depot`), else `other`.
pub fn service_label(path: &str) -> &str {
    match rpc_label(path) {
        "other" => "other",
        known => known[1..].split('/').next().unwrap_or("other"),
    }
}

/// Connections the metrics listener serves at once; one more is closed at
/// once (a scraper needs one or two).
const METRICS_CONNECTIONS: usize = 16;
/// How long a metrics connection has to send its request's head.
const METRICS_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a metrics connection lives at most.
const METRICS_CONNECTION_LIFE: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `GET /metrics` (Prometheus text format) on `listener` until
/// `shutdown` completes: at most [`METRICS_CONNECTIONS`] connections, each
/// closed when its request's head takes longer than
/// [`METRICS_HEAD_TIMEOUT`] or it lives past [`METRICS_CONNECTION_LIFE`].
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
    // Not `axum::serve`: it gives hyper no timer (so no timeout for a
    // request's head) and takes any number of connections — a peer that
    // opened many and sent nothing held descriptors that the gRPC listener,
    // the depot's writer and the stores need.
    let permits = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, say: the next accept may work.
                Err(error) => {
                    tracing::warn!(%error, "metrics listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(METRICS_HEAD_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(METRICS_CONNECTION_LIFE, connection).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the peer closed `stream` within `within`.
    async fn closed_within(
        stream: &mut tokio::net::TcpStream,
        within: std::time::Duration,
    ) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn the_metrics_listener_caps_its_connections_and_closes_silent_ones() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_http(listener, Metrics::new(), async {
            let _ = stopped.await;
        }));
        let mut silent = Vec::new();
        for _ in 0..METRICS_CONNECTIONS {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Past the cap: closed at once.
        let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut over, std::time::Duration::from_secs(2)).await);
        // Silent ones are closed once their request's head is overdue.
        let limit = METRICS_HEAD_TIMEOUT + std::time::Duration::from_secs(5);
        for stream in &mut silent {
            assert!(
                closed_within(stream, limit).await,
                "a silent connection stays"
            );
        }
        // Their places are free again: a scrape is answered.
        let mut scrape = tokio::net::TcpStream::connect(addr).await.unwrap();
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        scrape.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("# EOF\n"), "{answer}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn only_served_paths_become_labels() {
        assert_eq!(
            rpc_label("/pxeconf.v1.Depot/SetPxeConfig"),
            "/pxeconf.v1.Depot/SetPxeConfig"
        );
        assert_eq!(
            rpc_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        for made_up in [
            "/pxeconf.v1.Depot/Nope",
            "/pxeconf.v1.X/Y",
            "/",
            "",
            "/a/b/c",
        ] {
            assert_eq!(rpc_label(made_up), "other", "{made_up}");
        }
        assert_eq!(
            service_label("/pxeconf.v1.Admin/ListDepots"),
            "pxeconf.v1.Admin"
        );
        assert_eq!(service_label("/pxeconf.v1.Admin/Nope"), "other");
    }
}
