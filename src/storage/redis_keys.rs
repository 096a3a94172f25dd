//! The Redis keys of a profile and of the identity index.
//!
//! All of a profile's keys share the `{<profile id>}` hash tag, so every
//! script and pipeline on a profile touches one Redis Cluster slot. The id
//! goes inside the tag as it is: the suffixes after `}:` are fixed and hold
//! no `}`, so no two profiles' keys can be equal, whatever the ids hold.
//! Each identity of the index is a key of its own (its own slot).

use crate::domain::{CustomerId, Identity};

pub(super) struct Keys {
    pub timeline: String,
    pub ids: String,
    pub summary: String,
    pub contacts: String,
    pub contact_ids: String,
    pub idents: String,
    pub merges: String,
    pub alias: String,
    pub journeys: String,
}

impl Keys {
    pub fn of(profile: &CustomerId) -> Self {
        let tag = format!("journey:{{{profile}}}");
        Self {
            timeline: format!("{tag}:tl"),
            ids: format!("{tag}:ids"),
            summary: format!("{tag}:sum"),
            contacts: format!("{tag}:contacts"),
            contact_ids: format!("{tag}:cids"),
            idents: format!("{tag}:idents"),
            merges: format!("{tag}:merges"),
            alias: format!("{tag}:alias"),
            journeys: format!("{tag}:jny"),
        }
    }

    /// The keys holding the profile's data (all but the alias), in the
    /// order the append script takes them.
    pub fn data(&self) -> [&str; 7] {
        [
            &self.timeline,
            &self.ids,
            &self.summary,
            &self.contacts,
            &self.contact_ids,
            &self.idents,
            &self.merges,
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
