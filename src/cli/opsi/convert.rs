//! An opsi dump → a pxeconf inventory, and a summary counting each kind of
//! object imported and skipped (and why). What is skipped:
//! - localboot products, and their product-on-depots, product-on-clients
//!   and property states (pxeconf serves netboot only);
//! - configs and config states other than the four a PXE config depends on;
//! - a product property's default where every depot with its product
//!   version has a state of its own (elsewhere the default becomes the
//!   depot's state, as opsi falls back to it);
//! - objects naming something the dump does not have (a state of a deleted
//!   client, a product-on-depot of an unknown version);
//! - object types pxeconf has no use for (groups, licenses …);
//! - a repeated object (the same dump given twice).
//!
//! A client's netboot actions are sent oldest first by `modificationTime`,
//! so the one set last in opsi is the one pushed first.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::endpoints::DepotEndpoints;
use super::objects::{self, Host, Object, ProductOnClient};
use crate::cli::error::CliError;
use crate::domain::ActionRequest;
use crate::domain::opsi::PXE_CONFIGS;
use crate::proto;

/// One kind of object: how many the dump has, imported and skipped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KindCount {
    /// The kind, e.g. `clients`.
    pub kind: &'static str,
    /// The inventory section it goes to; empty when it goes nowhere.
    pub section: &'static str,
    /// Objects of this kind in the dump.
    pub in_dump: u64,
    /// Sent to the configserver.
    pub imported: u64,
    /// Left out.
    pub skipped: u64,
    /// Why, with how many each.
    pub why_skipped: BTreeMap<String, u64>,
}

/// The kinds in the order a summary lists them: (kind, section).
const KINDS: [(&str, &str); 11] = [
    ("configs", "configs"),
    ("depots", "depots"),
    ("netboot products", "products"),
    ("localboot products", ""),
    ("product on depots", "product_on_depots"),
    ("clients", "clients"),
    ("config states", "config_states"),
    ("product property states", "product_property_states"),
    ("product properties", "product_property_states"),
    ("product on clients", "action_requests"),
    ("other objects", ""),
];

/// What a dump became.
#[derive(Debug, Default)]
pub struct Converted {
    /// The inventory, whole (the sender splits it into parts).
    pub inventory: proto::ImportInventoryRequest,
    /// Per kind: in the dump, imported, skipped.
    pub summary: Vec<KindCount>,
    /// Per section, what each item was in opsi (for error messages).
    pub idents: HashMap<&'static str, Vec<String>>,
}

impl Converted {
    fn count(&mut self, kind: &'static str) -> &mut KindCount {
        let i = KINDS
            .iter()
            .position(|(k, _)| *k == kind)
            .unwrap_or(KINDS.len() - 1);
        &mut self.summary[i]
    }

    fn imported(&mut self, kind: &'static str, ident: String) {
        let c = self.count(kind);
        c.in_dump += 1;
        c.imported += 1;
        let section = c.section;
        self.idents.entry(section).or_default().push(ident);
    }

    /// One object of `kind` imported as `idents` items of its section.
    fn imported_as(&mut self, kind: &'static str, idents: Vec<String>) {
        let c = self.count(kind);
        c.in_dump += 1;
        c.imported += 1;
        let section = c.section;
        self.idents.entry(section).or_default().extend(idents);
    }

    fn skipped(&mut self, kind: &'static str, why: impl Into<String>) {
        let c = self.count(kind);
        c.in_dump += 1;
        c.skipped += 1;
        *c.why_skipped.entry(why.into()).or_default() += 1;
    }

    /// What item `index` of `section` was in opsi.
    pub fn ident(&self, section: &str, index: usize) -> Option<&str> {
        self.idents.get(section)?.get(index).map(String::as_str)
    }
}

/// Lower case, no trailing dot: how opsi writes ids.
fn id(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Free text with line breaks and other control characters as spaces (a
/// description must stay on one line).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The objects of a dump, sorted by kind.
#[derive(Default)]
struct Sorted {
    depots: Vec<Host>,
    clients: Vec<Host>,
    objects: Vec<Object>,
}

/// Converts the objects of a dump; fails when a depot has no endpoint or
/// no host key (nothing is sent then).
pub fn convert(objects: Vec<Object>, endpoints: &DepotEndpoints) -> Result<Converted, CliError> {
    let mut out = Converted {
        summary: KINDS
            .iter()
            .map(|(kind, section)| KindCount {
                kind,
                section,
                in_dump: 0,
                imported: 0,
                skipped: 0,
                why_skipped: BTreeMap::new(),
            })
            .collect(),
        ..Default::default()
    };
    let mut sorted = Sorted::default();
    for object in objects {
        match object {
            Object::Depot(h) => sorted.depots.push(h),
            Object::Client(h) => sorted.clients.push(h),
            other => sorted.objects.push(other),
        }
    }
    let mut known = Known::default();
    depots(&mut out, &mut known, sorted.depots, endpoints)?;
    clients(&mut out, &mut known, sorted.clients);
    shared_hardware(&out.inventory.clients)?;
    // Products first: product-on-depots and the rest name them.
    let (products, rest): (Vec<Object>, Vec<Object>) = sorted
        .objects
        .into_iter()
        .partition(|o| matches!(o, Object::Netboot(_) | Object::Localboot(_)));
    for object in products {
        product(&mut out, &mut known, object);
    }
    let (mut pocs, mut properties) = (Vec::new(), Vec::new());
    for object in rest {
        match object {
            Object::ProductOnClient(poc) => pocs.push(poc),
            Object::Property(p) => properties.push(p),
            other => dependent(&mut out, &mut known, other),
        }
    }
    // After the depots' own states, which they keep.
    defaults(&mut out, &mut known, properties);
    actions(&mut out, &known, pocs);
    Ok(out)
}

/// What the inventory has so far: ids of depots, clients, products.
#[derive(Default)]
struct Known {
    depots: HashSet<String>,
    clients: HashSet<String>,
    /// Netboot product id → its versions.
    netboot: HashMap<String, HashSet<(String, String)>>,
    localboot: HashSet<String>,
    /// Keys of everything else seen, to spot repeats.
    seen: HashSet<String>,
}

impl Known {
    fn object(&self, id: &str) -> bool {
        self.depots.contains(id) || self.clients.contains(id)
    }
}

fn depots(
    out: &mut Converted,
    known: &mut Known,
    depots: Vec<Host>,
    endpoints: &DepotEndpoints,
) -> Result<(), CliError> {
    let (mut no_endpoint, mut no_key) = (Vec::new(), Vec::new());
    for d in depots {
        let depot_id = id(&d.id);
        if !known.depots.insert(depot_id.clone()) {
            out.skipped("depots", "repeated in the dump");
            continue;
        }
        let Some(endpoint) = endpoints.endpoint(&depot_id) else {
            no_endpoint.push(depot_id);
            continue;
        };
        if d.opsi_host_key.trim().is_empty() {
            no_key.push(depot_id);
            continue;
        }
        out.imported("depots", depot_id.clone());
        out.inventory.depots.push(proto::DepotInfo {
            id: depot_id,
            endpoint,
            host_key: d.opsi_host_key,
            description: one_line(&d.description),
        });
    }
    if !no_endpoint.is_empty() {
        return Err(format!(
            "no gRPC endpoint for depot {}: give --depot-endpoint 'https://{{id}}:50051' or list it in --depot-map",
            no_endpoint.join(", ")
        )
        .into());
    }
    if !no_key.is_empty() {
        return Err(format!(
            "depot {} has no opsiHostKey in the dump: it is the key the depot and the configserver share",
            no_key.join(", ")
        )
        .into());
    }
    Ok(())
}

fn clients(out: &mut Converted, known: &mut Known, clients: Vec<Host>) {
    for c in clients {
        let client_id = id(&c.id);
        if !known.clients.insert(client_id.clone()) {
            out.skipped("clients", "repeated in the dump");
            continue;
        }
        out.imported("clients", client_id.clone());
        out.inventory.clients.push(proto::Host {
            id: client_id,
            hardware_address: c.hardware_address,
            system_uuid: c.system_uuid,
            ip_address: c.ip_address,
            opsi_host_key: c.opsi_host_key,
        });
    }
}

/// Fails when a MAC address or a system UUID is more than one client's,
/// naming every such one (at most 20): opsi 4.2 allows it (the SQL
/// backend's `unique_hardware_addresses` may be off, the file backend does
/// not check), pxeconf names PXE files after them — and the store names
/// only the first clash of a write, so such a site needed an import per
/// pair to find them.
fn shared_hardware(clients: &[proto::Host]) -> Result<(), CliError> {
    let mut owners: BTreeMap<(&str, String), Vec<&str>> = BTreeMap::new();
    for c in clients {
        // As the store compares them; a bad one is the server's to name.
        // MACs starting 00:00:00 are the placeholder some tools write:
        // exempt, as in the store (and opsi).
        if let Ok(mac) = crate::domain::Mac::parse(&c.hardware_address, "mac")
            && !mac.to_string().starts_with("00:00:00:")
        {
            owners
                .entry(("MAC", mac.to_string()))
                .or_default()
                .push(&c.id);
        }
        if let Ok(uuid) = crate::domain::SystemUuid::parse(&c.system_uuid, "uuid") {
            owners
                .entry(("UUID", uuid.to_string()))
                .or_default()
                .push(&c.id);
        }
    }
    let shared: Vec<String> = (owners.iter())
        .filter(|(_, ids)| ids.len() > 1)
        .map(|((kind, value), ids)| format!("{kind} {value}: {}", ids.join(", ")))
        .collect();
    if shared.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 20;
    let more = match shared.len() > SHOWN {
        true => format!("; and {} more", shared.len() - SHOWN),
        false => String::new(),
    };
    Err(format!(
        "{} MAC address(es) or system UUID(s) belong to more than one client in the dump (pxeconf names PXE files after them; give each its own, or clear the stale client's): {}{more}",
        shared.len(),
        shared[..shared.len().min(SHOWN)].join("; ")
    )
    .into())
}

fn product(out: &mut Converted, known: &mut Known, object: Object) {
    match object {
        Object::Netboot(p) => {
            let product_id = id(&p.id);
            let version = (p.product_version.clone(), p.package_version.clone());
            if !known
                .netboot
                .entry(product_id.clone())
                .or_default()
                .insert(version)
            {
                out.skipped("netboot products", "repeated in the dump");
                return;
            }
            out.imported(
                "netboot products",
                format!("{product_id} {}-{}", p.product_version, p.package_version),
            );
            out.inventory.products.push(proto::Product {
                id: product_id,
                product_version: p.product_version,
                package_version: p.package_version,
                pxe_config_template: p.pxe_config_template,
            });
        }
        Object::Localboot(p) => {
            known.localboot.insert(id(&p.id));
            out.skipped("localboot products", "localboot (pxeconf serves netboot)");
        }
        _ => {}
    }
}

/// Why an object naming `product` is left out, if it is: localboot, or
/// not a netboot product of the dump.
fn product_gap(known: &Known, product_type: &str, product: &str) -> Option<&'static str> {
    if product_type == "LocalbootProduct" || known.localboot.contains(product) {
        Some("localboot (pxeconf serves netboot)")
    } else if !known.netboot.contains_key(product) {
        Some("its netboot product is not in the dump")
    } else {
        None
    }
}

/// Product-on-depots, configs, config states, property states, other types.
fn dependent(out: &mut Converted, known: &mut Known, object: Object) {
    match object {
        Object::ProductOnDepot(p) => product_on_depot(out, known, p),
        Object::Config(c) => config(out, known, c),
        Object::ConfigState(s) => config_state(out, known, s),
        Object::PropertyState(s) => property_state(out, known, s),
        Object::Other(kind) => out.skipped("other objects", format!("type {kind}")),
        // Hosts, products and product-on-clients are handled by the caller.
        _ => {}
    }
}

fn product_on_depot(out: &mut Converted, known: &mut Known, p: objects::ProductOnDepot) {
    let (depot, product) = (id(&p.depot_id), id(&p.product_id));
    let version = (p.product_version.clone(), p.package_version.clone());
    let why = product_gap(known, &p.product_type, &product)
        .or_else(|| (!known.depots.contains(&depot)).then_some("its depot is not in the dump"))
        .or_else(|| {
            (!known.netboot[&product].contains(&version))
                .then_some("its product version is not in the dump")
        })
        .or_else(|| {
            (!known.seen.insert(format!("pod;{depot};{product}"))).then_some("repeated in the dump")
        });
    if let Some(why) = why {
        return out.skipped("product on depots", why);
    }
    out.imported("product on depots", format!("{product} on {depot}"));
    out.inventory.product_on_depots.push(proto::ProductOnDepot {
        depot_id: depot,
        product_id: product,
        product_version: p.product_version,
        package_version: p.package_version,
    });
}

fn config(out: &mut Converted, known: &mut Known, c: objects::Config) {
    if !PXE_CONFIGS.contains(&c.id.as_str()) {
        return out.skipped("configs", "not one a PXE config depends on");
    }
    if !known.seen.insert(format!("config;{}", c.id)) {
        return out.skipped("configs", "repeated in the dump");
    }
    out.imported("configs", c.id.clone());
    out.inventory.configs.push(proto::Config {
        id: c.id,
        default_values: c.default_values,
        description: one_line(&c.description),
    });
}

fn config_state(out: &mut Converted, known: &mut Known, s: objects::ConfigState) {
    let object = id(&s.object_id);
    let why = if !PXE_CONFIGS.contains(&s.config_id.as_str()) {
        Some("not one a PXE config depends on")
    } else if !known.object(&object) {
        Some("its client or depot is not in the dump")
    } else if !known.seen.insert(format!("cs;{object};{}", s.config_id)) {
        Some("repeated in the dump")
    } else {
        None
    };
    if let Some(why) = why {
        return out.skipped("config states", why);
    }
    out.imported("config states", format!("{} of {object}", s.config_id));
    out.inventory.config_states.push(proto::ConfigState {
        object_id: object,
        config_id: s.config_id,
        values: s.values,
    });
}

fn property_state(out: &mut Converted, known: &mut Known, s: objects::ProductPropertyState) {
    let (object, product) = (id(&s.object_id), id(&s.product_id));
    let why = product_gap(known, "", &product)
        .or_else(|| (!known.object(&object)).then_some("its client or depot is not in the dump"))
        .or_else(|| {
            (!known
                .seen
                .insert(format!("pps;{object};{product};{}", s.property_id)))
            .then_some("repeated in the dump")
        });
    if let Some(why) = why {
        return out.skipped("product property states", why);
    }
    out.imported(
        "product property states",
        format!("{product} {} of {object}", s.property_id),
    );
    out.inventory
        .product_property_states
        .push(proto::ProductPropertyState {
            object_id: object,
            product_id: product,
            property_id: s.property_id,
            values: s.values,
        });
}

/// Product properties' default values as the states of the depots that
/// have the property's product version and no state of it of their own.
/// opsipxeconfd reads a client's values with defaults
/// (`productPropertyState_getValues`): the client's state, else its depot's,
/// else the property's default; pxeconf falls back from the client to the
/// depot only, so without this a template's `%id%` stayed literal where opsi
/// wrote the default.
fn defaults(out: &mut Converted, known: &mut Known, properties: Vec<objects::ProductProperty>) {
    const KIND: &str = "product properties";
    let mut on_depots: HashMap<(&str, &str, &str), Vec<String>> = HashMap::new();
    for p in &out.inventory.product_on_depots {
        let version = (
            p.product_id.as_str(),
            p.product_version.as_str(),
            p.package_version.as_str(),
        );
        on_depots
            .entry(version)
            .or_default()
            .push(p.depot_id.clone());
    }
    let mut states = Vec::new();
    let mut outcomes = Vec::with_capacity(properties.len());
    for p in properties {
        let product = id(&p.product_id);
        let version = (
            product.as_str(),
            p.product_version.as_str(),
            p.package_version.as_str(),
        );
        let depots = on_depots.get(&version);
        // Checked once here as the store checks a state: one refused
        // default would fail the whole import, one transaction.
        let refused = || {
            crate::configserver::store::PropertyStateRecord::try_from(proto::ProductPropertyState {
                object_id: depots?.first()?.clone(),
                product_id: product.clone(),
                property_id: p.property_id.clone(),
                values: p.default_values.clone(),
            })
            .is_err()
            .then_some("its id or default values fail pxeconf's checks (length, characters)")
        };
        let why = product_gap(known, "", &product)
            .or_else(|| {
                let key = format!(
                    "pp;{product};{};{};{}",
                    p.product_version, p.package_version, p.property_id
                );
                (!known.seen.insert(key)).then_some("repeated in the dump")
            })
            .or_else(|| {
                depots
                    .is_none()
                    .then_some("its product version is on no depot of the dump")
            })
            .or_else(refused);
        if let Some(why) = why {
            outcomes.push(Err(why));
            continue;
        }
        let mut idents = Vec::new();
        for depot in depots.into_iter().flatten() {
            if !known
                .seen
                .insert(format!("pps;{depot};{product};{}", p.property_id))
            {
                continue;
            }
            idents.push(format!("{product} {} default on {depot}", p.property_id));
            states.push(proto::ProductPropertyState {
                object_id: depot.clone(),
                product_id: product.clone(),
                property_id: p.property_id.clone(),
                values: p.default_values.clone(),
            });
        }
        outcomes.push(match idents.is_empty() {
            true => Err("every depot with its product version has a state of it"),
            false => Ok(idents),
        });
    }
    out.inventory.product_property_states.extend(states);
    for outcome in outcomes {
        match outcome {
            Ok(idents) => out.imported_as(KIND, idents),
            Err(why) => out.skipped(KIND, why),
        }
    }
}

/// Netboot product-on-clients as action requests, oldest first by
/// `modificationTime` (its text sorts as its time), so the one set last in
/// opsi is the newest.
fn actions(out: &mut Converted, known: &Known, pocs: Vec<ProductOnClient>) {
    let mut kept = Vec::new();
    let mut seen = HashSet::new();
    for poc in pocs {
        let (client, product) = (id(&poc.client_id), id(&poc.product_id));
        let action = poc.action_request.parse::<ActionRequest>();
        let why = product_gap(known, &poc.product_type, &product)
            .map(str::to_owned)
            .or_else(|| {
                (!known.clients.contains(&client)).then(|| "its client is not in the dump".into())
            })
            .or_else(|| {
                action
                    .is_err()
                    .then(|| format!("unknown action request {:?}", poc.action_request))
            })
            .or_else(|| {
                (!seen.insert((client.clone(), product.clone())))
                    .then(|| "repeated in the dump".into())
            });
        match (why, action) {
            (Some(why), _) => out.skipped("product on clients", why),
            (None, Ok(action)) => kept.push((poc.modification_time, client, product, action)),
            (None, Err(())) => {}
        }
    }
    // Stable: equal times keep the dump's order.
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, client, product, action) in kept {
        out.imported("product on clients", format!("{product} on {client}"));
        out.inventory.action_requests.push(proto::ActionRequest {
            client_id: client,
            product_id: product,
            action_request: action.as_str().to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::cli::opsi::read::read_objects;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/opsi")
            .join(name)
    }

    fn converted(name: &str) -> Converted {
        let endpoints = DepotEndpoints::new(Some("https://{id}:50051".into()), None).unwrap();
        convert(read_objects(&[fixture(name)]).unwrap(), &endpoints).unwrap()
    }

    /// (kind, in dump, imported, skipped) per kind.
    fn counts(c: &Converted) -> Vec<(&'static str, u64, u64, u64)> {
        c.summary
            .iter()
            .map(|k| (k.kind, k.in_dump, k.imported, k.skipped))
            .collect()
    }

    /// Every MAC or UUID two clients of the dump share is named at once,
    /// in any spelling opsi kept it (the store would name the first only).
    #[test]
    fn shared_macs_and_uuids_are_named_all_at_once() {
        let host = |id: &str, mac: &str, uuid: &str| {
            Object::Client(Host {
                id: id.into(),
                hardware_address: mac.into(),
                system_uuid: uuid.into(),
                ..Host::default()
            })
        };
        let uuid = "4c4c4544-0042-3510-8054-b4c04f4e4d31";
        let objects = vec![
            host("a.example.org", "00:11:22:33:44:55", ""),
            host("b.example.org", "00-11-22-33-44-55", uuid),
            host("c.example.org", "66:77:88:99:AA:BB", &uuid.to_uppercase()),
            host("d.example.org", "66:77:88:99:aa:bb", ""),
            host("e.example.org", "00:00:00:00:00:01", ""),
            host("f.example.org", "00:00:00:00:00:01", ""),
        ];
        let endpoints = DepotEndpoints::new(Some("https://{id}:50051".into()), None).unwrap();
        let Err(error) = convert(objects, &endpoints) else {
            panic!("shared MACs were let through");
        };
        let error = error.to_string();
        for named in [
            "MAC 00:11:22:33:44:55: a.example.org, b.example.org",
            "MAC 66:77:88:99:aa:bb: c.example.org, d.example.org",
            "b.example.org, c.example.org",
        ] {
            assert!(error.contains(named), "{named} in {error}");
        }
        assert!(error.starts_with("3 MAC"), "{error}");
        // The placeholder some tools write is exempt, as in the store.
        assert!(!error.contains("e.example.org"), "{error}");
    }

    #[test]
    fn the_fixture_dump_converts_with_every_skip_counted() {
        let c = converted("dump.json");
        assert_eq!(
            counts(&c),
            vec![
                ("configs", 7, 4, 3),
                ("depots", 3, 3, 0),
                ("netboot products", 5, 5, 0),
                ("localboot products", 2, 0, 2),
                ("product on depots", 12, 9, 3),
                ("clients", 7, 7, 0),
                ("config states", 12, 10, 2),
                ("product property states", 4, 3, 1),
                ("product properties", 6, 4, 2),
                ("product on clients", 11, 8, 3),
                ("other objects", 1, 0, 1),
            ]
        );
        let why = |kind: &str| {
            c.summary
                .iter()
                .find(|k| k.kind == kind)
                .unwrap()
                .why_skipped
                .clone()
        };
        // Defaults for the depots with the property's version and no state
        // of their own (Berlin keeps its lang, Hamburg its passes).
        let defaults: Vec<(&str, &str, &str, Vec<String>)> = c.inventory.product_property_states
            [3..]
            .iter()
            .map(|s| {
                (
                    s.object_id.as_str(),
                    s.product_id.as_str(),
                    s.property_id.as_str(),
                    s.values.clone(),
                )
            })
            .collect();
        let (cs, ber, ham) = (
            "opsi.example.org",
            "depot-berlin.example.org",
            "depot-hamburg.example.org",
        );
        let v = |s: &str| vec![s.to_owned()];
        assert_eq!(
            defaults,
            vec![
                (cs, "win10-x64", "lang", v("en-US")),
                (cs, "win10-x64", "askbeforeinst", v("true")),
                (ber, "win10-x64", "askbeforeinst", v("true")),
                (ham, "win10-x64", "lang", v("en-GB")),
                (cs, "memtest86", "passes", v("1")),
                (ber, "memtest86", "passes", v("1")),
            ]
        );
        assert_eq!(
            c.ident("product_property_states", 8),
            Some("memtest86 passes default on depot-berlin.example.org")
        );
        assert_eq!(
            why("product properties"),
            BTreeMap::from([
                (
                    "its product version is on no depot of the dump".to_owned(),
                    1
                ),
                ("localboot (pxeconf serves netboot)".to_owned(), 1),
            ])
        );
        assert_eq!(
            why("config states"),
            BTreeMap::from([
                ("its client or depot is not in the dump".to_owned(), 1),
                ("not one a PXE config depends on".to_owned(), 1),
            ])
        );
        assert_eq!(
            why("product on clients"),
            BTreeMap::from([("localboot (pxeconf serves netboot)".to_owned(), 3)])
        );
        assert_eq!(
            why("other objects"),
            BTreeMap::from([("type HostGroup".to_owned(), 1)])
        );
        // Oldest action first: pc-ham-002's memtest86 (set last in opsi) after its win10-x64.
        let actions: Vec<(&str, &str, &str)> = c
            .inventory
            .action_requests
            .iter()
            .map(|a| {
                (
                    a.client_id.as_str(),
                    a.product_id.as_str(),
                    a.action_request.as_str(),
                )
            })
            .collect();
        assert_eq!(
            actions,
            vec![
                ("vm-old.example.org", "hwinvent", "none"),
                ("pc-ham-002.example.org", "win10-x64", "setup"),
                ("pc-ber-001.example.org", "win10-x64", "setup"),
                ("pc-ber-002.example.org", "memtest86", "always"),
                ("pc-ham-001.example.org", "win10-x64", "setup"),
                ("pc-ham-002.example.org", "memtest86", "once"),
                ("pc-ham-003.example.org", "ubuntu", "setup"),
                ("pc-hq-001.example.org", "hwinvent", "setup"),
            ]
        );
        // Booleans, nulls and a value with spaces, as the inventory carries them.
        let pps = &c.inventory.product_property_states[0];
        assert_eq!(
            (pps.property_id.as_str(), pps.values.clone()),
            ("askbeforeinst", vec!["true".to_owned()])
        );
        let ham_append = c
            .inventory
            .config_states
            .iter()
            .find(|s| s.object_id == "depot-hamburg.example.org")
            .unwrap();
        assert_eq!(ham_append.values, vec!["acpi=off noapic", "vga=normal"]);
        let old = c
            .inventory
            .clients
            .iter()
            .find(|h| h.id == "vm-old.example.org")
            .unwrap();
        assert_eq!(
            (old.hardware_address.as_str(), old.opsi_host_key.as_str()),
            ("", "")
        );
        let depot = &c.inventory.depots[1];
        assert_eq!(
            (
                depot.id.as_str(),
                depot.endpoint.as_str(),
                depot.description.as_str()
            ),
            (
                "depot-berlin.example.org",
                "https://depot-berlin.example.org:50051",
                "Branch office Berlin"
            )
        );
        assert_eq!(
            c.ident("product_on_depots", 0),
            Some("win10-x64 on opsi.example.org")
        );
    }

    #[test]
    fn one_file_per_call_and_json_rpc_answers_convert_the_same() {
        let (mixed, calls) = (converted("dump.json"), converted("calls"));
        assert_eq!(counts(&mixed), counts(&calls));
        let mut a = mixed.inventory.clone();
        let mut b = calls.inventory.clone();
        // Only the order of sections' items may differ (files are read by name).
        for inv in [&mut a, &mut b] {
            inv.clients.sort_by(|x, y| x.id.cmp(&y.id));
            inv.depots.sort_by(|x, y| x.id.cmp(&y.id));
        }
        assert_eq!(a, b);
    }

    /// A property default the store would refuse (longer than a value may
    /// be) is skipped, saying why: sent, it failed the whole import.
    #[test]
    fn a_default_the_store_would_refuse_is_skipped() {
        let mut objects = read_objects(&[fixture("dump.json")]).unwrap();
        objects.push(Object::Property(objects::ProductProperty {
            product_id: "memtest86".into(),
            product_version: "6.20".into(),
            package_version: "2".into(),
            property_id: "huge".into(),
            default_values: vec!["x".repeat(5000)],
        }));
        let all = DepotEndpoints::new(Some("https://{id}:1".into()), None).unwrap();
        let c = convert(objects, &all).unwrap();
        let kind = c
            .summary
            .iter()
            .find(|k| k.kind == "product properties")
            .unwrap();
        assert_eq!((kind.in_dump, kind.imported, kind.skipped), (7, 4, 3));
        assert_eq!(
            kind.why_skipped
                .get("its id or default values fail pxeconf's checks (length, characters)"),
            Some(&1)
        );
        assert!(
            !c.inventory
                .product_property_states
                .iter()
                .any(|s| s.property_id == "huge")
        );
    }

    #[test]
    fn a_depot_needs_an_endpoint_and_a_key() {
        let objects = read_objects(&[fixture("dump.json")]).unwrap();
        let map = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        std::fs::write(
            map.path(),
            "\"opsi.example.org\" = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        let only_one = DepotEndpoints::new(None, Some(map.path())).unwrap();
        let err = convert(objects.clone(), &only_one).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "no gRPC endpoint for depot depot-berlin.example.org, depot-hamburg.example.org: "
            ),
            "{err}"
        );
        let mut keyless = objects;
        for o in &mut keyless {
            if let Object::Depot(h) = o {
                h.opsi_host_key.clear();
            }
        }
        let all = DepotEndpoints::new(Some("https://{id}:1".into()), None).unwrap();
        let err = convert(keyless, &all).unwrap_err().to_string();
        assert!(err.contains("has no opsiHostKey"), "{err}");
    }
}
