//! A customer's journey states by journey name: a vector sorted by name.
//! A customer is in a few journeys at most, and a `BTreeMap` allocates a
//! node of 11 entries whatever the count (~370 bytes for one state), in a
//! cache that holds thousands of customers (the Redis store's states
//! cache). Looked up by binary search.

use std::sync::Arc;

use super::state::JourneyState;

/// A customer's states, by journey name. Each state is shared: the states
/// an append leaves alone pass from the cached copy to the next one as
/// they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyStates(Vec<(String, Arc<JourneyState>)>);

impl JourneyStates {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `journeys` states.
    pub fn with_capacity(journeys: usize) -> Self {
        Self(Vec::with_capacity(journeys))
    }

    fn position(&self, journey: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(name, _)| name.as_str().cmp(journey))
    }

    /// The state in `journey`, if the customer has one.
    pub fn get(&self, journey: &str) -> Option<&Arc<JourneyState>> {
        self.position(journey).ok().map(|at| &self.0[at].1)
    }

    pub fn contains_key(&self, journey: &str) -> bool {
        self.position(journey).is_ok()
    }

    /// Sets the state in `journey`; the one it replaces, if any.
    pub fn insert(
        &mut self,
        journey: String,
        state: Arc<JourneyState>,
    ) -> Option<Arc<JourneyState>> {
        match self.position(&journey) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, state)),
            Err(at) => {
                self.0.insert(at, (journey, state));
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries the vector has room for (what it takes in memory).
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Gives back room the vector does not use (before it is cached).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }

    /// The states by journey name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<JourneyState>)> {
        self.into_iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<JourneyState>> {
        self.0.iter().map(|(_, state)| state)
    }
}

impl Extend<(String, Arc<JourneyState>)> for JourneyStates {
    /// Each entry as `insert` would set it: a later one for the same
    /// journey replaces an earlier one.
    fn extend<I: IntoIterator<Item = (String, Arc<JourneyState>)>>(&mut self, entries: I) {
        for (journey, state) in entries {
            self.insert(journey, state);
        }
    }
}

impl<'a> IntoIterator for &'a JourneyStates {
    type Item = (&'a String, &'a Arc<JourneyState>);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Arc<JourneyState>)>,
        fn(&'a (String, Arc<JourneyState>)) -> (&'a String, &'a Arc<JourneyState>),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, state)| (name, state))
    }
}

impl IntoIterator for JourneyStates {
    type Item = (String, Arc<JourneyState>);
    type IntoIter = std::vec::IntoIter<(String, Arc<JourneyState>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(String, Arc<JourneyState>)> for JourneyStates {
    fn from_iter<I: IntoIterator<Item = (String, Arc<JourneyState>)>>(entries: I) -> Self {
        let mut states = Self::new();
        states.extend(entries);
        states
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn state(journey: &str, n: usize) -> Arc<JourneyState> {
        let mut state = JourneyState::not_started(journey);
        state.step_path.reserve(n);
        state.last_event_id = Some(format!("e{n}"));
        Arc::new(state)
    }

    proptest! {
        /// Any sequence of inserts reads back as a `BTreeMap` given the same
        /// inserts: the same answers to `get`, the same replaced states,
        /// the same entries in the same (name) order.
        #[test]
        fn behaves_as_a_btree_map(
            inserts in proptest::collection::vec(("[a-e]{0,2}", 0usize..4), 0..24),
            probes in proptest::collection::vec("[a-f]{0,2}", 0..8),
        ) {
            let mut states = JourneyStates::new();
            let mut map = BTreeMap::new();
            for (journey, n) in &inserts {
                let replaced = states.insert(journey.clone(), state(journey, *n));
                let expected = map.insert(journey.clone(), state(journey, *n));
                prop_assert_eq!(replaced, expected);
            }
            for probe in probes.iter().chain(inserts.iter().map(|(j, _)| j)) {
                prop_assert_eq!(states.get(probe), map.get(probe));
                prop_assert_eq!(states.contains_key(probe), map.contains_key(probe));
            }
            prop_assert_eq!(states.len(), map.len());
            prop_assert_eq!(states.is_empty(), map.is_empty());
            prop_assert!(states.iter().eq(map.iter()));
            prop_assert!(states.values().eq(map.values()));
            let collected: JourneyStates = inserts
                .iter()
                .map(|(journey, n)| (journey.clone(), state(journey, *n)))
                .collect();
            prop_assert_eq!(collected, states);
        }
    }

    #[test]
    fn one_state_takes_one_entry_of_room() {
        let mut states: JourneyStates =
            [("pdv".to_string(), state("pdv", 0))].into_iter().collect();
        states.shrink_to_fit();
        assert!(states.capacity() <= 1, "{}", states.capacity());
    }
}
