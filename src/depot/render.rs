//! Renders a PXE config from a template, line by line, after opsipxeconfd
//! (but every template line keeps its keyword, indentation and arguments):
//! - `%propertyId%` becomes the product property's state (values joined by
//!   `,`); unknown ids stay as they are;
//! - the kernel command line is extended on pxelinux `append …` lines (after
//!   what is there), elilo `append="…"` lines (inside the quotes), grub
//!   `linux`/`linuxefi`/`linux16` lines (after what is there) and `kernel`
//!   lines of iPXE scripts (templates whose first line is `#!ipxe`);
//! - added, in opsi's order (`pckey`, `hn`, `dn`, `product`, `macaddress`,
//!   `service`: opsipxeconfd.py @ 4.3.3.4 l.456–467, 4.2 the same), with
//!   `service` ending in `/rpc`, then every `opsi-linux-bootimage.append`
//!   item (`key=value` or a bare flag; keys lower-cased; a later key replaces
//!   the value of an earlier one in its place); `bootimagerootpassword=X`
//!   becomes `pwh=<sha512-crypt of X>` in that item's place (an empty X,
//!   or a later empty one, none), and in every
//!   `pwh` value each `$` is written `\$` so that the boot loader passes it
//!   on literally. As in opsi, both key names match as substrings.
//!
//! A value written into a grub, iPXE or elilo config must not carry that
//! format's syntax (a property value `de; linux (http,evil)/vmlinuz; boot`
//! on a grub `linux` line would boot another kernel): such a config is
//! refused, naming the value. pxelinux lines have no such syntax; as in
//! opsi, a value there may add kernel parameters of its own.
//!
//! The result holds the host key and a password hash: nothing here logs, and
//! callers must not log the rendered text either.

use std::collections::HashMap;
use std::sync::Mutex;

use super::crypt::{CryptError, Salt, dotless_hash};
use super::template::TemplateFormat;
use crate::domain::ClientBundle;
use crate::domain::opsi::service_url;

/// Distinct passwords whose hash is remembered. Nearly every client shares
/// the one boot image password; the bound only stops a stream of distinct
/// passwords from growing the map.
const PWH_MEMO: usize = 64;

/// Why a config cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// An elilo config needs the `uefi` module (opsi 4.2's one check of it).
    #[error("an elilo config for boot mode {mode} needs the uefi module, which is not licensed")]
    UefiNotLicensed {
        /// The client's boot mode.
        mode: &'static str,
    },
    /// The password hash could not be made.
    #[error("hashing the boot image password failed: {0}")]
    Hash(#[from] CryptError),
    /// A value would be syntax in the template's format.
    #[error("{field}: {ch:?} is {format} syntax; it cannot be written into this template's config")]
    Syntax {
        /// The value: `property <id>`, `bootimage_append[<i>]`, `service_address`, `host_key`.
        field: String,
        /// The template's format.
        format: &'static str,
        /// The character.
        ch: char,
    },
}

/// Every character that is syntax in some format a template can have (see
/// [`syntax_of`]): a value without any needs no look at the template.
const ANY_SYNTAX: &[char] = &[
    '{', '}', '|', '&', '$', ';', '<', '>', '\'', '"', '\\', '#', '`',
];

/// The characters a value must not bring into a config of `format`, with
/// the format's name: grub's script quotes, separates commands and expands
/// variables; iPXE's chains commands and expands settings; elilo's kernel
/// line is one quoted string.
fn syntax_of(format: TemplateFormat) -> (&'static str, &'static [char]) {
    match format {
        TemplateFormat::Grub => ("grub", ANY_SYNTAX),
        TemplateFormat::Ipxe => ("iPXE", &['$', '&', '|', ';', '#']),
        TemplateFormat::Elilo => ("elilo", &['"']),
        TemplateFormat::Pxelinux | TemplateFormat::Unknown => ("pxelinux", &[]),
    }
}

/// Refuses what `bundle` would write into `template` that is syntax in
/// the template's format (told only when a value has such a character).
fn check_syntax(template: &str, bundle: &ClientBundle) -> Result<(), RenderError> {
    let mut format = None;
    let mut check = |field: &dyn Fn() -> String, value: &str| {
        if !value.contains(ANY_SYNTAX) {
            return Ok(());
        }
        let (name, syntax) =
            syntax_of(*format.get_or_insert_with(|| TemplateFormat::detect(template)));
        match value.chars().find(|c| syntax.contains(c)) {
            Some(ch) => Err(RenderError::Syntax {
                field: field(),
                format: name,
                ch,
            }),
            None => Ok(()),
        }
    };
    for (id, value) in &bundle.properties {
        if value.contains(ANY_SYNTAX) && template.contains(&format!("%{id}%")) {
            check(&|| format!("property {id}"), value)?;
        }
    }
    for (i, item) in bundle.bootimage_append.iter().enumerate() {
        let key = item
            .split('=')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let field = || format!("bootimage_append[{i}]");
        if key.contains("bootimagerootpassword") {
            // A password goes on the line as its hash, escaped.
        } else if key.contains("pwh") {
            // A given hash's `$` is written escaped (see `Params::to_text`);
            // its key is written as given.
            // iPXE has no escape: a `${` in the hash would still expand
            // there (a crypt hash never has a `{`).
            let (key, hash) = item.split_once('=').unwrap_or((item, ""));
            check(&field, key)?;
            match hash.contains("${") {
                true => check(&field, hash)?,
                false => check(&field, &hash.replace('$', ""))?,
            }
        } else {
            check(&field, item)?;
        }
    }
    check(&|| "service_address".into(), &bundle.service_address)?;
    check(&|| "host_key".into(), bundle.client.host_key.expose())
}

/// How a template line carries the kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelLine {
    /// Arguments follow the keyword: pxelinux `append`, grub `linux`, iPXE
    /// `kernel`. Ours go after them.
    Trailing,
    /// elilo `append="…"`: ours go inside the quotes. `eq` is the byte
    /// offset of the `=`.
    Quoted { eq: usize },
}

fn classify(line: &str, ipxe: bool) -> Option<KernelLine> {
    let indent = line.len() - line.trim_start().len();
    let body = &line[indent..];
    let word_len = body
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(body.len());
    let (word, rest) = body.split_at(word_len);
    if word.eq_ignore_ascii_case("append") {
        // pxelinux keywords are case-insensitive; elilo's `append` takes `=`.
        let after = rest.trim_start();
        if after.starts_with('=') {
            let eq = indent + word_len + (rest.len() - after.len());
            return Some(KernelLine::Quoted { eq });
        }
        return Some(KernelLine::Trailing);
    }
    // A grub or iPXE kernel line without arguments names no kernel; leave it.
    let has_args = rest.starts_with(char::is_whitespace) && !rest.trim().is_empty();
    match word {
        "linux" | "linuxefi" | "linux16" if has_args => Some(KernelLine::Trailing),
        // In pxelinux `kernel` takes no arguments (they go on `append`), so
        // only an iPXE script's `kernel` line is a command line.
        "kernel" if ipxe && has_args => Some(KernelLine::Trailing),
        _ => None,
    }
}

/// Replaces every `%id%` naming a property by its value, in one pass: a
/// value is never scanned again, so it cannot smuggle in another `%id%`.
fn substitute(line: &str, bundle: &ClientBundle, out: &mut String) {
    if bundle.properties.is_empty() || !line.contains('%') {
        out.push_str(line);
        return;
    }
    let mut rest = line;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after
            .find('%')
            .and_then(|end| Some((end, bundle.properties.get(&after[..end])?)))
        {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                // Not a property reference: keep the `%` and look on from the next character.
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

/// Appends `params` to the kernel line `line`, already in `out` from `from`.
fn extend(out: &mut String, from: usize, kind: KernelLine, params: &str) {
    match kind {
        KernelLine::Trailing => {
            let line = &out[from..];
            let trimmed_len = line.trim_end().len();
            out.truncate(from + trimmed_len);
            out.push(' ');
            out.push_str(params);
        }
        KernelLine::Quoted { eq } => {
            let value = out[from + eq + 1..].trim().to_owned();
            // `append="a b"`, or unquoted `append=a`: either way the old
            // arguments stay first, ours follow, all inside one pair of quotes.
            let (inner, tail) = match value.strip_prefix('"') {
                Some(quoted) => match quoted.rfind('"') {
                    Some(close) => (quoted[..close].to_owned(), quoted[close + 1..].to_owned()),
                    None => (quoted.to_owned(), String::new()),
                },
                None => (value, String::new()),
            };
            out.truncate(from + eq + 1);
            out.push('"');
            let inner = inner.trim();
            if !inner.is_empty() {
                out.push_str(inner);
                out.push(' ');
            }
            out.push_str(params);
            out.push('"');
            out.push_str(&tail);
        }
    }
}

/// Kernel parameters in order, a later key replacing the value where the
/// key first appeared (opsi's dict update); `None` is a bare flag.
#[derive(Default)]
struct Params(Vec<(String, Option<String>)>);

impl Params {
    fn get(&self, key: &str) -> Option<&Option<String>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    fn set(&mut self, key: &str, value: Option<String>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// `key=value` and bare `key` words, space-separated.
    fn to_text(&self) -> String {
        let mut text = String::with_capacity(256);
        for (key, value) in &self.0 {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(key);
            if let Some(value) = value {
                text.push('=');
                if key.contains("pwh") {
                    // Boot loaders expand `$`; the boot image wants it literally.
                    text.push_str(&value.replace('$', "\\$"));
                } else {
                    text.push_str(value);
                }
            }
        }
        text
    }
}

/// Renders configs; shared by all handlers.
pub struct Renderer {
    /// Password → its sha512-crypt string. A hash costs milliseconds and
    /// nearly all clients share the boot image password, so a bulk of
    /// thousands hashes once. Neither side is ever logged.
    hashes: Mutex<HashMap<String, String>>,
    /// How many passwords `hashes` holds at most.
    memo_cap: usize,
    /// The salt of every hash, or `None` for a random one per password.
    salt: Option<Salt>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// A renderer with nothing memoized, drawing random salts.
    pub fn new() -> Self {
        Self {
            hashes: Mutex::new(HashMap::new()),
            memo_cap: PWH_MEMO,
            salt: None,
        }
    }

    /// A renderer hashing every password with `salt`, so that the same input
    /// renders the same bytes (for tests; production salts are random).
    pub fn with_salt(salt: Salt) -> Self {
        Self {
            salt: Some(salt),
            ..Self::new()
        }
    }

    /// Renders `template` for `bundle`. Every line ends in `\n`; trailing
    /// blanks are dropped, as opsi does.
    pub fn render(&self, template: &str, bundle: &ClientBundle) -> Result<String, RenderError> {
        // opsi 4.2 refused only its elilo `append="…"` lines without the
        // module (4.3 never looks): a grub or iPXE config is rendered.
        if !bundle.modules.uefi
            && bundle.boot_mode.is_uefi()
            && TemplateFormat::detect(template) == TemplateFormat::Elilo
        {
            return Err(RenderError::UefiNotLicensed {
                mode: bundle.boot_mode.as_str(),
            });
        }
        check_syntax(template, bundle)?;
        let params = self.parameters(bundle)?;
        let ipxe = template
            .lines()
            .next()
            .is_some_and(|first| first.trim_start().starts_with("#!ipxe"));
        let mut out = String::with_capacity(template.len() + 2 * params.len() + 16);
        for raw in template.lines() {
            let from = out.len();
            substitute(raw.trim_end(), bundle, &mut out);
            if let Some(kind) = classify(&out[from..], ipxe) {
                extend(&mut out, from, kind, &params);
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// The kernel parameters added for `bundle`, space-separated.
    fn parameters(&self, bundle: &ClientBundle) -> Result<String, RenderError> {
        let mut params = Params::default();
        let client = &bundle.client;
        // opsi's order, so that a file diffs cleanly against opsi's.
        if !client.host_key.is_empty() {
            params.set("pckey", Some(client.host_key.expose().to_owned()));
        }
        params.set("hn", Some(client.fqdn.host().to_owned()));
        params.set("dn", Some(client.fqdn.domain().to_owned()));
        params.set("product", Some(bundle.product.id.to_string()));
        if let Some(mac) = client.mac {
            params.set("macaddress", Some(mac.to_string()));
        }
        if let Some(service) = service_url(&bundle.service_address) {
            params.set("service", Some(service));
        }
        // Of several root passwords the last one counts, as each overwrote
        // the one before: only it is hashed (hashing each was work a caller
        // could pile up), at the place of the first.
        let mut password = None;
        // Whether `pwh` is only the place kept for the password's hash.
        let mut placeholder = false;
        for item in &bundle.bootimage_append {
            match self.append_item(&mut params, item) {
                Appended::Password(given, placed) => {
                    placeholder |= placed;
                    password = Some(given);
                }
                // A later `pwh` replaces the password's hash, as before.
                Appended::Pwh => (password, placeholder) = (None, false),
                // …and a later empty password the one before it, as its
                // value replaces the earlier one's in opsipxeconfd's map.
                Appended::NoPassword => password = None,
                Appended::Other => {}
            }
        }
        match password {
            Some(password) => params.set("pwh", Some(self.password_hash(password)?)),
            None if placeholder => params.remove("pwh"),
            None => {}
        }
        Ok(params.to_text())
    }

    /// Adds one `opsi-linux-bootimage.append` item; a root password's place
    /// is kept and the password returned (the caller sets its hash).
    fn append_item<'a>(&self, params: &mut Params, item: &'a str) -> Appended<'a> {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim()),
            None => (item.trim().to_ascii_lowercase(), ""),
        };
        if key.is_empty() {
            return Appended::Other;
        }
        // opsi matches both names as substrings of the key: a variant
        // spelling must not put a clear-text password on the line.
        if key.contains("bootimagerootpassword") {
            // An empty password would be a root login without one: no pwh.
            if value.is_empty() {
                return Appended::NoPassword;
            }
            let placed = params.get("pwh").is_none();
            if placed {
                params.set("pwh", None);
            }
            return Appended::Password(value, placed);
        }
        // opsi writes `key=` with an empty value as the bare flag.
        let pwh = key == "pwh";
        let value = (!value.is_empty()).then(|| value.to_owned());
        params.set(&key, value);
        match pwh {
            true => Appended::Pwh,
            false => Appended::Other,
        }
    }

    /// The memoized sha512-crypt hash of `password`, made on first use.
    fn password_hash(&self, password: &str) -> Result<String, RenderError> {
        if let Some(hash) = self.memo().get(password) {
            return Ok(hash.clone());
        }
        // Hashed outside the lock: other passwords' renders need not wait.
        let hash = dotless_hash(password, self.salt.as_ref())?;
        let mut memo = self.memo();
        if memo.len() >= self.memo_cap && !memo.contains_key(password) {
            memo.clear();
        }
        // A concurrent first use may have stored one already: every client
        // then gets that same hash.
        Ok(memo.entry(password.to_owned()).or_insert(hash).clone())
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // The map is always consistent, even if a holder panicked.
        self.hashes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What an append item was.
enum Appended<'a> {
    /// A root password (not empty), and whether its item put the place of
    /// its hash on the line.
    Password(&'a str, bool),
    /// An empty root password.
    NoPassword,
    /// A `pwh` of its own.
    Pwh,
    /// Anything else.
    Other,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::depot::crypt::sha512_crypt;
    use crate::domain::{
        ActionRequest, BootMode, Client, Fqdn, Mac, Modules, NetbootProduct, ProductId, Secret,
        SystemUuid,
    };

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    /// A salt giving dot-free hashes of `linux123` (and `pw`).
    const SALT: &str = "pxeconfTestSalt9";

    /// glibc's crypt(3) of `linux123` with `SALT` (Python 3.11:
    /// `crypt.crypt("linux123", "$6$pxeconfTestSalt9")`).
    const GLIBC_LINUX123: &str = "$6$pxeconfTestSalt9$CYqFOeC4PzbZUPmM12t6C75muVROl6Fq25sdg1Ng9ahYF9KyYnDcOj44pGnxL7mvip9lNgBSZXsUtlAU6t3rV/";

    /// What every kernel line gets for `bundle(&[])`.
    const BASE: &str = "pckey=0123456789abcdef0123456789abcdef hn=client1 \
dn=branch.example.org product=win10-x64 macaddress=00:16:3e:aa:bb:cc \
service=https://config.example.org:4447/rpc";

    fn bundle(append: &[&str]) -> ClientBundle {
        ClientBundle {
            client: Client {
                fqdn: Fqdn::parse("client1.branch.example.org", "id").unwrap(),
                mac: Some(Mac::parse("00:16:3E:AA:BB:CC", "m").unwrap()),
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
                ("askbeforeinst".to_string(), "true".to_string()),
            ]),
            modules: Modules {
                uefi: true,
                secureboot: false,
            },
            revision: 1,
        }
    }

    #[test]
    fn values_never_bring_the_templates_syntax_along() {
        let grub = "menuentry 'Install %lang%' {\n  linux (pxe)/install lang=%lang%\n}\n";
        let ipxe = "#!ipxe\nkernel http://depot/install lang=%lang%\nboot\n";
        let elilo = "image=/linux/install\n  append=\"lang=%lang%\"\n";
        let pxelinux = "label install\n  kernel install\n  append lang=%lang%\n";
        let with = |lang: &str, append: &[&str]| {
            let mut b = bundle(append);
            b.properties.insert("lang".into(), lang.into());
            b
        };
        let refused = |template: &str, b: &ClientBundle| match Renderer::new().render(template, b) {
            Err(RenderError::Syntax { field, format, ch }) => (field, format, ch),
            other => panic!("expected a refusal, got {other:?}"),
        };
        let boot_other = "de; linux (http,evil.example.org)/vmlinuz; boot";
        assert_eq!(
            refused(grub, &with(boot_other, &[])),
            ("property lang".to_owned(), "grub", ';')
        );
        assert_eq!(
            refused(grub, &with("x' { reboot", &[])),
            ("property lang".to_owned(), "grub", '\'')
        );
        assert_eq!(
            refused(ipxe, &with("de", &["&&", "chain"])),
            ("bootimage_append[0]".to_owned(), "iPXE", '&')
        );
        assert_eq!(
            refused(elilo, &with("de\" initrd=/evil", &[])),
            ("property lang".to_owned(), "elilo", '"')
        );
        let mut b = with("de", &[]);
        b.service_address = "https://cfg;reboot;#".into();
        assert_eq!(
            refused(grub, &b),
            ("service_address".to_owned(), "grub", ';')
        );
        // pxelinux has no such syntax (as in opsi, a value may add kernel
        // parameters); elilo's only one is the quote.
        assert!(
            Renderer::new()
                .render(pxelinux, &with(boot_other, &[]))
                .is_ok()
        );
        assert!(Renderer::new().render(elilo, &with("a;b&c", &[])).is_ok());
        // A value the template does not use is not written; a password
        // goes as its hash, its `$` escaped.
        let mut b = with("de", &["bootimagerootpassword=a;b$c"]);
        b.properties.insert("unused".into(), "x;y".into());
        let out = Renderer::new().render(grub, &b).unwrap();
        assert!(out.contains("pwh=\\$6\\$"), "{out}");
        // Only a hash's `$` is escaped: one in a `pwh` item's key is grub's;
        // and iPXE would expand a `${…}` in the hash whatever the escape.
        assert_eq!(
            refused(grub, &with("de", &["pwh$x=abc"])),
            ("bootimage_append[0]".to_owned(), "grub", '$')
        );
        assert_eq!(
            refused(ipxe, &with("de", &["pwh=${net0/ip}"])),
            ("bootimage_append[0]".to_owned(), "iPXE", '$')
        );
        assert!(
            Renderer::new()
                .render(ipxe, &with("de", &["pwh=$6$salt$abc"]))
                .is_ok()
        );
    }

    fn render(template: &str, append: &[&str]) -> Vec<String> {
        Renderer::new()
            .render(template, &bundle(append))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The `pwh` value of a rendered line, with `\$` turned back into `$`.
    fn pwh_of(line: &str) -> String {
        let words: Vec<&str> = line
            .trim_end_matches('"')
            .split(' ')
            .filter(|w| w.starts_with("pwh="))
            .collect();
        assert_eq!(words.len(), 1, "exactly one pwh in {line}");
        words[0]["pwh=".len()..].replace("\\$", "$")
    }

    #[test]
    fn pxelinux_append_keeps_the_template_arguments_first() {
        let lines = render(
            "default opsi-install\n\nlabel opsi-install\n  kernel install\n  append initrd=miniroot.bz2 quiet lang=%lang%  \n",
            &["nomodeset", "acpi=off"],
        );
        assert_eq!(
            lines,
            vec![
                "default opsi-install".to_owned(),
                String::new(),
                "label opsi-install".to_owned(),
                "  kernel install".to_owned(),
                format!("  append initrd=miniroot.bz2 quiet lang=de_DE {BASE} nomodeset acpi=off"),
            ]
        );
    }

    #[test]
    fn the_kernel_line_diffs_cleanly_against_opsis() {
        // The grub example of opsipxeconfd 4.3.3.4 (built-in keys in its
        // order, then the append config's items), here with values as opsi
        // stores them: one with a space, split like opsi 4.2 does.
        let mut b = bundle(&[]);
        b.client.fqdn = Fqdn::parse("client1.opsi.test", "id").unwrap();
        b.client.mac = Some(Mac::parse("00:11:22:aa:bb:cc", "m").unwrap());
        b.service_address = "https://server.opsi.test:4447".into();
        b.bootimage_append = crate::domain::opsi::append_items(&[
            "acpi=off noapic".to_owned(),
            "bootimagerootpassword=linux123".to_owned(),
            "lang=de".to_owned(),
        ]);
        let out = Renderer::with_salt(Salt::new(SALT).unwrap())
            .render(
                "linux (pxe)/linux/install-x64 initrd=miniroot-x64 video=vesa:ywrap,mtrr vga=791 quiet splash --no-log console=tty1 console=ttyS0\n",
                &b,
            )
            .unwrap();
        assert_eq!(
            out,
            format!(
                "linux (pxe)/linux/install-x64 initrd=miniroot-x64 video=vesa:ywrap,mtrr vga=791 quiet splash --no-log console=tty1 console=ttyS0 pckey={KEY} hn=client1 dn=opsi.test product=win10-x64 macaddress=00:11:22:aa:bb:cc service=https://server.opsi.test:4447/rpc acpi=off noapic pwh={} lang=de\n",
                GLIBC_LINUX123.replace('$', "\\$")
            )
        );
    }

    #[test]
    fn pxelinux_append_without_arguments_gets_ours() {
        assert_eq!(render("APPEND\n", &[]), vec![format!("APPEND {BASE}")]);
    }

    #[test]
    fn elilo_append_is_extended_inside_the_quotes() {
        let lines = render(
            "image=/linux/install-x64\nlabel=opsi\nappend=\"initrd=/linux/miniroot-x64.bz2 vga=normal console=tty1\"\ninitrd=/linux/miniroot-x64.bz2\n",
            &["acpi=off"],
        );
        assert_eq!(lines[0], "image=/linux/install-x64");
        assert_eq!(lines[1], "label=opsi");
        assert_eq!(
            lines[2],
            format!(
                "append=\"initrd=/linux/miniroot-x64.bz2 vga=normal console=tty1 {BASE} acpi=off\""
            )
        );
        assert_eq!(lines[3], "initrd=/linux/miniroot-x64.bz2");
        assert_eq!(
            render("  append=\"\"\n", &[]),
            vec![format!("  append=\"{BASE}\"")]
        );
        assert_eq!(
            render("  append = \"quiet\"\n", &[]),
            vec![format!("  append =\"quiet {BASE}\"")]
        );
    }

    #[test]
    fn grub_linux_lines_are_extended() {
        let lines = render(
            "set timeout=0\nmenuentry 'install' {\n  linux (pxe)/linux/install-x64 initrd=miniroot-x64 disks=%disks% x=%unknown%\n  initrd (pxe)/linux/miniroot-x64\n}\n",
            &["loglevel=7"],
        );
        assert_eq!(
            lines,
            vec![
                "set timeout=0".to_owned(),
                "menuentry 'install' {".to_owned(),
                format!(
                    "  linux (pxe)/linux/install-x64 initrd=miniroot-x64 disks=sda,sdb x=%unknown% {BASE} loglevel=7"
                ),
                "  initrd (pxe)/linux/miniroot-x64".to_owned(),
                "}".to_owned(),
            ]
        );
    }

    #[test]
    fn grub_linuxefi_lines_are_extended() {
        assert_eq!(
            render(
                "menuentry x {\n  linuxefi (pxe)/linux/install-x64 a=b\n}\n",
                &[]
            ),
            vec![
                "menuentry x {".to_owned(),
                format!("  linuxefi (pxe)/linux/install-x64 a=b {BASE}"),
                "}".to_owned(),
            ]
        );
    }

    #[test]
    fn ipxe_kernel_lines_are_extended() {
        let lines = render(
            "#!ipxe\nkernel http://${next-server}/linux/install-x64 initrd=miniroot lang=%lang%\ninitrd http://${next-server}/linux/miniroot-x64\nboot\n",
            &[],
        );
        assert_eq!(
            lines,
            vec![
                "#!ipxe".to_owned(),
                format!(
                    "kernel http://${{next-server}}/linux/install-x64 initrd=miniroot lang=de_DE {BASE}"
                ),
                "initrd http://${next-server}/linux/miniroot-x64".to_owned(),
                "boot".to_owned(),
            ]
        );
    }

    #[test]
    fn a_kernel_line_outside_ipxe_is_left_alone() {
        // pxelinux's `kernel` takes no arguments; only `append` does.
        assert_eq!(
            render("label x\n  kernel install\n", &[]),
            vec!["label x", "  kernel install"]
        );
        assert_eq!(
            render("label x\n  kernel install quiet\n", &[]),
            vec!["label x", "  kernel install quiet"]
        );
    }

    #[test]
    fn words_that_only_start_like_keywords_are_left_alone() {
        assert_eq!(
            render("appendix x\nlinuxish y\nlinux\n", &[]),
            vec!["appendix x", "linuxish y", "linux"]
        );
    }

    #[test]
    fn properties_are_substituted_on_every_line() {
        assert_eq!(
            render(
                "menu title %lang% 100% %askbeforeinst%%lang% %nosuch% %\n",
                &[]
            ),
            vec!["menu title de_DE 100% truede_DE %nosuch% %"]
        );
        // A value is not scanned again for references.
        let mut b = bundle(&[]);
        b.properties.insert("a".into(), "%lang%".into());
        let out = Renderer::new().render("x=%a%\n", &b).unwrap();
        assert_eq!(out, "x=%lang%\n");
    }

    #[test]
    fn later_keys_override_in_place_and_keys_are_lower_cased() {
        assert_eq!(
            render(
                "append x\n",
                &[
                    "HN=other",
                    "lang=de",
                    "nomodeset",
                    "LANG=fr",
                    "Service=http://elsewhere/rpc",
                    "NoModeSet",
                ],
            ),
            vec![format!(
                "append x pckey={KEY} hn=other dn=branch.example.org product=win10-x64 \
macaddress=00:16:3e:aa:bb:cc service=http://elsewhere/rpc lang=fr nomodeset"
            )]
        );
    }

    #[test]
    fn bare_flags_stay_bare_and_an_empty_value_is_a_flag() {
        assert_eq!(
            render("append\n", &["quiet", " debug ", "splash=", "acpi=off"]),
            vec![format!("append {BASE} quiet debug splash acpi=off")]
        );
        // A value overriding a flag gives it a value, and back.
        assert_eq!(
            render("append\n", &["quiet", "x=1", "quiet=2", "x"]),
            vec![format!("append {BASE} quiet=2 x")]
        );
    }

    #[test]
    fn the_service_address_ends_in_rpc() {
        let mut b = bundle(&[]);
        for (given, written) in [
            ("https://cfg:4447", "https://cfg:4447/rpc"),
            ("https://cfg:4447/", "https://cfg:4447/rpc"),
            ("https://cfg:4447/rpc", "https://cfg:4447/rpc"),
            ("https://cfg:4447/rpc/", "https://cfg:4447/rpc"),
            ("https://cfg:4447/opsi/", "https://cfg:4447/opsi/rpc"),
        ] {
            b.service_address = given.into();
            let out = Renderer::new().render("append\n", &b).unwrap();
            assert_eq!(
                out,
                format!(
                    "append pckey={KEY} hn=client1 dn=branch.example.org product=win10-x64 \
macaddress=00:16:3e:aa:bb:cc service={written}\n"
                )
            );
        }
    }

    #[test]
    fn unknown_mac_service_and_key_are_left_out() {
        let mut b = bundle(&[]);
        b.client.mac = None;
        b.service_address.clear();
        b.client.host_key = Secret::default();
        let out = Renderer::new().render("append\n", &b).unwrap();
        assert_eq!(
            out,
            "append hn=client1 dn=branch.example.org product=win10-x64\n"
        );
    }

    #[test]
    fn a_given_pwh_is_escaped() {
        assert_eq!(
            render("append\n", &["pwh=$6$salt$abc"]),
            vec![format!("append {BASE} pwh=\\$6\\$salt\\$abc")]
        );
        assert_eq!(
            render("linux /k\n", &["PWH=$6$salt$abc"]),
            vec![format!("linux /k {BASE} pwh=\\$6\\$salt\\$abc")]
        );
    }

    #[test]
    fn the_root_password_becomes_an_escaped_verified_pwh() {
        let lines = render(
            "  append initrd=miniroot quiet\n",
            &["bootimageRootPassword=linux123", "nomodeset"],
        );
        let line = &lines[0];
        assert!(!line.contains("linux123"), "the password itself is written");
        assert!(!line.to_ascii_lowercase().contains("bootimagerootpassword"));
        let hash = pwh_of(line);
        assert_eq!(
            line,
            &format!(
                "  append initrd=miniroot quiet {BASE} pwh={} nomodeset",
                hash.replace('$', "\\$")
            )
        );
        // `$6$<16 salt characters>$<86 digest characters>`, no `rounds=`, no `.`.
        let fields: Vec<&str> = hash.split('$').collect();
        assert_eq!(fields.len(), 4, "{hash}");
        assert_eq!((fields[0], fields[1]), ("", "6"));
        assert_eq!(fields[2].len(), 16, "{hash}");
        assert_eq!(fields[3].len(), 86, "{hash}");
        assert!(!hash.contains('.'), "{hash}");
        // Recomputed from the password and its salt (our crypt matches
        // glibc's, see `crypt`)...
        assert_eq!(sha512_crypt("linux123", fields[2]).unwrap(), hash);
        // ...and a wrong password gives another hash.
        assert_ne!(sha512_crypt("linux124", fields[2]).unwrap(), hash);
    }

    #[test]
    fn a_fixed_salt_renders_glibc_hash_bytes() {
        let renderer = Renderer::with_salt(Salt::new(SALT).unwrap());
        let out = renderer
            .render(
                "  append initrd=miniroot quiet\n",
                &bundle(&["bootimageRootPassword=linux123", "nomodeset"]),
            )
            .unwrap();
        assert_eq!(
            out,
            format!(
                "  append initrd=miniroot quiet {BASE} pwh={} nomodeset\n",
                GLIBC_LINUX123.replace('$', "\\$")
            )
        );
        // Another renderer with the same salt writes the same bytes.
        let again = Renderer::with_salt(Salt::new(SALT).unwrap())
            .render(
                "  append initrd=miniroot quiet\n",
                &bundle(&["bootimageRootPassword=linux123", "nomodeset"]),
            )
            .unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn the_hash_goes_where_the_password_was_and_an_empty_password_adds_none() {
        let lines = render("append\n", &["a=1", "bootimagerootpassword=pw", "b=2"]);
        let hash = pwh_of(&lines[0]).replace('$', "\\$");
        assert_eq!(lines[0], format!("append {BASE} a=1 pwh={hash} b=2"));
        // A later pwh replaces the computed one in its place.
        assert_eq!(
            render(
                "append\n",
                &["bootimagerootpassword=pw", "a=1", "pwh=$6$s$h"]
            ),
            vec![format!("append {BASE} pwh=\\$6\\$s\\$h a=1")]
        );
        assert_eq!(
            render("append\n", &["bootimagerootpassword=", "a=1"]),
            vec![format!("append {BASE} a=1")]
        );
        // A later empty password replaces an earlier one (opsipxeconfd's
        // map keeps the last value): no hash of the earlier one...
        assert_eq!(
            render(
                "append\n",
                &["bootimagerootpassword=pw", "a=1", "bootimagerootpassword="]
            ),
            vec![format!("append {BASE} a=1")]
        );
        // ...a given pwh stays, and a password after the empty one counts.
        assert_eq!(
            render(
                "append\n",
                &[
                    "pwh=$6$s$h",
                    "bootimagerootpassword=pw",
                    "bootimagerootpassword="
                ]
            ),
            vec![format!("append {BASE} pwh=\\$6\\$s\\$h")]
        );
        let line = &render(
            "append\n",
            &[
                "bootimagerootpassword=pw",
                "bootimagerootpassword=",
                "a=1",
                "bootimagerootpassword=pw2",
            ],
        )[0];
        let hash = pwh_of(line);
        assert_eq!(
            line,
            &format!("append {BASE} pwh={} a=1", hash.replace('$', "\\$"))
        );
        // Like opsi, variant key names match as substrings.
        let line = &render(
            "append\n",
            &["Opsi-BootimageRootPassword2=pw", "grubpwh=$1$x"],
        )[0];
        assert!(!line.split(' ').any(|w| w.ends_with("=pw")), "{line}");
        let hash = pwh_of(line).replace('$', "\\$");
        assert_eq!(line, &format!("append {BASE} pwh={hash} grubpwh=\\$1\\$x"));
    }

    #[test]
    fn one_hash_per_password_is_reused() {
        let renderer = Renderer::new();
        let mut b = bundle(&["bootimagerootpassword=secret"]);
        let first = renderer.render("append\n", &b).unwrap();
        b.client.fqdn = Fqdn::parse("client2.branch.example.org", "id").unwrap();
        let second = renderer.render("append\n", &b).unwrap();
        assert_eq!(pwh_of(&first), pwh_of(&second));
        // A fresh renderer draws a fresh salt.
        let other = Renderer::new().render("append\n", &b).unwrap();
        assert_ne!(pwh_of(&first), pwh_of(&other));
        assert_eq!(renderer.memo().len(), 1);
    }

    #[test]
    fn of_several_passwords_only_the_last_is_hashed() {
        let renderer = Renderer::new();
        let items: Vec<String> = (0..50)
            .map(|i| format!("bootimagerootpassword=pw{i}"))
            .chain(["a=1".to_owned()])
            .collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        let out = renderer.render("append\n", &bundle(&items)).unwrap();
        assert_eq!(renderer.memo().len(), 1, "one hash made");
        assert!(renderer.memo().contains_key("pw49"));
        let line = out.lines().next().unwrap();
        assert_eq!(line.matches("pwh=").count(), 1, "{line}");
        assert!(
            line.ends_with(" a=1"),
            "the hash keeps the first one's place: {line}"
        );
    }

    #[test]
    fn the_memo_is_bounded() {
        let renderer = Renderer {
            memo_cap: 2,
            ..Renderer::new()
        };
        let a = renderer.password_hash("a").unwrap();
        renderer.password_hash("b").unwrap();
        assert_eq!(renderer.password_hash("a").unwrap(), a, "still memoized");
        assert_eq!(renderer.memo().len(), 2);
        renderer.password_hash("c").unwrap();
        assert_eq!(renderer.memo().len(), 1, "full: emptied, then c stored");
        assert!(renderer.memo().contains_key("c"));
        assert_ne!(renderer.password_hash("a").unwrap(), a, "a was forgotten");
    }

    #[test]
    fn an_elilo_config_needs_the_uefi_module_as_in_opsi_4_2() {
        let mut b = bundle(&[]);
        let elilo = "image=/k\n  append=\"quiet\"\n";
        for (mode, name) in [
            (BootMode::UefiX64, "uefi-x64"),
            (BootMode::UefiX86, "uefi-x86"),
        ] {
            b.boot_mode = mode;
            b.modules.uefi = false;
            match Renderer::new().render(elilo, &b) {
                Err(RenderError::UefiNotLicensed { mode }) => assert_eq!(mode, name),
                other => panic!("expected UefiNotLicensed, got {other:?}"),
            }
            // grub (and iPXE) configs: opsi never refused them.
            assert!(Renderer::new().render("linux x\n", &b).is_ok());
            assert!(Renderer::new().render("#!ipxe\nkernel x\n", &b).is_ok());
            b.modules.uefi = true;
            assert!(Renderer::new().render(elilo, &b).is_ok());
        }
        b.boot_mode = BootMode::Bios;
        b.modules.uefi = false;
        assert!(Renderer::new().render("append\n", &b).is_ok());
    }

    #[test]
    fn the_shipped_pxelinux_template_renders() {
        let b = bundle(&["bootimagerootpassword=linux123"]);
        let renderer = Renderer::new();
        let pxelinux = renderer
            .render(
                "default opsi-install\nlabel opsi-install\n  kernel install\n  append initrd=miniroot.bz2 video=vesa:ywrap,mtrr vga=791 quiet splash --no-log console=tty1 console=ttyS0\n",
                &b,
            )
            .unwrap();
        let pwh = pwh_of(pxelinux.lines().nth(3).unwrap()).replace('$', "\\$");
        assert_eq!(
            pxelinux,
            format!(
                "default opsi-install\nlabel opsi-install\n  kernel install\n  append initrd=miniroot.bz2 video=vesa:ywrap,mtrr vga=791 quiet splash --no-log console=tty1 console=ttyS0 {BASE} pwh={pwh}\n"
            )
        );
    }

    #[test]
    fn the_renderer_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Renderer>();
    }
}
