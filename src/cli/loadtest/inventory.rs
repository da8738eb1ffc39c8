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
        let deleting = again(|| {
            let mut admin = admin.clone();
            let ids = chunk.to_vec();
            async move {
                admin
                    .delete_clients(proto::DeleteClientsRequest { ids })
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

/// A clean-up call, made again (up to five times, waiting longer each time)
/// while the configserver answers UNAVAILABLE (its database busy).
async fn again<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut wait = Duration::from_millis(200);
    for _ in 0..5 {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            done => return done,
        }
    }
    call().await
}

async fn delete_product(
    admin: &mut AdminClient,
    target: &Target,
    names: &Names,
) -> Result<(), CliError> {
    let pods = target
        .depots
        .iter()
        .map(|d| proto::ProductOnDepotKey {
            depot_id: d.id.clone(),
            product_id: names.product(),
        })
        .collect();
    admin
        .delete_product_on_depots(proto::DeleteProductOnDepotsRequest {
            product_on_depots: pods,
        })
        .await?;
    admin
        .delete_products(proto::DeleteProductsRequest {
            products: vec![proto::ProductKey {
                id: names.product(),
                product_version: VERSION.0.into(),
                package_version: VERSION.1.into(),
            }],
        })
        .await?;
    Ok(())
}

/// Whether any depot still owes a push (or waits for a read) of the run.
async fn any_pending(target: &Target, names: &Names) -> Result<bool, CliError> {
    let mut admin = target.admin.clone();
    for depot in &target.depots {
        let mut token = String::new();
        loop {
            let page = admin
                .list_pending(proto::ListPendingRequest {
                    depot_id: depot.id.clone(),
                    page_size: 10_000,
                    page_token: token,
                    blocked: false,
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
