//! Wire ⇄ domain for what both roles exchange: hosts, the client bundle and
//! its parts. `TryFrom` validates a wire message once, at the edge; `From`
//! turns domain values back into wire messages. Each role converts its own
//! messages beside its services (`depot::wire`, `configserver::wire`).

use std::time::SystemTime;

use crate::domain::limits::{MAX_BULK, MAX_ID, MAX_ITEMS, MAX_KEY, MAX_VALUE, shown};
use crate::domain::{
    ActionRequest, BootMode, Client, ClientBundle, Fqdn, MAX_VIOLATIONS, Mac, Modules,
    NetbootProduct, ProductId, Secret, SystemUuid, TemplateName, ValidationError,
};
use crate::proto;

/// Fails when `value` is longer than `max` bytes; the error quotes none of it.
pub fn check_len(value: &str, max: usize, field: &str) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("longer than {max} bytes ({} given)", value.len()),
        ));
    }
    Ok(())
}

/// Fails when a list has more than `max` items.
pub fn check_count(count: usize, max: usize, field: &str) -> Result<(), ValidationError> {
    if count > max {
        return Err(ValidationError::new(
            field,
            format!("at most {max} items ({count} given)"),
        ));
    }
    Ok(())
}

/// Fails when `value` is longer than [`MAX_VALUE`] or holds whitespace, a
/// quote or a control character: it goes onto a kernel command line, where
/// those would split or end it.
pub fn check_token(value: &str, field: &str) -> Result<(), ValidationError> {
    check_len(value, MAX_VALUE, field)?;
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '"')
    {
        return Err(ValidationError::new(
            field,
            format!("must not contain whitespace, quotes or control characters (found {c:?})"),
        ));
    }
    Ok(())
}

/// Fails when `value` is longer than [`MAX_VALUE`] or holds a control
/// character (a line break would inject lines into a PXE config).
pub fn check_line(value: &str, field: &str) -> Result<(), ValidationError> {
    check_len(value, MAX_VALUE, field)?;
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters or line breaks",
        ));
    }
    Ok(())
}

impl TryFrom<proto::Host> for Client {
    type Error = ValidationError;

    // Every field is checked, so that the caller learns all bad ones at once.
    fn try_from(host: proto::Host) -> Result<Self, Self::Error> {
        let fqdn = Fqdn::parse(&host.id, "id");
        let mac = match host.hardware_address.trim() {
            "" => Ok(None),
            m => Mac::parse(m, "hardware_address").map(Some),
        };
        let uuid = match host.system_uuid.trim() {
            "" => Ok(None),
            u => SystemUuid::parse(u, "system_uuid").map(Some),
        };
        let key = check_len(&host.opsi_host_key, MAX_KEY, "opsi_host_key")
            .and_then(|()| check_token(&host.opsi_host_key, "opsi_host_key"));
        let ip = check_len(&host.ip_address, MAX_ID, "ip_address")
            .and_then(|()| check_line(&host.ip_address, "ip_address"));
        match (fqdn, mac, uuid, key, ip) {
            (Ok(fqdn), Ok(mac), Ok(uuid), Ok(()), Ok(())) => Ok(Client {
                fqdn,
                mac,
                uuid,
                ip_address: host.ip_address.trim().to_owned(),
                host_key: Secret::new(host.opsi_host_key),
            }),
            (fqdn, mac, uuid, key, ip) => Err(ValidationError::join(
                [fqdn.err(), mac.err(), uuid.err(), key.err(), ip.err()]
                    .into_iter()
                    .flatten(),
            )
            .unwrap_err()),
        }
    }
}

impl From<&Client> for proto::Host {
    fn from(client: &Client) -> Self {
        proto::Host {
            id: client.fqdn.to_string(),
            hardware_address: client.mac.map(|m| m.to_string()).unwrap_or_default(),
            system_uuid: client
                .uuid
                .as_ref()
                .map(|u| u.to_string())
                .unwrap_or_default(),
            ip_address: client.ip_address.clone(),
            opsi_host_key: client.host_key.expose().to_owned(),
        }
    }
}

impl TryFrom<proto::BootMode> for BootMode {
    type Error = ValidationError;

    fn try_from(mode: proto::BootMode) -> Result<Self, Self::Error> {
        Ok(match mode {
            proto::BootMode::Unspecified | proto::BootMode::Bios => BootMode::Bios,
            proto::BootMode::UefiX86 => BootMode::UefiX86,
            proto::BootMode::UefiX64 => BootMode::UefiX64,
        })
    }
}

impl From<BootMode> for proto::BootMode {
    fn from(mode: BootMode) -> Self {
        match mode {
            BootMode::Bios => proto::BootMode::Bios,
            BootMode::UefiX86 => proto::BootMode::UefiX86,
            BootMode::UefiX64 => proto::BootMode::UefiX64,
        }
    }
}

impl From<proto::Modules> for Modules {
    fn from(m: proto::Modules) -> Self {
        Modules {
            uefi: m.uefi,
            secureboot: m.secureboot,
        }
    }
}

impl From<Modules> for proto::Modules {
    fn from(m: Modules) -> Self {
        proto::Modules {
            uefi: m.uefi,
            secureboot: m.secureboot,
        }
    }
}

fn check_version(value: &str, field: &str) -> Result<String, ValidationError> {
    check_len(value, MAX_ID, field)?;
    check_token(value, field)?;
    Ok(value.to_owned())
}

impl TryFrom<proto::ClientBundle> for ClientBundle {
    type Error = ValidationError;

    // Checked in this order, so that of several bad fields the same one is
    // named as before the checks were split up.
    fn try_from(wire: proto::ClientBundle) -> Result<Self, Self::Error> {
        let host = wire.host.ok_or_else(|| required("host"))?;
        let client = Client::try_from(host).map_err(|e| e.within("host"))?;
        let product = wire.product.ok_or_else(|| required("product"))?;
        let (product_id, template) = product_identity(&product)?;
        let depot_id = optional_fqdn(&wire.depot_id, "depot_id")?;
        let action_request = match &wire.product_on_client {
            Some(poc) => product_on_client(poc, &client.fqdn, &product_id)?,
            None => ActionRequest::Setup,
        };
        if let Some(pod) = &wire.product_on_depot {
            check_product_on_depot(pod, &product_id, depot_id.as_ref())?;
        }
        check_token(&wire.service_address, "service_address")?;
        let boot_mode = boot_mode(wire.boot_mode)?;
        check_kernel_items(&wire.bootimage_append)?;
        check_properties(wire.product_property_states.iter())?;
        Ok(ClientBundle {
            client,
            product: netboot_product(&product, product_id, template)?,
            action_request,
            depot_id,
            service_address: wire.service_address,
            boot_mode,
            bootimage_append: wire.bootimage_append,
            properties: wire.product_property_states.into_iter().collect(),
            modules: wire.modules.map(Modules::from).unwrap_or_default(),
            revision: wire.revision,
        })
    }
}

fn required(field: &str) -> ValidationError {
    ValidationError::new(field, "is required")
}

/// `field` names `given`, which differs from `other` (named `other_field`).
fn mismatch(field: &str, given: &str, other_field: &str, other: &str) -> ValidationError {
    ValidationError::new(
        field,
        format!(
            "{} does not match {other_field} {}",
            shown(given),
            shown(other)
        ),
    )
}

/// An FQDN, or `None` for an empty (or blank) value.
fn optional_fqdn(value: &str, field: &str) -> Result<Option<Fqdn>, ValidationError> {
    match value.trim() {
        "" => Ok(None),
        d => Fqdn::parse(d, field).map(Some),
    }
}

/// The product's id and its own template, if it names one.
fn product_identity(
    product: &proto::Product,
) -> Result<(ProductId, Option<TemplateName>), ValidationError> {
    let id = ProductId::parse(&product.id, "product.id")?;
    let template = match product.pxe_config_template.trim() {
        "" => None,
        t => Some(TemplateName::parse_relative(
            t,
            "product.pxe_config_template",
        )?),
    };
    Ok((id, template))
}

/// The product with its versions checked (they go onto no command line,
/// but into listings and logs, whole).
fn netboot_product(
    product: &proto::Product,
    id: ProductId,
    template: Option<TemplateName>,
) -> Result<NetbootProduct, ValidationError> {
    Ok(NetbootProduct {
        id,
        product_version: check_version(&product.product_version, "product.product_version")?,
        package_version: check_version(&product.package_version, "product.package_version")?,
        template,
    })
}

/// The action request of a product-on-client, which must name (if anything)
/// the bundle's own client and product; `setup` when it names none.
fn product_on_client(
    poc: &proto::ProductOnClient,
    client: &Fqdn,
    product: &ProductId,
) -> Result<ActionRequest, ValidationError> {
    if !poc.client_id.is_empty()
        && Fqdn::parse(&poc.client_id, "product_on_client.client_id")? != *client
    {
        return Err(mismatch(
            "product_on_client.client_id",
            &poc.client_id,
            "host.id",
            client.as_str(),
        ));
    }
    if !poc.product_id.is_empty()
        && ProductId::parse(&poc.product_id, "product_on_client.product_id")? != *product
    {
        return Err(mismatch(
            "product_on_client.product_id",
            &poc.product_id,
            "product.id",
            product.as_str(),
        ));
    }
    if poc.action_request.is_empty() {
        return Ok(ActionRequest::Setup);
    }
    ActionRequest::parse(&poc.action_request, "product_on_client.action_request")
}

/// A product-on-depot must name (if anything) the bundle's product and depot.
fn check_product_on_depot(
    pod: &proto::ProductOnDepot,
    product: &ProductId,
    depot: Option<&Fqdn>,
) -> Result<(), ValidationError> {
    if !pod.product_id.is_empty()
        && ProductId::parse(&pod.product_id, "product_on_depot.product_id")? != *product
    {
        return Err(mismatch(
            "product_on_depot.product_id",
            &pod.product_id,
            "product.id",
            product.as_str(),
        ));
    }
    if let (Some(depot), false) = (depot, pod.depot_id.is_empty())
        && Fqdn::parse(&pod.depot_id, "product_on_depot.depot_id")? != *depot
    {
        return Err(mismatch(
            "product_on_depot.depot_id",
            &pod.depot_id,
            "depot_id",
            depot.as_str(),
        ));
    }
    Ok(())
}

fn boot_mode(value: i32) -> Result<BootMode, ValidationError> {
    proto::BootMode::try_from(value)
        .map_err(|_| ValidationError::new("boot_mode", format!("unknown boot mode {value}")))
        .and_then(BootMode::try_from)
}

/// Every `opsi-linux-bootimage.append` item goes onto the kernel command line.
fn check_kernel_items(items: &[String]) -> Result<(), ValidationError> {
    check_count(items.len(), MAX_ITEMS, "bootimage_append")?;
    for (i, item) in items.iter().enumerate() {
        let field = format!("bootimage_append[{i}]");
        check_token(item, &field)?;
        crate::domain::opsi::check_root_password(item, &field)?;
    }
    Ok(())
}

/// Property ids are `%id%` placeholders; values are substituted into lines.
fn check_properties<'a>(
    properties: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), ValidationError> {
    check_count(properties.len(), MAX_ITEMS, "product_property_states")?;
    for (key, value) in properties {
        if key.is_empty()
            || key.len() > MAX_ID
            || key.contains('%')
            || key.chars().any(char::is_control)
        {
            return Err(ValidationError::new(
                "product_property_states",
                format!("invalid property id {}", shown(key)),
            ));
        }
        check_line(value, &format!("product_property_states[{key}]"))?;
    }
    Ok(())
}

impl From<&ClientBundle> for proto::ClientBundle {
    fn from(b: &ClientBundle) -> Self {
        let depot_id = b
            .depot_id
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        proto::ClientBundle {
            host: Some(proto::Host::from(&b.client)),
            product_on_client: Some(proto::ProductOnClient {
                client_id: b.client.fqdn.to_string(),
                product_id: b.product.id.to_string(),
                action_request: b.action_request.to_string(),
                action_progress: String::new(),
                product_version: b.product.product_version.clone(),
                package_version: b.product.package_version.clone(),
            }),
            product_on_depot: Some(proto::ProductOnDepot {
                depot_id: depot_id.clone(),
                product_id: b.product.id.to_string(),
                product_version: b.product.product_version.clone(),
                package_version: b.product.package_version.clone(),
            }),
            product: Some(proto::Product {
                id: b.product.id.to_string(),
                product_version: b.product.product_version.clone(),
                package_version: b.product.package_version.clone(),
                pxe_config_template: b
                    .product
                    .template
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            }),
            depot_id,
            service_address: b.service_address.clone(),
            boot_mode: proto::BootMode::from(b.boot_mode) as i32,
            bootimage_append: b.bootimage_append.clone(),
            product_property_states: b
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            modules: Some(b.modules.into()),
            revision: b.revision,
            epoch: Default::default(),
        }
    }
}

/// The reason of a delivery that shows a blocked config — failed for good,
/// no retry planned, the reason in `error` (`GetClientStatus`,
/// `ListPending`) — or `None` for any other.
pub fn blocked_reason(d: &crate::proto::Delivery) -> Option<&str> {
    (d.state == crate::proto::DeliveryState::Failed as i32
        && d.next_retry.is_none()
        && !d.error.is_empty())
    .then_some(d.error.as_str())
}

/// A wire timestamp for a system time.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// Validates each item with `f`, naming a failure `field[i].…`; at most
/// [`MAX_BULK`] items (one Admin write). Every bad item is named (up to
/// `MAX_VIOLATIONS` fields), not just the first.
pub fn convert_each<W, D>(
    items: Vec<W>,
    field: &str,
    f: impl Fn(W) -> Result<D, ValidationError>,
) -> Result<Vec<D>, ValidationError> {
    convert_up_to(items, MAX_BULK, field, f)
}

/// [`convert_each`] with at most `max` items.
pub fn convert_up_to<W, D>(
    items: Vec<W>,
    max: usize,
    field: &str,
    f: impl Fn(W) -> Result<D, ValidationError>,
) -> Result<Vec<D>, ValidationError> {
    check_count(items.len(), max, field)?;
    collect_each(items, |i, w| {
        f(w).map_err(|e| e.within(&format!("{field}[{i}]")))
    })
}

/// Validates FQDNs, naming each failure `field[i]`; at most [`MAX_BULK`].
pub fn fqdns(ids: Vec<String>, field: &str) -> Result<Vec<Fqdn>, ValidationError> {
    check_count(ids.len(), MAX_BULK, field)?;
    collect_each(ids, |i, id| Fqdn::parse(&id, &format!("{field}[{i}]")))
}

/// `f` over every item with its index: all results, or one error naming
/// every bad item (at most `MAX_VIOLATIONS`).
fn collect_each<W, D>(
    items: Vec<W>,
    f: impl Fn(usize, W) -> Result<D, ValidationError>,
) -> Result<Vec<D>, ValidationError> {
    let mut good = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (i, w) in items.into_iter().enumerate() {
        match f(i, w) {
            Ok(d) => good.push(d),
            Err(e) if bad.len() < MAX_VIOLATIONS => bad.push(e),
            Err(_) => {}
        }
    }
    ValidationError::join(bad).map(|()| good)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundles_root_password_is_bounded() {
        use crate::domain::opsi::MAX_ROOT_PASSWORD;
        let item = |n| vec![format!("bootimagerootpassword={}", "x".repeat(n))];
        assert!(check_kernel_items(&item(MAX_ROOT_PASSWORD)).is_ok());
        let err = check_kernel_items(&item(MAX_ROOT_PASSWORD + 1)).unwrap_err();
        assert_eq!(err.field, "bootimage_append[0]");
        assert!(err.message.contains("root password"), "{err}");
    }

    fn wire() -> proto::ClientBundle {
        proto::ClientBundle {
            host: Some(proto::Host {
                id: "client1.example.org".into(),
                hardware_address: "00:11:22:AA:BB:CC".into(),
                system_uuid: "4C4C4544-0035-3010-8045-B4C04F4E4B32".into(),
                ip_address: "10.0.0.5".into(),
                opsi_host_key: "0123456789abcdef0123456789abcdef".into(),
            }),
            product_on_client: Some(proto::ProductOnClient {
                client_id: "client1.example.org".into(),
                product_id: "win10-x64".into(),
                action_request: "setup".into(),
                ..Default::default()
            }),
            product_on_depot: None,
            product: Some(proto::Product {
                id: "win10-x64".into(),
                product_version: "4.2".into(),
                package_version: "1".into(),
                pxe_config_template: String::new(),
            }),
            depot_id: "depot1.example.org".into(),
            service_address: "https://config.example.org:4447".into(),
            boot_mode: proto::BootMode::Bios as i32,
            bootimage_append: vec!["lang=de".into()],
            product_property_states: [("askbeforeinst".to_string(), "false".to_string())].into(),
            modules: None,
            revision: 3,
            epoch: Default::default(),
        }
    }

    #[test]
    fn a_valid_bundle_converts_and_round_trips() {
        let domain = ClientBundle::try_from(wire()).unwrap();
        assert_eq!(domain.client.fqdn.as_str(), "client1.example.org");
        assert_eq!(
            domain.client.pxe_file_names(),
            vec![
                "4c4c4544-0035-3010-8045-b4c04f4e4b32".to_string(),
                "01-00-11-22-aa-bb-cc".to_string()
            ]
        );
        assert_eq!(domain.action_request, ActionRequest::Setup);
        let back = proto::ClientBundle::from(&domain);
        assert_eq!(ClientBundle::try_from(back).unwrap(), domain);
    }

    #[test]
    fn invalid_fields_name_the_field() {
        type Mutation = fn(&mut proto::ClientBundle);
        let cases: Vec<(Mutation, &str)> = vec![
            (|b| b.host = None, "host"),
            (
                |b| b.host.as_mut().unwrap().id = "nodomain".into(),
                "host.id",
            ),
            (
                |b| b.host.as_mut().unwrap().hardware_address = "00:11:22".into(),
                "host.hardware_address",
            ),
            (
                |b| b.host.as_mut().unwrap().system_uuid = "not-a-uuid".into(),
                "host.system_uuid",
            ),
            (
                |b| b.host.as_mut().unwrap().opsi_host_key = "a b".into(),
                "host.opsi_host_key",
            ),
            (
                |b| b.product.as_mut().unwrap().pxe_config_template = "../x".into(),
                "product.pxe_config_template",
            ),
            (
                |b| b.product_on_client.as_mut().unwrap().client_id = "other.example.org".into(),
                "product_on_client.client_id",
            ),
            (
                |b| b.product_on_client.as_mut().unwrap().action_request = "reboot".into(),
                "product_on_client.action_request",
            ),
            (
                |b| b.bootimage_append.push("a b".into()),
                "bootimage_append[1]",
            ),
            (|b| b.boot_mode = 42, "boot_mode"),
            (
                |b| {
                    b.product_property_states.insert("p".into(), "x\ny".into());
                },
                "product_property_states[p]",
            ),
        ];
        for (mutate, field) in cases {
            let mut w = wire();
            mutate(&mut w);
            let err = ClientBundle::try_from(w).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn every_check_names_its_field_path() {
        type Mutation = fn(&mut proto::ClientBundle);
        let pod = |b: &mut proto::ClientBundle| {
            b.product_on_depot = Some(proto::ProductOnDepot {
                depot_id: "depot1.example.org".into(),
                product_id: "win10-x64".into(),
                ..Default::default()
            })
        };
        let cases: Vec<(Mutation, &str, &str)> = vec![
            (|b| b.product = None, "product", "is required"),
            (
                |b| b.product.as_mut().unwrap().id = "bad id".into(),
                "product.id",
                "",
            ),
            (|b| b.depot_id = "nodomain".into(), "depot_id", ""),
            (
                |b| b.product_on_client.as_mut().unwrap().client_id = "other.example.org".into(),
                "product_on_client.client_id",
                "\"other.example.org\" does not match host.id \"client1.example.org\"",
            ),
            (
                |b| b.product_on_client.as_mut().unwrap().product_id = "ubuntu".into(),
                "product_on_client.product_id",
                "\"ubuntu\" does not match product.id \"win10-x64\"",
            ),
            (
                |b| {
                    b.product_on_depot = Some(proto::ProductOnDepot {
                        product_id: "ubuntu".into(),
                        ..Default::default()
                    })
                },
                "product_on_depot.product_id",
                "\"ubuntu\" does not match product.id \"win10-x64\"",
            ),
            (
                |b| {
                    b.product_on_depot = Some(proto::ProductOnDepot {
                        depot_id: "depot2.example.org".into(),
                        ..Default::default()
                    })
                },
                "product_on_depot.depot_id",
                "\"depot2.example.org\" does not match depot_id \"depot1.example.org\"",
            ),
            (
                |b| b.service_address = "http://x y".into(),
                "service_address",
                "whitespace",
            ),
            (
                |b| {
                    b.product_property_states.insert("a%b".into(), "x".into());
                },
                "product_property_states",
                "invalid property id \"a%b\"",
            ),
            (
                |b| b.product.as_mut().unwrap().product_version = "4 2".into(),
                "product.product_version",
                "",
            ),
            (
                |b| b.product.as_mut().unwrap().package_version = "1\"".into(),
                "product.package_version",
                "",
            ),
        ];
        for (mutate, field, message) in cases {
            let mut w = wire();
            mutate(&mut w);
            let err = ClientBundle::try_from(w).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains(message), "{err}");
        }
        // Parts that agree with the bundle, or name nothing, are accepted.
        let mut w = wire();
        pod(&mut w);
        let poc = w.product_on_client.as_mut().unwrap();
        poc.client_id.clear();
        poc.product_id.clear();
        poc.action_request.clear();
        let b = ClientBundle::try_from(w).unwrap();
        assert_eq!(b.action_request, ActionRequest::Setup);
        let mut w = wire();
        w.product_on_client = None;
        w.depot_id.clear();
        w.product_on_depot = Some(proto::ProductOnDepot {
            depot_id: "anything.example.org".into(),
            ..Default::default()
        });
        let b = ClientBundle::try_from(w).unwrap();
        assert_eq!((b.action_request, b.depot_id), (ActionRequest::Setup, None));
    }
}
