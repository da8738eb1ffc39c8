//! `pxeconf loadtest`: how fast netboot actions reach depots, measured the
//! way an operator trusts — against its own roles started as child processes
//! (self-contained, the default) or against a running site (`--configserver`),
//! in scenarios `bulk`, `boot`, `trickle` and `direct`, beside baselines.

mod alone;
mod args;
mod baseline;
mod channel;
pub mod cpu;
mod database;
mod inventory;
mod local;
mod names;
mod progress;
mod remote;
mod report;
mod roles;
mod run;
mod scenario;
mod scrape;
mod stats;
mod target;
mod track;

pub use args::{LoadtestArgs, PathChoice, Scenario};
pub use run::run;
