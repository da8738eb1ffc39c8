//! The opsi configs a PXE config depends on, and the one derivation of a
//! client's PXE settings from their values. The configserver's bundle
//! assembly and the depot's legacy look-ups both call [`PxeSettings::derive`],
//! so the two paths cannot drift apart.

use super::client::BootMode;

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
    /// `opsi-linux-bootimage.append` items, in order.
    pub bootimage_append: Vec<String>,
}

impl PxeSettings {
    /// Derives the settings from the client's effective values of each
    /// config (`values(id)`: its own state, else the default).
    pub fn derive<'a>(values: impl Fn(&str) -> &'a [String]) -> Self {
        let first = |id: &str| values(id).first().cloned().unwrap_or_default();
        Self {
            service_address: first(SERVICE_URL),
            boot_mode: BootMode::from_dhcpd_filename(&first(DHCPD_FILENAME)),
            bootimage_append: values(BOOTIMAGE_APPEND).to_vec(),
        }
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
}
