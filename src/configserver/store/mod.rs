//! The inventory and the push outbox in SQLite (WAL) or PostgreSQL. Every
//! admin write runs in one transaction together with the pushes it causes
//! (`triggers`), so a crash loses nothing and half a bulk never lands.
//!
//! All SQL lives under this module, one text for both engines; callers only
//! see [`Store`]'s methods and the records below. The schema is described
//! once, in docs/SCHEMA.md.
//!
//! - `db`: the connections ([`Store`], [`Location`]), `sql`: values to and
//!   from the database,
//!   `rows`: stored rows as records, `records`: what callers hand in and get.
//! - `inventory`, `states`, `actions`: the admin writes (`import`: all of
//!   them in one transaction); `checks`: their existence checks;
//!   `triggers`: what a change owes the depots, `touched`: to which clients;
//!   `rules`: opsi's rules as SQL; `script`: a transaction's statements in
//!   one hand-off to SQLite's connection thread.
//! - `delivery`: push results, read reports, the outbox per depot;
//!   `lookups`: the legacy look-ups' reads; `bundle`: the batched bundle
//!   assembly (on SQLite through `native`, read connections of the store's
//!   own); `templates`: the template a depot reports it used.
//! - `sequence`: the epoch and the revision sequence (a hybrid clock);
//!   `aborted`: what a depot's ABORTED means; `verify`: the outbox checked
//!   against a depot's own list; `lock`: one configserver per SQLite file;
//!   `leases`: several configservers on one PostgreSQL database (a lease
//!   per depot, owed pushes announced with NOTIFY).

mod aborted;
mod actions;
mod bundle;
mod checks;
mod db;
mod delivery;
mod error;
mod import;
mod inventory;
mod leases;
mod lock;
mod lookups;
mod native;
mod records;
mod rows;
mod rules;
mod script;
mod sequence;
mod sql;
mod states;
mod templates;
mod touched;
mod triggers;
mod verify;

pub use bundle::{Job, Loaded, Rows};
pub use db::{Location, Store};
pub use error::{Result, StoreError};
pub use import::{ImportOutcome, Inventory};
pub use leases::{Announcement, OWED_CHANNEL};
pub use lock::{DbLock, lock_path};
pub use records::{
    Ack, ActionRecord, ConfigRecord, ConfigStateRecord, DepotCounts, DepotRecord, Owed, PocRecord,
    ProductOnDepotRecord, ProductRecord, PropertyStateRecord, PushOp, PushPath, PushRecord,
    ReadOutcome, ReadReport, UsedTemplate, WriteOutcome,
};
pub use templates::TemplateNote;
