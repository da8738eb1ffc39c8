//! The run's objects at the configserver: one netboot product on the depots
//! used, the synthetic clients (each pinned to a depot and to BIOS boot), and
//! deleting all of it again — verified through the Admin API.

use std::time::{Duration, Instant};

use super::channel::AdminClient;
use super::names::Names;
use super::target::Target;
use crate::cli::error::CliError;
use crate::proto;

/// Objects per Admin write (one transaction each; well under the 4 MiB
/// message limit).
pub const CHUNK: usize = 5000;
/// Product and package version of the run's product.
const VERSION: (&str, &str) = ("1.0", "1");

/// A synthetic client and the depot (index into `Target::depots`) it belongs to.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its number in the namespace.
    pub n: u32,
    /// Its FQDN.
    pub fqdn: String,
    /// Its depot.
    pub depot: usize,
}

/// Clients driven together over one push path.
#[derive(Debug, Clone)]
pub struct Cohort {
    /// Whether their depots take the legacy path.
    pub legacy: bool,
    /// The clients.
    pub members: Vec<Member>,
}

impl Cohort {
    /// Clients `first..first + count`, spread round-robin over `depots`.
    pub fn new(names: &Names, legacy: bool, first: u32, count: u32, depots: &[usize]) -> Self {
        let members = (0..count)
            .map(|j| Member {
                n: first + j,
                fqdn: names.fqdn(first + j),
                depot: depots[j as usize % depots.len()],
            })
            .collect();
        Self { legacy, members }
    }

    /// `new` or `legacy`.
    pub fn path(&self) -> &'static str {
        if self.legacy { "legacy" } else { "new" }
    }

    /// The FQDNs.
    pub fn fqdns(&self) -> Vec<String> {
        self.members.iter().map(|m| m.fqdn.clone()).collect()
    }
}

/// Creates the run's product on every depot of `target`.
pub async fn create_product(target: &Target, names: &Names) -> Result<(), CliError> {
    install(target, &[names.product()]).await
}

/// Registers `ids` (version [`VERSION`], no template of their own: the
/// depot's default for the boot mode) and installs them on every depot of
/// `target`.
async fn install(target: &Target, ids: &[String]) -> Result<(), CliError> {
    let mut admin = target.admin.clone();
    admin
        .upsert_products(proto::UpsertProductsRequest {
            products: ids
                .iter()
                .map(|id| proto::Product {
                    id: id.clone(),
                    product_version: VERSION.0.into(),
                    package_version: VERSION.1.into(),
                    pxe_config_template: String::new(),
                })
                .collect(),
        })
        .await?;
    let pods: Vec<proto::ProductOnDepot> = target
        .depots
        .iter()
        .flat_map(|d| {
            ids.iter().map(|id| proto::ProductOnDepot {
                depot_id: d.id.clone(),
                product_id: id.clone(),
                product_version: VERSION.0.into(),
                package_version: VERSION.1.into(),
            })
        })
        .collect();
    for chunk in pods.chunks(CHUNK) {
        admin
            .upsert_product_on_depots(proto::UpsertProductOnDepotsRequest {
                product_on_depots: chunk.to_vec(),
            })
            .await?;
    }
    Ok(())
}

/// Property states of each of the site's other products on each depot.
const SITE_PROPERTIES: u32 = 20;

/// The site's `count` other products (`--site-products`): on every depot,
/// each with [`SITE_PROPERTIES`] property states there.
pub async fn create_site_products(
    target: &Target,
    names: &Names,
    count: u32,
) -> Result<(), CliError> {
    if count == 0 {
        return Ok(());
    }
    let ids: Vec<String> = (0..count).map(|i| names.site_product(i)).collect();
    install(target, &ids).await?;
    let states: Vec<proto::ProductPropertyState> = target
        .depots
        .iter()
        .flat_map(|d| ids.iter().map(move |id| (d, id)))
        .flat_map(|(d, id)| {
            (0..SITE_PROPERTIES).map(move |j| proto::ProductPropertyState {
                object_id: d.id.clone(),
                product_id: id.clone(),
                property_id: format!("property{j}"),
                values: vec![format!("value{j}")],
            })
        })
        .collect();
    let mut admin = target.admin.clone();
    for chunk in states.chunks(CHUNK) {
        admin
            .upsert_product_property_states(proto::UpsertProductPropertyStatesRequest {
                product_property_states: chunk.to_vec(),
            })
            .await?;
    }
    Ok(())
}

/// Puts the site's `count` other products on every client of `cohort` with
/// no action, as a client's localboot products are.
pub async fn put_site_products(
    target: &Target,
    names: &Names,
    cohort: &Cohort,
    count: u32,
) -> Result<(), CliError> {
    if count == 0 {
        return Ok(());
    }
    let mut admin = target.admin.clone();
    // One call's worth at a time: a cohort's whole list is clients × products.
    let members = (CHUNK / count as usize).max(1);
    for chunk in cohort.members.chunks(members) {
        let action_requests = chunk
            .iter()
            .flat_map(|m| {
                (0..count).map(move |i| proto::ActionRequest {
                    client_id: m.fqdn.clone(),
                    product_id: names.site_product(i),
                    action_request: "none".into(),
                })
            })
            .collect();
        admin
            .set_action_requests(proto::SetActionRequestsRequest { action_requests })
            .await?;
    }
    Ok(())
}

/// Creates a cohort's clients, each on its depot and booting BIOS
/// (whatever the site's default boot loader is).
pub async fn create_clients(
    target: &Target,
    names: &Names,
    cohort: &Cohort,
) -> Result<(), CliError> {
    let mut admin = target.admin.clone();
    for chunk in cohort.members.chunks(CHUNK) {
        admin
            .upsert_clients(proto::UpsertClientsRequest {
                clients: chunk.iter().map(|m| names.host(m.n)).collect(),
            })
            .await?;
        let mut states = Vec::with_capacity(chunk.len() * 2);
        for m in chunk {
            states.push(config_state(
                &m.fqdn,
                "clientconfig.depot.id",
                &target.depots[m.depot].id,
            ));
            states.push(config_state(
                &m.fqdn,
                "clientconfig.dhcpd.filename",
                "linux/pxelinux.0",
            ));
        }
        admin
            .upsert_config_states(proto::UpsertConfigStatesRequest {
                config_states: states,
            })
            .await?;
    }
    Ok(())
}

fn config_state(client: &str, id: &str, value: &str) -> proto::ConfigState {
    proto::ConfigState {
        object_id: client.into(),
        config_id: id.into(),
        values: vec![value.into()],
    }
}

/// What the clean-up did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cleanup {
    /// Clients deleted.
    pub clients_deleted: u64,
    /// Whether every removal reached its depot (nothing of the run pending).
    pub verified: bool,
    /// Seconds it took.
    pub seconds: f64,
}

/// Deletes the run's clients and product, then waits until no depot owes a
/// removal for the run (`ListPending` shows none of its clients).
pub async fn delete_all(
    target: &Target,
    names: &Names,
    fqdns: &[String],
    timeout: Duration,
) -> Result<Cleanup, CliError> {
    let start = Instant::now();
    let mut admin = target.admin.clone();
    let mut deleted = 0;
    // Every chunk and the product are tried, whatever failed before.
    let mut failed = Vec::new();
    for chunk in fqdns.chunks(CHUNK) {
        let deleting = again(|deadline| {
            let mut admin = admin.clone();
            let ids = chunk.to_vec();
            async move {
                admin
                    .delete_clients(within(proto::DeleteClientsRequest { ids }, deadline))
                    .await
            }
        });
        match deleting.await {
            Ok(response) => deleted += response.into_inner().affected,
            Err(status) => failed.push(format!("deleting clients: {}", status.message())),
        }
    }
    if let Err(error) = delete_product(&mut admin, target, names).await {
        failed.push(error.to_string());
    }
    if !failed.is_empty() {
        return Err(format!(
            "clean-up incomplete ({}): delete the clients *{} and the product {} by hand",
            failed.join("; "),
            names.suffix(),
            names.product()
        )
        .into());
    }
    let deadline = Instant::now() + timeout;
    // Each look pages through every depot's pending list: on a large site
    // that is work for the configserver, so the looks thin out.
    let mut wait = Duration::from_millis(200);
    let verified = loop {
        if !any_pending(target, names).await? {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    };
    Ok(Cleanup {
        clients_deleted: deleted,
        verified,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// How long a clean-up call is made again while the configserver does not
/// answer: a restart of the configserver (the common cause of a run's
/// failure, which starts the clean-up at once) must not leave the run's
/// clients behind.
const RETRY_FOR: Duration = Duration::from_secs(120);
/// The deadline of one clean-up call.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// A clean-up call (`call` given the deadline to put on its request), made
/// again, waiting longer each time up to 5 s, for up to [`RETRY_FOR`] while
/// the configserver does not answer or is busy.
async fn again<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let until = tokio::time::Instant::now() + RETRY_FOR;
    let mut wait = Duration::from_millis(200);
    loop {
        match call(CALL_DEADLINE).await {
            Err(status) if retried(&status) && tokio::time::Instant::now() + wait < until => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

/// Whether a clean-up call that failed with `status` may succeed if made
/// again: the configserver unreachable, stopping, busy or slow.
fn retried(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(
        status.code(),
        Unavailable | DeadlineExceeded | Unknown | Cancelled | ResourceExhausted | Aborted
    )
}

/// `message` as a request with `deadline`.
fn within<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

async fn delete_product(
    admin: &mut AdminClient,
    target: &Target,
    names: &Names,
) -> Result<(), CliError> {
    let pods: Vec<_> = target
        .depots
        .iter()
        .map(|d| proto::ProductOnDepotKey {
            depot_id: d.id.clone(),
            product_id: names.product(),
        })
        .collect();
    again(|deadline| {
        let mut admin = admin.clone();
        let product_on_depots = pods.clone();
        async move {
            let request = proto::DeleteProductOnDepotsRequest { product_on_depots };
            admin
                .delete_product_on_depots(within(request, deadline))
                .await
        }
    })
    .await?;
    again(|deadline| {
        let mut admin = admin.clone();
        async move {
            let request = proto::DeleteProductsRequest {
                products: vec![proto::ProductKey {
                    id: names.product(),
                    product_version: VERSION.0.into(),
                    package_version: VERSION.1.into(),
                }],
            };
            admin.delete_products(within(request, deadline)).await
        }
    })
    .await?;
    Ok(())
}

/// Whether any depot still owes a push (or waits for a read) of the run.
async fn any_pending(target: &Target, names: &Names) -> Result<bool, CliError> {
    let admin = target.admin.clone();
    for depot in &target.depots {
        let mut token = String::new();
        loop {
            let page = again(|deadline| {
                let mut admin = admin.clone();
                let request = proto::ListPendingRequest {
                    depot_id: depot.id.clone(),
                    page_size: 10_000,
                    page_token: token.clone(),
                    blocked: false,
                };
                async move { admin.list_pending(within(request, deadline)).await }
            })
            .await?
            .into_inner();
            if page.pending.iter().any(|p| names.owns(&p.client_id)) {
                return Ok(true);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configserver restarting during the clean-up (unreachable for a
    /// minute) is waited for; a refusal is not retried; one that stays
    /// away gives up after about [`RETRY_FOR`].
    #[tokio::test(start_paused = true)]
    async fn a_clean_up_call_outlasts_a_configserver_restart() {
        let start = tokio::time::Instant::now();
        let tries = std::cell::Cell::new(0);
        let back_at = start + Duration::from_secs(60);
        let result = again(|_| {
            tries.set(tries.get() + 1);
            async move {
                match tokio::time::Instant::now() >= back_at {
                    true => Ok(()),
                    false => Err(tonic::Status::unavailable("connection refused")),
                }
            }
        })
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert!(tries.get() < 30, "{} tries: the waits grow", tries.get());

        tries.set(0);
        let refused = again(|_| {
            tries.set(tries.get() + 1);
            async { Err::<(), _>(tonic::Status::permission_denied("no")) }
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(tries.get(), 1);

        let start = tokio::time::Instant::now();
        let gone = again(|_| async { Err::<(), _>(tonic::Status::unavailable("down")) }).await;
        assert!(gone.is_err());
        let waited = start.elapsed();
        assert!(
            waited <= RETRY_FOR && waited >= RETRY_FOR - Duration::from_secs(6),
            "{waited:?}"
        );
    }
}
