//! opsi's objects as its JSON dumps carry them: `type`, `ident` and the
//! camelCase attributes of python-opsi-common's `opsicommon/objects.py`
//! (4.3.21.11; python-opsi 4.2's `OPSI/Object.py` re-exports it). Only what
//! pxeconf uses is read; any other attribute is ignored (opsi adds many),
//! and any of these may be `null`.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Text that may be `null` (empty), a string, or (sloppily written) a
/// number or a boolean; a list or an object is an error.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(String::new()),
        // The kind only: the value may be a host key.
        Some(v) => scalar(&v).ok_or_else(|| {
            let kind = if v.is_array() { "a list" } else { "an object" };
            serde::de::Error::custom(format!("expected a text, found {kind}"))
        }),
    }
}

/// A list of values (`values`, `defaultValues`) as texts: strings as they
/// are, booleans and numbers as JSON writes them (`true`, `4`); `null`
/// entries and a `null` list are left out.
fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<Value>>::deserialize(d)?
        .unwrap_or_default()
        .iter()
        .filter_map(scalar)
        .collect())
}

/// One JSON scalar as text; `None` for `null` and for lists or objects.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `OpsiClient`, `OpsiDepotserver` and `OpsiConfigserver` (the attributes
/// pxeconf reads; `depotLocalUrl`, `isMasterDepot` … are ignored).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Host {
    /// The FQDN.
    #[serde(deserialize_with = "text")]
    pub id: String,
    /// Free text.
    #[serde(deserialize_with = "text")]
    pub description: String,
    /// MAC address, `aa:bb:…`.
    #[serde(deserialize_with = "text")]
    pub hardware_address: String,
    /// SMBIOS UUID (not in opsi 4.1).
    #[serde(rename = "systemUUID", deserialize_with = "text")]
    pub system_uuid: String,
    /// Last known IP address.
    #[serde(deserialize_with = "text")]
    pub ip_address: String,
    /// The opsi host key (a secret: never printed).
    #[serde(deserialize_with = "text")]
    pub opsi_host_key: String,
}

/// `NetbootProduct` and `LocalbootProduct`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Product {
    /// Product id.
    #[serde(deserialize_with = "text")]
    pub id: String,
    /// Product version.
    #[serde(deserialize_with = "text")]
    pub product_version: String,
    /// Package version.
    #[serde(deserialize_with = "text")]
    pub package_version: String,
    /// The PXE template (netboot only; `null` when empty).
    #[serde(deserialize_with = "text")]
    pub pxe_config_template: String,
}

/// `ProductOnDepot`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProductOnDepot {
    /// The product.
    #[serde(deserialize_with = "text")]
    pub product_id: String,
    /// `NetbootProduct` or `LocalbootProduct`.
    #[serde(deserialize_with = "text")]
    pub product_type: String,
    /// Product version.
    #[serde(deserialize_with = "text")]
    pub product_version: String,
    /// Package version.
    #[serde(deserialize_with = "text")]
    pub package_version: String,
    /// The depot.
    #[serde(deserialize_with = "text")]
    pub depot_id: String,
}

/// `ProductOnClient`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProductOnClient {
    /// The product.
    #[serde(deserialize_with = "text")]
    pub product_id: String,
    /// `NetbootProduct` or `LocalbootProduct`.
    #[serde(deserialize_with = "text")]
    pub product_type: String,
    /// The client.
    #[serde(deserialize_with = "text")]
    pub client_id: String,
    /// `setup`, `none`, …; `null` is `none`.
    #[serde(deserialize_with = "text")]
    pub action_request: String,
    /// When the row last changed, `YYYY-MM-DD HH:MM:SS`: the order of a
    /// client's netboot actions.
    #[serde(deserialize_with = "text")]
    pub modification_time: String,
}

/// `UnicodeConfig` and `BoolConfig`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Config id.
    #[serde(deserialize_with = "text")]
    pub id: String,
    /// Free text.
    #[serde(deserialize_with = "text")]
    pub description: String,
    /// The default values.
    #[serde(deserialize_with = "texts")]
    pub default_values: Vec<String>,
}

/// `ConfigState`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigState {
    /// The config.
    #[serde(deserialize_with = "text")]
    pub config_id: String,
    /// The client or depot.
    #[serde(deserialize_with = "text")]
    pub object_id: String,
    /// Its values.
    #[serde(deserialize_with = "texts")]
    pub values: Vec<String>,
}

/// `ProductPropertyState`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProductPropertyState {
    /// The product.
    #[serde(deserialize_with = "text")]
    pub product_id: String,
    /// The property.
    #[serde(deserialize_with = "text")]
    pub property_id: String,
    /// The client or depot.
    #[serde(deserialize_with = "text")]
    pub object_id: String,
    /// Its values.
    #[serde(deserialize_with = "texts")]
    pub values: Vec<String>,
}

/// `UnicodeProductProperty` and `BoolProductProperty`: a property of one
/// version of a product, with its default values.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProductProperty {
    /// The product.
    #[serde(deserialize_with = "text")]
    pub product_id: String,
    /// Product version.
    #[serde(deserialize_with = "text")]
    pub product_version: String,
    /// Package version.
    #[serde(deserialize_with = "text")]
    pub package_version: String,
    /// The property.
    #[serde(deserialize_with = "text")]
    pub property_id: String,
    /// What a client or depot without a state of its own has.
    #[serde(deserialize_with = "texts")]
    pub default_values: Vec<String>,
}

/// An opsi object of a type pxeconf knows, by its `type`.
#[derive(Debug, Clone)]
pub enum Object {
    /// `OpsiClient`.
    Client(Host),
    /// `OpsiDepotserver` or `OpsiConfigserver` (a configserver is a depot too).
    Depot(Host),
    /// `NetbootProduct`.
    Netboot(Product),
    /// `LocalbootProduct`.
    Localboot(Product),
    /// `ProductOnDepot`.
    ProductOnDepot(ProductOnDepot),
    /// `ProductOnClient`.
    ProductOnClient(ProductOnClient),
    /// `UnicodeConfig` or `BoolConfig`.
    Config(Config),
    /// `ConfigState`.
    ConfigState(ConfigState),
    /// `ProductPropertyState`.
    PropertyState(ProductPropertyState),
    /// `UnicodeProductProperty` or `BoolProductProperty`.
    Property(ProductProperty),
    /// Any other type (groups, licenses, …), by name.
    Other(String),
}

impl Object {
    /// The object of a dump's JSON object, by its `type`; an error names
    /// the type and what is wrong.
    pub fn from_json(value: Value) -> Result<Self, String> {
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or("an object without a \"type\"")?
            .to_owned();
        fn parse<T: serde::de::DeserializeOwned>(value: Value, kind: &str) -> Result<T, String> {
            serde_json::from_value(value).map_err(|e| format!("a {kind}: {e}"))
        }
        Ok(match kind.as_str() {
            "OpsiClient" => Object::Client(parse(value, &kind)?),
            "OpsiDepotserver" | "OpsiConfigserver" => Object::Depot(parse(value, &kind)?),
            "NetbootProduct" => Object::Netboot(parse(value, &kind)?),
            "LocalbootProduct" => Object::Localboot(parse(value, &kind)?),
            "ProductOnDepot" => Object::ProductOnDepot(parse(value, &kind)?),
            "ProductOnClient" => Object::ProductOnClient(parse(value, &kind)?),
            "UnicodeConfig" | "BoolConfig" => Object::Config(parse(value, &kind)?),
            "ConfigState" => Object::ConfigState(parse(value, &kind)?),
            "ProductPropertyState" => Object::PropertyState(parse(value, &kind)?),
            "UnicodeProductProperty" | "BoolProductProperty" | "ProductProperty" => {
                Object::Property(parse(value, &kind)?)
            }
            _ => Object::Other(kind),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nulls_booleans_and_unknown_attributes_are_read_as_opsi_writes_them() {
        // python-opsi-common 4.3.21.11 samples (raw constructors: nulls).
        let poc = Object::from_json(json!({"targetConfiguration": null, "installationStatus": null, "actionRequest": "setup", "lastAction": null, "actionProgress": null, "actionResult": null, "productVersion": null, "packageVersion": null, "modificationTime": "2024-05-01 12:00:00", "actionSequence": -1, "productId": "win10-x64", "productType": "NetbootProduct", "clientId": "client1.opsi.test", "type": "ProductOnClient", "ident": "win10-x64;NetbootProduct;client1.opsi.test"})).unwrap();
        let Object::ProductOnClient(poc) = poc else {
            panic!("{poc:?}")
        };
        assert_eq!(
            (
                poc.product_id.as_str(),
                poc.action_request.as_str(),
                poc.modification_time.as_str()
            ),
            ("win10-x64", "setup", "2024-05-01 12:00:00")
        );
        let host = Object::from_json(json!({"description": null, "notes": null, "id": "client1.opsi.test", "hardwareAddress": "00:11:22:aa:bb:cc", "ipAddress": null, "inventoryNumber": null, "systemUUID": "11112222-3333-4444-5555-66667777aaaa", "opsiHostKey": "4587dec5913c501a28560d576768924e", "created": "2024-01-01 10:00:00", "lastSeen": "2024-01-02 10:00:00", "oneTimePassword": null, "type": "OpsiClient", "ident": "client1.opsi.test"})).unwrap();
        let Object::Client(host) = host else {
            panic!("{host:?}")
        };
        assert_eq!(host.system_uuid, "11112222-3333-4444-5555-66667777aaaa");
        assert_eq!(
            (host.ip_address.as_str(), host.description.as_str()),
            ("", "")
        );
        let config = Object::from_json(json!({"description": null, "possibleValues": [false, true], "defaultValues": [false], "editable": false, "multiValue": false, "id": "license-management.use", "type": "BoolConfig", "ident": "license-management.use"})).unwrap();
        let Object::Config(config) = config else {
            panic!("{config:?}")
        };
        assert_eq!(config.default_values, vec!["false"]);
        let pps = Object::from_json(json!({"values": [true, null, 4], "productId": "win10-x64", "propertyId": "askbeforeinst", "objectId": "client1.opsi.test", "type": "ProductPropertyState", "ident": "win10-x64;askbeforeinst;client1.opsi.test"})).unwrap();
        let Object::PropertyState(pps) = pps else {
            panic!("{pps:?}")
        };
        assert_eq!(pps.values, vec!["true", "4"]);
        assert!(matches!(
            Object::from_json(json!({"type": "HostGroup", "id": "g"})).unwrap(),
            Object::Other(t) if t == "HostGroup"
        ));
        assert!(Object::from_json(json!({"id": "x"})).is_err());
        let bad = Object::from_json(json!({"type": "OpsiClient", "id": ["x"]})).unwrap_err();
        assert!(bad.starts_with("a OpsiClient: "), "{bad}");
        // A malformed host key is named by its kind, never printed.
        let key = "abcdef0123456789abcdef0123456789";
        let bad =
            Object::from_json(json!({"type": "OpsiClient", "opsiHostKey": [key]})).unwrap_err();
        assert!(bad.contains("found a list") && !bad.contains(key), "{bad}");
    }
}
