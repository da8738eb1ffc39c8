//! A client, the product it boots and the bundle a depot needs to write its
//! PXE config; secrets stay out of `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::error::ValidationError;
use super::ids::{Fqdn, Mac, ProductId, SystemUuid, TemplateName};

/// How a client boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BootMode {
    /// Legacy BIOS (pxelinux).
    #[default]
    Bios,
    /// 32-bit UEFI.
    UefiX86,
    /// 64-bit UEFI.
    UefiX64,
}

impl BootMode {
    /// Whether this mode needs the `uefi` module.
    pub fn is_uefi(self) -> bool {
        !matches!(self, BootMode::Bios)
    }

    /// The boot mode implied by a `clientconfig.dhcpd.filename` value. Like
    /// opsi, an `elilo` or `shim` loader means UEFI, 32-bit when the name says
    /// `x86`; beyond opsi, any other EFI image (`grubx64.efi`, `…/efi/…`)
    /// means UEFI too, and `x86_64` is not mistaken for 32-bit.
    pub fn from_dhcpd_filename(filename: &str) -> Self {
        let f = filename.to_ascii_lowercase();
        let efi = ["elilo", "shim", ".efi", "efi/", "uefi"]
            .iter()
            .any(|m| f.contains(m));
        if !efi {
            return BootMode::Bios;
        }
        let x86_64 = f.contains("x86_64") || f.contains("x86-64");
        if !x86_64 && ["x86", "ia32", "i386"].iter().any(|m| f.contains(m)) {
            BootMode::UefiX86
        } else {
            BootMode::UefiX64
        }
    }

    /// A short name for logs and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Bios => "bios",
            BootMode::UefiX86 => "uefi-x86",
            BootMode::UefiX64 => "uefi-x64",
        }
    }
}

/// A netboot action request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionRequest {
    /// No action.
    None,
    /// Install.
    Setup,
    /// Remove.
    Uninstall,
    /// Update.
    Update,
    /// On every boot: the config is written again after each read.
    Always,
    /// Once.
    Once,
    /// A product-specific action.
    Custom,
}

impl ActionRequest {
    /// The opsi name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionRequest::None => "none",
            ActionRequest::Setup => "setup",
            ActionRequest::Uninstall => "uninstall",
            ActionRequest::Update => "update",
            ActionRequest::Always => "always",
            ActionRequest::Once => "once",
            ActionRequest::Custom => "custom",
        }
    }

    /// Parses an opsi action request name; empty means `none`.
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        value.parse().map_err(|()| {
            ValidationError::new(
                field,
                format!(
                    "unknown action request {}: expected none, setup, uninstall, update, always, once or custom",
                    super::limits::shown(value)
                ),
            )
        })
    }
}

impl FromStr for ActionRequest {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            // opsi's `forceActionRequest` takes `undefined` for none.
            "" | "none" | "undefined" => ActionRequest::None,
            "setup" => ActionRequest::Setup,
            "uninstall" => ActionRequest::Uninstall,
            "update" => ActionRequest::Update,
            "always" => ActionRequest::Always,
            "once" => ActionRequest::Once,
            "custom" => ActionRequest::Custom,
            _ => return Err(()),
        })
    }
}

impl fmt::Display for ActionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret string (host key, password): kept out of `Debug` output so it
/// cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must write it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Licensed modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modules {
    /// UEFI netboot is licensed.
    pub uefi: bool,
    /// Secure boot is licensed.
    pub secureboot: bool,
}

/// The client a PXE config is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's FQDN.
    pub fqdn: Fqdn,
    /// Its MAC address, if known.
    pub mac: Option<Mac>,
    /// Its system UUID, if known.
    pub uuid: Option<SystemUuid>,
    /// Its IP address, informational.
    pub ip_address: String,
    /// Its opsi host key (goes into the PXE file for the boot image).
    pub host_key: Secret,
}

impl Client {
    /// The PXE config file names for this client: UUID first, then MAC —
    /// not a placeholder MAC (`00:00:00:…`): clients may share it, and the
    /// second of them on a depot was refused for the first one's file, a
    /// name no machine asks for.
    pub fn pxe_file_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(2);
        if let Some(uuid) = &self.uuid {
            names.push(uuid.as_str().to_owned());
        }
        if let Some(mac) = self.mac.filter(|m| !m.is_placeholder()) {
            names.push(mac.pxe_file_name());
        }
        names
    }
}

/// The netboot product to boot, in the version installed on the depot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetbootProduct {
    /// Product id.
    pub id: ProductId,
    /// Product version on the depot.
    pub product_version: String,
    /// Package version on the depot.
    pub package_version: String,
    /// The product's own PXE template, if it names one.
    pub template: Option<TemplateName>,
}

/// Everything a depot needs to write one client's PXE config, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientBundle {
    /// The client.
    pub client: Client,
    /// The netboot product.
    pub product: NetbootProduct,
    /// The pending action request.
    pub action_request: ActionRequest,
    /// The depot responsible for the client, if the sender named one.
    pub depot_id: Option<Fqdn>,
    /// `clientconfig.configserver.url`.
    pub service_address: String,
    /// The client's boot mode.
    pub boot_mode: BootMode,
    /// `opsi-linux-bootimage.append` items as given (parsed when rendering).
    pub bootimage_append: Vec<String>,
    /// Product property id → values joined by `,`.
    pub properties: BTreeMap<String, String>,
    /// Licensed modules.
    pub modules: Modules,
    /// Revision; 0 means unversioned.
    pub revision: u64,
}

/// Whether a kernel parameter carries a secret (a password or its hash).
pub fn is_secret_param(item: &str) -> bool {
    let key = item.split('=').next().unwrap_or("").to_ascii_lowercase();
    key.contains("password") || key == "pwh"
}

// Boot image parameters may carry a password: their values stay out of logs.
impl fmt::Debug for ClientBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let append: Vec<&str> = self
            .bootimage_append
            .iter()
            .map(|item| {
                if is_secret_param(item) {
                    item.split('=').next().unwrap_or("")
                } else {
                    item.as_str()
                }
            })
            .collect();
        f.debug_struct("ClientBundle")
            .field("client", &self.client)
            .field("product", &self.product)
            .field("action_request", &self.action_request)
            .field("depot_id", &self.depot_id)
            .field("service_address", &self.service_address)
            .field("boot_mode", &self.boot_mode)
            .field("bootimage_append", &append)
            .field("properties", &self.properties)
            .field("modules", &self.modules)
            .field("revision", &self.revision)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_mode_from_dhcpd_filename() {
        assert_eq!(
            BootMode::from_dhcpd_filename("linux/pxelinux.0"),
            BootMode::Bios
        );
        assert_eq!(BootMode::from_dhcpd_filename(""), BootMode::Bios);
        assert_eq!(
            BootMode::from_dhcpd_filename("linux/pxelinux.cfg/elilo.efi"),
            BootMode::UefiX64
        );
        assert_eq!(
            BootMode::from_dhcpd_filename("opsi/opsi-linux-bootimage/loader/shimx64.efi.signed"),
            BootMode::UefiX64
        );
        assert_eq!(
            BootMode::from_dhcpd_filename("linux/pxelinux.cfg/elilo-x86.efi"),
            BootMode::UefiX86
        );
        assert_eq!(
            BootMode::from_dhcpd_filename("linux/pxelinux.cfg/elilo.efi"),
            BootMode::UefiX64
        );
        assert_eq!(
            BootMode::from_dhcpd_filename("opsi/grub/x86_64-efi/core.efi"),
            BootMode::UefiX64
        );
        assert_eq!(
            BootMode::from_dhcpd_filename("opsi/grub/grubia32.efi"),
            BootMode::UefiX86
        );
    }

    #[test]
    fn action_requests_round_trip() {
        for a in [
            "none",
            "setup",
            "uninstall",
            "update",
            "always",
            "once",
            "custom",
        ] {
            assert_eq!(ActionRequest::parse(a, "a").unwrap().as_str(), a);
        }
        assert_eq!(ActionRequest::parse("", "a").unwrap(), ActionRequest::None);
        // opsi's word for none (an opsi dump's product on client has it).
        let undefined = ActionRequest::parse("undefined", "a").unwrap();
        assert_eq!(undefined, ActionRequest::None);
        assert!(ActionRequest::parse("reboot", "a").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = Secret::new("topsecret");
        assert!(!format!("{s:?}").contains("topsecret"));
        let bundle = ClientBundle {
            client: Client {
                fqdn: Fqdn::parse("c.example.org", "id").unwrap(),
                mac: None,
                uuid: None,
                ip_address: String::new(),
                host_key: Secret::new("hostkey123"),
            },
            product: NetbootProduct {
                id: ProductId::parse("p", "id").unwrap(),
                product_version: "1".into(),
                package_version: "1".into(),
                template: None,
            },
            action_request: ActionRequest::Setup,
            depot_id: None,
            service_address: String::new(),
            boot_mode: BootMode::Bios,
            bootimage_append: vec![
                "lang=de".into(),
                "bootimageRootPassword=linux123".into(),
                "pwh=$6$x$y".into(),
            ],
            properties: BTreeMap::new(),
            modules: Modules::default(),
            revision: 1,
        };
        let text = format!("{bundle:?}");
        assert!(text.contains("lang=de"), "{text}");
        for secret in ["hostkey123", "linux123", "$6$x$y"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}
