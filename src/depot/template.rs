//! Template choice and loading, as opsipxeconfd 4.2 chooses
//! (`_getPxeConfigTemplate`, opsipxeconfd.py @ 4.2.0.32 l.730–802), with
//! 4.3's product template for a 64-bit UEFI client where 4.2 had none:
//! - a BIOS client gets its product's own template, unless it is unset or
//!   one of opsi 4.3's obsolete names (then the BIOS default);
//! - a UEFI client whose product names a template `T` gets `T.efi` if that
//!   file exists in the template directory; else (64-bit) `T` itself if it
//!   is a grub, elilo or iPXE template without a pxelinux line (opsi 4.3
//!   hands every client the product's own, and its templates are grub);
//!   else the UEFI default for its boot mode
//!   (x86 or x64); without a product template, that default;
//! - a UEFI client is never handed a template in pxelinux format (the
//!   choice fails instead).
//!
//! The choice comes with its reason, for the log and the depot's answer.
//! Every name resolves inside the template directory (symlinks followed,
//! then checked). Texts are cached per file and read again only when the
//! file's identity, size or times change; a relative name that still leads
//! to the same file costs one `stat` (no resolution) per push.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tracing::{debug, info, warn};

use crate::domain::{BootMode, ClientBundle, TemplateName};

/// The template directory and the per-boot-mode defaults (validated config).
#[derive(Debug, Clone)]
pub struct TemplateConfig {
    /// The directory templates live in; relative names resolve here.
    pub dir: PathBuf,
    /// Default for BIOS clients.
    pub bios: TemplateName,
    /// Default for 32-bit UEFI clients.
    pub uefi_x86: TemplateName,
    /// Default for 64-bit UEFI clients.
    pub uefi_x64: TemplateName,
}

/// Why a template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The name leads outside the template directory.
    #[error("template {name:?} is outside the template directory")]
    Escapes {
        /// The name as given.
        name: String,
    },
    /// The name is inside the template directory but leads out of it
    /// through a symlink there: the depot's set-up, not the caller's name.
    #[error("template {name:?} leads outside the depot's template directory")]
    LinksOut {
        /// The name as given.
        name: String,
        /// Where it leads (for the depot's log, never the caller).
        path: PathBuf,
    },
    /// The template file does not exist. The message names the template as
    /// the caller gave it, never the depot's path (which goes to the log).
    #[error("template {name:?} does not exist on the depot")]
    Missing {
        /// The name as given.
        name: String,
        /// The file looked for.
        path: PathBuf,
    },
    /// The template file could not be read.
    #[error("reading template {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The template directory is unusable (at start-up).
    #[error("template directory {}: {source}", path.display())]
    Dir {
        /// The directory as configured.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The chosen template is in pxelinux format, which a UEFI client
    /// cannot boot.
    #[error(
        "template {name} is in pxelinux format, which a {mode} client cannot boot ({reason}); \
         give the product a UEFI variant or make the depot's UEFI default a grub or elilo template"
    )]
    PxelinuxForUefi {
        /// The template, relative to the template directory.
        name: String,
        /// The client's boot mode.
        mode: &'static str,
        /// Why it was chosen.
        reason: String,
    },
}

/// The syntax a template is written in, told from its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateFormat {
    /// pxelinux: `label x`, `kernel k`, `append …` (BIOS only).
    Pxelinux,
    /// elilo: `image=…`, `append="…"`.
    Elilo,
    /// grub: `menuentry …`, `linux …`, `set …`.
    Grub,
    /// An iPXE script (`#!ipxe`).
    Ipxe,
    /// None of these could be told.
    Unknown,
}

impl TemplateFormat {
    /// What it is, as a reason says it: `a pxelinux template`.
    pub fn described(self) -> String {
        match self {
            Self::Unknown => "in no format pxeconf knows".to_owned(),
            known => format!("a {} template", known.as_str()),
        }
    }

    /// Its name, as the reasons say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pxelinux => "pxelinux",
            Self::Elilo => "elilo",
            Self::Grub => "grub",
            Self::Ipxe => "iPXE",
            Self::Unknown => "unknown",
        }
    }

    /// Tells the format from the text: an iPXE shebang; else any grub
    /// command; else any elilo `key=value` line; else any pxelinux keyword.
    pub fn detect(text: &str) -> Self {
        const GRUB: [&str; 7] = [
            "menuentry",
            "submenu",
            "linux",
            "linuxefi",
            "linux16",
            "set",
            "insmod",
        ];
        const PXELINUX: [&str; 8] = [
            "label",
            "kernel",
            "append",
            "default",
            "menu",
            "localboot",
            "prompt",
            "ui",
        ];
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .peekable();
        if lines.peek().is_some_and(|l| l.starts_with("#!ipxe")) {
            return Self::Ipxe;
        }
        let (mut elilo, mut pxelinux) = (false, false);
        for line in lines.filter(|l| !l.starts_with('#')) {
            let (word, rest) = first_word(line);
            if GRUB.contains(&word) {
                return Self::Grub;
            }
            if rest.trim_start().starts_with('=') {
                elilo = true;
            } else if PXELINUX.iter().any(|k| word.eq_ignore_ascii_case(k)) {
                pxelinux = true;
            }
        }
        match (elilo, pxelinux) {
            (true, _) => Self::Elilo,
            (false, true) => Self::Pxelinux,
            (false, false) => Self::Unknown,
        }
    }
}

/// A trimmed line's first word (up to a blank or `=`) and the rest.
fn first_word(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    line.split_at(end)
}

/// Whether a UEFI client may be handed a template of `format` and `text` as
/// it is: grub, elilo or iPXE, and (but for iPXE, whose `kernel` is its
/// own) without a pxelinux line — pxelinux's `linux` keyword alone reads as
/// grub.
fn boots_uefi(format: TemplateFormat, text: &str) -> bool {
    const PXELINUX_ONLY: [&str; 5] = ["label", "kernel", "append", "localboot", "prompt"];
    let pxelinux_line = |line: &str| {
        let (word, rest) = first_word(line.trim());
        !rest.trim_start().starts_with('=')
            && PXELINUX_ONLY.iter().any(|k| word.eq_ignore_ascii_case(k))
    };
    match format {
        TemplateFormat::Ipxe => true,
        TemplateFormat::Grub | TemplateFormat::Elilo => !text.lines().any(pxelinux_line),
        TemplateFormat::Pxelinux | TemplateFormat::Unknown => false,
    }
}

/// A loaded template.
#[derive(Debug)]
pub struct Template {
    /// Its path relative to the template directory (after symlinks), for
    /// responses and listings.
    pub name: String,
    /// Its text.
    pub text: Arc<str>,
    /// Its syntax, told once when it is read.
    pub format: TemplateFormat,
    /// Whether a UEFI client may be handed it as it is (see [`boots_uefi`]),
    /// told once when it is read.
    pub boots_uefi: bool,
}

/// The template chosen for a bundle, and why.
#[derive(Debug)]
pub struct Picked {
    /// The template.
    pub template: Arc<Template>,
    /// Why this one, e.g. `UEFI client (uefi-x64): the product template's
    /// UEFI variant T.efi`.
    pub reason: String,
}

/// What identifies one version of a file without reading it: an edit in
/// place changes size or times, a replacing rename changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

struct Cached {
    stamp: Stamp,
    template: Arc<Template>,
}

/// The templates of a depot; shared by all handlers.
pub struct Templates {
    config: TemplateConfig,
    /// The canonical template directory: every template must be below it.
    root: PathBuf,
    /// Canonical path → the text last read from it.
    cache: RwLock<HashMap<PathBuf, Cached>>,
    /// Relative name → the file it led to last time, so that a push whose
    /// template is unchanged costs one `stat`, not a path resolution.
    by_name: RwLock<HashMap<PathBuf, Cached>>,
}

impl Templates {
    /// Opens the template directory, which must exist. The defaults need not
    /// exist yet: a missing one fails only the pushes that need it, and is
    /// warned about (a mistyped name would otherwise show first as failed
    /// pushes).
    pub fn new(config: TemplateConfig) -> Result<Self, TemplateError> {
        let dir_err = |source| TemplateError::Dir {
            path: config.dir.clone(),
            source,
        };
        let root = std::fs::canonicalize(&config.dir).map_err(dir_err)?;
        let meta = std::fs::metadata(&root).map_err(dir_err)?;
        if !meta.is_dir() {
            return Err(dir_err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        for (mode, name) in [
            ("BIOS", &config.bios),
            ("32-bit UEFI", &config.uefi_x86),
            ("64-bit UEFI", &config.uefi_x64),
        ] {
            if !root.join(name.as_str()).is_file() {
                warn!(template = %name, boot_mode = mode, dir = %root.display(), "default template not found: configs that need it fail until it is there");
            }
        }
        Ok(Self {
            config,
            root,
            cache: RwLock::new(HashMap::new()),
            by_name: RwLock::new(HashMap::new()),
        })
    }

    /// Chooses and loads the template for `bundle` (see the module's rules),
    /// and logs which and why.
    pub fn pick(&self, bundle: &ClientBundle) -> Result<Picked, TemplateError> {
        let (name, reason, loaded) = self.choose(bundle);
        let template = match loaded {
            Some(template) => template,
            None => self.load(&name)?,
        };
        let mode = bundle.boot_mode;
        if mode.is_uefi() && template.format == TemplateFormat::Pxelinux {
            return Err(TemplateError::PxelinuxForUefi {
                name: template.name.clone(),
                mode: mode.as_str(),
                reason,
            });
        }
        let fqdn = &bundle.client.fqdn;
        match &bundle.product.template {
            // The product's template was passed over for the UEFI default:
            // worth an operator's eye (opsi 4.2 logged it as an error).
            Some(own)
                if mode.is_uefi()
                    && !own.is_obsolete()
                    && *own != name
                    && own.efi_variant().as_ref() != Some(&name) =>
            {
                info!(%fqdn, template = %template.name, %reason, "template chosen")
            }
            _ => debug!(%fqdn, template = %template.name, %reason, "template chosen"),
        }
        Ok(Picked { template, reason })
    }

    /// The template a bundle asks for, and why: see the module's rules; and
    /// the template itself when the choice had to load it (a UEFI client's
    /// product template taken as it is), so that it is not loaded twice.
    pub fn choose(&self, bundle: &ClientBundle) -> (TemplateName, String, Option<Arc<Template>>) {
        let mode = bundle.boot_mode;
        let default = match mode {
            BootMode::Bios => &self.config.bios,
            BootMode::UefiX86 => &self.config.uefi_x86,
            BootMode::UefiX64 => &self.config.uefi_x64,
        };
        let m = mode.as_str();
        let fallback = |why: String| (default.clone(), format!("{why}; the {m} default"), None);
        match &bundle.product.template {
            None => fallback("no product template".to_owned()),
            Some(own) if own.is_obsolete() => fallback(format!(
                "the product template {own} is obsolete (as in opsi 4.3)"
            )),
            Some(own) if !mode.is_uefi() => {
                (own.clone(), "the product's template".to_owned(), None)
            }
            Some(own) => match own.efi_variant().filter(|efi| self.is_template(efi)) {
                Some(efi) => {
                    let why =
                        format!("UEFI client ({m}): the product template's UEFI variant {efi}");
                    (efi, why, None)
                }
                // opsi 4.3's templates are grub, which boots UEFI as it is:
                // 4.3 hands every (64-bit) client the product's own. A
                // pxelinux one (4.2's kind), one of no known format, one that
                // cannot be read, or a 32-bit client (4.3 has none; a grub
                // template's kernel paths are x64) keeps 4.2's rule.
                None => {
                    let loaded = (mode == BootMode::UefiX64)
                        .then(|| self.load(own).ok())
                        .flatten();
                    match loaded {
                        Some(t) if t.boots_uefi => (
                            own.clone(),
                            format!(
                                "UEFI client ({m}): the product's template, in {} format (no UEFI variant {own}.efi)",
                                t.format.as_str()
                            ),
                            Some(t),
                        ),
                        Some(t) => fallback(format!(
                            "UEFI client ({m}): the product template {own} has no UEFI variant {own}.efi and is {}",
                            t.format.described()
                        )),
                        None => fallback(format!(
                            "UEFI client ({m}): the product template {own} has no UEFI variant {own}.efi"
                        )),
                    }
                }
            },
        }
    }

    /// Whether `name` is a file inside the template directory.
    fn is_template(&self, name: &TemplateName) -> bool {
        if self.unchanged(name).is_some() {
            return true;
        }
        self.resolve(name).is_ok_and(|path| {
            path.starts_with(&self.root) && std::fs::metadata(&path).is_ok_and(|m| m.is_file())
        })
    }

    /// Resolves `name` inside the template directory and returns its text,
    /// from the cache while the file is unchanged (one `stat`, no read).
    pub fn load(&self, name: &TemplateName) -> Result<Arc<Template>, TemplateError> {
        match self.unchanged(name) {
            Some(template) => Ok(template),
            None => self.load_resolved(name),
        }
    }

    /// The template a relative name led to last time, if it still leads to
    /// the same file (device, inode, size, times): resolved and checked
    /// then, the same text now, for one `stat`.
    fn unchanged(&self, name: &TemplateName) -> Option<Arc<Template>> {
        let relative = Path::new(name.as_str());
        if relative.is_absolute() {
            return None;
        }
        let meta = std::fs::metadata(self.root.join(relative)).ok()?;
        let by_name = self.read_by_name();
        let cached = by_name.get(spelled(relative))?;
        (cached.stamp == Stamp::of(&meta)).then(|| cached.template.clone())
    }

    /// [`load`](Self::load) through the path resolution and the
    /// per-file cache; remembers the file under its relative name.
    fn load_resolved(&self, name: &TemplateName) -> Result<Arc<Template>, TemplateError> {
        let path = self.resolve(name)?;
        // Symlinks are resolved by now: this catches one leading out.
        let relative = match path.strip_prefix(&self.root) {
            Ok(relative) => relative,
            Err(_) => {
                return Err(TemplateError::LinksOut {
                    name: name.to_string(),
                    path,
                });
            }
        };
        let meta = std::fs::metadata(&path).map_err(|source| TemplateError::Io {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(TemplateError::Missing {
                name: name.to_string(),
                path,
            });
        }
        let stamp = Stamp::of(&meta);
        if let Some(cached) = self.read_cache().get(&path)
            && cached.stamp == stamp
        {
            let template = cached.template.clone();
            self.remember(name, stamp, &template);
            return Ok(template);
        }
        let (text, stamp) = read(&path)?;
        let format = TemplateFormat::detect(&text);
        let template = Arc::new(Template {
            name: relative.to_string_lossy().into_owned(),
            boots_uefi: boots_uefi(format, &text),
            format,
            text: text.into(),
        });
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                path,
                Cached {
                    stamp,
                    template: template.clone(),
                },
            );
        self.remember(name, stamp, &template);
        Ok(template)
    }

    /// Notes the file a relative name led to (absolute names always take
    /// the resolution: they are checked before the file system is asked).
    fn remember(&self, name: &TemplateName, stamp: Stamp, template: &Arc<Template>) {
        if Path::new(name.as_str()).is_absolute() {
            return;
        }
        let cached = Cached {
            stamp,
            template: template.clone(),
        };
        self.by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spelled(Path::new(name.as_str())).to_owned(), cached);
    }

    fn read_by_name(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PathBuf, Cached>> {
        // Entries are inserted whole; a panicked writer leaves nothing half-done.
        self.by_name.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The canonical path `name` leads to (symlinks followed, not yet
    /// checked against the directory).
    fn resolve(&self, name: &TemplateName) -> Result<PathBuf, TemplateError> {
        let given = Path::new(name.as_str());
        let joined = if given.is_absolute() {
            // Refused before touching the file system, so that the answer
            // does not tell whether a file elsewhere exists.
            if !given.starts_with(&self.root) && !given.starts_with(&self.config.dir) {
                return Err(TemplateError::Escapes {
                    name: name.to_string(),
                });
            }
            given.to_path_buf()
        } else {
            self.root.join(given)
        };
        match std::fs::canonicalize(&joined) {
            Ok(path) => Ok(path),
            // `a/b` where `a` is a file is as missing as an absent `a/b`.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Err(TemplateError::Missing {
                    name: name.to_string(),
                    path: joined,
                })
            }
            Err(source) => Err(TemplateError::Io {
                path: joined,
                source,
            }),
        }
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PathBuf, Cached>> {
        // Entries are inserted whole; a panicked writer leaves nothing half-done.
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A relative name as the name cache keys it: `./install`, `.//install`
/// and `install` are one entry (each spelling passes `TemplateName`, and a
/// caller varying it must not grow the cache). A path compares and hashes
/// by its components — repeated separators and inner `.` fall away — but
/// a leading `.` is one: it is stripped (no allocation on a push).
fn spelled(relative: &Path) -> &Path {
    let mut path = relative;
    while let Ok(rest) = path.strip_prefix(".") {
        path = rest;
    }
    path
}

/// The largest template file read. opsi's are a few hundred bytes; a file
/// past this (a sparse one, an image put there by mistake) is refused
/// rather than read whole — a huge one aborted the depot on allocation,
/// and concurrent pushes naming a large one each held a copy.
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// Reads a file and stamps it from the open handle, so that the stamp
/// belongs to the text even if the file is replaced meanwhile.
fn read(path: &Path) -> Result<(String, Stamp), TemplateError> {
    let io_err = |source| TemplateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let before = Stamp::of(&file.metadata().map_err(io_err)?);
    let too_large = || {
        io_err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("a template is at most {MAX_TEMPLATE_BYTES} bytes"),
        ))
    };
    if before.len > MAX_TEMPLATE_BYTES {
        return Err(too_large());
    }
    let mut text = String::with_capacity(usize::try_from(before.len).unwrap_or(0));
    // Bounded also if the file grows between the `stat` and the read.
    (&mut file)
        .take(MAX_TEMPLATE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io_err)?;
    if text.len() as u64 > MAX_TEMPLATE_BYTES {
        return Err(too_large());
    }
    Ok((text, before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionRequest, Client, Fqdn, Modules, NetbootProduct, ProductId, Secret};

    fn name(n: &str) -> TemplateName {
        TemplateName::parse(n, "t").unwrap()
    }

    /// `<tmp>/templates` with a few templates, and `<tmp>/outside`.
    fn setup() -> (tempfile::TempDir, PathBuf, Templates) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("templates");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("install"), "bios\n").unwrap();
        std::fs::write(dir.join("install-grub-x64"), "grub\n").unwrap();
        std::fs::write(dir.join("sub/custom"), "custom\n").unwrap();
        std::fs::write(root.path().join("outside"), "secret\n").unwrap();
        let templates = Templates::new(TemplateConfig {
            dir: dir.clone(),
            bios: name("install"),
            uefi_x86: name("install-elilo-x86"),
            uefi_x64: name("install-grub-x64"),
        })
        .unwrap();
        (root, dir, templates)
    }

    fn bundle(template: Option<&str>, mode: BootMode) -> ClientBundle {
        ClientBundle {
            client: Client {
                fqdn: Fqdn::parse("c.example.org", "f").unwrap(),
                mac: None,
                uuid: None,
                ip_address: String::new(),
                host_key: Secret::default(),
            },
            product: NetbootProduct {
                id: ProductId::parse("p", "p").unwrap(),
                product_version: "1".into(),
                package_version: "1".into(),
                template: template.map(name),
            },
            action_request: ActionRequest::Setup,
            depot_id: None,
            service_address: String::new(),
            boot_mode: mode,
            bootimage_append: Vec::new(),
            properties: Default::default(),
            modules: Modules::default(),
            revision: 0,
        }
    }

    fn text(t: &Templates, n: &str) -> String {
        t.load(&name(n)).unwrap().text.to_string()
    }

    /// The chosen name and reason.
    fn chosen(t: &Templates, template: Option<&str>, mode: BootMode) -> (String, String) {
        let (name, reason, _) = t.choose(&bundle(template, mode));
        (name.to_string(), reason)
    }

    fn pair(name: &str, reason: &str) -> (String, String) {
        (name.to_owned(), reason.to_owned())
    }

    #[test]
    fn a_bios_client_gets_the_product_template() {
        let (_tmp, _dir, t) = setup();
        assert_eq!(
            chosen(&t, Some("sub/custom"), BootMode::Bios),
            pair("sub/custom", "the product's template")
        );
    }

    #[test]
    fn a_uefi_client_gets_the_efi_variant_of_the_product_template_if_it_exists() {
        let (_tmp, dir, t) = setup();
        std::fs::write(dir.join("sub/custom.efi"), "menuentry x {\n}\n").unwrap();
        for (mode, m) in [
            (BootMode::UefiX64, "uefi-x64"),
            (BootMode::UefiX86, "uefi-x86"),
        ] {
            assert_eq!(
                chosen(&t, Some("sub/custom"), mode),
                pair(
                    "sub/custom.efi",
                    &format!(
                        "UEFI client ({m}): the product template's UEFI variant sub/custom.efi"
                    )
                )
            );
        }
    }

    #[test]
    fn a_uefi_client_without_an_efi_variant_gets_the_uefi_default() {
        let (tmp, dir, t) = setup();
        // Neither a directory nor a file outside the directory counts.
        std::fs::create_dir(dir.join("dir.efi")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), dir.join("out.efi")).unwrap();
        // A template of no known format, and names that are no readable
        // template (a directory, a link out) keep 4.2's rule.
        for (product, what) in [
            ("sub/custom", " and is in no format pxeconf knows"),
            ("dir", ""),
            ("out", ""),
        ] {
            assert_eq!(
                chosen(&t, Some(product), BootMode::UefiX64),
                pair(
                    "install-grub-x64",
                    &format!(
                        "UEFI client (uefi-x64): the product template {product} has no UEFI variant {product}.efi{what}; the uefi-x64 default"
                    )
                )
            );
        }
        assert_eq!(
            chosen(&t, Some("sub/custom"), BootMode::UefiX86).0,
            "install-elilo-x86"
        );
    }

    #[test]
    fn a_uefi_client_gets_a_grub_elilo_or_ipxe_product_template_itself_without_an_efi_variant() {
        let (_tmp, dir, t) = setup();
        for (file, text, format) in [
            ("grubbed", "menuentry 'x' {\n  linux /k\n}\n", "grub"),
            ("elilo", "image=/k\n  append=\"a\"\n", "elilo"),
            ("ipxe", "#!ipxe\nkernel /k\nboot\n", "iPXE"),
        ] {
            std::fs::write(dir.join(file), text).unwrap();
            assert_eq!(
                chosen(&t, Some(file), BootMode::UefiX64),
                pair(
                    file,
                    &format!(
                        "UEFI client (uefi-x64): the product's template, in {format} format (no UEFI variant {file}.efi)"
                    )
                ),
                "{file}"
            );
        }
        // pxelinux's lower-case `linux` reads as grub: its `label` keeps it
        // from a UEFI client.
        std::fs::write(
            dir.join("pxe"),
            "label x\n  linux vmlinuz\n  append quiet\n",
        )
        .unwrap();
        assert_eq!(
            chosen(&t, Some("pxe"), BootMode::UefiX64).0,
            "install-grub-x64"
        );
        // A 32-bit UEFI client: 4.2's rule (opsi 4.3 has none; a grub
        // template's kernel paths are x64).
        assert_eq!(
            chosen(&t, Some("grubbed"), BootMode::UefiX86),
            pair(
                "install-elilo-x86",
                "UEFI client (uefi-x86): the product template grubbed has no UEFI variant grubbed.efi; the uefi-x86 default"
            )
        );
        // A variant beside it still wins (opsi 4.2's rule).
        std::fs::write(dir.join("grubbed.efi"), "set timeout=0\n").unwrap();
        assert_eq!(
            chosen(&t, Some("grubbed"), BootMode::UefiX64).0,
            "grubbed.efi"
        );
        // A product template that does not exist: the default, as before.
        assert_eq!(
            chosen(&t, Some("missing"), BootMode::UefiX64).0,
            "install-grub-x64"
        );
    }

    #[test]
    fn without_a_product_template_the_boot_mode_default_is_used() {
        let (_tmp, _dir, t) = setup();
        assert_eq!(
            chosen(&t, None, BootMode::Bios),
            pair("install", "no product template; the bios default")
        );
        assert_eq!(
            chosen(&t, None, BootMode::UefiX86),
            pair(
                "install-elilo-x86",
                "no product template; the uefi-x86 default"
            )
        );
        assert_eq!(chosen(&t, None, BootMode::UefiX64).0, "install-grub-x64");
    }

    #[test]
    fn obsolete_product_templates_fall_back_to_the_boot_mode_default() {
        let (_tmp, _dir, t) = setup();
        assert_eq!(
            chosen(&t, Some("install3264"), BootMode::UefiX64),
            pair(
                "install-grub-x64",
                "the product template install3264 is obsolete (as in opsi 4.3); the uefi-x64 default"
            )
        );
        assert_eq!(chosen(&t, Some("install-x64"), BootMode::Bios).0, "install");
        assert_eq!(
            chosen(&t, Some("install-x64"), BootMode::UefiX86).0,
            "install-elilo-x86"
        );
    }

    #[test]
    fn formats_are_told_from_the_lines() {
        let contrib = |name: &str| {
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("contrib/templates")
                    .join(name),
            )
            .unwrap()
        };
        use TemplateFormat as F;
        assert_eq!(F::detect(&contrib("install")), F::Pxelinux);
        assert_eq!(F::detect(&contrib("install-elilo-x86")), F::Elilo);
        assert_eq!(F::detect(&contrib("install-grub-x64")), F::Grub);
        assert_eq!(F::detect(&contrib("install-ipxe")), F::Ipxe);
        assert_eq!(F::detect("DEFAULT x\nLABEL x\n KERNEL k\n"), F::Pxelinux);
        assert_eq!(F::detect("# a comment\n\nlinux /k\n"), F::Grub);
        assert_eq!(F::detect("bios\n"), F::Unknown);
    }

    #[test]
    fn a_uefi_client_is_never_handed_a_pxelinux_template() {
        let (_tmp, dir, t) = setup();
        let pxelinux = "label x\n  kernel k\n  append initrd=r\n";
        std::fs::write(dir.join("winpe"), pxelinux).unwrap();
        // The BIOS client gets it; the UEFI default being pxelinux is refused.
        let picked = t.pick(&bundle(Some("winpe"), BootMode::Bios)).unwrap();
        assert_eq!(
            (picked.template.name.as_str(), picked.template.format),
            ("winpe", TemplateFormat::Pxelinux)
        );
        std::fs::write(dir.join("install-grub-x64"), pxelinux).unwrap();
        match t.pick(&bundle(Some("winpe"), BootMode::UefiX64)) {
            Err(e @ TemplateError::PxelinuxForUefi { .. }) => {
                let text = e.to_string();
                assert!(
                    text.starts_with("template install-grub-x64 is in pxelinux format, which a uefi-x64 client cannot boot (UEFI client (uefi-x64): the product template winpe has no UEFI variant winpe.efi and is a pxelinux template; the uefi-x64 default)"),
                    "{text}"
                );
            }
            other => panic!("expected PxelinuxForUefi, got {other:?}"),
        }
        // A grub variant beside it is taken.
        std::fs::write(dir.join("winpe.efi"), "set timeout=0\n").unwrap();
        let picked = t.pick(&bundle(Some("winpe"), BootMode::UefiX64)).unwrap();
        assert_eq!(picked.template.name, "winpe.efi");
        assert_eq!(picked.template.format, TemplateFormat::Grub);
    }

    #[test]
    fn a_relative_name_resolves_inside_the_directory() {
        let (_tmp, _dir, t) = setup();
        let custom = t.load(&name("sub/custom")).unwrap();
        assert_eq!(&*custom.text, "custom\n");
        assert_eq!(custom.name, "sub/custom");
        assert_eq!(text(&t, "install"), "bios\n");
    }

    #[test]
    fn an_absolute_name_inside_the_directory_is_accepted() {
        let (_tmp, dir, t) = setup();
        let absolute = dir.join("sub/custom").display().to_string();
        let loaded = t.load(&name(&absolute)).unwrap();
        assert_eq!(&*loaded.text, "custom\n");
        assert_eq!(loaded.name, "sub/custom");
    }

    #[test]
    fn parent_components_are_refused_by_the_name_itself() {
        assert!(TemplateName::parse("../outside", "t").is_err());
        assert!(TemplateName::parse("sub/../../outside", "t").is_err());
    }

    #[test]
    fn an_absolute_name_outside_the_directory_escapes() {
        let (tmp, _dir, t) = setup();
        let outside = tmp.path().join("outside").display().to_string();
        for n in [outside.as_str(), "/etc/passwd", "/nonexistent/file"] {
            match t.load(&name(n)) {
                Err(TemplateError::Escapes { name }) => assert_eq!(name, n),
                other => panic!("{n}: expected Escapes, got {other:?}"),
            }
        }
        // A sibling whose name merely starts like the directory is outside too.
        let sibling = tmp.path().join("templates2");
        std::fs::create_dir(&sibling).unwrap();
        std::fs::write(sibling.join("x"), "x\n").unwrap();
        let n = sibling.join("x").display().to_string();
        assert!(matches!(
            t.load(&name(&n)),
            Err(TemplateError::Escapes { .. })
        ));
    }

    #[test]
    fn a_name_served_from_the_cache_is_checked_again_once_it_leads_elsewhere() {
        let (tmp, dir, t) = setup();
        std::fs::write(dir.join("swap"), "inside\n").unwrap();
        assert_eq!(&*t.load(&name("swap")).unwrap().text, "inside\n");
        let again = t.load(&name("swap")).unwrap();
        assert!(Arc::ptr_eq(&again, &t.load(&name("swap")).unwrap()));
        // The name now leads out of the directory: refused, not served.
        std::fs::remove_file(dir.join("swap")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), dir.join("swap")).unwrap();
        assert!(matches!(
            t.load(&name("swap")),
            Err(TemplateError::LinksOut { .. })
        ));
        std::fs::remove_file(dir.join("swap")).unwrap();
        assert!(matches!(
            t.load(&name("swap")),
            Err(TemplateError::Missing { .. })
        ));
    }

    #[test]
    fn a_symlink_leading_out_of_the_directory_is_refused_as_the_depots_own() {
        let (tmp, dir, t) = setup();
        std::os::unix::fs::symlink(tmp.path().join("outside"), dir.join("sneaky")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), dir.join("up")).unwrap();
        for n in ["sneaky", "up/outside"] {
            match t.load(&name(n)) {
                Err(TemplateError::LinksOut { name, .. }) => assert_eq!(name, n),
                other => panic!("{n}: expected LinksOut, got {other:?}"),
            }
        }
        let absolute = dir.join("sneaky").display().to_string();
        assert!(matches!(
            t.load(&name(&absolute)),
            Err(TemplateError::LinksOut { .. })
        ));
    }

    #[test]
    fn a_symlink_staying_inside_is_followed() {
        let (_tmp, dir, t) = setup();
        std::os::unix::fs::symlink(dir.join("sub/custom"), dir.join("alias")).unwrap();
        let loaded = t.load(&name("alias")).unwrap();
        assert_eq!(&*loaded.text, "custom\n");
        assert_eq!(loaded.name, "sub/custom", "named after the file it reads");
    }

    #[test]
    fn a_missing_template_names_the_file_and_says_it_as_given() {
        let (_tmp, _dir, t) = setup();
        match t.load(&name("install-elilo-x86")) {
            Err(e @ TemplateError::Missing { .. }) => {
                let TemplateError::Missing { path, name } = &e else {
                    unreachable!()
                };
                assert_eq!(path, &t.root.join("install-elilo-x86"));
                assert_eq!(name, "install-elilo-x86");
                // The depot's directory stays out of what a caller reads.
                assert_eq!(
                    e.to_string(),
                    "template \"install-elilo-x86\" does not exist on the depot"
                );
            }
            other => panic!("expected Missing, got {other:?}"),
        }
        // A directory is not a template either, nor is a path through a file.
        for n in ["sub", "install/x"] {
            assert!(
                matches!(t.load(&name(n)), Err(TemplateError::Missing { .. })),
                "{n}"
            );
        }
    }

    #[test]
    fn the_directory_must_exist_but_the_defaults_need_not() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = |dir: PathBuf| TemplateConfig {
            dir,
            bios: name("nope"),
            uefi_x86: name("nope"),
            uefi_x64: name("nope"),
        };
        assert!(Templates::new(cfg(tmp.path().to_path_buf())).is_ok());
        let missing = tmp.path().join("missing");
        match Templates::new(cfg(missing.clone())) {
            Err(TemplateError::Dir { path, .. }) => assert_eq!(path, missing),
            Err(other) => panic!("expected Dir, got {other:?}"),
            Ok(_) => panic!("a missing directory was accepted"),
        }
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            Templates::new(cfg(file)),
            Err(TemplateError::Dir { .. })
        ));
    }

    #[test]
    fn a_template_file_past_the_bound_is_refused_not_read() {
        let (_tmp, dir, t) = setup();
        // A terabyte, sparse: reading it whole aborted the process.
        let huge = std::fs::File::create(dir.join("huge")).unwrap();
        huge.set_len(1 << 40).unwrap();
        std::fs::write(dir.join("big"), vec![b'#'; MAX_TEMPLATE_BYTES as usize + 1]).unwrap();
        std::fs::write(dir.join("fits"), vec![b'#'; MAX_TEMPLATE_BYTES as usize]).unwrap();
        for n in ["huge", "big"] {
            match t.load(&name(n)) {
                Err(TemplateError::Io { source, .. }) => {
                    assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge, "{n}")
                }
                other => panic!("{n}: expected a refusal, got {other:?}"),
            }
        }
        assert_eq!(t.load(&name("fits")).unwrap().text.len(), 1 << 20);
    }

    #[test]
    fn spellings_of_one_name_share_one_cache_entry() {
        let (_tmp, _dir, t) = setup();
        let first = t.load(&name("sub/custom")).unwrap();
        for n in [
            "./sub/custom",
            ".//sub//custom",
            "sub/./custom",
            "././sub/custom",
        ] {
            assert!(Arc::ptr_eq(&first, &t.load(&name(n)).unwrap()), "{n}");
        }
        assert_eq!(t.read_by_name().len(), 1);
    }

    #[test]
    fn an_unchanged_file_is_served_from_the_cache() {
        let (_tmp, _dir, t) = setup();
        let first = t.load(&name("install")).unwrap();
        let again = t.load(&name("install")).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "read twice");
        // Another name for the same file shares the entry.
        let absolute = t.root.join("install").display().to_string();
        assert!(Arc::ptr_eq(&first, &t.load(&name(&absolute)).unwrap()));
    }

    #[test]
    fn the_cache_rereads_a_changed_file() {
        let (_tmp, dir, t) = setup();
        let first = t.load(&name("install")).unwrap();
        assert_eq!(&*first.text, "bios\n");
        // Same length, rewritten in place: the mtime tells. It is set
        // explicitly, a second on: a fresh one could equal the old on a file
        // system with coarse timestamps.
        let path = dir.join("install");
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, "BIOS\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime + std::time::Duration::from_secs(1))
            .unwrap();
        let second = t.load(&name("install")).unwrap();
        assert_eq!(&*second.text, "BIOS\n");
        // Replaced by rename, with the old length and mtime: a new inode.
        let staged = dir.join(".install.new");
        std::fs::write(&staged, "Bios\n").unwrap();
        let mtime = std::fs::metadata(dir.join("install"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&staged, dir.join("install")).unwrap();
        assert_eq!(text(&t, "install"), "Bios\n");
        assert_eq!(t.read_cache().len(), 1, "one entry per file");
    }

    #[test]
    fn templates_are_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Templates>();
        assert_send_sync::<Template>();
    }
}
