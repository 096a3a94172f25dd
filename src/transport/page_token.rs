//! Opaque page tokens for `ListEvents`: the cursor of the last event a page
//! returned, in URL-safe base64. Clients must not read into them.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use crate::{
    domain::{DomainError, Micros},
    storage::{Cursor, ListingCursor},
};

const VERSION: u8 = 1;
const FIELD: &str = "page_token";

pub fn encode(cursor: &Cursor) -> String {
    let mut raw = Vec::with_capacity(9 + cursor.event_id.len());
    raw.push(VERSION);
    raw.extend_from_slice(&cursor.occurred_at.0.to_be_bytes());
    raw.extend_from_slice(cursor.event_id.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// Reads a token this server issued; anything else is a clear error.
pub fn decode(token: &str, max_id_bytes: usize) -> Result<Cursor, DomainError> {
    let garbled = || DomainError::invalid(FIELD, "not a page token issued by this service");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| garbled())?;
    let (&version, rest) = raw.split_first().ok_or_else(garbled)?;
    if version != VERSION || rest.len() < 9 || rest.len() > 8 + max_id_bytes {
        return Err(garbled());
    }
    let (at, id) = rest.split_at(8);
    let at = i64::from_be_bytes(at.try_into().map_err(|_| garbled())?);
    let event_id = String::from_utf8(id.to_vec()).map_err(|_| garbled())?;
    if at < 0 {
        return Err(garbled());
    }
    Ok(Cursor {
        occurred_at: Micros(at),
        event_id,
    })
}

const LISTING_VERSION: u8 = 2;

/// A `ListJourneys` token: the instant of the page's last customer and how
/// many customers at that instant were returned so far.
pub fn encode_listing(cursor: &ListingCursor) -> String {
    let mut raw = Vec::with_capacity(17);
    raw.push(LISTING_VERSION);
    raw.extend_from_slice(&cursor.at.0.to_be_bytes());
    raw.extend_from_slice(&(cursor.skip as u64).to_be_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_listing(token: &str) -> Result<ListingCursor, DomainError> {
    let garbled = || DomainError::invalid(FIELD, "not a page token issued by this service");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| garbled())?;
    if raw.len() != 17 || raw[0] != LISTING_VERSION {
        return Err(garbled());
    }
    let at = i64::from_be_bytes(raw[1..9].try_into().map_err(|_| garbled())?);
    let skip = u64::from_be_bytes(raw[9..17].try_into().map_err(|_| garbled())?);
    // No instant holds billions of customers: a larger skip is forged (and
    // Redis would refuse an offset past i64::MAX as a store error).
    let skip = u32::try_from(skip).map_err(|_| garbled())? as usize;
    Ok(ListingCursor {
        at: Micros(at),
        skip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let cursor = Cursor {
            occurred_at: Micros(1_763_800_000_123_456),
            event_id: "01JABC".into(),
        };
        assert_eq!(decode(&encode(&cursor), 128), Ok(cursor));
    }

    #[test]
    fn listing_round_trip_and_garbage() {
        let cursor = ListingCursor {
            at: Micros(1_763_800_000_123_456),
            skip: 3,
        };
        assert_eq!(decode_listing(&encode_listing(&cursor)), Ok(cursor));
        let event_token = encode(&Cursor {
            occurred_at: Micros(1),
            event_id: "x".into(),
        });
        // A forged skip past what any instant holds.
        let mut forged = vec![LISTING_VERSION];
        forged.extend_from_slice(&1_i64.to_be_bytes());
        forged.extend_from_slice(&(u64::from(u32::MAX) + 1).to_be_bytes());
        let forged = URL_SAFE_NO_PAD.encode(forged);
        for token in ["", "!!!", event_token.as_str(), forged.as_str()] {
            assert_eq!(
                decode_listing(token).expect_err(token).field(),
                "page_token"
            );
        }
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for token in ["", "!!!", "AQ", "Ag", &URL_SAFE_NO_PAD.encode([1u8; 4])] {
            let err = decode(token, 128).expect_err(token);
            assert_eq!(err.field(), "page_token");
        }
    }
}
