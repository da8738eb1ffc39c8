//! The depot's own messages: domain → wire.

use super::core::Applied;
use super::error::Error;
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

/// One bundle's result in a batch: written, or the status `SetPxeConfig`
/// would have failed with.
pub(super) fn push_result(result: Result<Applied, Error>) -> proto::PxeConfigPushResult {
    let result = match result {
        Ok(applied) => proto::pxe_config_push_result::Result::Written(applied.into()),
        Err(error) => proto::pxe_config_push_result::Result::Error(crate::status::to_item(
            &tonic::Status::from(error),
        )),
    };
    proto::PxeConfigPushResult {
        result: Some(result),
    }
}
