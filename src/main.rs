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
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pxeconf: {e}");
            ExitCode::from(2)
        }
    }
}
