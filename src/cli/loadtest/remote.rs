//! Remote mode: a running configserver (`--configserver URL` with the admin
//! key) and the depots registered there — all of them or `--depots a,b` —
//! each on the path its capability shows.

use super::args::LoadtestArgs;
use super::channel;
use super::scrape::MetricsUrl;
use super::target::{Target, TargetDepot};
use crate::auth::load_key;
use crate::cli::error::CliError;
use crate::proto;

/// Connects to the configserver and picks the depots; what the report
/// should say of them goes to `notes` (and at once to stderr: stdout may be
/// the JSON report, and a run may be long).
pub async fn connect(
    args: &LoadtestArgs,
    url: &str,
    notes: &mut Vec<String>,
) -> Result<Target, CliError> {
    let key = load_key(&args.admin_key_env, args.admin_key_file.as_deref())?
        .ok_or("--configserver needs the admin key: --admin-key-file or PXECONF_ADMIN_KEY")?;
    let mut admin = channel::admin(url, &key).await?;
    let listed = admin
        .list_depots(proto::ListDepotsRequest {})
        .await
        .map_err(|s| format!("ListDepots: {}", s.message()))?
        .into_inner()
        .depots;
    let wanted: Option<Vec<&str>> = args.depots.as_deref().map(|d| {
        d.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    if let Some(wanted) = &wanted
        && let Some(missing) = wanted.iter().find(|w| !listed.iter().any(|d| d.id == **w))
    {
        return Err(format!("--depots: {missing} is not registered").into());
    }
    let mut say = |note: String| {
        eprintln!("{note}");
        notes.push(note);
    };
    // A depot the configserver tried and could not reach would hold the run
    // until --timeout, then its clean-up as long: of all the registered
    // depots it is left out; named, it is used, and said so.
    let down = |d: &proto::DepotStatus| !d.reachable && !d.last_error.is_empty();
    let asked = |d: &proto::DepotStatus| wanted.as_ref().is_none_or(|w| w.contains(&d.id.as_str()));
    let listed: Vec<proto::DepotStatus> = listed
        .into_iter()
        .filter(|d| {
            if !asked(d) {
                return false;
            }
            if !d.pushed_by.is_empty() {
                // Another replica holds its lease: this one's view of it
                // is not the pusher's, so a dead depot cannot be told here.
                say(format!(
                    "note: {} is pushed to by the replica {}, not by this configserver: whether it answers is not known here",
                    d.id, d.pushed_by
                ));
                return true;
            }
            if !down(d) {
                return true;
            }
            if wanted.is_some() {
                say(format!(
                    "note: {} does not answer the configserver ({}): its clients may not be delivered within --timeout",
                    d.id, d.last_error
                ));
                return true;
            }
            say(format!(
                "left out: {} does not answer the configserver ({}); name it in --depots to use it",
                d.id, d.last_error
            ));
            false
        })
        .collect();
    let tftp = args.tftp_servers()?;
    let mut depots: Vec<TargetDepot> = listed
        .into_iter()
        .map(|d| TargetDepot {
            tftp: tftp
                .iter()
                .find(|(id, _)| id.as_deref().is_none_or(|id| id == d.id))
                .map(|(_, addr)| *addr),
            legacy: d.capability == "legacy",
            id: d.id,
            endpoint: d.endpoint,
            metrics: None,
            pxe_dir: None,
            key_file: None,
            pid: None,
        })
        .collect();
    if depots.is_empty() {
        return Err("the configserver has no depot to use".into());
    }
    if let Some(dir) = &args.dir {
        // The ratio to the raw loop then compares the site's rate with a
        // directory of this machine's.
        let note = format!(
            "note: the raw file-pair baseline runs in {} on this machine, not on a depot: bulk's ratio to it compares with this machine's disk",
            dir.display()
        );
        eprintln!("{note}");
        notes.push(note);
    }
    depots.sort_by_key(|d| d.legacy);
    // `direct` drives the first new-path depot, with the key given.
    if let Some(first) = depots.iter_mut().find(|d| !d.legacy) {
        first.key_file = args.depot_key_file.clone();
    }
    Ok(Target {
        admin,
        admin_at: (url.to_owned(), key),
        metrics: args
            .metrics_url
            .as_deref()
            .map(MetricsUrl::parse)
            .transpose()?,
        depots,
        baseline_dir: args.dir.clone(),
    })
}
