//! Validated domain types. Wire messages become these in `convert`, once; the
//! core never sees an unvalidated MAC, FQDN, UUID or template name.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A value that failed validation: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field path as the wire names it, e.g. `host.hardware_address`.
    pub field: String,
    /// What is wrong with it, naming the offending value where it is not secret.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with `prefix.` put before the field path.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// A fully qualified domain name: at least two labels, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fqdn(String);

impl Fqdn {
    /// Parses and lower-cases an FQDN; `field` names it in the error.
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        let lower = value.trim().trim_end_matches('.').to_ascii_lowercase();
        let err = |why: &str| ValidationError::new(field, format!("invalid FQDN {value:?}: {why}"));
        if lower.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        if lower.len() > 253 {
            return Err(err("longer than 253 characters"));
        }
        let labels: Vec<&str> = lower.split('.').collect();
        if labels.len() < 2 {
            return Err(err("needs a host and a domain part"));
        }
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(err("each label needs 1 to 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err("only letters, digits and '-' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("a label may not start or end with '-'"));
            }
        }
        Ok(Self(lower))
    }

    /// The FQDN as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first label: the host name.
    pub fn host(&self) -> &str {
        self.0.split_once('.').map(|(h, _)| h).unwrap_or(&self.0)
    }

    /// Everything after the first label: the DNS domain.
    pub fn domain(&self) -> &str {
        self.0.split_once('.').map(|(_, d)| d).unwrap_or("")
    }
}

impl AsRef<str> for Fqdn {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Orders and hashes exactly like its text, so maps keyed by Fqdn can be
// queried with a &str.
impl std::borrow::Borrow<str> for Fqdn {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac([u8; 6]);

impl Mac {
    /// Parses six hex octets separated by `:` or `-` (one separator kind throughout).
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        let err = || {
            ValidationError::new(
                field,
                format!(
                    "invalid MAC address {value:?}: expected six hex octets separated by ':' or '-'"
                ),
            )
        };
        let value_t = value.trim();
        let sep = if value_t.contains(':') { ':' } else { '-' };
        let parts: Vec<&str> = value_t.split(sep).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut octets = [0u8; 6];
        for (octet, part) in octets.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        Ok(Self(octets))
    }

    /// The PXELINUX config file name: `01-` and the octets joined by `-`.
    pub fn pxe_file_name(&self) -> String {
        let o = self.0;
        format!(
            "01-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

/// An SMBIOS system UUID in canonical lower-case 8-4-4-4-12 form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemUuid(String);

impl SystemUuid {
    /// Parses an 8-4-4-4-12 hex UUID, any case.
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        let lower = value.trim().to_ascii_lowercase();
        let ok = lower.len() == 36
            && lower.split('-').map(str::len).eq([8, 4, 4, 4, 12])
            && lower.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit());
        if !ok {
            return Err(ValidationError::new(
                field,
                format!("invalid system UUID {value:?}: expected 8-4-4-4-12 hex digits"),
            ));
        }
        Ok(Self(lower))
    }

    /// The UUID as text; also its PXE config file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SystemUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An opsi product id: lower-case letters, digits, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProductId(String);

impl ProductId {
    /// Parses and lower-cases a product id.
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        let lower = value.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        if lower.len() > 128
            || !lower
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(ValidationError::new(
                field,
                format!("invalid product id {value:?}: use up to 128 of a-z 0-9 . _ -"),
            ));
        }
        Ok(Self(lower))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A template file name as given by a product or a default: relative to the
/// template directory, or absolute. Never contains `..` or NUL; whether it
/// stays inside the template directory (symlinks included) is checked when it
/// is resolved against the file system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateName(String);

impl TemplateName {
    /// Validates a template name.
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        let err = |why: &str| {
            ValidationError::new(field, format!("invalid template name {value:?}: {why}"))
        };
        if value.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        if value.len() > 1024 || value.contains('\0') || value.contains('\n') {
            return Err(err("too long or contains control characters"));
        }
        if value.split(['/', '\\']).any(|c| c == "..") {
            return Err(err("'..' would leave the template directory"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Names that opsi used for installers that no longer exist; they mean
    /// "the default template for the boot mode".
    pub fn is_obsolete(&self) -> bool {
        let base = self.0.rsplit('/').next().unwrap_or(&self.0);
        matches!(base, "install-x64" | "install3264")
    }
}

impl fmt::Display for TemplateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
                    "unknown action request {value:?}: expected none, setup, uninstall, update, always, once or custom"
                ),
            )
        })
    }
}

impl FromStr for ActionRequest {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" => ActionRequest::None,
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
    /// The PXE config file names for this client: UUID first, then MAC.
    pub fn pxe_file_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(2);
        if let Some(uuid) = &self.uuid {
            names.push(uuid.as_str().to_owned());
        }
        if let Some(mac) = &self.mac {
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
    fn fqdn_splits_host_and_domain_and_lowercases() {
        let f = Fqdn::parse("Client1.Example.ORG.", "id").unwrap();
        assert_eq!(f.as_str(), "client1.example.org");
        assert_eq!(f.host(), "client1");
        assert_eq!(f.domain(), "example.org");
    }

    #[test]
    fn fqdn_rejects_bad_names() {
        for bad in ["", "client", "a..b", "-a.b", "a_b.c", "a b.c"] {
            assert!(Fqdn::parse(bad, "id").is_err(), "{bad:?} accepted");
        }
        let long_label = format!("{}.org", "a".repeat(64));
        assert!(Fqdn::parse(&long_label, "id").is_err());
    }

    #[test]
    fn mac_accepts_both_separators_and_names_the_file() {
        let a = Mac::parse("00:11:22:AA:bb:CC", "m").unwrap();
        let b = Mac::parse("00-11-22-aa-BB-cc", "m").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "00:11:22:aa:bb:cc");
        assert_eq!(a.pxe_file_name(), "01-00-11-22-aa-bb-cc");
    }

    #[test]
    fn mac_rejects_malformed() {
        for bad in [
            "",
            "00:11:22:aa:bb",
            "00:11:22:aa:bb:cc:dd",
            "0:11:22:aa:bb:cc",
            "00:11-22:aa:bb:cc",
            "gg:11:22:aa:bb:cc",
            "001122aabbcc",
        ] {
            assert!(Mac::parse(bad, "m").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn uuid_is_lowercased_and_checked() {
        let u = SystemUuid::parse("4C4C4544-0035-3010-8045-B4C04F4E4B32", "u").unwrap();
        assert_eq!(u.as_str(), "4c4c4544-0035-3010-8045-b4c04f4e4b32");
        for bad in [
            "",
            "4c4c4544-0035-3010-8045-b4c04f4e4b3",
            "4c4c45440035-3010-8045-b4c04f4e4b32x",
            "4c4c4544-0035-3010-8045_b4c04f4e4b32",
            "zc4c4544-0035-3010-8045-b4c04f4e4b32",
        ] {
            assert!(SystemUuid::parse(bad, "u").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn template_names_refuse_parent_components() {
        assert!(TemplateName::parse("../etc/passwd", "t").is_err());
        assert!(TemplateName::parse("sub/../../x", "t").is_err());
        assert!(TemplateName::parse("", "t").is_err());
        assert!(TemplateName::parse("a\0b", "t").is_err());
        assert!(TemplateName::parse("install", "t").is_ok());
        assert!(TemplateName::parse("/abs/install.grub", "t").is_ok());
        assert!(
            TemplateName::parse("install3264", "t")
                .unwrap()
                .is_obsolete()
        );
        assert!(
            TemplateName::parse("install-x64", "t")
                .unwrap()
                .is_obsolete()
        );
        assert!(!TemplateName::parse("install", "t").unwrap().is_obsolete());
    }

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
