//! The `pxeconf` command: a server role or an operator verb.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pxeconf::cli;
use pxeconf::config::{ConfigServerArgs, DepotArgs};

/// One-time PXE netboot configurations for many clients across many depots.
#[derive(Parser)]
#[command(name = "pxeconf", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a depot: writes PXE configs into its TFTP directory.
    Depot(DepotArgs),
    /// Run the configserver: the inventory, and pushes to depots.
    Configserver(ConfigServerArgs),
    /// Run a configserver and three depots on loopback with a generated inventory.
    Demo(cli::demo::DemoArgs),
    /// Measure pushes per second through a configserver and depots, new path vs legacy.
    Loadtest(cli::loadtest::LoadtestArgs),
    /// Import an inventory (JSON or TOML) into a running configserver.
    Import(cli::admin::ImportArgs),
    /// Set a netboot action request for clients.
    SetAction(cli::admin::SetActionArgs),
    /// Show a client's netboot state and PXE config delivery.
    Status(cli::admin::StatusArgs),
    /// List depots: endpoint, reachability, path, queued pushes.
    Depots(cli::admin::DepotsArgs),
    /// List the pushes owed to a depot or waiting for a read.
    Pending(cli::admin::PendingArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pxeconf: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Depot(args) => cli::run_depot(args).await,
            Command::Configserver(args) => cli::run_configserver(args).await,
            Command::Demo(args) => cli::demo::run(args).await,
            Command::Loadtest(args) => cli::loadtest::run(args).await,
            Command::Import(args) => cli::admin::import(args).await,
            Command::SetAction(args) => cli::admin::set_action(args).await,
            Command::Status(args) => cli::admin::status(args).await,
            Command::Depots(args) => cli::admin::depots(args).await,
            Command::Pending(args) => cli::admin::pending(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A server that lost a task it needs, or panicked: 1, so that
        // systemd restarts it (settings and start-up errors are 2).
        Err(e) if e.downcast_ref::<pxeconf::server::ServeError>().is_some() => {
            eprintln!("pxeconf: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pxeconf: {e}");
            ExitCode::from(2)
        }
    }
}
