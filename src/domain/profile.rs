//! Profiles: what is known to be one person. The rules that protect data
//! when profiles merge, and which profile survives a merge.

use std::collections::{BTreeMap, BTreeSet};

use super::{identity::Identity, CustomerId, Micros};

/// An identity linked to a profile, with where it was first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedIdentity {
    pub identity: Identity,
    pub first_seen: Micros,
    /// Empty when the identity came by a link rather than an event.
    pub first_channel: String,
}

/// A profile merged into another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRecord {
    pub from: CustomerId,
    pub at: Micros,
}

/// What keeps a merge from fusing two real customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRules {
    /// Identity types a profile holds at most one value of.
    pub unique_types: BTreeSet<String>,
    /// Most identities one profile may hold (shared devices would
    /// otherwise chain everyone into one profile).
    pub max_identities: usize,
}

impl MergeRules {
    /// Why the identities of two (or more) profiles may not be one
    /// person's, if they may not.
    pub fn conflict<'a>(
        &self,
        identities: impl IntoIterator<Item = &'a Identity>,
    ) -> Option<String> {
        let all: BTreeSet<&Identity> = identities.into_iter().collect();
        let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for identity in &all {
            by_type
                .entry(identity.kind.as_str())
                .or_default()
                .push(identity.value.as_str());
        }
        for kind in &self.unique_types {
            if let Some(values) = by_type.get(kind.as_str()).filter(|v| v.len() > 1) {
                return Some(format!(
                    "{kind} is unique per profile but the profiles hold {}",
                    values.join(" and ")
                ));
            }
        }
        if all.len() > self.max_identities {
            return Some(format!(
                "the merged profile would hold {} identities, more than the limit of {}",
                all.len(),
                self.max_identities
            ));
        }
        None
    }

    /// Which of `new` a profile holding `held` may take without breaking a
    /// rule, in order: each is checked with those taken before it, and one
    /// the profile holds already is always kept.
    pub fn admissible<'a>(&self, held: &[Identity], new: &'a [Identity]) -> Vec<&'a Identity> {
        let mut all: BTreeSet<&Identity> = held.iter().collect();
        let mut taken = Vec::with_capacity(new.len());
        for identity in new {
            if all.insert(identity) && self.conflict(all.iter().copied()).is_some() {
                all.remove(identity);
                continue;
            }
            taken.push(identity);
        }
        taken
    }
}

/// Which of the profiles to merge survives: a customer's profile over an
/// anonymous one, then the smallest id, so racing merges of the same
/// profiles pick the same survivor.
pub fn survivor<'a>(profiles: impl IntoIterator<Item = &'a CustomerId>) -> Option<&'a CustomerId> {
    profiles
        .into_iter()
        .min_by(|a, b| (a.is_anonymous(), a.as_str()).cmp(&(b.is_anonymous(), b.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventLimits;

    fn id(kind: &str, value: &str) -> Identity {
        Identity {
            kind: kind.into(),
            value: value.into(),
        }
    }

    fn rules() -> MergeRules {
        MergeRules {
            unique_types: ["customer_id".to_string(), "crm_id".to_string()].into(),
            max_identities: 3,
        }
    }

    #[test]
    fn two_values_of_a_unique_type_conflict() {
        let ids = [
            id("crm_id", "A1"),
            id("email", "a@x.org"),
            id("crm_id", "B2"),
        ];
        let conflict = rules().conflict(&ids).expect("conflict");
        assert!(
            conflict.contains("crm_id") && conflict.contains("A1 and B2"),
            "{conflict}"
        );
        assert_eq!(
            rules().conflict(&[id("crm_id", "A1"), id("crm_id", "A1")]),
            None
        );
        assert_eq!(
            rules().conflict(&[id("email", "a@x.org"), id("email", "b@x.org")]),
            None
        );
    }

    #[test]
    fn the_identity_limit_holds() {
        let ids: Vec<Identity> = (0..4).map(|i| id("cookie_id", &i.to_string())).collect();
        assert!(rules()
            .conflict(&ids)
            .expect("too many")
            .contains("limit of 3"));
    }

    #[test]
    fn a_profile_takes_only_the_identities_the_rules_allow() {
        let held = [id("customer_id", "c1"), id("crm_id", "A1")];
        let new = [
            id("crm_id", "B2"),
            id("crm_id", "A1"),
            id("email", "a@x.org"),
            id("cookie_id", "k1"),
        ];
        // A second CRM id breaks the unique rule; the one held is kept;
        // the email fills the limit of 3, so the cookie is left out.
        let taken: Vec<&Identity> = rules().admissible(&held, &new);
        assert_eq!(taken, [&new[1], &new[2]]);
        assert_eq!(rules().admissible(&[], &new).len(), 3);
    }

    #[test]
    fn customers_survive_anonymous_profiles() {
        let limits = EventLimits::default();
        let c = CustomerId::parse("x", "zed", &limits).expect("id");
        let a = CustomerId::anonymous("01A");
        let b = CustomerId::anonymous("01B");
        assert_eq!(survivor([&a, &c, &b]), Some(&c));
        assert_eq!(survivor([&b, &a]), Some(&a));
    }
}
