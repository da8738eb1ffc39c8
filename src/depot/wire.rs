//! The depot's own messages: domain → wire.

use super::writer::{ConfigInfo, HeldState, SetOutcome};
use crate::proto;
use crate::wire::timestamp;

impl From<SetOutcome> for proto::SetPxeConfigResponse {
    fn from(o: SetOutcome) -> Self {
        proto::SetPxeConfigResponse {
            files: o.files,
            template: o.template,
            revision: o.revision,
            template_reason: Default::default(),
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
