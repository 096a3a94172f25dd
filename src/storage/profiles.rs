//! Identity resolution on top of any store: which profile identities lead
//! to, linking identities as one person's (merging the profiles they lead
//! to), and placing an incoming event with identities in its profile.

use super::{MergeOutcome, StorageError, TimelineStore};
use crate::domain::{
    event::CUSTOMER_ID_IDENTITY, profile::survivor, CustomerId, Event, Identity, MergeRules, Micros,
};

/// The outcome of linking identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    /// The profile that holds them all now.
    pub profile: CustomerId,
    /// Profiles merged into it by this link.
    pub merged: Vec<CustomerId>,
}

/// How often a link retries when another writer linked one of its
/// identities elsewhere at the same moment.
const LINK_ROUNDS: usize = 4;

/// Links `identities` as one person's. The profiles they lead to merge into
/// one survivor (a customer's profile over an anonymous one); identities
/// not linked yet are linked to it; with none linked and no customer id, a
/// new anonymous profile (`new_profile`) holds them. A link that would
/// break the merge rules answers `Err(reason)`: checked first on what the
/// profiles hold, so it merges nothing; only when another writer got in
/// between that check and the link's own (atomic) one are the merges of
/// that round kept, with nothing linked.
pub async fn link(
    store: &dyn TimelineStore,
    rules: &MergeRules,
    identities: &[Identity],
    at: Micros,
    new_profile: impl Fn() -> CustomerId,
) -> Result<Result<Linked, String>, StorageError> {
    let mut merged = Vec::new();
    let mut candidates = profiles_of(store, identities).await?;
    if candidates.is_empty() {
        candidates.push(new_profile());
    }
    for _ in 0..LINK_ROUNDS {
        let Some(target) = survivor(&candidates).cloned() else {
            break;
        };
        if let Some(reason) = conflict(store, rules, &candidates, identities).await? {
            tracing::warn!(%reason, "identity link refused");
            return Ok(Err(reason));
        }
        for other in candidates.iter().filter(|c| **c != target) {
            match store.merge(&target, other, at).await? {
                MergeOutcome::Merged => merged.push(other.clone()),
                MergeOutcome::AlreadyOne => {}
                MergeOutcome::Refused(reason) => return Ok(Err(reason)),
            }
        }
        let owners = match store.link(&target, identities, at).await? {
            Ok(owners) => owners,
            // Another link got in first with what these may not join.
            Err(reason) => return Ok(Err(reason)),
        };
        let profile = store.canonical(&target).await?.unwrap_or(target);
        // An identity linked elsewhere at the same moment: merge that too.
        let mut elsewhere = Vec::new();
        for owner in owners {
            let owner = store.canonical(&owner).await?.unwrap_or(owner);
            if owner != profile && !elsewhere.contains(&owner) {
                elsewhere.push(owner);
            }
        }
        if elsewhere.is_empty() {
            return Ok(Ok(Linked { profile, merged }));
        }
        candidates = std::iter::once(profile).chain(elsewhere).collect();
    }
    Err(StorageError::Contention(
        "identities kept being linked elsewhere; try again".into(),
    ))
}

/// Places an event that carries identities: links them with its customer
/// id and stores the event in the profile they lead to. When the link would
/// merge two real customers, the event still goes to its customer's profile
/// (or to the profile its first known identity leads to), keeping only the
/// identities that lead there or nowhere yet: data is never lost to a
/// refused merge.
pub async fn place(
    store: &dyn TimelineStore,
    rules: &MergeRules,
    event: &mut Event,
    new_profile: impl Fn() -> CustomerId,
) -> Result<(), StorageError> {
    if place_known(store, event).await? {
        return Ok(());
    }
    place_linking(store, rules, event, new_profile).await
}

/// Places an event with nothing to link: one without identities that names
/// its customer, or whose identities all lead to one profile already (a
/// known visitor or customer: one round trip). Answers whether it did.
pub async fn place_known(
    store: &dyn TimelineStore,
    event: &mut Event,
) -> Result<bool, StorageError> {
    if event.identities.is_empty() && event.is_placed() {
        return Ok(true);
    }
    let resolved = store.resolve(&event.all_identities()).await?;
    if let Some(Some(first)) = resolved.first() {
        if resolved.iter().all(|r| r.as_ref() == Some(first)) {
            event.profile = first.clone();
            return Ok(true);
        }
    }
    Ok(false)
}

/// `place` for an event `place_known` could not place: links its
/// identities (merging what they lead to), or falls back.
pub async fn place_linking(
    store: &dyn TimelineStore,
    rules: &MergeRules,
    event: &mut Event,
    new_profile: impl Fn() -> CustomerId,
) -> Result<(), StorageError> {
    let all = event.all_identities();
    match link(store, rules, &all, event.occurred_at, &new_profile).await? {
        Ok(linked) => event.profile = linked.profile,
        Err(reason) => {
            let fallback = match &event.customer_id {
                Some(customer) => customer.clone(),
                None => profiles_of(store, &all)
                    .await?
                    .into_iter()
                    .next()
                    .unwrap_or_else(&new_profile),
            };
            // Only identities the fallback profile may take: a link
            // checks no rule, and a second CRM id or one identity past the
            // limit must not come in by an event either.
            // Those held elsewhere are left out first: they would not be
            // linked, and must not use up the profile's room.
            // Refused only when another link got in meanwhile: worked out
            // again once from what the profile holds then; refused again,
            // the event is stored with none of them.
            let mut kept = Vec::new();
            for _ in 0..2 {
                let held = held_by(store, &fallback).await?;
                let owners = store.resolve(&event.identities).await?;
                let free: Vec<Identity> = event
                    .identities
                    .iter()
                    .zip(owners)
                    .filter(|(_, owner)| owner.as_ref().is_none_or(|o| *o == fallback))
                    .map(|(identity, _)| identity.clone())
                    .collect();
                let admissible: Vec<Identity> = rules
                    .admissible(&held, &free)
                    .into_iter()
                    .cloned()
                    .collect();
                if let Ok(owners) = store
                    .link(&fallback, &admissible, event.occurred_at)
                    .await?
                {
                    kept = admissible
                        .into_iter()
                        .zip(owners)
                        .filter(|(_, owner)| *owner == fallback)
                        .map(|(identity, _)| identity)
                        .collect();
                    break;
                }
            }
            tracing::warn!(event = %event.event_id, %reason, profile = %fallback,
                "identities not linked: the event is stored without merging");
            event.identities = kept;
            event.profile = fallback;
        }
    }
    Ok(())
}

/// The distinct profiles identities lead to now. A customer id leads to
/// its profile even before anything is held under it.
async fn profiles_of(
    store: &dyn TimelineStore,
    identities: &[Identity],
) -> Result<Vec<CustomerId>, StorageError> {
    let resolved = store.resolve(identities).await?;
    let mut profiles: Vec<CustomerId> = Vec::new();
    for (identity, found) in identities.iter().zip(resolved) {
        let Some(found) = found else { continue };
        let profile = match store.canonical(&found).await? {
            Some(profile) => profile,
            None if identity.kind == CUSTOMER_ID_IDENTITY => found,
            None => continue,
        };
        if !profiles.contains(&profile) {
            profiles.push(profile);
        }
    }
    Ok(profiles)
}

/// Whether merging the profiles and linking the identities would break a
/// rule, checked on what they hold now (each merge checks again, atomically).
async fn conflict(
    store: &dyn TimelineStore,
    rules: &MergeRules,
    profiles: &[CustomerId],
    identities: &[Identity],
) -> Result<Option<String>, StorageError> {
    let mut all: Vec<Identity> = identities.to_vec();
    for profile in profiles {
        all.extend(held_by(store, profile).await?);
    }
    Ok(rules.conflict(&all))
}

/// The identities a profile holds, with its customer id.
async fn held_by(
    store: &dyn TimelineStore,
    profile: &CustomerId,
) -> Result<Vec<Identity>, StorageError> {
    let mut held: Vec<Identity> = store
        .identities(profile)
        .await?
        .into_iter()
        .map(|l| l.identity)
        .collect();
    if !profile.is_anonymous() {
        held.push(Identity {
            kind: CUSTOMER_ID_IDENTITY.to_string(),
            value: profile.to_string(),
        });
    }
    Ok(held)
}
