//! Output helpers of the verbs: aligned tables, times for tables and JSON,
//! and the progress bar of bulk writes.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serializer;

/// Prints rows under headers, columns padded to their widest cell.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// A wire timestamp as a point in time; absent (or out of range) is `None`.
pub(super) fn time(t: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(t).ok())
}

/// RFC 3339 to the millisecond in JSON; `null` when there is no time.
pub(super) fn rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

/// RFC 3339 to the second in tables; empty when there is no time.
pub(super) fn cell_time(t: Option<SystemTime>) -> String {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

/// A progress bar over `items`, shown only when stderr is a terminal (a pipe
/// stays quiet).
pub(super) fn progress_bar(items: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(items as u64);
    // The template is a constant; its only failure would be a typo here.
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} {msg} ({elapsed}, {eta} left)")
    {
        bar.set_style(style);
    }
    // A chunk may take a while; the spinner shows the call is alive.
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
