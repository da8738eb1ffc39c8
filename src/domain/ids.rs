//! Validated names: FQDNs, MAC addresses, system UUIDs, product ids and
//! template names. Each parses once and is canonical afterwards.

use std::fmt;

use super::error::ValidationError;
use super::limits::{MAX_FQDN, MAX_ID, MAX_TEMPLATE_NAME, shown};

/// A fully qualified domain name: at least two labels, lower-cased.
// Shared text: a depot's maps key the same client several times (held,
// seen, each file name's owner), and a clone is a count, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fqdn(std::sync::Arc<str>);

impl Fqdn {
    /// Parses and lower-cases an FQDN; `field` names it in the error.
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        let lower = value.trim().trim_end_matches('.').to_ascii_lowercase();
        let err = |why: &str| {
            ValidationError::new(field, format!("invalid FQDN {}: {why}", shown(value)))
        };
        if lower.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        if lower.len() > MAX_FQDN {
            return Err(err(&format!("longer than {MAX_FQDN} characters")));
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
        Ok(Self(lower.into()))
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
                    "invalid MAC address {}: expected six hex octets separated by ':' or '-'",
                    shown(value)
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
            // from_str_radix alone would take a sign: "+0" is not an octet.
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        Ok(Self(octets))
    }

    /// Whether this is the placeholder some tools write for an unknown MAC
    /// (`00:00:00:…`; opsi and the store let clients share it): no
    /// machine asks for a config by it.
    pub fn is_placeholder(&self) -> bool {
        self.0[..3] == [0, 0, 0]
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
                format!(
                    "invalid system UUID {}: expected 8-4-4-4-12 hex digits",
                    shown(value)
                ),
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
        if lower.len() > MAX_ID
            || !lower
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(ValidationError::new(
                field,
                format!(
                    "invalid product id {}: use up to {MAX_ID} of a-z 0-9 . _ -",
                    shown(value)
                ),
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
/// template directory, or absolute. Never contains `..` or a control
/// character, and never looks like a PXE config the depot manages (a UUID,
/// `01-<mac>` or a temporary file): with the template directory equal to the
/// PXE directory, as in opsi, such a "template" would copy another client's
/// config, and reading it would count as that client's boot. Whether it stays
/// inside the template directory (symlinks included) is checked when it is
/// resolved against the file system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateName(String);

impl TemplateName {
    /// Validates a template name.
    pub fn parse(value: &str, field: &str) -> Result<Self, ValidationError> {
        let err = |why: &str| {
            ValidationError::new(
                field,
                format!("invalid template name {}: {why}", shown(value)),
            )
        };
        if value.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        if value.chars().any(char::is_control) {
            return Err(err("contains control characters"));
        }
        if value
            .split('/')
            .any(|component| component.len() > MAX_TEMPLATE_NAME)
            || value.len() > 4 * MAX_TEMPLATE_NAME
        {
            return Err(err(&format!(
                "a path component is longer than {MAX_TEMPLATE_NAME} bytes"
            )));
        }
        if value.split(['/', '\\']).any(|c| c == "..") {
            return Err(err("'..' would leave the template directory"));
        }
        let base = value.rsplit('/').next().unwrap_or(value);
        if is_pxe_file_name(base) {
            return Err(err("names a PXE config file, not a template"));
        }
        Ok(Self(value.to_owned()))
    }

    /// A product's template: [`parse`](Self::parse), and relative to the
    /// template directory (only a depot's own defaults may be absolute).
    pub fn parse_relative(value: &str, field: &str) -> Result<Self, ValidationError> {
        let name = Self::parse(value, field)?;
        if name.0.starts_with('/') {
            return Err(ValidationError::new(
                field,
                format!(
                    "invalid template name {}: must be relative to the template directory",
                    shown(value)
                ),
            ));
        }
        Ok(name)
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UEFI variant of a product's template: `T.efi` beside `T`, as
    /// opsipxeconfd 4.2 looks for it (`_getPxeConfigTemplate`, opsipxeconfd.py
    /// @ 4.2.0.32 l.730–802); `None` when that name would be too long.
    pub fn efi_variant(&self) -> Option<TemplateName> {
        Self::parse(&format!("{}.efi", self.0), "template").ok()
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

/// Prefix of a depot's temporary files; never a template or config name.
pub const TMP_PREFIX: &str = ".pxeconf-tmp";

/// Whether `name` is a file name a depot writes: a lower-case system UUID,
/// `01-` + a lower-case MAC, or one of its temporary files.
pub fn is_pxe_file_name(name: &str) -> bool {
    if name.starts_with(TMP_PREFIX) {
        return true;
    }
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let is_mac_name = name.len() == 20
        && name.starts_with("01-")
        && name[3..].split('-').all(|o| lower_hex(o, 2));
    let is_uuid_name = name.len() == 36
        && name
            .split('-')
            .zip([8, 4, 4, 4, 12])
            .all(|(part, len)| lower_hex(part, len))
        && name.split('-').count() == 5;
    is_mac_name || is_uuid_name
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
            "+0:11:22:33:44:55",
            "00:11:22:33:44:+5",
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
    fn template_names_never_name_a_managed_pxe_file() {
        for managed in [
            "01-00-11-22-aa-bb-cc",
            "sub/4c4c4544-0035-3010-8045-b4c04f4e4b32",
            ".pxeconf-tmp-01-00-11-22-aa-bb-cc",
            ".pxeconf-tmp.x1y2",
        ] {
            let err = TemplateName::parse(managed, "t").unwrap_err();
            assert!(err.message.contains("PXE config file"), "{managed}: {err}");
        }
        // Look-alikes that are not ours stay usable.
        for fine in ["01-00-11-22-AA-BB-CC", "install-01-00", "01-00-11-22-aa-bb"] {
            assert!(TemplateName::parse(fine, "t").is_ok(), "{fine}");
        }
        assert!(TemplateName::parse_relative("/abs/install", "t").is_err());
        assert!(TemplateName::parse_relative("grub/install", "t").is_ok());
        assert!(TemplateName::parse(&"a".repeat(256), "t").is_err());
        assert!(TemplateName::parse("a\tb", "t").is_err());
    }

    #[test]
    fn pxe_file_names_round_trip_through_the_predicate() {
        let mac = Mac::parse("00:16:3E:AA:BB:0C", "m").unwrap();
        assert!(is_pxe_file_name(&mac.pxe_file_name()));
        let uuid = SystemUuid::parse("4C4C4544-0035-3010-8045-B4C04F4E4B32", "u").unwrap();
        assert!(is_pxe_file_name(uuid.as_str()));
        assert!(!is_pxe_file_name("install"));
        assert!(!is_pxe_file_name("4c4c4544-0035-3010-8045-b4c04f4e4b3"));
    }

    #[test]
    fn errors_quote_at_most_a_prefix_of_a_huge_value() {
        let huge = "x".repeat(1 << 20);
        for err in [
            Fqdn::parse(&huge, "f").unwrap_err(),
            Mac::parse(&huge, "m").unwrap_err(),
            SystemUuid::parse(&huge, "u").unwrap_err(),
            ProductId::parse(&huge, "p").unwrap_err(),
            TemplateName::parse(&huge, "t").unwrap_err(),
        ] {
            assert!(
                err.to_string().len() < 300,
                "{} bytes",
                err.to_string().len()
            );
        }
    }
}
