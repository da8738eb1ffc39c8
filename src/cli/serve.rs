//! `pxeconf depot` and `pxeconf configserver`: settings resolved, logging
//! set up, listeners bound (gRPC, and `/metrics` when asked), the server run
//! until SIGTERM/Ctrl-C and drained for the grace period.

use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{error, info};

use super::error::CliError;
use crate::config::{Common, ConfigServerArgs, DepotArgs};
use crate::metrics::Metrics;

/// Binds the gRPC and metrics listeners, logging the bound addresses.
async fn bind(common: &Common, metrics: &Arc<Metrics>) -> Result<TcpListener, CliError> {
    let listener = TcpListener::bind(common.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", common.listen))?;
    if let Some(addr) = common.metrics_listen {
        let metrics_listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
        info!(addr = %metrics_listener.local_addr()?, "metrics on /metrics");
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::metrics::serve_http(
                metrics_listener,
                metrics,
                crate::server::shutdown_signal(),
            )
            .await
            {
                error!(%error, "metrics server failed");
            }
        });
    }
    Ok(listener)
}

/// `pxeconf depot`.
pub async fn run_depot(args: DepotArgs) -> Result<(), CliError> {
    let settings = args.resolve()?;
    let telemetry = crate::telemetry::init_server(
        settings.common.log_format,
        settings.common.otlp_endpoint.as_deref(),
        "pxeconf-depot",
    )
    .map_err(|e| e.to_string())?;
    // Before anything starts: a SIGTERM during start-up drains, never kills;
    // a SIGHUP never stops it.
    let signal = crate::server::shutdown_signal();
    crate::server::keep_running_on_hangup();
    let metrics = Metrics::new();
    let listener = bind(&settings.common, &metrics).await?;
    info!(addr = %listener.local_addr()?, "gRPC listening");
    let depot = crate::depot::Depot::start(settings.depot, metrics).await?;
    let served = crate::server::run_with_grace(
        "depot",
        move |stop| depot.serve(listener, stop),
        signal,
        settings.common.grace_period,
    )
    .await;
    // Flush the last spans (the shutdown's too) whatever the outcome.
    telemetry.shutdown();
    served?;
    Ok(())
}

/// `pxeconf configserver`.
pub async fn run_configserver(args: ConfigServerArgs) -> Result<(), CliError> {
    let settings = args.resolve()?;
    let telemetry = crate::telemetry::init_server(
        settings.common.log_format,
        settings.common.otlp_endpoint.as_deref(),
        "pxeconf-configserver",
    )
    .map_err(|e| e.to_string())?;
    // Before anything starts: a SIGTERM during start-up drains, never kills;
    // a SIGHUP never stops it.
    let signal = crate::server::shutdown_signal();
    crate::server::keep_running_on_hangup();
    let metrics = Metrics::new();
    let listener = bind(&settings.common, &metrics).await?;
    info!(addr = %listener.local_addr()?, "gRPC listening");
    let server = crate::configserver::ConfigServer::start(
        crate::configserver::ConfigServerConfig {
            database: settings.database,
            host_key: settings.host_key,
            modules: settings.modules,
            dispatch: settings.dispatch,
            transport: settings.transport,
        },
        metrics,
    )
    .await?;
    let stopper = server.stopper();
    let served = crate::server::run_with_grace(
        "configserver",
        move |stop| server.serve(listener, stop),
        signal,
        settings.common.grace_period,
    )
    .await;
    // Also when the grace period cut the serving short.
    stopper.stop().await;
    // Flush the last spans (the shutdown's too) whatever the outcome.
    telemetry.shutdown();
    served?;
    Ok(())
}
