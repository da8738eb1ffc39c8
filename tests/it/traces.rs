//! OpenTelemetry traces across the hops: a configserver and a depot as
//! processes export to an in-test OTLP collector, and one trace goes from
//! the configserver's push through the depot's call to its render and write.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use crate::common::process::{self, Server, admin_at};
use crate::common::*;

/// One exported span: its service, name, ids and parent.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
}

/// The collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Got>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    got.push(Got {
                        service: service.clone(),
                        name: span.name,
                        trace: span.trace_id,
                        id: span.span_id,
                        parent: span.parent_span_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on 127.0.0.1:0 for the rest of the test.
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }
}

/// The spans `want` names, each the child of the one before; `None` until
/// all are exported.
fn chain<'a>(spans: &'a [Got], want: &[(&str, &str)]) -> Option<Vec<&'a Got>> {
    let (first, rest) = want.split_first()?;
    // Any of the first's spans (a retry makes another) may head the chain.
    spans
        .iter()
        .filter(|s| s.service == first.0 && s.name == first.1)
        .find_map(|head| {
            let mut chain = vec![head];
            for (service, name) in rest {
                let parent = chain.last().unwrap();
                let child = spans
                    .iter()
                    .find(|s| s.service == *service && s.name == *name && s.parent == parent.id)?;
                chain.push(child);
            }
            Some(chain)
        })
}

/// Traced configserver and depot 1 (legacy when `legacy`) as processes, one
/// client with a `setup` action set: the spans the collector got so far
/// come from `collector`.
async fn push_one_traced(collector: &Collector, legacy: bool) -> (Server, Server, DepotDirs) {
    let addr = collector.start().await;
    let endpoint = format!("http://{addr}");
    let traced = |launch: process::Launch| {
        launch
            .arg(&["--otlp-endpoint", &endpoint])
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
    };
    let dirs = DepotDirs::new();
    let db = dirs.root.path().join("db").join("pxeconf.db");
    let cs = Server::start(traced(process::configserver(&db, dirs.root.path()))).await;
    let state = dirs.root.path().join("state");
    let mut depot = traced(process::depot(1, &dirs, &state, &cs.url()));
    if legacy {
        depot = depot.arg(&["--legacy"]);
    }
    let depot = Server::start(depot).await;
    let mut admin = admin_at(&cs.url()).await;
    seed(&mut admin, &[(1, depot.url())], 1, |_| 1).await;
    set_actions(&mut admin, 0..1, "setup").await;
    (cs, depot, dirs)
}

/// The depot's `handler` span of one push, found in a trace that goes
/// push → depot `grpc` → handler, with its render and write children.
fn pushed<'a>(spans: &'a [Got], handler: &str) -> Option<(Vec<&'a Got>, &'a Got, &'a Got)> {
    let want = [
        ("pxeconf-configserver", "push"),
        ("pxeconf-depot", "grpc"),
        ("pxeconf-depot", handler),
    ];
    let chain = chain(spans, &want)?;
    let last = *chain.last().unwrap();
    let child = |name: &str| spans.iter().find(|s| s.name == name && s.parent == last.id);
    let (render, write) = (child("render")?, child("write")?);
    Some((chain, render, write))
}

/// The configserver's push, the depot's call span (the push's child across
/// the processes), its SetPxeConfig handler, and render and write under it
/// are one trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_goes_from_the_push_to_the_depots_write() {
    let collector = Collector::default();
    let _site = push_one_traced(&collector, false).await;
    wait_for("the push's trace is exported", 60, || {
        let found = pushed(&collector.spans(), "set_pxe_config").is_some();
        async move { found }
    })
    .await;
    let spans = collector.spans();
    let (chain, render, write) = pushed(&spans, "set_pxe_config").unwrap();
    let trace = &chain[0].trace;
    assert!(chain.iter().all(|s| &s.trace == trace), "{chain:?}");
    assert_eq!(&render.trace, trace);
    assert_eq!(&write.trace, trace);
}

/// The legacy path: under SetPxeConfigByFqdn the seven look-ups are
/// children, each the parent of the configserver's handler call span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_push_shows_its_seven_lookups_as_children() {
    let collector = Collector::default();
    let _site = push_one_traced(&collector, true).await;
    let lookups = |spans: &[Got]| -> Option<usize> {
        let (chain, _, _) = pushed(spans, "set_pxe_config_by_fqdn")?;
        let handler = chain.last().unwrap();
        let lookups: Vec<&Got> = spans
            .iter()
            .filter(|s| s.name == "lookup" && s.parent == handler.id)
            .collect();
        // Each look-up's call on the configserver is its child.
        let served = lookups
            .iter()
            .filter(|l| {
                spans.iter().any(|s| {
                    s.service == "pxeconf-configserver"
                        && s.name == "grpc"
                        && s.parent == l.id
                        && s.trace == handler.trace
                })
            })
            .count();
        (lookups.len() == 7 && served == 7).then_some(served)
    };
    wait_for(
        "the legacy push's trace with 7 look-ups is exported",
        60,
        || {
            let found = lookups(&collector.spans()).is_some();
            async move { found }
        },
    )
    .await;
}
