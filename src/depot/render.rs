//! Renders a PXE config from a template, line by line:
//! - `%propertyId%` becomes the product property's value (values joined by `,`);
//! - the kernel command line is extended on pxelinux `append …` lines (after
//!   what is there), elilo `append="…"` lines (inside the quotes), grub
//!   `linux`/`linuxefi`/`linux16` lines, and `kernel` lines of iPXE scripts
//!   (templates starting with `#!ipxe`);
//! - added, in this order: `hn`, `dn`, `product`, `macaddress`, `service`
//!   (ending in `/rpc`), `pckey`, then every `opsi-linux-bootimage.append`
//!   item (`key=value` or a bare flag, keys lower-cased, a later key
//!   overriding an earlier one in its place); `bootimagerootpassword=X`
//!   becomes `pwh=<sha512-crypt of X>`, and in every `pwh` value `$` is
//!   written `\$` (the boot loader would expand it).
//!
//! The result holds the host key and a password hash: it is never logged.

use std::collections::HashMap;
use std::sync::Mutex;

use sha_crypt::{Algorithm, CustomizedPasswordHasher, Params, ShaCrypt};

use crate::domain::ClientBundle;

/// Password hashes remembered; most clients share the boot image password.
const PWH_CACHE: usize = 1024;

/// Why a config cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// UEFI netboot needs the `uefi` module.
    #[error("boot mode {mode} needs the uefi module, which is not licensed")]
    UefiNotLicensed {
        /// The client's boot mode.
        mode: &'static str,
    },
    /// The password hash failed.
    #[error("hashing the boot image password failed: {0}")]
    Hash(String),
}

/// Renders configs; shared by all handlers.
pub struct Renderer {
    /// Password → sha512-crypt hash. A hash costs milliseconds (5000
    /// rounds); reusing one per password keeps a bulk of thousands cheap.
    hashes: Mutex<HashMap<String, String>>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

/// SHA-512-crypt of `password` with `salt` (crypt alphabet, up to 16
/// characters), 5000 rounds, as `$6$salt$hash`.
pub fn sha512_crypt(password: &str, salt: &[u8]) -> Result<String, RenderError> {
    let hash = ShaCrypt::new(Algorithm::Sha512Crypt, Params::RECOMMENDED)
        .hash_password_customized(password.as_bytes(), salt, None, None, Params::RECOMMENDED)
        .map_err(|e| RenderError::Hash(e.to_string()))?
        .to_string();
    // 5000 is crypt's default round count; written without `rounds=` the
    // hash is the same and in the form every crypt(3) and opsi expect.
    Ok(hash.replacen("$rounds=5000$", "$", 1))
}

/// How a line extends the kernel command line.
enum Kernel {
    /// `append …` (pxelinux): after what is there.
    Append,
    /// `append="…"` (elilo): inside the quotes.
    QuotedAppend,
    /// `linux …` (grub) or `kernel …` (iPXE): after what is there.
    Command,
}

fn kernel_line(line: &str, ipxe: bool) -> Option<Kernel> {
    let trimmed = line.trim_start();
    let word_end = trimmed
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(trimmed.len());
    let (word, rest) = trimmed.split_at(word_end);
    match word.to_ascii_lowercase().as_str() {
        "append" if rest.trim_start().starts_with('=') => Some(Kernel::QuotedAppend),
        "append" => Some(Kernel::Append),
        "linux" | "linuxefi" | "linux16" if !rest.is_empty() => Some(Kernel::Command),
        "kernel" if ipxe && !rest.is_empty() => Some(Kernel::Command),
        _ => None,
    }
}

impl Renderer {
    /// A renderer with an empty hash cache.
    pub fn new() -> Self {
        Self {
            hashes: Mutex::new(HashMap::new()),
        }
    }

    /// Renders `template` for `bundle`.
    pub fn render(&self, template: &str, bundle: &ClientBundle) -> Result<String, RenderError> {
        if bundle.boot_mode.is_uefi() && !bundle.modules.uefi {
            return Err(RenderError::UefiNotLicensed {
                mode: bundle.boot_mode.as_str(),
            });
        }
        let params = self.parameters(bundle)?;
        let ipxe = template.trim_start().starts_with("#!ipxe");
        let mut out = String::with_capacity(template.len() + params.len() + 64);
        for raw in template.lines() {
            let mut line = raw.trim_end().to_owned();
            if line.contains('%') {
                for (id, value) in &bundle.properties {
                    line = line.replace(&format!("%{id}%"), value);
                }
            }
            match kernel_line(&line, ipxe) {
                Some(Kernel::QuotedAppend) if line.ends_with('"') => {
                    line.pop();
                    let inner_empty = line.ends_with('"');
                    if !inner_empty {
                        line.push(' ');
                    }
                    line.push_str(&params);
                    line.push('"');
                }
                Some(Kernel::QuotedAppend) => {
                    // No closing quote: nothing safe to insert into.
                }
                Some(Kernel::Append | Kernel::Command) => {
                    line.push(' ');
                    line.push_str(&params);
                }
                None => {}
            }
            out.push_str(&line);
            out.push('\n');
        }
        Ok(out)
    }

    /// The kernel parameters added for `bundle`, space-separated.
    fn parameters(&self, bundle: &ClientBundle) -> Result<String, RenderError> {
        // An ordered map: a later key replaces the value in the earlier place.
        let mut params: Vec<(String, Option<String>)> = Vec::new();
        let mut set =
            |key: &str, value: Option<String>| match params.iter_mut().find(|(k, _)| k == key) {
                Some(entry) => entry.1 = value,
                None => params.push((key.to_owned(), value)),
            };
        let client = &bundle.client;
        set("hn", Some(client.fqdn.host().to_owned()));
        set("dn", Some(client.fqdn.domain().to_owned()));
        set("product", Some(bundle.product.id.to_string()));
        if let Some(mac) = client.mac {
            set("macaddress", Some(mac.to_string()));
        }
        if !bundle.service_address.is_empty() {
            let base = bundle.service_address.trim_end_matches('/');
            let service = if base.ends_with("/rpc") {
                base.to_owned()
            } else {
                format!("{base}/rpc")
            };
            set("service", Some(service));
        }
        if !client.host_key.is_empty() {
            set("pckey", Some(client.host_key.expose().to_owned()));
        }
        for item in &bundle.bootimage_append {
            // `key=` with nothing after it is a bare flag, as opsi writes it.
            let (key, value) = match item.split_once('=') {
                Some((k, v)) if !v.is_empty() => {
                    (k.trim().to_ascii_lowercase(), Some(v.to_owned()))
                }
                Some((k, _)) => (k.trim().to_ascii_lowercase(), None),
                None => (item.trim().to_ascii_lowercase(), None),
            };
            if key.is_empty() {
                continue;
            }
            if key == "bootimagerootpassword" {
                let password = value.unwrap_or_default();
                set("pwh", Some(self.hash(&password)?));
            } else {
                set(&key, value);
            }
        }
        let mut text = String::new();
        for (key, value) in params {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&key);
            if let Some(value) = value {
                text.push('=');
                if key == "pwh" {
                    text.push_str(&value.replace('$', "\\$"));
                } else {
                    text.push_str(&value);
                }
            }
        }
        Ok(text)
    }

    fn hash(&self, password: &str) -> Result<String, RenderError> {
        if let Some(hash) = self
            .hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(password)
        {
            return Ok(hash.clone());
        }
        let salt: [u8; 12] = rand::random();
        let hash = sha512_crypt(password, &salt)?;
        let mut hashes = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        if hashes.len() >= PWH_CACHE {
            hashes.clear();
        }
        hashes.insert(password.to_owned(), hash.clone());
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sha_crypt::PasswordVerifier;

    use super::*;
    use crate::domain::{
        ActionRequest, BootMode, Client, Fqdn, Mac, Modules, NetbootProduct, ProductId, Secret,
        SystemUuid,
    };

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn bundle(append: &[&str]) -> ClientBundle {
        ClientBundle {
            client: Client {
                fqdn: Fqdn::parse("client1.branch.example.org", "id").unwrap(),
                mac: Some(Mac::parse("00:16:3e:aa:bb:cc", "m").unwrap()),
                uuid: Some(SystemUuid::parse("7c9e6679-7425-40de-944b-e07fc1f90ae7", "u").unwrap()),
                ip_address: String::new(),
                host_key: Secret::new(KEY),
            },
            product: NetbootProduct {
                id: ProductId::parse("win10-x64", "p").unwrap(),
                product_version: "10.0".into(),
                package_version: "1".into(),
                template: None,
            },
            action_request: ActionRequest::Setup,
            depot_id: None,
            service_address: "https://config.example.org:4447".into(),
            boot_mode: BootMode::Bios,
            bootimage_append: append.iter().map(|s| s.to_string()).collect(),
            properties: BTreeMap::from([
                ("lang".to_string(), "de_DE".to_string()),
                ("disks".to_string(), "sda,sdb".to_string()),
            ]),
            modules: Modules {
                uefi: true,
                secureboot: false,
            },
            revision: 1,
        }
    }

    const BASE: &str = "hn=client1 dn=branch.example.org product=win10-x64 macaddress=00:16:3e:aa:bb:cc \
service=https://config.example.org:4447/rpc pckey=0123456789abcdef0123456789abcdef";

    fn render(template: &str, append: &[&str]) -> Vec<String> {
        Renderer::new()
            .render(template, &bundle(append))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn pxelinux_append_keeps_the_template_arguments_first() {
        let lines = render(
            "default opsi-install\nlabel opsi-install\n  kernel install\n  append initrd=miniroot.bz2 quiet lang=%lang%\n",
            &["nomodeset", "Lang=en"],
        );
        assert_eq!(lines[0], "default opsi-install");
        assert_eq!(
            lines[2], "  kernel install",
            "a pxelinux kernel line is not a command line"
        );
        assert_eq!(
            lines[3],
            format!("  append initrd=miniroot.bz2 quiet lang=de_DE {BASE} nomodeset lang=en")
        );
    }

    #[test]
    fn elilo_append_goes_inside_the_quotes() {
        let lines = render(
            "image=install\n  label=opsi-install\n  append=\"video=vesa:ywrap,mtrr vga=791 quiet\"\n",
            &["acpi=off"],
        );
        assert_eq!(lines[1], "  label=opsi-install");
        assert_eq!(
            lines[2],
            format!("  append=\"video=vesa:ywrap,mtrr vga=791 quiet {BASE} acpi=off\"")
        );
        let empty = render("  append=\"\"\n", &[]);
        assert_eq!(empty[0], format!("  append=\"{BASE}\""));
    }

    #[test]
    fn grub_linux_lines_are_extended_and_properties_substituted() {
        let lines = render(
            "menuentry 'install' {\n  linux (pxe)/linux/install-x64 initrd=miniroot.bz2 disks=%disks% x=%unknown%\n  initrd (pxe)/linux/miniroot-x64\n}\n",
            &["loglevel=7"],
        );
        assert_eq!(
            lines[1],
            format!(
                "  linux (pxe)/linux/install-x64 initrd=miniroot.bz2 disks=sda,sdb x=%unknown% {BASE} loglevel=7"
            )
        );
        assert_eq!(lines[2], "  initrd (pxe)/linux/miniroot-x64");
        let efi = render("linuxefi /install quiet\n", &[]);
        assert_eq!(efi[0], format!("linuxefi /install quiet {BASE}"));
    }

    #[test]
    fn ipxe_kernel_lines_are_extended() {
        let lines = render(
            "#!ipxe\nkernel http://${next-server}/linux/install-x64 initrd=miniroot quiet\ninitrd http://${next-server}/linux/miniroot-x64\nboot\n",
            &[],
        );
        assert_eq!(lines[0], "#!ipxe");
        assert_eq!(
            lines[1],
            format!(
                "kernel http://${{next-server}}/linux/install-x64 initrd=miniroot quiet {BASE}"
            )
        );
        assert_eq!(lines[2], "initrd http://${next-server}/linux/miniroot-x64");
        assert_eq!(lines[3], "boot");
    }

    #[test]
    fn later_keys_override_in_place_and_flags_stay_bare() {
        let lines = render(
            "append x\n",
            &[
                "HN=other",
                "lang=de",
                "nomodeset",
                "LANG=fr",
                "service=http://elsewhere/rpc",
                "acpi=",
            ],
        );
        assert_eq!(
            lines[0],
            format!(
                "append x hn=other dn=branch.example.org product=win10-x64 macaddress=00:16:3e:aa:bb:cc \
service=http://elsewhere/rpc pckey={KEY} lang=fr nomodeset acpi"
            )
        );
    }

    #[test]
    fn a_service_url_ending_in_rpc_is_kept() {
        let mut b = bundle(&[]);
        b.service_address = "https://config.example.org:4447/rpc/".into();
        let out = Renderer::new().render("append\n", &b).unwrap();
        assert!(
            out.contains(" service=https://config.example.org:4447/rpc "),
            "{out}"
        );
        b.service_address.clear();
        let out = Renderer::new().render("append\n", &b).unwrap();
        assert!(!out.contains("service="), "{out}");
    }

    #[test]
    fn a_given_pwh_is_escaped() {
        let lines = render("append\n", &["pwh=$6$salt$abc"]);
        assert_eq!(lines[0], format!("append {BASE} pwh=\\$6\\$salt\\$abc"));
    }

    #[test]
    fn the_root_password_becomes_a_verified_sha512_crypt_hash() {
        let lines = render(
            "append quiet\n",
            &["bootimageRootPassword=linux123", "nomodeset"],
        );
        let line = &lines[0];
        assert!(
            !line.contains("linux123"),
            "the password itself leaked: {line}"
        );
        assert!(!line.to_ascii_lowercase().contains("bootimagerootpassword"));
        let pwh = line
            .split(' ')
            .find_map(|w| w.strip_prefix("pwh="))
            .expect("pwh present");
        assert!(line.ends_with(" nomodeset"), "{line}");
        assert!(pwh.starts_with("\\$6\\$"), "escaped: {pwh}");
        let hash = pwh.replace("\\$", "$");
        let fields: Vec<&str> = hash.split('$').collect();
        assert_eq!(fields.len(), 4, "$6$salt$hash without rounds=: {hash}");
        assert_eq!(fields[2].len(), 16, "16-character salt");
        assert_eq!(fields[3].len(), 86, "86-character sha512-crypt digest");
        ShaCrypt::default()
            .verify_password(b"linux123", hash.as_str())
            .expect("the hash verifies");
        assert!(
            ShaCrypt::default()
                .verify_password(b"wrong", hash.as_str())
                .is_err()
        );
        // An independent implementation agrees: glibc's crypt(3) through
        // Python (its `crypt` module exists up to Python 3.12).
        let python = std::process::Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-c",
                "import sys\ntry:\n import crypt\nexcept ImportError:\n print('no crypt'); sys.exit()\nprint(crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2])",
                "linux123",
                &hash,
            ])
            .output()
            .expect("python3 runs");
        let answer = String::from_utf8_lossy(&python.stdout).trim().to_owned();
        if answer == "no crypt" {
            eprintln!("SKIPPED: this Python has no crypt module for the independent check");
        } else {
            assert_eq!(answer, "True", "crypt(3) disagrees: {answer}");
        }
    }

    #[test]
    fn sha512_crypt_matches_the_reference_vector() {
        // Ulrich Drepper's SHA-crypt specification, test vector 1.
        let expected = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        ShaCrypt::default()
            .verify_password(b"Hello world!", expected)
            .expect("reference vector verifies");
        let ours = sha512_crypt("Hello world!", b"0123456789ab").unwrap();
        assert!(
            ours.starts_with("$6$") && !ours.contains("rounds="),
            "{ours}"
        );
        ShaCrypt::default()
            .verify_password(b"Hello world!", ours.as_str())
            .unwrap();
    }

    #[test]
    fn one_hash_per_password_is_reused() {
        let renderer = Renderer::new();
        let b = bundle(&["bootimagerootpassword=secret"]);
        let first = renderer.render("append\n", &b).unwrap();
        let second = renderer.render("append\n", &b).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn uefi_needs_the_module() {
        let mut b = bundle(&[]);
        b.boot_mode = BootMode::UefiX64;
        b.modules.uefi = false;
        let err = Renderer::new().render("linux x\n", &b).unwrap_err();
        assert!(matches!(
            err,
            RenderError::UefiNotLicensed { mode: "uefi-x64" }
        ));
        b.modules.uefi = true;
        assert!(Renderer::new().render("linux x\n", &b).is_ok());
    }
}
