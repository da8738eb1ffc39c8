//! A status as one item's result inside a batch answer: the same
//! `google.rpc.Status` (code, message, details) that the
//! `grpc-status-details-bin` trailer carries for a whole call, so that a
//! batch item's error reads exactly as the unary call's would.

use prost::Message;
use tonic::{Code, Status};
use tonic_types::pb;

/// `status` as a batch item's error.
pub fn to_item(status: &Status) -> pb::Status {
    // tonic keeps the details as the encoded `google.rpc.Status` that goes
    // into the trailer (code and message repeated there).
    let decoded = (!status.details().is_empty())
        .then(|| pb::Status::decode(status.details()).ok())
        .flatten();
    pb::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: decoded.map(|d| d.details).unwrap_or_default(),
    }
}

/// A batch item's error as the status the unary call would have failed with.
pub fn from_item(item: pb::Status) -> Status {
    let code = Code::from_i32(item.code);
    if item.details.is_empty() {
        return Status::new(code, item.message);
    }
    let message = item.message.clone();
    Status::with_details(code, message, item.encode_to_vec().into())
}

#[cfg(test)]
mod tests {
    use super::super::aborted::{AbortReason, Aborted};
    use super::super::problem::{Problem, reason_of};
    use super::super::reason::Reason;
    use super::*;

    #[test]
    fn an_items_status_keeps_code_message_and_details() {
        let aborted = Aborted {
            reason: AbortReason::AlreadyRead,
            revision: 7,
            epoch: "e1".into(),
            highest: 9,
        };
        let status = aborted.to_status("read already");
        // Through the wire form, as a batch answer carries it.
        let item = pb::Status::decode(to_item(&status).encode_to_vec().as_slice()).unwrap();
        let back = from_item(item);
        assert_eq!(back.code(), Code::Aborted);
        assert_eq!(back.message(), "read already");
        assert_eq!(Aborted::from_status(&back), Some(aborted));

        let problem = Problem::new(Reason::TemplateMissing, "no such template").into_status();
        let back = from_item(to_item(&problem));
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&back).as_deref(), Some("TEMPLATE_MISSING"));

        let plain = from_item(to_item(&Status::unavailable("down")));
        assert_eq!((plain.code(), plain.message()), (Code::Unavailable, "down"));
        assert!(plain.details().is_empty());
    }
}
