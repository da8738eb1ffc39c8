//! The Admin service's records: wire → domain (validated once) and back.

use super::store::{
    ActionRecord, ConfigRecord, ConfigStateRecord, DepotRecord, PocRecord, ProductOnDepotRecord,
    ProductRecord, PropertyStateRecord,
};
use crate::auth::check_server_key;
use crate::domain::limits::{MAX_ID, MAX_ITEMS, MAX_VALUE, shown};
use crate::domain::opsi::{BOOTIMAGE_APPEND, DEPOT_ID, SERVICE_URL};
use crate::domain::{
    ActionRequest, Endpoint, Fqdn, ProductId, Secret, TemplateName, ValidationError,
};
use crate::proto;
use crate::wire::{check_count, check_len, check_line, check_token};

/// A version: required, one word; spaces around it are trimmed, as around
/// an id (they were refused as whitespace inside it).
fn required_token(value: &str, field: &str) -> Result<String, ValidationError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    check_len(value, MAX_ID, field)?;
    check_token(value, field)?;
    Ok(value.to_owned())
}

/// A depot's host key: what [`check_server_key`] asks. The error quotes
/// nothing of it (it is a secret).
fn depot_key(value: &str, field: &str) -> Result<Secret, ValidationError> {
    check_server_key(value).map_err(|why| ValidationError::new(field, why))?;
    Ok(Secret::new(value))
}

/// A config or property id: lower-case letters, digits, `.`, `_`, `-`.
fn config_id(value: &str, field: &str) -> Result<String, ValidationError> {
    let id = value.trim().to_ascii_lowercase();
    if id.is_empty()
        || id.len() > MAX_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(ValidationError::new(
            field,
            format!(
                "invalid id {}: use up to {MAX_ID} of a-z 0-9 . _ -",
                shown(value)
            ),
        ));
    }
    Ok(id)
}

impl TryFrom<proto::DepotInfo> for DepotRecord {
    type Error = ValidationError;

    fn try_from(d: proto::DepotInfo) -> Result<Self, Self::Error> {
        // Checked in this order, so the first bad field is the one named.
        let endpoint = Endpoint::parse(&d.endpoint, "endpoint")?;
        let id = Fqdn::parse(&d.id, "id")?;
        let host_key = depot_key(&d.host_key, "host_key")?;
        check_line(&d.description, "description")?;
        Ok(DepotRecord {
            id,
            endpoint,
            host_key,
            description: d.description,
        })
    }
}

impl TryFrom<proto::Product> for ProductRecord {
    type Error = ValidationError;

    fn try_from(p: proto::Product) -> Result<Self, Self::Error> {
        Ok(ProductRecord {
            id: ProductId::parse(&p.id, "id")?,
            product_version: required_token(&p.product_version, "product_version")?,
            package_version: required_token(&p.package_version, "package_version")?,
            template: match p.pxe_config_template.trim() {
                "" => None,
                t => Some(TemplateName::parse_relative(t, "pxe_config_template")?),
            },
        })
    }
}

impl TryFrom<proto::ProductOnDepot> for ProductOnDepotRecord {
    type Error = ValidationError;

    fn try_from(p: proto::ProductOnDepot) -> Result<Self, Self::Error> {
        Ok(ProductOnDepotRecord {
            depot_id: Fqdn::parse(&p.depot_id, "depot_id")?,
            product_id: ProductId::parse(&p.product_id, "product_id")?,
            product_version: required_token(&p.product_version, "product_version")?,
            package_version: required_token(&p.package_version, "package_version")?,
        })
    }
}

impl TryFrom<proto::Config> for ConfigRecord {
    type Error = ValidationError;

    fn try_from(c: proto::Config) -> Result<Self, Self::Error> {
        let id = config_id(&c.id, "id")?;
        let mut default_values = c.default_values;
        check_values(&id, &default_values, "default_values")?;
        if id == DEPOT_ID {
            // Stored as depot ids are (as a client's own value is): the
            // default names the depot of every client without one.
            for (i, v) in default_values.iter_mut().enumerate() {
                *v = Fqdn::parse(v, &format!("default_values[{i}]"))?.to_string();
            }
        }
        check_line(&c.description, "description")?;
        Ok(ConfigRecord {
            id,
            default_values,
            description: c.description,
        })
    }
}

/// Values of the configs that end up on a kernel command line must be tokens.
fn check_values(config_id: &str, values: &[String], field: &str) -> Result<(), ValidationError> {
    check_count(values.len(), MAX_ITEMS, field)?;
    if config_id == BOOTIMAGE_APPEND {
        // The words become the bundle's kernel items: the depot's limits on
        // those hold here, or every push of a client inheriting them fails.
        let words = values.iter().flat_map(|v| v.split_whitespace()).count();
        check_count(words, MAX_ITEMS, field)?;
    }
    for (i, v) in values.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if config_id == BOOTIMAGE_APPEND {
            // Words separated by spaces become kernel items (opsi stores `acpi=off noapic`).
            crate::domain::opsi::check_append_value(v, &f)?;
            for word in v.split_whitespace() {
                check_len(word, MAX_VALUE, &f)?;
            }
        } else if config_id == SERVICE_URL {
            check_token(v, &f)?;
        } else if config_id == DEPOT_ID {
            Fqdn::parse(v, &f)?;
        } else {
            check_line(v, &f)?;
        }
    }
    Ok(())
}

impl TryFrom<proto::ConfigState> for ConfigStateRecord {
    type Error = ValidationError;

    fn try_from(s: proto::ConfigState) -> Result<Self, Self::Error> {
        let config_id = config_id(&s.config_id, "config_id")?;
        let mut values = s.values;
        check_count(values.len(), MAX_ITEMS, "values")?;
        if config_id == DEPOT_ID {
            for (i, v) in values.iter_mut().enumerate() {
                *v = Fqdn::parse(v, &format!("values[{i}]"))?.to_string();
            }
        }
        check_values(&config_id, &values, "values")?;
        Ok(ConfigStateRecord {
            object_id: Fqdn::parse(&s.object_id, "object_id")?,
            config_id,
            values,
        })
    }
}

impl TryFrom<proto::ProductPropertyState> for PropertyStateRecord {
    type Error = ValidationError;

    fn try_from(s: proto::ProductPropertyState) -> Result<Self, Self::Error> {
        let property_id = config_id(&s.property_id, "property_id")?;
        check_count(s.values.len(), MAX_ITEMS, "values")?;
        for (i, v) in s.values.iter().enumerate() {
            check_line(v, &format!("values[{i}]"))?;
        }
        // A depot receives the values joined by `,` as one value, which has
        // the one-value limit: refused here, not at every push.
        let joined =
            s.values.iter().map(String::len).sum::<usize>() + s.values.len().saturating_sub(1);
        if joined > crate::domain::limits::MAX_VALUE {
            return Err(ValidationError::new(
                "values",
                format!(
                    "longer than {} bytes joined by commas, as a depot receives them ({joined} given)",
                    crate::domain::limits::MAX_VALUE
                ),
            ));
        }
        Ok(PropertyStateRecord {
            object_id: Fqdn::parse(&s.object_id, "object_id")?,
            product_id: ProductId::parse(&s.product_id, "product_id")?,
            property_id,
            values: s.values,
        })
    }
}

impl TryFrom<proto::ProductPropertyStateKey> for PropertyStateRecord {
    type Error = ValidationError;

    fn try_from(s: proto::ProductPropertyStateKey) -> Result<Self, Self::Error> {
        Ok(PropertyStateRecord {
            object_id: Fqdn::parse(&s.object_id, "object_id")?,
            product_id: ProductId::parse(&s.product_id, "product_id")?,
            property_id: config_id(&s.property_id, "property_id")?,
            values: Vec::new(),
        })
    }
}

impl TryFrom<proto::ActionRequest> for ActionRecord {
    type Error = ValidationError;

    fn try_from(a: proto::ActionRequest) -> Result<Self, Self::Error> {
        Ok(ActionRecord {
            client_id: Fqdn::parse(&a.client_id, "client_id")?,
            product_id: ProductId::parse(&a.product_id, "product_id")?,
            action: ActionRequest::parse(&a.action_request, "action_request")?,
        })
    }
}

impl From<PocRecord> for proto::ProductOnClient {
    fn from(p: PocRecord) -> Self {
        proto::ProductOnClient {
            client_id: p.client_id,
            product_id: p.product_id,
            action_request: p.action_request,
            action_progress: p.action_progress,
            product_version: p.product_version,
            package_version: p.package_version,
        }
    }
}

/// The key fields of a product-on-client, validated.
pub fn poc_key(k: proto::ProductOnClientKey) -> Result<(Fqdn, ProductId), ValidationError> {
    Ok((
        Fqdn::parse(&k.client_id, "client_id")?,
        ProductId::parse(&k.product_id, "product_id")?,
    ))
}

/// The key fields of a product-on-depot, validated.
pub fn pod_key(k: proto::ProductOnDepotKey) -> Result<(Fqdn, ProductId), ValidationError> {
    Ok((
        Fqdn::parse(&k.depot_id, "depot_id")?,
        ProductId::parse(&k.product_id, "product_id")?,
    ))
}

/// The key fields of a config state, validated.
pub fn config_state_key(k: proto::ConfigStateKey) -> Result<(Fqdn, String), ValidationError> {
    Ok((
        Fqdn::parse(&k.object_id, "object_id")?,
        config_id(&k.config_id, "config_id")?,
    ))
}

/// The key fields of a product version, validated.
pub fn product_key(k: proto::ProductKey) -> Result<(ProductId, String, String), ValidationError> {
    Ok((
        ProductId::parse(&k.id, "id")?,
        required_token(&k.product_version, "product_version")?,
        required_token(&k.package_version, "package_version")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spaces around a version are trimmed, as around an id; inside it
    /// they are refused.
    #[test]
    fn a_version_is_trimmed_and_one_word() {
        assert_eq!(required_token(" 1.0 ", "v").unwrap(), "1.0");
        assert!(required_token("1 .0", "v").is_err());
        assert!(required_token("  ", "v").is_err());
    }

    #[test]
    fn a_property_states_values_together_fit_one_value() {
        let state = |values: Vec<String>| proto::ProductPropertyState {
            object_id: "pc1.example.org".into(),
            product_id: "win10-x64".into(),
            property_id: "lang".into(),
            values,
        };
        let fits = state(vec!["a".repeat(2047), "b".repeat(2048)]);
        assert!(PropertyStateRecord::try_from(fits).is_ok());
        let over = state(vec!["a".repeat(2048), "b".repeat(2048)]);
        let error = PropertyStateRecord::try_from(over).unwrap_err();
        assert!(error.to_string().contains("4097 given"), "{error}");
    }

    #[test]
    fn boot_image_append_values_fit_the_depots_limits_on_kernel_items() {
        let config = |values: Vec<String>| proto::Config {
            id: BOOTIMAGE_APPEND.into(),
            default_values: values,
            description: String::new(),
        };
        assert!(ConfigRecord::try_from(config(vec!["acpi=off noapic".into()])).is_ok());
        let long_word = ConfigRecord::try_from(config(vec!["x".repeat(5000)])).unwrap_err();
        assert!(long_word.to_string().contains("5000 given"), "{long_word}");
        let many = ConfigRecord::try_from(config(vec!["a b".into(); 1000])).unwrap_err();
        assert!(many.to_string().contains("2000"), "{many}");
    }

    #[test]
    fn the_default_depot_is_stored_as_depot_ids_are() {
        let config = ConfigRecord::try_from(proto::Config {
            id: DEPOT_ID.into(),
            default_values: vec!["CFG.Example.org.".into()],
            description: String::new(),
        })
        .unwrap();
        assert_eq!(config.default_values, ["cfg.example.org"]);
    }
}
