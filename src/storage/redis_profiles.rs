//! Profiles on Redis: the identity index, links, and merges that work on
//! Redis Cluster when the two profiles live in different slots.
//!
//! A merge of profile B into survivor S is a sequence of single-slot steps,
//! each atomic, each safe to repeat:
//! 1. fence B: its alias key goes from absent to `pending:S` (compare and
//!    set). From then on every operation on B first completes the merge.
//! 2. read all of B (one pipeline in B's slot).
//! 3. take B into S with the append script in merge mode (S's slot): it
//!    refuses, before any write, a merge that breaks the unique-type or
//!    identity-count rules, and otherwise adds B's events (event ids still
//!    deduplicate, so a repeat adds nothing), contacts, identities and the
//!    merge record in one atomic step: a reader of S sees all of B or none.
//! 4. finish B: alias `pending:S` -> `done:S`, B's data keys deleted.
//! 5. point B's identities in the index at S (compare and set, per key).
//!
//! A crash or a lost connection between steps leaves B fenced: the next
//! read or write of B (or of anything leading to B) runs steps 2 to 5
//! again, and a refusal at step 3 lifts the fence (rolls back). Readers of
//! B never see a half-moved timeline: B is whole until step 4, and S
//! changes in one step. Two racing merges of the same profiles pick the
//! same survivor (see `domain::profile::survivor`) and meet at the fence.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use bytes::Bytes;

use super::{
    commands::{self, Pipeline},
    redis_conn::LuaScript,
    redis_journeys::{absorbed_states, push_carry_over, push_forgetting, push_leaving_states},
    redis_keys::{index_key, packed_identity, Keys},
    redis_replies as replies,
    redis_store::{
        merges_kept_moving, parse, AppendReply, CallShape, EventArgs, Lead, MergeArgs, RedisStore,
        MAX_HOPS,
    },
    Forgotten, MergeOutcome, StorageError,
};
use crate::domain::{
    event::CUSTOMER_ID_IDENTITY, journey::carry_over, CustomerId, Identity, LinkedIdentity, Micros,
};

/// What a merge reads of the absorbed profile: events, contact index
/// entries with scores, identities, first seen, its own merges, its
/// journey states.
type AbsorbedProfile = (
    Vec<Vec<u8>>,
    Vec<(String, f64)>,
    HashMap<String, String>,
    Option<i64>,
    Vec<(String, String)>,
    Vec<(String, String)>,
);

/// What a forget reads of the profile: whether anything is held, its
/// events, identities, the profiles merged into it, its journey states.
type ForgottenProfile = (u64, u64, Vec<String>, Vec<String>, Vec<(String, String)>);

/// How many times a merge computes the journeys it carries again because
/// the survivor's states moved meanwhile.
const MAX_CARRY_ATTEMPTS: usize = 16;

/// What an alias key holds.
enum Alias {
    None,
    Pending(CustomerId),
    Done(CustomerId),
}

impl Alias {
    fn parse(value: &str) -> Self {
        if let Some(s) = value.strip_prefix("pending:") {
            Self::Pending(CustomerId::from_trusted(s))
        } else if let Some(s) = value.strip_prefix("done:") {
            Self::Done(CustomerId::from_trusted(s))
        } else {
            Self::None
        }
    }
}

/// The profile a customer id names.
fn customer_profile(identity: &Identity) -> CustomerId {
    CustomerId::from_trusted(&identity.value)
}

/// A profile's own customer id as an identity, if it has one.
fn own_identity(profile: &CustomerId) -> Option<Identity> {
    (!profile.is_anonymous()).then(|| Identity {
        kind: CUSTOMER_ID_IDENTITY.to_string(),
        value: profile.to_string(),
    })
}

impl RedisStore {
    /// Compare-and-set of a string key (see cas.lua): answers whether it
    /// was set, and otherwise what the key held.
    async fn cas(
        &self,
        key: &str,
        expected: &str,
        new: &str,
        also_delete: &[&str],
    ) -> Result<Result<(), String>, StorageError> {
        self.cas_expiring(key, expected, new, also_delete, None)
            .await
    }

    /// `cas`, the new value living `expiry_ms` when given.
    async fn cas_expiring(
        &self,
        key: &str,
        expected: &str,
        new: &str,
        also_delete: &[&str],
        expiry_ms: Option<i64>,
    ) -> Result<Result<(), String>, StorageError> {
        let mut pipe = Pipeline::new();
        let call = self.cas_script.call(&mut pipe).key(key);
        for k in also_delete {
            call.key(*k);
        }
        call.arg(expected).arg(new);
        if let Some(ms) = expiry_ms {
            call.arg(ms);
        }
        let (reply,): (redis::Value,) = self.query_scripts(&self.cas_script, &pipe).await?;
        match reply {
            redis::Value::Int(1) => Ok(Ok(())),
            other => Ok(Err(parse::<String>(other)?)),
        }
    }

    async fn alias(&self, profile: &CustomerId) -> Result<Alias, StorageError> {
        let value: Option<String> = self
            .conn
            .cmd_as(commands::cmd("GET").arg(Keys::of(profile).alias()))
            .await?;
        Ok(value.map_or(Alias::None, |v| Alias::parse(&v)))
    }

    /// The profile an id leads to now, completing merges left pending.
    pub(super) async fn follow(&self, profile: &CustomerId) -> Result<CustomerId, StorageError> {
        let mut current = profile.clone();
        for _ in 0..MAX_HOPS {
            match self.alias(&current).await? {
                Alias::None => return Ok(current),
                Alias::Done(next) => current = next,
                Alias::Pending(survivor) => {
                    Box::pin(self.complete_merge(&current, &survivor, Micros::now())).await?;
                    // Completed or rolled back: look again.
                }
            }
        }
        Err(StorageError::Corrupt(format!(
            "profile {profile} leads through too many merges"
        )))
    }

    pub(super) async fn canonical_profile(
        &self,
        profile: &CustomerId,
    ) -> Result<Option<CustomerId>, StorageError> {
        let profile = self.follow(profile).await?;
        let keys = Keys::of(&profile);
        let held: u64 = self
            .conn
            .cmd_as(
                commands::cmd("EXISTS")
                    .arg(keys.summary())
                    .arg(keys.idents())
                    .arg(keys.contacts()),
            )
            .await?;
        Ok((held > 0).then_some(profile))
    }

    pub(super) async fn resolve_identities(
        &self,
        identities: &[Identity],
    ) -> Result<Vec<Option<CustomerId>>, StorageError> {
        let found = self.get_all(identities.iter().map(index_key)).await?;
        Ok(identities
            .iter()
            .zip(found)
            .map(|(identity, found)| {
                if identity.kind == CUSTOMER_ID_IDENTITY {
                    Some(customer_profile(identity))
                } else {
                    found.map(|p| CustomerId::from_trusted(&p))
                }
            })
            .collect())
    }

    pub(super) async fn profile_identities(
        &self,
        profile: &CustomerId,
    ) -> Result<Vec<LinkedIdentity>, StorageError> {
        let profile = self.follow(profile).await?;
        let idents: HashMap<String, String> = self
            .conn
            .cmd_as(commands::cmd("HGETALL").arg(Keys::of(&profile).idents()))
            .await?;
        Ok(replies::identities(
            idents.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        ))
    }

    pub(super) async fn link_identities(
        &self,
        profile: &CustomerId,
        identities: &[Identity],
        at: Micros,
    ) -> Result<Result<Vec<CustomerId>, String>, StorageError> {
        let profile = self.follow(profile).await?;
        let linked = self.link_steps(&profile, identities, at).await;
        self.written([&profile]);
        linked
    }

    /// A link's steps: 1. record the identities on the profile if the
    /// merge rules let it hold them all (link.lua, atomic in the profile's
    /// slot); 2. claim their index keys (SET NX GET), pushing the expiry of
    /// those it held already; 3. take off the profile those the claim
    /// found held elsewhere.
    async fn link_steps(
        &self,
        profile: &CustomerId,
        identities: &[Identity],
        at: Micros,
    ) -> Result<Result<Vec<CustomerId>, String>, StorageError> {
        let keys = Keys::of(profile);
        let indexed: Vec<(&Identity, String)> = identities
            .iter()
            .filter(|i| i.kind != CUSTOMER_ID_IDENTITY)
            .map(|i| (i, packed_identity(i)))
            .collect();
        // 1.
        let mut record = Pipeline::new();
        let unique: Vec<&str> = self.rules.unique_types.iter().map(String::as_str).collect();
        let call = self
            .link_script
            .call(&mut record)
            .key(keys.idents())
            .arg(unique.join("\u{1f}"))
            .arg(self.rules.max_identities)
            .arg(
                own_identity(profile)
                    .map(|i| packed_identity(&i))
                    .unwrap_or_default(),
            )
            .arg(format!("{}\u{1f}", at.0))
            .arg(self.ttl_ms());
        for (_, packed) in &indexed {
            call.arg(packed.as_str());
        }
        // A lost reply leaves unknown what the script recorded: it runs
        // again (recording nothing twice), and every identity asked counts
        // as maybe added by this call.
        let asked = || -> HashSet<Vec<u8>> {
            indexed
                .iter()
                .map(|(_, p)| p.clone().into_bytes())
                .collect()
        };
        let ((reply,), maybe_added) = match self
            .query_scripts_again::<(Vec<Vec<u8>>,)>(&self.link_script, &record)
            .await
        {
            Ok(answered) => answered,
            Err(error) => {
                self.unrecord_unclaimed(profile, &keys, &indexed, &asked())
                    .await;
                return Err(error);
            }
        };
        let mut reply = reply.into_iter();
        match reply.next().as_deref() {
            Some(b"ok") => {}
            Some(b"refused") => {
                let reason = reply
                    .next()
                    .map(|r| String::from_utf8_lossy(&r).into_owned())
                    .unwrap_or_default();
                tracing::warn!(%profile, %reason, "identity link refused");
                return Ok(Err(reason));
            }
            other => {
                return Err(StorageError::Corrupt(format!(
                    "the link script answered {other:?}"
                )))
            }
        }
        let added: HashSet<Vec<u8>> = if maybe_added {
            asked()
        } else {
            reply.collect()
        };
        // 2.
        let mut owner_of: HashMap<&Identity, CustomerId> = HashMap::new();
        if !indexed.is_empty() {
            let identity_ttl = self.identity_ttl_ms();
            let mut claims = Pipeline::new();
            for (identity, _) in &indexed {
                claims
                    .cmd("SET")
                    .arg(index_key(identity))
                    .arg(profile.as_str())
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(identity_ttl);
            }
            // Linked again: the key lives the retention from now, as a new
            // one does (SET NX leaves it as it was), if it leads here.
            for (identity, packed) in &indexed {
                if !added.contains(packed.as_bytes()) {
                    self.push_script
                        .call(&mut claims)
                        .key(index_key(identity))
                        .arg(profile.as_str())
                        .arg("")
                        .arg(identity_ttl);
                }
            }
            // Claims are safe to send again (SET NX GET answers this
            // profile for a key that landed).
            let (replies, _): (Vec<redis::Value>, _) =
                match self.query_scripts_again(&self.push_script, &claims).await {
                    Ok(answered) => answered,
                    Err(error) => {
                        self.unrecord_unclaimed(profile, &keys, &indexed, &added)
                            .await;
                        return Err(error);
                    }
                };
            // 3.
            let mut off = Pipeline::new();
            let mut taken_off = 0;
            for ((identity, packed), previous) in indexed.iter().zip(replies) {
                let owner = match parse::<Option<String>>(previous)? {
                    None => profile.clone(),
                    Some(p) => CustomerId::from_trusted(&p),
                };
                // A key naming a profile merged into this one (its repoint
                // not done yet) leads here too: kept.
                if owner != *profile
                    && added.contains(packed.as_bytes())
                    && self.follow(&owner).await? != *profile
                {
                    off.cmd("HDEL").arg(keys.idents()).arg(packed.as_str());
                    taken_off += 1;
                }
                owner_of.insert(identity, owner);
            }
            if taken_off > 0 {
                self.conn.query_as::<()>(&off).await?;
            }
        }
        Ok(Ok(identities
            .iter()
            .map(|identity| {
                owner_of
                    .get(identity)
                    .cloned()
                    .unwrap_or_else(|| customer_profile(identity))
            })
            .collect()))
    }

    /// `query_scripts` for a step safe to repeat: sent once more when the
    /// first answer is lost; also answers whether it was.
    async fn query_scripts_again<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        pipe: &Pipeline,
    ) -> Result<(T, bool), StorageError> {
        match self.query_scripts(script, pipe).await {
            Ok(answer) => Ok((answer, false)),
            Err(_) => Ok((self.query_scripts(script, pipe).await?, true)),
        }
    }

    /// After a link's claims were lost: takes off the profile the
    /// identities it recorded whose key does not lead to it (an entry left
    /// there would never expire; a key that landed expires with the
    /// identity TTL). Best effort: with Redis gone, they stay, logged.
    async fn unrecord_unclaimed(
        &self,
        profile: &CustomerId,
        keys: &Keys,
        indexed: &[(&Identity, String)],
        added: &HashSet<Vec<u8>>,
    ) {
        let recorded: Vec<&(&Identity, String)> = indexed
            .iter()
            .filter(|(_, packed)| added.contains(packed.as_bytes()))
            .collect();
        if recorded.is_empty() {
            return;
        }
        let mut owners = Pipeline::new();
        for (identity, _) in &recorded {
            owners.cmd("GET").arg(index_key(identity));
        }
        let undone = async {
            let owners: Vec<Option<String>> = self.conn.query_as(&owners).await?;
            let mut off = Pipeline::new();
            for ((_, packed), owner) in recorded.iter().zip(owners) {
                let leads_here = match owner {
                    None => false,
                    Some(owner) => {
                        self.follow(&CustomerId::from_trusted(&owner)).await? == *profile
                    }
                };
                if !leads_here {
                    off.cmd("HDEL").arg(keys.idents()).arg(packed.as_str());
                }
            }
            if !off.is_empty() {
                self.conn.query_as::<()>(&off).await?;
            }
            Ok::<_, StorageError>(())
        };
        if let Err(error) = undone.await {
            tracing::warn!(%profile, %error, "a cut link's identities stay on the profile");
        }
    }

    pub(super) async fn merge_profiles(
        &self,
        survivor: &CustomerId,
        absorbed: &CustomerId,
        at: Micros,
    ) -> Result<MergeOutcome, StorageError> {
        for _ in 0..MAX_HOPS {
            let survivor = self.follow(survivor).await?;
            let absorbed = self.follow(absorbed).await?;
            if survivor == absorbed {
                return Ok(MergeOutcome::AlreadyOne);
            }
            let fence = format!("pending:{survivor}");
            match self
                .cas(Keys::of(&absorbed).alias(), "", &fence, &[])
                .await?
            {
                Ok(()) => {}
                Err(held) if held == fence => {}
                // Merged or being merged elsewhere meanwhile: look again.
                Err(_) => continue,
            }
            return self.complete_merge(&absorbed, &survivor, at).await;
        }
        Err(merges_kept_moving())
    }

    /// Steps 2 to 5 of a merge whose fence (`pending:survivor` on
    /// `absorbed`) is set. Safe to run again after any failure. Both
    /// profiles' cached contexts go once it is done (or failed: some of it
    /// may have landed).
    async fn complete_merge(
        &self,
        absorbed: &CustomerId,
        survivor: &CustomerId,
        at: Micros,
    ) -> Result<MergeOutcome, StorageError> {
        let outcome = self.merge_steps(absorbed, survivor, at).await;
        self.written([absorbed, survivor]);
        outcome
    }

    async fn merge_steps(
        &self,
        absorbed: &CustomerId,
        survivor: &CustomerId,
        at: Micros,
    ) -> Result<MergeOutcome, StorageError> {
        let from = Keys::of(absorbed);
        let fence = format!("pending:{survivor}");
        let mut pipe = Pipeline::new();
        pipe.cmd("ZRANGE").arg(from.timeline()).arg(0).arg(-1);
        pipe.cmd("ZRANGE")
            .arg(from.contacts())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        pipe.cmd("HGETALL").arg(from.idents());
        pipe.cmd("HGET").arg(from.summary()).arg("first");
        pipe.cmd("HGETALL").arg(from.merges());
        pipe.cmd("HGETALL").arg(from.journeys());
        let (members, contacts, idents, first, history, journey_fields): AbsorbedProfile =
            self.conn.query_as(&pipe).await?;

        let events = members
            .into_iter()
            .map(|member| EventArgs::of_stored(Bytes::from(member)))
            .collect::<Result<Vec<_>, _>>()?;
        // The whole contact index, not only its reservations: contacts
        // outlive their events (the timeline's count limit may have taken
        // those), and still count. The script skips the ids the survivor
        // holds, and the events carried in the same call came first.
        let reservations: Vec<(i64, String)> = contacts
            .into_iter()
            .map(|(packed, score)| (score as i64, packed))
            .collect();
        let mut identities: Vec<(String, String)> = idents.into_iter().collect();
        for own in [own_identity(absorbed), own_identity(survivor)]
            .into_iter()
            .flatten()
        {
            identities.push((packed_identity(&own), format!("{}\u{1f}", at.0)));
        }

        let keys = Keys::of(survivor);
        let shape = CallShape {
            events: events.len(),
            identities: identities.len(),
            reservations: reservations.len(),
            merge: Some(MergeArgs {
                from: absorbed,
                at,
                first_seen: first.map(Micros),
                history: &history,
            }),
            journey_version: None,
        };
        // The absorbed profile's journeys come along (`carry_over`), in the
        // same atomic step, computed from the survivor's states this
        // instance holds: when those moved on, the script answers the
        // current ones before any write, and the call goes again.
        let theirs = absorbed_states(absorbed, journey_fields);
        let mut carrying = self.journeys.as_ref().zip(theirs.as_ref());
        // Set when the journeys could not be carried (below).
        let mut uncarried = false;
        let mut ours = carrying.map(|(journeys, _)| journeys.cache.get(survivor));
        let mut attempts = 0;
        let reply = loop {
            let carry = carrying
                .zip(ours.as_ref())
                .and_then(|((journeys, theirs), ours)| {
                    let carry = carry_over(
                        &journeys.tracker.definitions(),
                        Micros::now(),
                        &ours.states,
                        &ours.recent,
                        &theirs.states,
                        &theirs.recent,
                    );
                    (!carry.is_empty()).then(|| (carry, ours.version, ours.next_version()))
                });
            let mut pipe = Pipeline::new();
            let shape = CallShape {
                journey_version: carry.as_ref().map(|(_, version, _)| *version),
                ..shape
            };
            let call = self.append_call(&mut pipe, &keys, at, shape);
            for event in &events {
                event.push(call);
            }
            for (packed, seen) in &identities {
                call.arg(packed).arg(seen);
            }
            for (score, packed) in &reservations {
                call.arg(*score).arg(packed);
            }
            if let (Some((carry, _, version)), Some((_, theirs))) = (&carry, carrying) {
                push_carry_over(call, survivor, absorbed, carry, theirs.version, *version);
            }
            let (reply,): (redis::Value,) = self.query_scripts(&self.append_script, &pipe).await?;
            let reply = AppendReply::parse(reply);
            let (Some((journeys, _)), Some((carry, _, version))) = (carrying, carry) else {
                break reply?;
            };
            match reply {
                Ok(AppendReply::Stale(current)) if attempts < MAX_CARRY_ATTEMPTS => {
                    attempts += 1;
                    let current = Arc::new(current);
                    journeys.cache.note_stale();
                    journeys.cache.put_shared(survivor, current.clone());
                    ours = Some(current);
                }
                Ok(AppendReply::Outcomes(stored, leads)) => {
                    if let Some(ours) = &ours {
                        let mut after =
                            ours.after(carry.survivor.states, carry.survivor.recent, version);
                        // The mark moved the version even if no state did.
                        after.version = version;
                        journeys.cache.put(survivor, after);
                    }
                    break AppendReply::Outcomes(stored, leads);
                }
                // The first run wrote the journeys: what the survivor holds
                // now is not known here.
                Ok(again @ AppendReply::MergedAgain(_)) => {
                    journeys.cache.forget(survivor);
                    break again;
                }
                // The survivor's current states (a stale answer) do not
                // read: merged without the absorbed profile's journeys
                // rather than never, which would leave it fenced for good.
                Err(StorageError::Corrupt(error)) => {
                    tracing::error!(%survivor, %absorbed, %error, "journey states unreadable; the merge goes on without carrying journeys");
                    carrying = None;
                    uncarried = true;
                }
                other => break other?,
            }
        };
        // The keys to push, once the merge is done (below).
        let mut pushed = match reply {
            AppendReply::Outcomes(_, leads) | AppendReply::MergedAgain(leads) => leads,
            AppendReply::Refused(reason) => {
                // Roll back: lift the fence; nothing else was written. A
                // failed compare means another worker moved it already.
                let _ = self.cas(from.alias(), &fence, "", &[]).await?;
                tracing::warn!(%absorbed, %survivor, %reason, "merge refused");
                return Ok(MergeOutcome::Refused(reason));
            }
            AppendReply::Stale(_) => {
                return Err(StorageError::Contention(
                    "the survivor's journey states kept changing under the merge".into(),
                ))
            }
            AppendReply::Held(_) => {
                return Err(StorageError::Corrupt(
                    "a merge call was answered held events".into(),
                ))
            }
            AppendReply::Merged => {
                // The survivor was merged away meanwhile: move the fence to
                // where it leads and start over there.
                let next = self.follow(survivor).await?;
                if let Err(held) = self
                    .cas(from.alias(), &fence, &format!("pending:{next}"), &[])
                    .await?
                {
                    return Err(StorageError::Corrupt(format!(
                        "merge of {absorbed} found the fence changed to {held:?}"
                    )));
                }
                return Box::pin(self.complete_merge(absorbed, &next, at)).await;
            }
        };

        // The absorbed profile's journey states go with its data (carried
        // over above). The alias lives as long as the survivor's identities: the
        // survivor's pushes push it too (its merges list this profile).
        let mut data: Vec<&str> = from.data().to_vec();
        data.push(from.journeys());
        let done = format!("done:{survivor}");
        let identity_ttl = self.identity_ttl_ms();
        match self
            .cas_expiring(from.alias(), &fence, &done, &data, Some(identity_ttl))
            .await?
        {
            Ok(()) => {}
            // Another worker finished this merge first: same result.
            Err(held) if held == done => {}
            Err(held) => {
                return Err(StorageError::Corrupt(format!(
                    "merge of {absorbed} into {survivor} found the fence changed to {held:?}"
                )))
            }
        }
        // Each repointed key lives as long as the survivor's identities.
        let mut repoint = Pipeline::new();
        let mut repointed = 0;
        for (packed, _) in &identities {
            let Some((kind, value)) = packed.split_once('\u{1f}') else {
                continue;
            };
            if kind == CUSTOMER_ID_IDENTITY {
                continue;
            }
            let identity = Identity {
                kind: kind.to_string(),
                value: value.to_string(),
            };
            self.cas_script
                .call(&mut repoint)
                .key(index_key(&identity))
                .arg(absorbed.as_str())
                .arg(survivor.as_str())
                .arg(identity_ttl);
            repointed += 1;
        }
        // The aliases of the profiles merged into the absorbed one lead to
        // the survivor directly, as its own does: a line of merges stays
        // one step long (a read follows at most MAX_HOPS).
        let was = format!("done:{absorbed}");
        for (from, _) in &history {
            let keys = Keys::of(&CustomerId::from_trusted(from));
            self.cas_script
                .call(&mut repoint)
                .key(keys.alias())
                .arg(&was)
                .arg(&done)
                .arg(identity_ttl);
            repointed += 1;
        }
        if repointed > 0 {
            self.query_scripts::<redis::Value>(&self.cas_script, &repoint)
                .await?;
        }
        // The aliases of the profiles merged into the absorbed one lead
        // here now too: they live as long as the survivor, as its own do.
        pushed.extend(
            history
                .iter()
                .map(|(from, _)| Lead::Merged(CustomerId::from_trusted(from))),
        );
        self.push_leads(&[(survivor.clone(), pushed)]).await;
        if let (true, Some(theirs)) = (uncarried, theirs.as_ref().filter(|t| !t.states.is_empty()))
        {
            // Not carried: the absorbed profile still leaves the listings
            // and the deadline index (its journeys' counters stay as they
            // were; logged above).
            let mut leave = Pipeline::new();
            push_leaving_states(&mut leave, absorbed, &theirs.states);
            if let Err(error) = self.conn.query_as::<redis::Value>(&leave).await {
                tracing::warn!(%absorbed, %error, "a merged profile's listings stay until the retention trims them");
            }
        }
        tracing::info!(%absorbed, %survivor, events = events.len(), "profiles merged");
        Ok(MergeOutcome::Merged)
    }

    /// `TimelineStore::forget` on Redis. Merges left pending into the
    /// profile are completed first (their data keys go with it). Then, in
    /// this order, so that a forget cut short is finished by the next one
    /// (which still finds the profile by its identity and merge records):
    /// its listing and deadline entries and every data key but those
    /// records; what still leads to it (index keys naming it or a profile
    /// merged into it, those profiles' aliases), each deleted only if it
    /// still holds what was read; the records. A merge of the profile into
    /// another meanwhile took its data there: that one is erased too.
    pub(super) async fn forget_profile(
        &self,
        profile: &CustomerId,
    ) -> Result<Option<Forgotten>, StorageError> {
        let mut current = self.follow(profile).await?;
        let mut first: Option<Forgotten> = None;
        for _ in 0..MAX_HOPS {
            let forgotten = self.forget_once(&current).await;
            self.written([&current]);
            if let Some(journeys) = &self.journeys {
                journeys.cache.forget(&current);
            }
            // The first erasure is the one answered; the next ones follow
            // where its data went.
            first = first.or(forgotten?);
            let alias: Option<String> = self
                .conn
                .cmd_as(commands::cmd("GET").arg(Keys::of(&current).alias()))
                .await?;
            if alias.is_none() {
                return Ok(first);
            }
            // Merged away meanwhile: its data went to the survivor.
            current = self.follow(&current).await?;
        }
        Err(merges_kept_moving())
    }

    async fn forget_once(&self, profile: &CustomerId) -> Result<Option<Forgotten>, StorageError> {
        let keys = Keys::of(profile);
        let mut read = Pipeline::new();
        read.cmd("EXISTS")
            .arg(keys.summary())
            .arg(keys.idents())
            .arg(keys.contacts());
        read.cmd("ZCARD").arg(keys.timeline());
        read.cmd("HKEYS").arg(keys.idents());
        read.cmd("HKEYS").arg(keys.merges());
        read.cmd("HGETALL").arg(keys.journeys());
        let (held, events, idents, merged, journeys): ForgottenProfile =
            self.conn.query_as(&read).await?;
        if held == 0 {
            return Ok(None);
        }
        let merged: Vec<CustomerId> = merged
            .iter()
            .map(|id| CustomerId::from_trusted(id))
            .collect();
        let alias_keys: Vec<Keys> = merged.iter().map(Keys::of).collect();
        let aliases = self
            .get_all(alias_keys.iter().map(|k| k.alias().to_string()))
            .await?;
        let mut completed = false;
        for (id, alias) in merged.iter().zip(&aliases) {
            if alias.as_deref().is_some_and(|a| a.starts_with("pending:")) {
                self.follow(id).await?;
                completed = true;
            }
        }
        if completed {
            // The merges finished brought their identities and records:
            // read the profile again (their aliases are done now).
            return Box::pin(self.forget_once(profile)).await;
        }

        let mut erase = Pipeline::new();
        push_forgetting(&mut erase, profile, journeys);
        let del = erase.cmd("DEL");
        for key in [
            keys.timeline(),
            keys.ids(),
            keys.summary(),
            keys.contacts(),
            keys.contact_ids(),
            keys.journeys(),
        ] {
            del.arg(key);
        }
        self.conn.query_as::<redis::Value>(&erase).await?;

        // What leads here: read, then deleted where it still holds that.
        // A merged profile counts as this one while its alias says so (one
        // whose alias went, unlinked or let go by a forget cut short, may
        // stand on its own again).
        let ours: HashSet<&str> = std::iter::once(profile.as_str())
            .chain(
                merged
                    .iter()
                    .zip(&aliases)
                    .filter(|(_, alias)| alias.is_some())
                    .map(|(id, _)| id.as_str()),
            )
            .collect();
        let mut leads: Vec<String> = idents
            .iter()
            .filter_map(|packed| {
                let (kind, value) = packed.split_once('\u{1f}')?;
                (kind != CUSTOMER_ID_IDENTITY).then(|| {
                    index_key(&Identity {
                        kind: kind.to_string(),
                        value: value.to_string(),
                    })
                })
            })
            .collect();
        let indexed = leads.len();
        leads.extend(alias_keys.iter().map(|k| k.alias().to_string()));
        let values = self.get_all(leads.iter().cloned()).await?;
        // The index entries and aliases let go, and the records read (not
        // the whole hashes: a link or merge landing meanwhile stays
        // recorded for the next forget), in one round trip: cut between
        // the two, the records would outlive every entry leading to them,
        // and an erasure retried by an identity would find nothing. By
        // source, so that no NOSCRIPT refusal splits it either. Not a
        // transaction (the index keys lie in other slots): Redis stopping
        // between its commands still splits it, a far narrower window.
        let mut release = Pipeline::new();
        let mut let_go = Vec::new();
        for (n, (key, value)) in leads.iter().zip(values).enumerate() {
            let Some(value) = value else { continue };
            let named = if n < indexed {
                value.as_str()
            } else {
                value.strip_prefix("done:").unwrap_or_default()
            };
            if !ours.contains(named) {
                continue; // linked or merged elsewhere since
            }
            if n >= indexed {
                let_go.push(merged[n - indexed].clone());
            }
            self.cas_script
                .call_by_source(&mut release)
                .key(key)
                .arg(&value)
                .arg("");
        }
        if !idents.is_empty() {
            let hdel = release.cmd("HDEL").arg(keys.idents());
            for field in &idents {
                hdel.arg(field);
            }
        }
        if !merged.is_empty() {
            let hdel = release.cmd("HDEL").arg(keys.merges());
            for id in &merged {
                hdel.arg(id.as_str());
            }
        }
        if !release.is_empty() {
            self.conn.query_as::<redis::Value>(&release).await?;
        }
        tracing::info!(%profile, events, "profile forgotten");
        Ok(Some(Forgotten {
            events,
            identities: idents.len() as u64,
            merged: let_go,
            profile: profile.clone(),
        }))
    }

    /// The values of string keys (`None` for a missing one), in one round
    /// trip (none for no key).
    async fn get_all(
        &self,
        keys: impl IntoIterator<Item = String>,
    ) -> Result<Vec<Option<String>>, StorageError> {
        let mut pipe = Pipeline::new();
        let mut count = 0;
        for key in keys {
            pipe.cmd("GET").arg(key);
            count += 1;
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        self.conn.query_as(&pipe).await
    }

    pub(super) async fn unlink_identity(
        &self,
        profile: &CustomerId,
        identity: &Identity,
    ) -> Result<bool, StorageError> {
        let profile = self.follow(profile).await?;
        // What leads here: the identity's index entry, or for a merged
        // profile's customer id its alias (which then stops leading here).
        let (lead, holds, merged) = if identity.kind == CUSTOMER_ID_IDENTITY {
            let merged = customer_profile(identity);
            let alias = Keys::of(&merged).alias().to_string();
            (alias, format!("done:{profile}"), Some(merged))
        } else {
            (index_key(identity), profile.to_string(), None)
        };
        // The entry let go and the profile's record of it, in one round
        // trip (the script by source, so that no NOSCRIPT refusal splits
        // it): in two, a cut between them left an identity still leading
        // to the profile that no longer listed it, or the other way round.
        let mut pipe = Pipeline::new();
        self.cas_script
            .call_by_source(&mut pipe)
            .key(&lead)
            .arg(&holds)
            .arg("");
        pipe.cmd("HDEL")
            .arg(Keys::of(&profile).idents())
            .arg(packed_identity(identity));
        let replies: Result<(redis::Value, i64), _> = self.conn.query_as(&pipe).await;
        self.written([&profile]);
        if let Some(merged) = &merged {
            self.written([merged]);
        }
        let (let_go, recorded) = replies?;
        Ok(recorded > 0 || matches!(let_go, redis::Value::Int(1)))
    }
}
