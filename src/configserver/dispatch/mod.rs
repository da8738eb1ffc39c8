//! Pushes to depots. The [`Dispatcher`] runs one worker per depot
//! (`worker`), which keeps each owed client once (`queue`), sends one push
//! at a time per client over the depot's channel (`push`), and hands the
//! results to the batched ack writer (`acks`); when it starts it checks what
//! the depot really holds against the outbox (`verify`). Each worker publishes its
//! depot's [`DepotRuntime`]; [`DispatchSettings`] holds the knobs and their
//! defaults. Every channel is bounded, so a full one makes its sender wait,
//! except the router of pushes a worker finds owed to other depots: rare,
//! and bounding it could make two workers wait for each other.

mod acks;
mod dispatcher;
mod push;
mod queue;
mod replica;
mod runtime;
mod settings;
mod verify;
mod worker;

pub use dispatcher::Dispatcher;
pub use replica::{LEASE_TTL, holder_id};
pub use runtime::{Capability, DepotRuntime};
pub use settings::{
    DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF, DEFAULT_PUSH_CONCURRENCY, DEFAULT_PUSH_TIMEOUT,
    DispatchSettings,
};
