//! Template choice and loading. A product's own template wins unless it is
//! empty or one of opsi's obsolete names; otherwise the default for the
//! client's boot mode. Every name resolves inside the template directory
//! (symlinks followed, then checked); texts are cached and re-read only when
//! the file's modification time or size changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::domain::{BootMode, ClientBundle, TemplateName};

/// The template directory and the per-boot-mode defaults.
#[derive(Debug, Clone)]
pub struct TemplateConfig {
    /// The directory templates live in.
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
    /// The template file does not exist.
    #[error("template file {path} does not exist")]
    Missing {
        /// The file looked for.
        path: PathBuf,
    },
    /// The template file could not be read.
    #[error("reading template {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The template directory is unusable.
    #[error("template directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A loaded template.
#[derive(Debug)]
pub struct Template {
    /// Its path relative to the template directory.
    pub name: String,
    /// Its text.
    pub text: Arc<str>,
}

struct Cached {
    stamp: (Option<SystemTime>, u64),
    template: Arc<Template>,
}

/// The templates of a depot; shared by all handlers.
pub struct Templates {
    config: TemplateConfig,
    /// The canonical template directory.
    root: PathBuf,
    cache: RwLock<HashMap<PathBuf, Cached>>,
}

impl Templates {
    /// Opens the template directory (which must exist). The defaults need
    /// not exist yet: a missing one fails the pushes that need it.
    pub fn new(config: TemplateConfig) -> Result<Self, TemplateError> {
        let root = std::fs::canonicalize(&config.dir).map_err(|source| TemplateError::Dir {
            path: config.dir.clone(),
            source,
        })?;
        if !root.is_dir() {
            return Err(TemplateError::Dir {
                path: config.dir.clone(),
                source: std::io::Error::other("not a directory"),
            });
        }
        Ok(Self {
            config,
            root,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The template a bundle asks for.
    pub fn choose<'a>(&'a self, bundle: &'a ClientBundle) -> &'a TemplateName {
        match &bundle.product.template {
            Some(t) if !t.is_obsolete() => t,
            _ => match bundle.boot_mode {
                BootMode::Bios => &self.config.bios,
                BootMode::UefiX86 => &self.config.uefi_x86,
                BootMode::UefiX64 => &self.config.uefi_x64,
            },
        }
    }

    /// Resolves and reads a template, from the cache when the file is unchanged.
    pub fn load(&self, name: &TemplateName) -> Result<Arc<Template>, TemplateError> {
        let given = Path::new(name.as_str());
        let joined = if given.is_absolute() {
            given.to_path_buf()
        } else {
            self.root.join(given)
        };
        // Refuse before touching the file system when the name itself points elsewhere.
        if given.is_absolute()
            && !given.starts_with(&self.root)
            && !given.starts_with(&self.config.dir)
        {
            return Err(TemplateError::Escapes {
                name: name.to_string(),
            });
        }
        let path = match std::fs::canonicalize(&joined) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TemplateError::Missing { path: joined });
            }
            Err(source) => {
                return Err(TemplateError::Io {
                    path: joined,
                    source,
                });
            }
        };
        // A symlink may lead out of the directory.
        let Ok(relative) = path.strip_prefix(&self.root) else {
            return Err(TemplateError::Escapes {
                name: name.to_string(),
            });
        };
        let meta = std::fs::metadata(&path).map_err(|source| TemplateError::Io {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(TemplateError::Missing { path });
        }
        let stamp = (meta.modified().ok(), meta.len());
        if let Some(cached) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&path)
            .filter(|c| c.stamp == stamp)
        {
            return Ok(cached.template.clone());
        }
        let text = std::fs::read_to_string(&path).map_err(|source| TemplateError::Io {
            path: path.clone(),
            source,
        })?;
        let template = Arc::new(Template {
            name: relative.display().to_string(),
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
        Ok(template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionRequest, Client, Fqdn, Modules, NetbootProduct, ProductId, Secret};

    fn name(n: &str) -> TemplateName {
        TemplateName::parse(n, "t").unwrap()
    }

    fn setup() -> (tempfile::TempDir, Templates) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("templates");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("install"), "bios\n").unwrap();
        std::fs::write(dir.join("install-grub-x64"), "grub\n").unwrap();
        std::fs::write(dir.join("sub/custom"), "custom\n").unwrap();
        std::fs::write(root.path().join("outside"), "secret\n").unwrap();
        std::os::unix::fs::symlink(root.path().join("outside"), dir.join("sneaky")).unwrap();
        std::os::unix::fs::symlink(dir.join("install"), dir.join("alias")).unwrap();
        let templates = Templates::new(TemplateConfig {
            dir,
            bios: name("install"),
            uefi_x86: name("install-elilo-x86"),
            uefi_x64: name("install-grub-x64"),
        })
        .unwrap();
        (root, templates)
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

    #[test]
    fn the_product_template_wins_unless_empty_or_obsolete() {
        let (_root, t) = setup();
        assert_eq!(
            t.choose(&bundle(Some("sub/custom"), BootMode::Bios))
                .as_str(),
            "sub/custom"
        );
        assert_eq!(t.choose(&bundle(None, BootMode::Bios)).as_str(), "install");
        assert_eq!(
            t.choose(&bundle(None, BootMode::UefiX64)).as_str(),
            "install-grub-x64"
        );
        assert_eq!(
            t.choose(&bundle(None, BootMode::UefiX86)).as_str(),
            "install-elilo-x86"
        );
        assert_eq!(
            t.choose(&bundle(Some("install3264"), BootMode::UefiX64))
                .as_str(),
            "install-grub-x64"
        );
        assert_eq!(
            t.choose(&bundle(Some("install-x64"), BootMode::Bios))
                .as_str(),
            "install"
        );
    }

    #[test]
    fn names_resolve_inside_the_directory_only() {
        let (root, t) = setup();
        assert_eq!(&*t.load(&name("sub/custom")).unwrap().text, "custom\n");
        assert_eq!(t.load(&name("sub/custom")).unwrap().name, "sub/custom");
        // A symlink that stays inside is fine and reports its target.
        assert_eq!(t.load(&name("alias")).unwrap().name, "install");
        let inside = root.path().join("templates/install").display().to_string();
        assert_eq!(&*t.load(&name(&inside)).unwrap().text, "bios\n");
        let outside = root.path().join("outside").display().to_string();
        assert!(matches!(
            t.load(&name(&outside)),
            Err(TemplateError::Escapes { .. })
        ));
        assert!(matches!(
            t.load(&name("/etc/passwd")),
            Err(TemplateError::Escapes { .. })
        ));
        assert!(matches!(
            t.load(&name("sneaky")),
            Err(TemplateError::Escapes { .. })
        ));
        match t.load(&name("nosuch")) {
            Err(e @ TemplateError::Missing { .. }) => {
                assert!(e.to_string().contains("nosuch"), "{e}")
            }
            other => panic!("expected Missing, got {other:?}"),
        }
        assert!(matches!(
            t.load(&name("sub")),
            Err(TemplateError::Missing { .. })
        ));
    }

    #[test]
    fn the_cache_rereads_a_changed_file() {
        let (root, t) = setup();
        let first = t.load(&name("install")).unwrap();
        let again = t.load(&name("install")).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "an unchanged file is served from the cache"
        );
        // A different length is a change even within the mtime granularity.
        std::fs::write(root.path().join("templates/install"), "bios, edited\n").unwrap();
        assert_eq!(&*t.load(&name("install")).unwrap().text, "bios, edited\n");
    }
}
