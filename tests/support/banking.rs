//! Reads of the built-in banking journey through a store, for store-level
//! tests: a profile's state in it, and its listings.

use journey::{
    domain::{
        journey::{JourneyState, JourneyStatus, Listing},
        CustomerId, Micros,
    },
    storage::{JourneyListQuery, TimelineStore},
};

pub const BANKING: &str = "personal_data_verification";

/// The banking journey's state in `profile`'s context (which must exist),
/// if the profile entered it.
pub async fn banking_state(
    store: &dyn TimelineStore,
    profile: &CustomerId,
) -> Option<JourneyState> {
    let snapshot = store
        .context(profile, 10, Micros(0))
        .await
        .expect("context")
        .expect("found");
    snapshot
        .journeys
        .iter()
        .find(|s| s.journey == BANKING)
        .cloned()
}

/// The whole of the banking journey's listing of `status` (at `step`),
/// ten customers at most.
pub fn banking_listing(status: JourneyStatus, step: Option<&str>) -> JourneyListQuery {
    JourneyListQuery {
        listing: Listing {
            journey: BANKING.into(),
            status,
            step: step.map(String::from),
            at: Micros(0),
        }
        .key(),
        start: Micros(0),
        end: Micros(i64::MAX),
        limit: 10,
        after: None,
    }
}

/// The profile ids in the banking journey's listing of `status` (at
/// `step`), sorted.
pub async fn banking_listed(
    store: &dyn TimelineStore,
    status: JourneyStatus,
    step: Option<&str>,
) -> Vec<String> {
    let page = store
        .list_journeys(&banking_listing(status, step))
        .await
        .expect("list");
    let mut ids: Vec<String> = page
        .customers
        .into_iter()
        .map(|(c, _)| c.to_string())
        .collect();
    ids.sort();
    ids
}
