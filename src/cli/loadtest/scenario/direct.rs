//! `direct`: C concurrent `SetPxeConfig` calls over one HTTP/2 channel at one
//! depot (like ghz), for hosts outside the inventory — or, with a batch size
//! above one, `BatchSetPxeConfigs` calls of that many bundles; and its baseline, the
//! standard health `Check` — a no-op on the same server stack — driven the
//! same way. Writes are cross-checked with the depot's write counter.

use std::future::Future;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use super::super::channel;
use super::super::cpu::PhaseCpu;
use super::super::names::{DIRECT_BASE, Names};
use super::super::stats::{Latencies, Percentiles};
use super::super::target::TargetDepot;
use crate::auth::{EnvKey, load_key};
use crate::cli::error::CliError;
use crate::proto;

/// Calls driven at a fixed concurrency.
#[derive(Debug, Serialize)]
pub struct Driven {
    /// Calls made.
    pub calls: u32,
    /// Calls in flight.
    pub concurrency: usize,
    /// Calls that succeeded.
    pub ok: u64,
    /// The first failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Wall seconds.
    pub seconds: f64,
    /// Successful calls per second.
    pub calls_per_second: f64,
    /// Call latency.
    pub latency_ms: Option<Percentiles>,
    /// CPU spent per call, if `/proc` told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<PhaseCpu>,
}

/// One direct run.
#[derive(Debug, Serialize)]
pub struct DirectResult {
    /// The depot driven.
    pub depot: String,
    /// Bundles per call: 1 is `SetPxeConfig`, more `BatchSetPxeConfigs`.
    pub batch: usize,
    /// The calls.
    #[serde(flatten)]
    pub driven: Driven,
    /// Configs written by the calls that succeeded (each of their bundles).
    pub configs: u64,
    /// Configs per second.
    pub configs_per_second: f64,
    /// Configs the depot counted as written during the run, if its metrics
    /// are known (must equal `configs`).
    pub writes_counted: Option<u64>,
}

/// Drives `calls` calls of `call(i)` with `concurrency` in flight.
pub async fn drive<F, Fut>(calls: u32, concurrency: usize, call: F) -> Driven
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let start = Instant::now();
    // Each call counted as it ends: a list of every call's result (a
    // status is ~200 bytes) grew to hundreds of MB at millions of calls,
    // and into the load test's own peak RSS.
    let (latencies, first_error) = futures::stream::iter(0..calls)
        .map(|i| {
            let fut = call(i);
            async move {
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency)
        .fold(
            (Latencies::new(), None),
            |(mut latencies, mut first_error), (took, r)| async move {
                match r {
                    Ok(()) => latencies.record(took),
                    Err(s) => {
                        first_error.get_or_insert_with(|| {
                            format!("{}: {}", crate::status::code_name(s.code()), s.message())
                        });
                    }
                }
                (latencies, first_error)
            },
        )
        .await;
    let seconds = start.elapsed().as_secs_f64().max(1e-6);
    Driven {
        calls,
        concurrency,
        ok: latencies.count(),
        first_error,
        seconds,
        calls_per_second: latencies.count() as f64 / seconds,
        latency_ms: latencies.percentiles(),
        cpu: None,
    }
}

/// The depot's host key (from its key file).
fn depot_key(depot: &TargetDepot) -> Result<crate::domain::Secret, CliError> {
    let file = depot
        .key_file
        .as_deref()
        .ok_or("direct needs the depot's key (--depot-key-file)")?;
    Ok(load_key(&EnvKey::default(), Some(file))?.ok_or("the depot key file is empty")?)
}

/// Runs `direct` against `depot`: `configs` bundles, `batch` per call.
pub async fn run(
    depot: &TargetDepot,
    names: &Names,
    configs: u32,
    concurrency: usize,
    batch: usize,
) -> Result<DirectResult, CliError> {
    let client = channel::depot(&depot.endpoint, &depot_key(depot)?).await?;
    let product = names.product();
    let writes = || async {
        match &depot.metrics {
            Some(m) => m
                .sum(
                    "pxeconf_config_writes_total",
                    &[("depot", &depot.id), ("result", "ok")],
                )
                .await
                .ok(),
            None => None,
        }
    };
    let before = writes().await;
    let written = std::sync::atomic::AtomicU64::new(0);
    let driven = if batch <= 1 {
        drive(configs, concurrency, |i| {
            let mut client = client.clone();
            let bundle = bundle(names, DIRECT_BASE + i, &depot.id, &product);
            let written = &written;
            async move {
                client.set_pxe_config(bundle).await?;
                written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        })
        .await
    } else {
        let calls = configs.div_ceil(batch as u32);
        drive(calls, concurrency, |i| {
            let mut client = client.clone();
            let first = i * batch as u32;
            let pushes = (first..configs.min(first + batch as u32))
                .map(|n| proto::PxeConfigPush {
                    bundle: Some(bundle(names, DIRECT_BASE + n, &depot.id, &product)),
                    traceparent: String::new(),
                })
                .collect();
            let written = &written;
            async move {
                let request = proto::BatchSetPxeConfigsRequest { pushes };
                let results = client.batch_set_pxe_configs(request).await?.into_inner();
                // Every written bundle counts; the call counts as failed
                // with its first refused one.
                let mut first_error = None;
                for r in results.results {
                    match r.result {
                        Some(proto::pxe_config_push_result::Result::Written(_)) => {
                            written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Some(proto::pxe_config_push_result::Result::Error(e)) => {
                            first_error.get_or_insert(e);
                        }
                        None => {
                            first_error.get_or_insert(tonic_types::pb::Status {
                                code: tonic::Code::Unknown as i32,
                                message: "a bundle without a result".into(),
                                details: vec![],
                            });
                        }
                    }
                }
                match first_error {
                    Some(error) => Err(crate::status::from_item(error)),
                    None => Ok(()),
                }
            }
        })
        .await
    };
    let after = writes().await;
    let configs = written.into_inner();
    Ok(DirectResult {
        depot: depot.id.clone(),
        batch: batch.max(1),
        configs_per_second: configs as f64 / driven.seconds,
        configs,
        driven,
        writes_counted: before.zip(after).map(|(b, a)| (a - b) as u64),
    })
}

/// Removes what `direct` wrote: no config of the run stays on a remote
/// depot (its revision floor per host does, as for every removed client).
pub async fn remove(depot: &TargetDepot, names: &Names, calls: u32) -> Result<(), CliError> {
    let client = channel::depot(&depot.endpoint, &depot_key(depot)?).await?;
    let removed = drive(calls, 16, |i| {
        let mut client = client.clone();
        let request = proto::RemovePxeConfigRequest {
            fqdn: names.fqdn(DIRECT_BASE + i),
            revision: 2,
            epoch: Default::default(),
        };
        async move { client.remove_pxe_config(request).await.map(drop) }
    })
    .await;
    match removed.first_error {
        None => Ok(()),
        Some(e) => Err(format!("removing the direct scenario's configs: {e}").into()),
    }
}

/// The no-op baseline: health `Check` calls at `depot`.
pub async fn noop(depot: &TargetDepot, calls: u32, concurrency: usize) -> Result<Driven, CliError> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let client = HealthClient::new(channel::connect(&depot.endpoint, "the depot").await?);
    Ok(drive(calls, concurrency, |_| {
        let mut client = client.clone();
        async move {
            client
                .check(HealthCheckRequest {
                    service: "pxeconf.v1.Depot".into(),
                })
                .await
                .map(drop)
        }
    })
    .await)
}

/// The bundle of host `n` (BIOS, the depot's default template).
pub fn bundle(names: &Names, n: u32, depot_id: &str, product: &str) -> proto::ClientBundle {
    proto::ClientBundle {
        host: Some(names.host(n)),
        product_on_client: Some(proto::ProductOnClient {
            client_id: names.fqdn(n),
            product_id: product.to_owned(),
            action_request: "setup".into(),
            ..Default::default()
        }),
        product_on_depot: None,
        product: Some(proto::Product {
            id: product.to_owned(),
            product_version: "1.0".into(),
            package_version: "1".into(),
            pxe_config_template: String::new(),
        }),
        depot_id: depot_id.to_owned(),
        service_address: "https://config.loadtest.invalid:4447".into(),
        boot_mode: proto::BootMode::Bios as i32,
        bootimage_append: vec!["nomodeset".into(), "lang=de".into()],
        product_property_states: [("lang".to_string(), "de_DE".to_string())].into(),
        modules: Some(proto::Modules {
            uefi: true,
            secureboot: true,
        }),
        revision: 1,
        epoch: Default::default(),
    }
}
