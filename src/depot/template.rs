//! STUB until the real module lands.
#![allow(missing_docs)]
use crate::domain::{BootMode, ClientBundle, TemplateName};
use std::path::PathBuf;
use std::sync::Arc;
#[derive(Debug, Clone)]
pub struct TemplateConfig {
    pub dir: PathBuf,
    pub bios: TemplateName,
    pub uefi_x86: TemplateName,
    pub uefi_x64: TemplateName,
}
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name} escapes the template directory")]
    Escapes { name: String },
    #[error("template {path} does not exist")]
    Missing { path: PathBuf },
    #[error("reading template {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}
pub struct Template {
    pub name: String,
    pub text: Arc<str>,
}
pub struct Templates {
    cfg: TemplateConfig,
}
impl Templates {
    pub fn new(cfg: TemplateConfig) -> Result<Self, TemplateError> {
        Ok(Self { cfg })
    }
    pub fn choose<'a>(&'a self, bundle: &'a ClientBundle) -> &'a TemplateName {
        match &bundle.product.template {
            Some(t) if !t.is_obsolete() => t,
            _ => match bundle.boot_mode {
                BootMode::Bios => &self.cfg.bios,
                BootMode::UefiX86 => &self.cfg.uefi_x86,
                BootMode::UefiX64 => &self.cfg.uefi_x64,
            },
        }
    }
    pub fn load(&self, name: &TemplateName) -> Result<Arc<Template>, TemplateError> {
        let path = self.cfg.dir.join(name.as_str());
        let text = std::fs::read_to_string(&path).map_err(|_| TemplateError::Missing { path })?;
        Ok(Arc::new(Template {
            name: name.to_string(),
            text: text.into(),
        }))
    }
}
