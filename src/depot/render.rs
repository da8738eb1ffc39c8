//! STUB until the real module lands.
#![allow(missing_docs)]
use crate::domain::ClientBundle;
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("UEFI boot mode {mode} needs the uefi module")]
    UefiNotLicensed { mode: &'static str },
    #[error("hash: {0}")]
    Hash(String),
}
pub struct Renderer;
impl Renderer {
    pub fn new() -> Self {
        Self
    }
    pub fn render(&self, template: &str, bundle: &ClientBundle) -> Result<String, RenderError> {
        if bundle.boot_mode.is_uefi() && !bundle.modules.uefi {
            return Err(RenderError::UefiNotLicensed {
                mode: bundle.boot_mode.as_str(),
            });
        }
        Ok(template.to_owned())
    }
}
