//! The opsi configs a PXE config depends on, and the one derivation of a
//! client's PXE settings from their values. The configserver's bundle
//! assembly and the depot's legacy look-ups both call [`PxeSettings::derive`],
//! so the two paths cannot drift apart.

use super::client::BootMode;
use super::error::ValidationError;

/// The config that names a client's depot.
pub const DEPOT_ID: &str = "clientconfig.depot.id";
/// The config with the configserver URL for the boot image.
pub const SERVICE_URL: &str = "clientconfig.configserver.url";
/// The config with the DHCP boot file name (decides BIOS or UEFI).
pub const DHCPD_FILENAME: &str = "clientconfig.dhcpd.filename";
/// The config with extra boot image kernel arguments.
pub const BOOTIMAGE_APPEND: &str = "opsi-linux-bootimage.append";
/// The configs a PXE config depends on.
pub const PXE_CONFIGS: [&str; 4] = [DEPOT_ID, SERVICE_URL, DHCPD_FILENAME, BOOTIMAGE_APPEND];

/// What a client's config values mean for its PXE config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PxeSettings {
    /// `clientconfig.configserver.url`: the first value, or empty.
    pub service_address: String,
    /// From the first `clientconfig.dhcpd.filename` value.
    pub boot_mode: BootMode,
    /// `opsi-linux-bootimage.append` items, in order: every value split on
    /// whitespace.
    pub bootimage_append: Vec<String>,
}

impl PxeSettings {
    /// Derives the settings from the client's effective values of each
    /// config (`values(id)`: its own state, else its depot's, else the
    /// default — resolved by the configserver for both paths).
    pub fn derive<'a>(values: impl Fn(&str) -> &'a [String]) -> Self {
        let first = |id: &str| values(id).first().cloned().unwrap_or_default();
        Self {
            service_address: first(SERVICE_URL),
            boot_mode: BootMode::from_dhcpd_filename(&first(DHCPD_FILENAME)),
            bootimage_append: append_items(values(BOOTIMAGE_APPEND)),
        }
    }
}

/// The configserver's RPC URL for a client's service address (the first
/// `clientconfig.configserver.url` value), ending in `/rpc`; `None` when it
/// names nothing. The depot writes it into the config; the configserver
/// blocks a config without one, as the depot would refuse it.
pub fn service_url(address: &str) -> Option<String> {
    let service = service_base(address)?;
    Some(if service.ends_with("/rpc") {
        service.to_owned()
    } else {
        format!("{service}/rpc")
    })
}

/// Whether a service address names a service ([`service_url`] is `Some`),
/// without building the URL: the checks on every push and every
/// reconciled client.
pub fn names_service(address: &str) -> bool {
    service_base(address).is_some()
}

/// The address without blanks and trailing slashes; `None` if nothing is left.
fn service_base(address: &str) -> Option<&str> {
    // Trailing slashes go first, so that neither `…//rpc` nor `…/rpc/rpc` arises.
    Some(address.trim().trim_end_matches('/')).filter(|s| !s.is_empty())
}

/// Why `client` gets no config without a service address: the depot's
/// refusal and the configserver's blocked config say the same.
pub fn no_service(client: &str) -> String {
    format!(
        "{client} has no service address (config {SERVICE_URL}): its boot image could not reach the service"
    )
}

/// The kernel command-line items of `opsi-linux-bootimage.append` values.
/// opsi stores values such as `acpi=off noapic`; like opsipxeconfd 4.2
/// (`opsipxeconfd.py` @ 4.2.0.32, l.882–907: the values joined by a space,
/// then split on whitespace) each value becomes one item per word. Unlike
/// 4.2 a value keeps every `=` after the first (`a=b=c` stays whole), and
/// unlike 4.3 (which takes each value as one item) `noapic acpi=off` is two
/// items, not a key `noapic acpi`.
pub fn append_items(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(str::to_owned)
        .collect()
}

/// The longest root password an `opsi-linux-bootimage.append` item may
/// carry: it is hashed (sha512-crypt, whose cost grows with its length
/// squared) for every config that holds it, so a long one would be work a
/// caller could pile onto a depot.
pub const MAX_ROOT_PASSWORD: usize = 256;

/// Fails when the append item `item` carries a root password
/// (`bootimagerootpassword=…`, as opsi matches the key) longer than
/// [`MAX_ROOT_PASSWORD`] bytes.
pub fn check_root_password(item: &str, field: &str) -> Result<(), ValidationError> {
    let Some((key, value)) = item.split_once('=') else {
        return Ok(());
    };
    let long = value.trim().len() > MAX_ROOT_PASSWORD;
    match long && key.to_ascii_lowercase().contains("bootimagerootpassword") {
        true => Err(ValidationError::new(
            field,
            format!("a root password of at most {MAX_ROOT_PASSWORD} bytes"),
        )),
        false => Ok(()),
    }
}

/// Checks one `opsi-linux-bootimage.append` value: words separated by
/// whitespace are fine (they become items), but a control character (a line
/// break would inject lines into the PXE config) or a double quote (it would
/// end elilo's `append="…"`) is refused.
pub fn check_append_value(value: &str, field: &str) -> Result<(), ValidationError> {
    let bad = value.chars().find(|c| *c == '"' || c.is_control());
    match bad {
        Some(c) => Err(ValidationError::new(
            field,
            format!("must not contain quotes or control characters (found {c:?})"),
        )),
        None => (value.split_whitespace()).try_for_each(|item| check_root_password(item, field)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn settings_come_from_the_first_values_and_every_append_item() {
        let values: HashMap<&str, Vec<String>> = [
            (
                SERVICE_URL,
                vec!["https://cfg:4447".to_owned(), "https://other".to_owned()],
            ),
            (
                DHCPD_FILENAME,
                vec!["linux/pxelinux.cfg/shimx64.efi".to_owned()],
            ),
            (
                BOOTIMAGE_APPEND,
                vec!["nomodeset".to_owned(), "lang=de".to_owned()],
            ),
        ]
        .into();
        let settings = PxeSettings::derive(|id| values.get(id).map_or(&[][..], Vec::as_slice));
        assert_eq!(
            settings,
            PxeSettings {
                service_address: "https://cfg:4447".into(),
                boot_mode: BootMode::UefiX64,
                bootimage_append: vec!["nomodeset".into(), "lang=de".into()],
            }
        );
        assert_eq!(PxeSettings::derive(|_| &[][..]), PxeSettings::default());
    }

    #[test]
    fn append_values_with_spaces_become_one_item_per_word() {
        // U+00A0 (no-break space) is whitespace too.
        let values: Vec<String> = [
            "acpi=off noapic",
            " nomodeset ",
            "",
            "a=b=c\u{a0}vga=normal",
        ]
        .map(str::to_owned)
        .to_vec();
        let settings = PxeSettings::derive(|id| {
            if id == BOOTIMAGE_APPEND {
                &values[..]
            } else {
                &[][..]
            }
        });
        assert_eq!(
            settings.bootimage_append,
            vec!["acpi=off", "noapic", "nomodeset", "a=b=c", "vga=normal"]
        );
    }

    #[test]
    fn append_values_refuse_quotes_and_control_characters() {
        assert!(check_append_value("acpi=off noapic", "v").is_ok());
        assert!(check_append_value("", "v").is_ok());
        for bad in ["a=\"b\"", "a\nappend x", "tab\there", "bell\u{7}"] {
            let err = check_append_value(bad, "values[0]").unwrap_err();
            assert_eq!(err.field, "values[0]");
            assert!(err.message.contains("quotes or control"), "{err}");
        }
    }

    #[test]
    fn a_root_password_is_bounded_wherever_it_comes_from() {
        let long = "x".repeat(MAX_ROOT_PASSWORD + 1);
        let fits = "x".repeat(MAX_ROOT_PASSWORD);
        for key in ["bootimagerootpassword", "Opsi-BootimageRootPassword2"] {
            let err = check_append_value(&format!("quiet {key}={long}"), "values[0]").unwrap_err();
            assert!(err.message.contains("root password"), "{err}");
            assert!(!err.message.contains(&long), "the password is not echoed");
            assert!(check_append_value(&format!("quiet {key}={fits}"), "v").is_ok());
        }
        // Other items may be as long as any token.
        assert!(check_append_value(&format!("other={long}"), "v").is_ok());
    }
}
