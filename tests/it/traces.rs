//! OpenTelemetry traces across the hops: a configserver and a depot as
//! processes export to an in-test OTLP collector. One trace goes from an
//! admin call (the test's own, with a made-up W3C parent) through the outbox
//! row to the configserver's push, the depot's call, its render and write;
//! the client's read is a trace of its own (read → report → the action
//! becomes `none`), linked to the push's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use crate::common::postgres::{Engine, location};
use crate::common::process::{self, Server, admin_at};
use crate::common::*;
use crate::on_both_engines;
use pxeconf::proto;

/// The two services as their spans name them.
const CS: &str = "pxeconf-configserver";
const DEPOT: &str = "pxeconf-depot";
/// The trace and span of the test's admin call's made-up caller.
const ADMIN_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ADMIN_SPAN: &str = "00f067aa0ba902b7";

/// Hex digits as bytes, as the OTLP messages carry ids.
fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// One exported span: its service, name, ids and parent, its links (trace
/// and span ids) and its attributes (as text).
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    links: Vec<(Vec<u8>, Vec<u8>)>,
    attributes: Vec<(String, String)>,
}

impl Got {
    /// The attribute `key` as text.
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// An OTLP attribute value as text.
fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
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
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    got.push(Got {
                        service: service.clone(),
                        name: span.name,
                        trace: span.trace_id,
                        id: span.span_id,
                        parent: span.parent_span_id,
                        links: (span.links.into_iter())
                            .map(|l| (l.trace_id, l.span_id))
                            .collect(),
                        attributes: (span.attributes.into_iter())
                            .map(|kv| {
                                let value = text(kv.value.as_ref().and_then(|v| v.value.as_ref()));
                                (kv.key, value)
                            })
                            .collect(),
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
/// all are exported. Any span of a name may be on the chain (a retry, or
/// the legacy path's first try on the new path, makes another).
fn chain<'a>(spans: &'a [Got], want: &[(&str, &str)]) -> Option<Vec<&'a Got>> {
    fn below<'a>(
        spans: &'a [Got],
        parent: Option<&Got>,
        want: &[(&str, &str)],
    ) -> Option<Vec<&'a Got>> {
        let Some(((service, name), rest)) = want.split_first() else {
            return Some(Vec::new());
        };
        spans
            .iter()
            .filter(|s| s.service == *service && s.name == *name)
            .filter(|s| parent.is_none_or(|p| s.parent == p.id))
            .find_map(|s| {
                let mut chain = vec![s];
                chain.extend(below(spans, Some(s), rest)?);
                Some(chain)
            })
    }
    if want.is_empty() {
        return None;
    }
    below(spans, None, want)
}

/// A configserver on `engine` and depot 1 (legacy when `legacy`) as
/// processes, and the database the configserver uses.
struct Site {
    _configserver: Server,
    _depot: Server,
    dirs: DepotDirs,
    database: String,
}

/// Starts a [`Site`], exporting to `collector` when given, with one client
/// whose `setup` action is set by an admin call that carries the made-up
/// parent `ADMIN_TRACE`/`ADMIN_SPAN` in its metadata. `None`: PostgreSQL is
/// missing outside CI.
async fn push_one(collector: Option<&Collector>, legacy: bool, engine: Engine) -> Option<Site> {
    let endpoint = match collector {
        Some(collector) => Some(format!("http://{}", collector.start().await)),
        None => None,
    };
    let traced = |launch: process::Launch| match &endpoint {
        Some(endpoint) => launch
            .arg(&["--otlp-endpoint", endpoint])
            .env("OTEL_BSP_SCHEDULE_DELAY", "100"),
        None => launch,
    };
    let dirs = DepotDirs::new();
    let database = location(engine, &dirs.root.path().join("db")).await?;
    let cs = Server::start(traced(process::configserver_on(
        &database,
        dirs.root.path(),
    )))
    .await;
    let state = dirs.root.path().join("state");
    let mut depot = traced(process::depot(1, &dirs, &state, &cs.url()));
    if legacy {
        depot = depot.arg(&["--legacy"]);
    }
    let depot = Server::start(depot).await;
    let mut admin = admin_at(&cs.url()).await;
    seed(&mut admin, &[(1, depot.url())], 1, |_| 1).await;
    // The depot's start-up reconciliation retries until the depot is
    // registered; one landing after the action would write the config
    // itself, racing the push whose spans these tests follow.
    depot.wait_log("reconciliation done", 60).await;
    let mut request = tonic::Request::new(proto::SetActionRequestsRequest {
        action_requests: vec![proto::ActionRequest {
            client_id: "client0.example.org".into(),
            product_id: "win10-x64".into(),
            action_request: "setup".into(),
        }],
    });
    let traceparent = format!("00-{ADMIN_TRACE}-{ADMIN_SPAN}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    admin.set_action_requests(request).await.unwrap();
    Some(Site {
        _configserver: cs,
        _depot: depot,
        dirs,
        database,
    })
}

/// The `traceparent` the outbox row of client 0 stores.
async fn stored_traceparent(database: &str) -> Option<String> {
    use sqlx::Connection;
    let sql = "SELECT traceparent FROM pushes WHERE client_id = 'client0.example.org'";
    if database.starts_with("postgres://") {
        let mut conn = sqlx::PgConnection::connect(database).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let url = format!("sqlite://{database}?mode=ro");
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

/// The depot's `handler` span of one push, found in a trace that goes from
/// the test's admin call (its made-up parent) through the configserver's
/// call span, its `set_action_requests` handler and the push to the depot's
/// handler, with its render and write children. A legacy push is a call of
/// its own (the depot's call span between push and handler); a new-path
/// push is one bundle of a `BatchSetPxeConfigs`, whose `set_pxe_config`
/// span continues the push's trace directly.
fn pushed<'a>(spans: &'a [Got], handler: &str) -> Option<(Vec<&'a Got>, &'a Got, &'a Got)> {
    let mut want = vec![
        (CS, "grpc"),
        (CS, "set_action_requests"),
        (CS, "push"),
        (DEPOT, "grpc"),
        (DEPOT, handler),
    ];
    if handler == "set_pxe_config" {
        want.remove(3);
    }
    let chain = chain(spans, &want)?;
    let trace = unhex(ADMIN_TRACE);
    if chain[0].parent != unhex(ADMIN_SPAN) || chain.iter().any(|s| s.trace != trace) {
        return None;
    }
    let last = *chain.last().unwrap();
    let child = |name: &str| spans.iter().find(|s| s.name == name && s.parent == last.id);
    let (render, write) = (child("render")?, child("write")?);
    Some((chain, render, write))
}

/// The admin call, the configserver's push (the child of the admin call's
/// handler through the outbox row), the depot's handling of the bundle in
/// the batch call (the push's child across the processes, through the
/// push's own `traceparent`), and render and write under it are one trace:
/// the admin caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_goes_from_the_admin_call_to_the_depots_write() {
    let collector = Collector::default();
    let _site = push_one(Some(&collector), false, Engine::Sqlite).await;
    wait_for("the admin call's trace is exported", 60, || {
        let found = pushed(&collector.spans(), "set_pxe_config").is_some();
        async move { found }
    })
    .await;
    let spans = collector.spans();
    let (chain, render, write) = pushed(&spans, "set_pxe_config").unwrap();
    let trace = &chain[0].trace;
    assert_eq!(trace, &unhex(ADMIN_TRACE));
    assert_eq!(&render.trace, trace);
    assert_eq!(&write.trace, trace);
}

/// The legacy path: the admin call's trace goes on to SetPxeConfigByFqdn,
/// under which the seven look-ups are children, each the parent of the
/// configserver's handler call span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_push_shows_its_seven_lookups_as_children() {
    let collector = Collector::default();
    let _site = push_one(Some(&collector), true, Engine::Sqlite).await;
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
                    s.service == CS
                        && s.name == "grpc"
                        && s.parent == l.id
                        && s.trace == handler.trace
                })
            })
            .count();
        (lookups.len() == 7 && served == 7).then_some(served)
    };
    wait_for(
        "the admin call's legacy trace with 7 look-ups is exported",
        60,
        || {
            let found = lookups(&collector.spans()).is_some();
            async move { found }
        },
    )
    .await;
}

/// The depot's `read` span of client 0 and its chain in the read's own
/// trace: the configserver's call span, its report handler and the store's
/// recording of the read.
fn read_reported(spans: &[Got]) -> Option<Vec<&Got>> {
    let want = [
        (DEPOT, "read"),
        (CS, "grpc"),
        (CS, "report_pxe_config_read"),
        (CS, "record_read"),
    ];
    let chain = chain(spans, &want)?;
    chain
        .iter()
        .all(|s| s.trace == chain[0].trace)
        .then_some(chain)
}

/// The outbox row carries the admin call's `traceparent`; the client's read
/// is a trace of its own — the depot's `read` span, the report call, the
/// configserver's handler and the store's recording that turns the action
/// to `none` — and the read span links to the push's trace (the depot's
/// SetPxeConfig handler that wrote the config).
async fn a_read_is_a_trace_of_its_own_linked_to_its_push(engine: Engine) {
    let collector = Collector::default();
    let Some(site) = push_one(Some(&collector), false, engine).await else {
        return;
    };
    wait_for("the admin call's trace is exported", 60, || {
        let found = pushed(&collector.spans(), "set_pxe_config").is_some();
        async move { found }
    })
    .await;
    let stored = stored_traceparent(&site.database).await;
    let stored = stored.expect("the outbox row stores the admin call's traceparent");
    assert!(
        stored.starts_with(&format!("00-{ADMIN_TRACE}-")),
        "{stored}"
    );
    let handler = {
        let spans = collector.spans();
        let (chain, _, _) = pushed(&spans, "set_pxe_config").unwrap();
        (*chain.last().unwrap()).clone()
    };
    simulate_read(&site.dirs.pxe.join(mac_file(0)));
    wait_for("the read's trace is exported", 60, || {
        let found = read_reported(&collector.spans()).is_some();
        async move { found }
    })
    .await;
    let spans = collector.spans();
    let chain = read_reported(&spans).unwrap();
    let (read, recorded) = (chain[0], *chain.last().unwrap());
    assert!(read.parent.is_empty(), "the read is a root: {read:?}");
    assert_ne!(read.trace, handler.trace, "a trace of its own");
    assert_eq!(
        read.links,
        vec![(handler.trace.clone(), handler.id.clone())],
        "the read links to the push that wrote the config"
    );
    assert_eq!(recorded.attribute("action"), Some("none"), "{recorded:?}");
}

on_both_engines!(a_read_is_a_trace_of_its_own_linked_to_its_push);

/// Without an OTLP endpoint nothing is stored for traces: the outbox row
/// of a push made by an admin call that carries a `traceparent` has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_export_the_outbox_stores_no_traceparent() {
    let site = push_one(None, false, Engine::Sqlite).await.unwrap();
    let file = site.dirs.pxe.join(mac_file(0));
    wait_for("the config is written", 60, || {
        let written = file.exists();
        async move { written }
    })
    .await;
    assert_eq!(stored_traceparent(&site.database).await, None);
}
