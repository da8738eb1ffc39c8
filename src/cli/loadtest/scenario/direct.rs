//! `direct`: C concurrent `SetPxeConfig` calls over one HTTP/2 channel at one
//! depot (like ghz), for hosts outside the inventory; and its baseline, the
//! standard health `Check` — a no-op on the same server stack — driven the
//! same way. Writes are cross-checked with the depot's write counter.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use super::super::channel;
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
}

/// One direct run.
#[derive(Debug, Serialize)]
pub struct DirectResult {
    /// The depot driven.
    pub depot: String,
    /// The `SetPxeConfig` calls.
    #[serde(flatten)]
    pub driven: Driven,
    /// Configs the depot counted as written during the run, if its metrics
    /// are known (must equal `ok`).
    pub writes_counted: Option<u64>,
}

/// Drives `calls` calls of `call(i)` with `concurrency` in flight.
pub async fn drive<F, Fut>(calls: u32, concurrency: usize, call: F) -> Driven
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let start = Instant::now();
    let results: Vec<(Duration, Result<(), tonic::Status>)> = futures::stream::iter(0..calls)
        .map(|i| {
            let fut = call(i);
            async move {
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = start.elapsed().as_secs_f64().max(1e-6);
    let mut latencies = Latencies::new();
    let mut first_error = None;
    for (took, r) in results {
        match r {
            Ok(()) => latencies.record(took),
            Err(s) => {
                first_error.get_or_insert_with(|| format!("{:?}: {}", s.code(), s.message()));
            }
        }
    }
    Driven {
        calls,
        concurrency,
        ok: latencies.count(),
        first_error,
        seconds,
        calls_per_second: latencies.count() as f64 / seconds,
        latency_ms: latencies.percentiles(),
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

/// Runs `direct` against `depot`.
pub async fn run(
    depot: &TargetDepot,
    names: &Names,
    calls: u32,
    concurrency: usize,
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
    let driven = drive(calls, concurrency, |i| {
        let mut client = client.clone();
        let bundle = bundle(names, DIRECT_BASE + i, &depot.id, &product);
        async move { client.set_pxe_config(bundle).await.map(drop) }
    })
    .await;
    let after = writes().await;
    Ok(DirectResult {
        depot: depot.id.clone(),
        driven,
        writes_counted: before.zip(after).map(|(b, a)| (a - b) as u64),
    })
}

/// Removes what `direct` wrote (a remote depot keeps nothing of the run).
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
