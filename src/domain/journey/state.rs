//! One customer's state in one journey: not started, in progress, completed
//! or dropped, with what the stats need when it finishes. Plain data with
//! serde, so a store keeps it as JSON (one hash field per journey); the
//! transitions live in `transition.rs`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::facts::{EventFacts, Interaction};
use crate::domain::Micros;

/// Where a customer stands in a journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JourneyStatus {
    #[default]
    NotStarted,
    InProgress,
    Completed,
    Dropped,
}

impl JourneyStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Dropped)
    }
}

/// Why a journey dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropCause {
    /// No progress within the inactivity timeout.
    Inactivity,
    /// An explicit abandon event.
    Abandon,
}

impl DropCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactivity => "inactivity",
            Self::Abandon => "abandon",
        }
    }
}

/// A step, by its index in the definition and its name (the name makes a
/// stored state readable and lets stats survive a reordered definition).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StepRef {
    pub index: usize,
    pub name: String,
}

/// The first event that reached a step in the current journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepVisit {
    pub step: usize,
    #[serde(with = "micros_serde")]
    pub at: Micros,
    pub event_id: String,
}

/// The customer's first move from online to offline channels during the
/// journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineSwitch {
    /// The step the customer was at when they went offline.
    pub step: StepRef,
    pub channel: String,
    pub event_id: String,
    #[serde(with = "micros_serde")]
    pub at: Micros,
}

/// One of the customer's latest events, kept for the "interactions before
/// entering" figure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentInteraction {
    /// Shared: every append copies the customer's latest interactions
    /// into its update, and event ids (ULIDs, UUIDs) are too long to be
    /// held inline.
    pub event_id: Arc<str>,
    #[serde(with = "micros_serde")]
    pub at: Micros,
    pub interaction: Interaction,
}

impl RecentInteraction {
    /// Adds `event` to `recent`, a customer's latest interactions by time
    /// (oldest first), keeping at most `capacity`: an event older than all
    /// of a full list is left out. The oldest leave before the new one
    /// comes in, so a full list keeps its allocation instead of doubling
    /// it (a cached customer holds such a list, ~100 bytes an entry).
    pub fn keep_latest(recent: &mut Vec<Self>, capacity: usize, event: &EventFacts) {
        if capacity == 0 {
            return;
        }
        let position = recent.partition_point(|r| r.at <= event.at);
        if position == 0 && recent.len() >= capacity {
            return; // older than every event kept
        }
        let excess = (recent.len() + 1).saturating_sub(capacity);
        if position < excess {
            // A list longer than `capacity` (the definitions changed): the
            // new one is among the oldest, which leave.
            recent.drain(..excess - 1);
            return;
        }
        recent.drain(..excess);
        recent.insert(
            position - excess,
            Self {
                event_id: Arc::from(&*event.event_id),
                at: event.at,
                interaction: event.interaction(),
            },
        );
    }
}

/// A set of channel names, sorted: a vector, not a `BTreeSet`, whose node
/// holds 11 names (~280 bytes) for the one or two channels of a journey,
/// in every state the Redis store caches. Stored in a state's JSON as the
/// `BTreeSet` it replaces was: a sorted array of distinct names.
///
/// Bounded: in lenient taxonomy mode a client may name any channel, and a
/// set without bound would grow a state that every append of the journey
/// rewrites. A name outside the taxonomy is admitted while the set holds
/// fewer than `MAX_CHANNELS` names; the taxonomy's own always find room
/// (the taxonomy bounds them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct ChannelSet(Vec<String>);

/// Past this many channels, a journey state records no new one outside
/// the taxonomy.
pub const MAX_CHANNELS: usize = 32;

impl ChannelSet {
    pub fn contains(&self, channel: &str) -> bool {
        self.position(channel).is_ok()
    }

    fn position(&self, channel: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|held| held.as_str().cmp(channel))
    }

    /// Adds `channel` (`known`: of the taxonomy); whether it was new and
    /// found room.
    pub fn insert(&mut self, channel: &str, known: bool) -> bool {
        match self.position(channel) {
            Ok(_) => false,
            Err(_) if !known && self.0.len() >= MAX_CHANNELS => false,
            Err(at) => {
                // One at a time: a journey meets few channels, and the set
                // is cached with whatever room it has.
                self.0.reserve_exact(1);
                self.0.insert(at, channel.to_string());
                true
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Names the vector has room for (what it takes in memory).
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// The names, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }
}

impl<'de> Deserialize<'de> for ChannelSet {
    /// Any array of names: sorted and made distinct, as a `BTreeSet` read
    /// it.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut names = Vec::<String>::deserialize(deserializer)?;
        names.sort_unstable();
        names.dedup();
        names.shrink_to_fit();
        Ok(Self(names))
    }
}

impl<S: Into<String>> FromIterator<S> for ChannelSet {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let mut set = Self::default();
        for name in names {
            set.insert(&name.into(), true);
        }
        set
    }
}

/// A customer's state in one journey. The fields of the current (or last)
/// journey are reset when the customer enters again; `recent` carries over.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JourneyState {
    pub journey: String,
    pub status: JourneyStatus,
    /// In order: the furthest step reached; in any order: the step reached
    /// last (by event time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<StepRef>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_micros_serde"
    )]
    pub started_at: Option<Micros>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_micros_serde"
    )]
    pub last_progress_at: Option<Micros>,
    /// When the journey completed (its completing event) or dropped (the
    /// abandon event, or the deadline that passed).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_micros_serde"
    )]
    pub finished_at: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_at_step: Option<StepRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_cause: Option<DropCause>,
    /// The latest (by time) event that moved the journey: a step reached,
    /// or the abandon event once dropped by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
    /// The interaction of `last_event_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_interaction: Option<Interaction>,
    /// Channels of every event of the customer during the journey.
    #[serde(default, skip_serializing_if = "ChannelSet::is_empty")]
    pub channels: ChannelSet,
    /// The starting event was on an online channel: only then can the
    /// customer switch to offline, and only then can the journey be
    /// contained.
    #[serde(default)]
    pub started_online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_switch: Option<OfflineSwitch>,
    /// The steps reached, each once, sorted by event time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_path: Vec<StepVisit>,
    /// When an in-progress journey drops unless it progresses: the score of
    /// the store's deadline index. `None` unless in progress.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_micros_serde"
    )]
    pub deadline: Option<Micros>,
    /// The customer's latest events by time, at most `lookback_events`,
    /// oldest first. Kept while the customer may still (re)enter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<RecentInteraction>,
}

impl JourneyState {
    /// The state of a customer who has not entered `journey`.
    pub fn not_started(journey: &str) -> Self {
        Self {
            journey: journey.to_string(),
            ..Self::default()
        }
    }

    /// Whether `event_id` already had its effect on this state. Every event
    /// that changed the state is recorded in it (a step visit, the last
    /// event, the offline switch, the recent events), so a second delivery
    /// is recognized; an event that changed nothing would change nothing
    /// again.
    pub fn has_seen(&self, event_id: &str) -> bool {
        self.step_path.iter().any(|v| v.event_id == event_id)
            || self.last_event_id.as_deref() == Some(event_id)
            || self
                .offline_switch
                .as_ref()
                .is_some_and(|s| s.event_id == event_id)
            || self.recent.iter().any(|r| &*r.event_id == event_id)
    }

    /// How long a completed journey took.
    pub fn duration_micros(&self) -> Option<i64> {
        match (self.status, self.started_at, self.finished_at) {
            (JourneyStatus::Completed, Some(start), Some(end)) => Some(end.0 - start.0),
            _ => None,
        }
    }

    /// Whether `step` has been reached in the current journey.
    pub fn reached(&self, step: usize) -> bool {
        self.step_path.iter().any(|v| v.step == step)
    }

    /// The step the customer was at at instant `at`, from the visits known
    /// now: in order, the furthest step reached by then; in any order, the
    /// last step reached by then.
    pub fn step_at(&self, at: Micros, in_order: bool) -> Option<usize> {
        if in_order {
            self.step_path
                .iter()
                .filter(|v| v.at <= at)
                .map(|v| v.step)
                .max()
        } else {
            // The path is sorted by time: the last one by then is the latest.
            self.step_path
                .iter()
                .rev()
                .find(|v| v.at <= at)
                .map(|v| v.step)
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and maps with string keys
        // cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Whether `to_json` text is of a journey not started, without parsing
    /// it: a reader that shows only started journeys skips most states
    /// this way. Relies on `journey` and `status` being the first fields
    /// serialized, and on journey names holding no `"` (checked at load); a
    /// unit test pins both.
    pub fn is_not_started_json(text: &str) -> bool {
        text.strip_prefix("{\"journey\":\"")
            .and_then(|rest| rest.split_once('"'))
            .is_some_and(|(_, rest)| rest.starts_with(",\"status\":\"not_started\""))
    }
}

/// `Micros` as a plain integer of microseconds.
mod micros_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::Micros;

    pub fn serialize<S: Serializer>(at: &Micros, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(at.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
        i64::deserialize(d).map(Micros)
    }
}

/// `Option<Micros>` as an optional integer of microseconds.
mod opt_micros_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::Micros;

    pub fn serialize<S: Serializer>(at: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_some(&at.0),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
        Option::<i64>::deserialize(d).map(|v| v.map(Micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_set_is_bounded() {
        let mut set = ChannelSet::default();
        for i in 0..MAX_CHANNELS {
            assert!(set.insert(&format!("made_up_{i:02}"), false));
        }
        assert!(!set.insert("one_more", false), "no room");
        assert!(!set.contains("one_more"));
        assert_eq!(set.len(), MAX_CHANNELS);
        assert!(!set.insert("made_up_00", false), "held already");
        assert!(set.insert("web", true), "the taxonomy's own find room");
        assert!(set.contains("web"));
    }

    #[test]
    fn a_state_round_trips_through_json_and_stays_small() {
        let state = JourneyState {
            journey: "j".into(),
            status: JourneyStatus::InProgress,
            current_step: Some(StepRef {
                index: 1,
                name: "b".into(),
            }),
            started_at: Some(Micros(10)),
            last_progress_at: Some(Micros(20)),
            deadline: Some(Micros(30)),
            channels: ChannelSet::from_iter(["web"]),
            started_online: true,
            step_path: vec![
                StepVisit {
                    step: 0,
                    at: Micros(10),
                    event_id: "e1".into(),
                },
                StepVisit {
                    step: 1,
                    at: Micros(20),
                    event_id: "e2".into(),
                },
            ],
            ..JourneyState::not_started("j")
        };
        let json = state.to_json();
        assert_eq!(JourneyState::from_json(&json).expect("parses"), state);
        assert!(json.contains("\"status\":\"in_progress\""), "{json}");
        assert!(
            !json.contains("finished_at"),
            "none fields are left out: {json}"
        );
        let empty = JourneyState::not_started("j").to_json();
        assert_eq!(
            empty,
            r#"{"journey":"j","status":"not_started","started_online":false}"#
        );
    }

    #[test]
    fn a_not_started_state_is_recognised_without_parsing() {
        let mut state = JourneyState::not_started("pdv-2");
        state.recent.push(RecentInteraction {
            event_id: "e1".into(),
            at: Micros(1),
            interaction: Interaction {
                channel: "web".into(),
                reason: "check_accounts".into(),
                event_type: "page_view".into(),
            },
        });
        assert!(JourneyState::is_not_started_json(&state.to_json()));
        state.status = JourneyStatus::InProgress;
        assert!(!JourneyState::is_not_started_json(&state.to_json()));
        assert!(!JourneyState::is_not_started_json("{}"));
        assert!(!JourneyState::is_not_started_json(""));
    }

    mod channel_set {
        use std::collections::BTreeSet;

        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Any inserts: the same answers and the same JSON as the
            /// `BTreeSet` it replaces, and it reads back any array a
            /// `BTreeSet` reads (sorted and made distinct).
            #[test]
            fn behaves_and_serializes_as_a_btree_set(
                names in proptest::collection::vec("[a-d]{0,2}", 0..12),
                probes in proptest::collection::vec("[a-e]{0,2}", 0..6),
            ) {
                let mut set = ChannelSet::default();
                let mut tree = BTreeSet::new();
                for name in &names {
                    prop_assert_eq!(set.insert(name, true), tree.insert(name.clone()));
                }
                for probe in probes.iter().chain(&names) {
                    prop_assert_eq!(set.contains(probe), tree.contains(probe));
                }
                prop_assert_eq!(set.len(), tree.len());
                prop_assert!(set.capacity() <= set.len(), "no spare room: {}", set.capacity());
                prop_assert!(set.iter().eq(tree.iter()));
                let json = serde_json::to_string(&set).expect("json");
                prop_assert_eq!(&json, &serde_json::to_string(&tree).expect("json"));
                let unsorted = serde_json::to_string(&names).expect("json");
                let read: ChannelSet = serde_json::from_str(&unsorted).expect("reads");
                let read_tree: BTreeSet<String> = serde_json::from_str(&unsorted).expect("reads");
                prop_assert!(read.iter().eq(read_tree.iter()));
                prop_assert_eq!(read, set);
            }
        }
    }

    mod keep_latest {
        use proptest::prelude::*;

        use super::super::*;
        use crate::domain::{
            journey::testkit::{facts, recent as entry},
            Initiator,
        };

        /// What `keep_latest` replaced: insert, then drop the oldest.
        fn reference(recent: &mut Vec<RecentInteraction>, capacity: usize, event: &EventFacts) {
            if capacity == 0 {
                return;
            }
            let position = recent.partition_point(|r| r.at <= event.at);
            if position == 0 && recent.len() >= capacity {
                return;
            }
            recent.insert(position, entry(&event.event_id, event.at.0));
            while recent.len() > capacity {
                recent.remove(0);
            }
        }

        fn event(id: &str, at: i64) -> EventFacts<'static> {
            facts(
                id,
                at,
                "web",
                "check_accounts",
                "page_view",
                Initiator::Customer,
                &[],
            )
        }

        proptest! {
            /// Any list (sorted by time, possibly longer than the capacity
            /// after a definition changed), any capacity and instant: the
            /// same list as inserting then trimming, and a list held at its
            /// capacity never grows its allocation.
            #[test]
            fn matches_insert_then_trim(
                mut ats in proptest::collection::vec(0i64..20, 0..14),
                capacity in 0usize..12,
                at in 0i64..20,
            ) {
                ats.sort_unstable();
                let mut list: Vec<RecentInteraction> = ats
                    .iter()
                    .enumerate()
                    .map(|(i, t)| entry(&format!("e{i}"), *t))
                    .collect();
                list.shrink_to_fit();
                let new = event("new", at);
                let mut expected = list.clone();
                reference(&mut expected, capacity, &new);
                let full = list.len() == capacity;
                let room = list.capacity();
                RecentInteraction::keep_latest(&mut list, capacity, &new);
                prop_assert_eq!(&list, &expected);
                if full {
                    prop_assert_eq!(list.capacity(), room);
                }
            }
        }
    }
}
