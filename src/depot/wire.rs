//! The depot's own messages: domain → wire.

use super::core::Applied;
use super::writer::{ConfigInfo, HeldState};
use crate::proto;
use crate::wire::timestamp;

impl From<Applied> for proto::SetPxeConfigResponse {
    fn from(a: Applied) -> Self {
        proto::SetPxeConfigResponse {
            files: a.outcome.files,
            template: a.outcome.template,
            revision: a.outcome.revision,
            template_reason: a.template_reason,
        }
    }
}

impl From<ConfigInfo> for proto::PxeConfigInfo {
    fn from(c: ConfigInfo) -> Self {
        proto::PxeConfigInfo {
            fqdn: c.fqdn.to_string(),
            product_id: c.product_id.to_string(),
            files: c.files,
            template: c.template,
            since: Some(timestamp(c.since)),
            revision: c.revision,
            action_request: c.action_request.to_string(),
            state: match c.state {
                HeldState::Held => proto::PxeConfigState::Held,
                HeldState::ReadFilePresent => proto::PxeConfigState::ReadFilePresent,
            } as i32,
        }
    }
}
