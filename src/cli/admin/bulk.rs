//! Bulk writes (`set-action`): a list sent in chunks of one transaction
//! each, what the configserver did counted, a progress bar advanced, and a
//! failed chunk reported with the item's index in the whole list and what
//! was already applied.

use std::future::Future;

use indicatif::ProgressBar;
use tonic::{Response, Status};

use super::connect::{Admin, grpc_error};
use super::output::progress_bar;
use crate::cli::error::CliError;
use crate::proto;

/// Items per write call; the configserver applies each call as one transaction.
const CHUNK: usize = 1000;

/// What a bulk write did.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub items: u64,
    pub affected: u64,
    pub pushes_queued: u64,
    /// Summed over the calls: a count of clients, as no client is in two
    /// calls of `set-action`.
    pub waiting: u64,
}

/// Sends lists in chunks of [`CHUNK`], counting what the configserver did and
/// advancing a progress bar.
pub(super) struct Bulk {
    bar: ProgressBar,
    totals: Totals,
}

impl Bulk {
    /// A bulk write of `items` in all; the bar shows only on a terminal.
    pub fn new(items: usize) -> Self {
        Self {
            bar: progress_bar(items),
            totals: Totals::default(),
        }
    }

    /// Sends `items` through `call`, one call per chunk, in order.
    pub async fn send<T, R, F, Fut>(
        &mut self,
        section: &'static str,
        items: Vec<T>,
        mut call: F,
    ) -> Result<(), CliError>
    where
        F: FnMut(Vec<T>) -> Fut,
        R: Into<proto::compat::Written>,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let count = items.len();
        if count == 0 {
            return Ok(());
        }
        self.bar.set_message(section);
        let mut items = items.into_iter();
        let mut offset = 0;
        while offset < count {
            let chunk: Vec<T> = items.by_ref().take(CHUNK).collect();
            let len = chunk.len();
            let response = call(chunk)
                .await
                .map_err(|status| self.failure(section, offset, len, count, &status))?
                .into_inner()
                .into();
            let response: proto::compat::Written = response;
            self.totals.affected += response.affected;
            self.totals.pushes_queued += response.pushes_queued;
            self.totals.waiting += response.waiting;
            self.totals.items += len as u64;
            self.bar.inc(len as u64);
            offset += len;
        }
        Ok(())
    }

    /// A failed chunk as one line. The configserver numbers items within the
    /// call, so `clients[3]` in the third chunk becomes `clients[2003]`; and
    /// since earlier chunks were committed, the line says how much was.
    fn failure(
        &self,
        section: &str,
        offset: usize,
        len: usize,
        count: usize,
        status: &Status,
    ) -> CliError {
        let place = if count > CHUNK {
            format!("{section}[{offset}..{}]: ", offset + len)
        } else {
            String::new()
        };
        let applied = match (self.totals.items, super::connect::maybe_applied(status)) {
            (0, false) => String::new(),
            (n, false) => format!("; {n} earlier items were applied, none from here on"),
            (n, true) => format!(
                "; {n} earlier items were applied, and this call's may have been (`pxeconf status` shows), none after it"
            ),
        };
        self.bar.abandon();
        let error = renumber(&grpc_error(status), section, offset);
        // The summary line first, then one line per bad field, if any.
        match error.split_once('\n') {
            Some((line, fields)) => format!("{place}{line}{applied}\n{fields}").into(),
            None => format!("{place}{error}{applied}").into(),
        }
    }

    /// Clears the bar and returns the totals.
    pub fn finish(self) -> Totals {
        self.bar.finish_and_clear();
        self.totals
    }
}

/// `CODE: section[i]…` with `i` moved by `offset`; anything else unchanged.
fn renumber(text: &str, section: &str, offset: usize) -> String {
    if offset == 0 {
        return text.to_owned();
    }
    // Every `section[i]` (the message and each field violation line).
    let needle = format!("{section}[");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        let after = &rest[at + needle.len()..];
        out.push_str(&rest[..at + needle.len()]);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match (
            after[..digits].parse::<usize>(),
            after[digits..].starts_with(']'),
        ) {
            (Ok(index), true) => out.push_str(&(index + offset).to_string()),
            _ => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Sets action requests through `bulk`.
pub(super) async fn send_actions(
    admin: &Admin,
    bulk: &mut Bulk,
    actions: Vec<proto::ActionRequest>,
) -> Result<(), CliError> {
    bulk.send("action_requests", actions, |action_requests| {
        let mut admin = admin.clone();
        async move {
            admin
                .set_action_requests(proto::SetActionRequestsRequest { action_requests })
                .await
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_renumbered_within_the_section() {
        let line = "INVALID_ARGUMENT: clients[3].hardware_address: invalid MAC";
        assert_eq!(
            renumber(line, "clients", 2000),
            "INVALID_ARGUMENT: clients[2003].hardware_address: invalid MAC"
        );
        assert_eq!(renumber(line, "clients", 0), line);
        assert_eq!(renumber(line, "depots", 1000), line);
        let many = "INVALID_ARGUMENT: clients[3].id: bad; clients[12].id: bad\n  clients[3].id: bad\n  clients[12].id: bad";
        assert_eq!(
            renumber(many, "clients", 500),
            "INVALID_ARGUMENT: clients[503].id: bad; clients[512].id: bad\n  clients[503].id: bad\n  clients[512].id: bad"
        );
        let not_found = "NOT_FOUND: client ghost.example.org does not exist";
        assert_eq!(renumber(not_found, "action_requests", 1000), not_found);
    }
}
