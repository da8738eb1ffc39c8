//! The writer: one task that owns every PXE config the depot holds.
//!
//! - `state`: the held configs, file owners and seen revisions; planning and
//!   committing commands, without I/O; `records`: what it keeps of a client;
//!   `ops`: a planned command; `round`: commands planned together;
//! - `files`: the file work (atomic writes, deletions, defusing, start-up scan);
//! - `journal`: the durable record of held configs, floors and reads;
//! - `placement`: whether a small round's file work runs in place or on a
//!   blocking thread;
//! - `task`: the task that drives both, journals each round, and the handle
//!   to reach it;
//! - `messages` and `error`: what goes in and comes out.

mod error;
mod files;
mod journal;
mod messages;
mod ops;
mod placement;
mod records;
mod round;
mod state;
mod task;

pub use error::{JournalError, SeenState, WriterError};
pub use files::{
    DEFAULT_FILE_MODE, FileAccess, Found, Look, TMP_PREFIX, apply, delete_all, fence_of, holds,
    is_managed_name, overwrite, read_since_written, scan,
};
pub use journal::{Batch, Contents, JOURNAL_FILE, Journal, ReadKey};
pub use messages::{
    ConfigInfo, ConfigPage, HeldState, ReadEvent, Rendered, SetOutcome, WRITE_RESULTS, WatchEvent,
};
// The pure state machine is public for the planning benchmark (benches/writer.rs).
#[cfg(test)]
pub use files::{fence, fence_name};
pub use ops::{Committed, FileOps, Op, Planned, SetPlan};
pub use records::{ClientRecord, Defused, Held, Seen};
pub use round::Round;
pub use state::State;
#[cfg(test)]
pub use task::spawn_fresh;
pub use task::{WriterHandle, WriterOptions, start};
