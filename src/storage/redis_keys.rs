//! The Redis keys of a profile and of the identity index.
//!
//! All of a profile's keys share the `{<profile id>}` hash tag, so every
//! script and pipeline on a profile touches one Redis Cluster slot. The id
//! goes inside the tag as it is: the suffixes after `}:` are fixed and hold
//! no `}`, so no two profiles' keys can be equal, whatever the ids hold.
//! Each identity of the index is a key of its own (its own slot).

use crate::domain::{CustomerId, Identity};

/// A profile's keys, made with one allocation (they are made on every call).
pub(super) struct Keys {
    /// The keys one after the other; `ends[i]` is where key `i` ends.
    buf: String,
    ends: [usize; SUFFIXES.len()],
}

/// The keys' suffixes, in the order of `Keys`' accessors.
const SUFFIXES: [&str; 9] = [
    "tl", "ids", "sum", "contacts", "cids", "idents", "merges", "alias", "jny",
];

impl Keys {
    pub fn of(profile: &CustomerId) -> Self {
        let id = profile.as_str();
        let mut buf = String::with_capacity(SUFFIXES.len() * (id.len() + 20));
        let mut ends = [0; SUFFIXES.len()];
        for (end, suffix) in ends.iter_mut().zip(SUFFIXES) {
            buf.push_str("journey:{");
            buf.push_str(id);
            buf.push_str("}:");
            buf.push_str(suffix);
            *end = buf.len();
        }
        Self { buf, ends }
    }

    fn key(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// ZSET of encoded events by occurred_at.
    pub fn timeline(&self) -> &str {
        self.key(0)
    }
    /// HASH of event ids (idempotency).
    pub fn ids(&self) -> &str {
        self.key(1)
    }
    /// HASH of the summary figures.
    pub fn summary(&self) -> &str {
        self.key(2)
    }
    /// ZSET, the contact index.
    pub fn contacts(&self) -> &str {
        self.key(3)
    }
    /// HASH of contact ids to entries, and the contact version.
    pub fn contact_ids(&self) -> &str {
        self.key(4)
    }
    /// HASH of the profile's identities.
    pub fn idents(&self) -> &str {
        self.key(5)
    }
    /// HASH of the profiles merged into this one.
    pub fn merges(&self) -> &str {
        self.key(6)
    }
    /// STRING, set once the profile is merged away.
    pub fn alias(&self) -> &str {
        self.key(7)
    }
    /// HASH of the journey states.
    pub fn journeys(&self) -> &str {
        self.key(8)
    }

    /// Every key of the profile, in the order the append and reserve
    /// scripts take them (see append.lua).
    pub fn scripts_keys(&self) -> [&str; 9] {
        let [timeline, ids, summary, contacts, cids, idents, merges] = self.data();
        [
            timeline,
            ids,
            summary,
            contacts,
            cids,
            idents,
            merges,
            self.alias(),
            self.journeys(),
        ]
    }

    /// The keys holding the profile's data (all but the alias and the
    /// journey states), in the order the append script takes them.
    pub fn data(&self) -> [&str; 7] {
        [
            self.timeline(),
            self.ids(),
            self.summary(),
            self.contacts(),
            self.contact_ids(),
            self.idents(),
            self.merges(),
        ]
    }
}

/// An identity packed as `type US value`, as profiles record it.
pub(super) fn packed_identity(identity: &Identity) -> String {
    format!("{}\u{1f}{}", identity.kind, identity.value)
}

/// The identity index key of an identity.
pub(super) fn index_key(identity: &Identity) -> String {
    format!("journey:ident:{{{}}}", packed_identity(identity))
}

/// The identity index key of an identity packed as `type US value` (as a
/// profile's identities hash holds it).
pub(super) fn index_key_of_packed(packed: &[u8]) -> Vec<u8> {
    [b"journey:ident:{".as_slice(), packed, b"}"].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_has_one_index_key_however_it_is_given() {
        let identity = Identity {
            kind: "email".into(),
            value: "a@example.com".into(),
        };
        let packed = packed_identity(&identity);
        assert_eq!(
            index_key(&identity),
            "journey:ident:{email\u{1f}a@example.com}"
        );
        assert_eq!(
            index_key_of_packed(packed.as_bytes()),
            index_key(&identity).into_bytes()
        );
    }

    #[test]
    fn keys_share_the_profile_hash_tag() {
        let keys = Keys::of(&CustomerId::from_trusted("c:1"));
        assert_eq!(keys.timeline(), "journey:{c:1}:tl");
        assert_eq!(keys.alias(), "journey:{c:1}:alias");
        assert_eq!(keys.journeys(), "journey:{c:1}:jny");
        assert_eq!(
            keys.data(),
            [
                "journey:{c:1}:tl",
                "journey:{c:1}:ids",
                "journey:{c:1}:sum",
                "journey:{c:1}:contacts",
                "journey:{c:1}:cids",
                "journey:{c:1}:idents",
                "journey:{c:1}:merges",
            ]
        );
    }
}
