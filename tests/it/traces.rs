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

/// The configserver's push, the depot's call span (the push's child across
/// the processes), its SetPxeConfig handler, and render and write under it
/// are one trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_goes_from_the_push_to_the_depots_write() {
    let collector = Collector::default();
    let addr = collector.start().await;
    let endpoint = format!("http://{addr}");
    let root = tempfile::tempdir().unwrap();
    let traced = |launch: process::Launch| {
        launch
            .arg(&["--otlp-endpoint", &endpoint])
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
    };
    let db = root.path().join("db").join("pxeconf.db");
    let cs = Server::start(traced(process::configserver(&db, root.path()))).await;
    let dirs = DepotDirs::new();
    let state = dirs.root.path().join("state");
    let depot = Server::start(traced(process::depot(1, &dirs, &state, &cs.url()))).await;
    let mut admin = admin_at(&cs.url()).await;
    seed(&mut admin, &[(1, depot.url())], 1, |_| 1).await;
    set_actions(&mut admin, 0..1, "setup").await;
    let want = [
        ("pxeconf-configserver", "push"),
        ("pxeconf-depot", "grpc"),
        ("pxeconf-depot", "set_pxe_config"),
    ];
    let done = |spans: &[Got]| {
        let chain = chain(spans, &want)?;
        let handler = *chain.last().unwrap();
        // Render and write are both children of the handler.
        let child = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name && s.parent == handler.id)
                .cloned()
        };
        Some((
            chain.into_iter().cloned().collect::<Vec<_>>(),
            child("render")?,
            child("write")?,
        ))
    };
    wait_for("the push's trace is exported", 60, || {
        let spans = collector.spans();
        let found = done(&spans).is_some();
        async move { found }
    })
    .await;
    let spans = collector.spans();
    let (chain, render, write) = done(&spans).unwrap();
    let trace = &chain[0].trace;
    assert!(chain.iter().all(|s| &s.trace == trace), "{chain:?}");
    assert_eq!(&render.trace, trace);
    assert_eq!(&write.trace, trace);
    drop(depot);
    drop(cs);
}
