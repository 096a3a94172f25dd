//! `journey.v1.CheckContactBatchRequest` as the server reads it: the
//! generated message's fields, with the customers past a cap counted
//! instead of decoded. An empty reference is 2 bytes on the wire and 24 to
//! 48 in memory, so a 16 MiB request of them would take hundreds of MiB
//! before its count is refused.

use bytes::{Buf, BufMut};
use prost::{
    encoding::{self, DecodeContext, WireType},
    DecodeError, Message,
};

use super::CustomerRef;

/// Most customers (`customers` and `customer_ids` together) a request
/// decodes; those past it are only counted. `--max-check-batch` may not
/// exceed it.
pub const MAX_DECODED_CUSTOMERS: usize = 100_000;

#[derive(Clone, PartialEq, Default, Debug)]
pub struct CheckContactBatchRequest {
    pub customers: Vec<CustomerRef>,
    pub customer_ids: Vec<String>,
    pub channel: String,
    pub reason: String,
    pub campaign_id: String,
    pub at: Option<prost_types::Timestamp>,
    pub r#type: String,
    /// Customers past `MAX_DECODED_CUSTOMERS`, skipped unread (decoding only).
    pub skipped: usize,
}

impl Message for CheckContactBatchRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::message::encode_repeated(1, &self.customers, buf);
        encoding::string::encode_repeated(2, &self.customer_ids, buf);
        for (tag, text) in [
            (3, &self.channel),
            (4, &self.reason),
            (5, &self.campaign_id),
        ] {
            if !text.is_empty() {
                encoding::string::encode(tag, text, buf);
            }
        }
        if let Some(at) = &self.at {
            encoding::message::encode(6, at, buf);
        }
        if !self.r#type.is_empty() {
            encoding::string::encode(7, &self.r#type, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let held = self.customers.len() + self.customer_ids.len();
        let (field, merged) = match tag {
            1 | 2 if held >= MAX_DECODED_CUSTOMERS => {
                self.skipped += 1;
                return encoding::skip_field(wire_type, tag, buf, ctx);
            }
            1 => (
                "customers",
                encoding::message::merge_repeated(wire_type, &mut self.customers, buf, ctx),
            ),
            2 => (
                "customer_ids",
                encoding::string::merge_repeated(wire_type, &mut self.customer_ids, buf, ctx),
            ),
            3 => (
                "channel",
                encoding::string::merge(wire_type, &mut self.channel, buf, ctx),
            ),
            4 => (
                "reason",
                encoding::string::merge(wire_type, &mut self.reason, buf, ctx),
            ),
            5 => (
                "campaign_id",
                encoding::string::merge(wire_type, &mut self.campaign_id, buf, ctx),
            ),
            6 => (
                "at",
                encoding::message::merge(
                    wire_type,
                    self.at.get_or_insert_with(Default::default),
                    buf,
                    ctx,
                ),
            ),
            7 => (
                "type",
                encoding::string::merge(wire_type, &mut self.r#type, buf, ctx),
            ),
            _ => return encoding::skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut e| {
            e.push("CheckContactBatchRequest", field);
            e
        })
    }

    fn encoded_len(&self) -> usize {
        let text = |tag, text: &String| {
            if text.is_empty() {
                0
            } else {
                encoding::string::encoded_len(tag, text)
            }
        };
        encoding::message::encoded_len_repeated(1, &self.customers)
            + encoding::string::encoded_len_repeated(2, &self.customer_ids)
            + text(3, &self.channel)
            + text(4, &self.reason)
            + text(5, &self.campaign_id)
            + self
                .at
                .as_ref()
                .map_or(0, |at| encoding::message::encoded_len(6, at))
            + text(7, &self.r#type)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    #[test]
    fn reads_and_writes_what_the_generated_message_does() {
        let full = pb::CheckContactBatchRequest {
            customers: vec![
                pb::CustomerRef {
                    r#ref: Some(pb::customer_ref::Ref::Identity(pb::Identity {
                        r#type: "email".into(),
                        value: "a@x.org".into(),
                    })),
                },
                pb::CustomerRef {
                    r#ref: Some(pb::customer_ref::Ref::ProfileId("~01".into())),
                },
            ],
            customer_ids: vec!["c1".into(), String::new()],
            channel: "email".into(),
            reason: "campaign_offer".into(),
            campaign_id: "spring".into(),
            at: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 6,
            }),
            r#type: "email_sent".into(),
        };
        for message in [full, pb::CheckContactBatchRequest::default()] {
            let bytes = message.encode_to_vec();
            let read = CheckContactBatchRequest::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(read.customers.len(), message.customers.len());
            assert_eq!(read.customer_ids, message.customer_ids);
            assert_eq!(
                (&read.channel, &read.reason, &read.campaign_id, &read.r#type),
                (
                    &message.channel,
                    &message.reason,
                    &message.campaign_id,
                    &message.r#type
                )
            );
            assert_eq!(read.at, message.at);
            assert_eq!(read.skipped, 0);
            assert_eq!(read.encoded_len(), bytes.len());
            assert_eq!(read.encode_to_vec(), bytes);
        }
        let bad = CheckContactBatchRequest::decode([0x1a_u8, 0x01, 0xff].as_slice())
            .expect_err("not UTF-8");
        assert!(bad.to_string().contains("channel"), "{bad}");
    }

    #[test]
    fn customers_past_the_decoding_cap_are_counted_not_kept() {
        // Empty references and ids, 2 bytes each: tag, length 0.
        let mut wire = [0x0a_u8, 0x00].repeat(MAX_DECODED_CUSTOMERS - 1);
        wire.extend([0x12, 0x00].repeat(3));
        wire.extend([0x1a, 0x01, b'x']);
        let read = CheckContactBatchRequest::decode(wire.as_slice()).expect("decodes");
        assert_eq!(read.customers.len(), MAX_DECODED_CUSTOMERS - 1);
        assert_eq!(read.customer_ids.len(), 1);
        assert_eq!(read.skipped, 2);
        assert_eq!(read.channel, "x");
    }
}
