//! The writer: one task that owns every PXE config the depot holds.
//!
//! - `state`: the held configs, file owners and seen revisions; planning and
//!   committing commands, without I/O;
//! - `files`: the file work (atomic writes, deletions, start-up clean-up);
//! - `task`: the task that drives both, and the handle to reach it;
//! - `messages` and `error`: what goes in and comes out.

mod error;
mod files;
mod messages;
// Public (re-exported below) for benches/writer.rs, which has no use for an
// `is_empty` beside `State::len`.
#[allow(clippy::len_without_is_empty)]
mod state;
mod task;

pub use error::{SeenState, WriterError};
pub use files::{TMP_PREFIX, is_managed_name, remove_stale};
pub use messages::{ConfigInfo, ConfigPage, ReadEvent, Rendered, SetOutcome, WatchEvent};
// The pure state machine, public for the planning benchmark (benches/writer.rs).
pub use state::{Committed, FileOps, Op, Planned, Round, SetPlan, State};
pub use task::{WriterHandle, WriterOptions, spawn};
