//! Journey definitions: named, ordered steps matched on events, which step
//! starts and which completes a journey, and when a customer counts as
//! having dropped. Data in TOML (built-in default `journeys/default.toml`),
//! checked against the taxonomy at load, so a reload either yields a whole
//! usable set or an error naming the line.

use std::collections::BTreeSet;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use super::{facts::EventFacts, matcher::MatcherSpec, EventMatcher};
use crate::domain::{Micros, Taxonomy};

/// The journey definitions the service uses when none are given.
pub const BUILTIN_TOML: &str = include_str!("../../../journeys/default.toml");

/// Most events remembered before a journey starts: the state keeps them,
/// so the bound keeps every customer's state small.
pub const MAX_LOOKBACK_EVENTS: u32 = 50;

/// A definition file that cannot be used; the message names the line.
#[derive(Debug, Error)]
pub enum JourneyError {
    #[error("journey definitions: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("journey definitions, line {line}: {reason}")]
    Rule { line: usize, reason: String },
}

/// One named step of a journey and the events that reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub matcher: EventMatcher,
}

/// One checked journey definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneyDefinition {
    name: String,
    description: String,
    steps: Vec<Step>,
    start: usize,
    complete: usize,
    in_order: bool,
    inactivity_timeout_micros: i64,
    abandon: Vec<EventMatcher>,
    reentry: bool,
    lookback_events: usize,
}

impl JourneyDefinition {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The steps, in the order the file lists them (never empty).
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The name of step `index`, or `""` for an index this definition does
    /// not have (a state written under an older definition).
    pub fn step_name(&self, index: usize) -> &str {
        self.steps.get(index).map_or("", |s| s.name.as_str())
    }

    /// The index of the step whose event starts the journey.
    pub fn start_index(&self) -> usize {
        self.start
    }

    /// The index of the step whose event completes the journey.
    pub fn complete_index(&self) -> usize {
        self.complete
    }

    /// Whether steps must come in the listed order (a funnel).
    pub fn in_order(&self) -> bool {
        self.in_order
    }

    /// How long a journey may go without progress before it counts as
    /// dropped.
    pub fn inactivity_timeout_micros(&self) -> i64 {
        self.inactivity_timeout_micros
    }

    /// May a customer start again once a journey completed or dropped?
    pub fn reentry(&self) -> bool {
        self.reentry
    }

    /// How many events before the start the "before entering" figure reads.
    /// The events that drop the journey at once.
    pub fn abandon_matchers(&self) -> &[EventMatcher] {
        &self.abandon
    }

    pub fn lookback_events(&self) -> usize {
        self.lookback_events
    }

    /// Whether `event` is an explicit abandon.
    pub fn is_abandon(&self, event: &EventFacts) -> bool {
        self.abandon.iter().any(|m| m.matches(event))
    }

    /// The indices of the steps `event` matches, in step order.
    pub fn matching_steps<'a>(&'a self, event: &'a EventFacts) -> impl Iterator<Item = usize> + 'a {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, step)| step.matcher.matches(event))
            .map(|(index, _)| index)
    }
}

/// A loaded, checked set of journey definitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JourneyDefinitions {
    journeys: Vec<JourneyDefinition>,
}

impl JourneyDefinitions {
    /// The built-in definitions, checked against `taxonomy`.
    pub fn builtin(taxonomy: &Taxonomy) -> Result<Self, JourneyError> {
        Self::from_toml(BUILTIN_TOML, taxonomy)
    }

    /// Parses and checks a definition file's text.
    pub fn from_toml(text: &str, taxonomy: &Taxonomy) -> Result<Self, JourneyError> {
        let file: DefinitionsFile = toml::from_str(text)?;
        let line_of = |span: std::ops::Range<usize>| {
            let before = text.get(..span.start).unwrap_or(text);
            before.bytes().filter(|b| *b == b'\n').count() + 1
        };
        let mut names = BTreeSet::new();
        let mut journeys = Vec::with_capacity(file.journey.len());
        for spanned in file.journey {
            let table_span = spanned.span();
            let spec = spanned.into_inner();
            let name = spec.name.get_ref().clone();
            let name_span = spec.name.span();
            let fail = |span: std::ops::Range<usize>, reason: String| {
                // A span-less condition (a default) blames the journey's name.
                let span = if span.is_empty() {
                    name_span.clone()
                } else {
                    span
                };
                JourneyError::Rule {
                    line: line_of(span),
                    reason: format!("journey {name:?}: {reason}"),
                }
            };
            if let Err(reason) = check_identifier(&name) {
                return Err(fail(name_span.clone(), format!("name {reason}")));
            }
            if !names.insert(name.clone()) {
                return Err(fail(
                    name_span.clone(),
                    "a journey with this name is defined twice".into(),
                ));
            }
            let definition = build(spec, taxonomy, table_span).map_err(|(s, r)| fail(s, r))?;
            journeys.push(definition);
        }
        Ok(Self { journeys })
    }

    /// The journeys in the order the file lists them.
    pub fn iter(&self) -> impl Iterator<Item = &JourneyDefinition> {
        self.journeys.iter()
    }

    pub fn get(&self, name: &str) -> Option<&JourneyDefinition> {
        self.journeys.iter().find(|j| j.name == name)
    }

    pub fn len(&self) -> usize {
        self.journeys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.journeys.is_empty()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionsFile {
    #[serde(default)]
    journey: Vec<Spanned<JourneySpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JourneySpec {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    step: Vec<Spanned<MatcherSpec>>,
    start: Option<Spanned<String>>,
    complete: Option<Spanned<String>>,
    #[serde(default = "yes")]
    in_order: bool,
    inactivity_timeout: Spanned<String>,
    #[serde(default)]
    abandon: Vec<Spanned<MatcherSpec>>,
    #[serde(default)]
    reentry: bool,
    #[serde(default = "five")]
    lookback_events: Spanned<u32>,
}

fn yes() -> bool {
    true
}

fn five() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

type SpannedError = (std::ops::Range<usize>, String);

/// Checks one journey table and builds its definition.
fn build(
    spec: JourneySpec,
    taxonomy: &Taxonomy,
    table_span: std::ops::Range<usize>,
) -> Result<JourneyDefinition, SpannedError> {
    if spec.step.is_empty() {
        return Err((table_span, "no steps: a journey needs at least two".into()));
    }
    let mut steps = Vec::with_capacity(spec.step.len());
    let mut step_spans = Vec::with_capacity(spec.step.len());
    for spanned in spec.step {
        let span = spanned.span();
        let mut matcher = spanned.into_inner();
        let Some(name) = matcher.name.take() else {
            return Err((span, "a step needs a name".into()));
        };
        let fail = |(s, reason): SpannedError| (s, format!("step {name:?}: {reason}"));
        check_identifier(&name).map_err(|r| fail((span.clone(), format!("name {r}"))))?;
        if steps.iter().any(|s: &Step| s.name == name) {
            return Err(fail((
                span,
                "a step with this name is defined twice".into(),
            )));
        }
        let matcher = matcher.build(taxonomy, span.clone()).map_err(fail)?;
        steps.push(Step { name, matcher });
        step_spans.push(span);
    }
    let find = |spanned: &Option<Spanned<String>>, default: usize, what: &str| match spanned {
        None => Ok(default),
        Some(s) => steps
            .iter()
            .position(|step| step.name == *s.get_ref())
            .ok_or_else(|| (s.span(), format!("{what} names no step: {:?}", s.get_ref()))),
    };
    let start = find(&spec.start, 0, "start")?;
    let complete = find(&spec.complete, steps.len() - 1, "complete")?;
    if start == complete {
        let span = spec
            .complete
            .as_ref()
            .or(spec.start.as_ref())
            .map(Spanned::span);
        return Err((
            span.unwrap_or(table_span),
            "start and complete are the same step: a journey needs at least two".into(),
        ));
    }
    if spec.in_order {
        // In order, a journey only moves forward from its start to its
        // completion: a step listed outside that range is never reached.
        let outside = (0..steps.len()).find(|&i| i < start || i > complete);
        if let Some(index) = outside {
            return Err((
                step_spans[index].clone(),
                format!(
                    "step {:?} lies outside start..complete, so in order it is never reached",
                    steps[index].name
                ),
            ));
        }
    }
    let timeout_text = spec.inactivity_timeout.get_ref();
    let timeout_span = spec.inactivity_timeout.span();
    let timeout = humantime::parse_duration(timeout_text).map_err(|e| {
        (
            timeout_span.clone(),
            format!("inactivity_timeout {timeout_text:?}: {e}"),
        )
    })?;
    // A century: past it a deadline would outrun the calendar timestamps
    // can hold, and no journey waits that long for its next step.
    const MOST_MICROS: i64 = 36_500 * 86_400 * 1_000_000;
    let inactivity_timeout_micros = match i64::try_from(timeout.as_micros()) {
        Ok(micros) if micros > MOST_MICROS => {
            return Err((
                timeout_span,
                format!("inactivity_timeout {timeout_text:?} is longer than 36500 days"),
            ))
        }
        Ok(micros) if micros > 0 => micros,
        Ok(_) => {
            return Err((
                timeout_span,
                format!("inactivity_timeout {timeout_text:?} must be above zero"),
            ))
        }
        Err(_) => {
            return Err((
                timeout_span,
                format!("inactivity_timeout {timeout_text:?} is longer than time can count"),
            ))
        }
    };
    let mut abandon = Vec::with_capacity(spec.abandon.len());
    for spanned in spec.abandon {
        let span = spanned.span();
        let matcher = spanned
            .into_inner()
            .build(taxonomy, span.clone())
            .map_err(|(s, r)| (s, format!("abandon: {r}")))?;
        // An event that abandons cannot start the journey: a rule matching
        // every start event leaves it never started.
        if matcher.covers(&steps[start].matcher, taxonomy) {
            return Err((
                span,
                format!(
                    "abandon: matches every event of the start step {:?}, so the journey never starts",
                    steps[start].name
                ),
            ));
        }
        abandon.push(matcher);
    }
    let lookback = *spec.lookback_events.get_ref();
    if lookback > MAX_LOOKBACK_EVENTS {
        return Err((
            spec.lookback_events.span(),
            format!("lookback_events {lookback} is above the limit of {MAX_LOOKBACK_EVENTS}"),
        ));
    }
    Ok(JourneyDefinition {
        name: spec.name.into_inner(),
        description: spec.description,
        steps,
        start,
        complete,
        in_order: spec.in_order,
        inactivity_timeout_micros,
        abandon,
        reentry: spec.reentry,
        lookback_events: lookback as usize,
    })
}

/// Journey and step names appear in store keys and counter fields, which
/// use `:` and `>` as separators: keep them to letters, digits, `_`, `-`.
fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 64 {
        return Err(format!("{name:?} is longer than 64 bytes"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "{name:?} may hold only letters, digits, '_' and '-'"
        ));
    }
    Ok(())
}

/// The instant a journey in progress drops if nothing moves it on.
pub(super) fn deadline_after(definition: &JourneyDefinition, last_progress_at: Micros) -> Micros {
    last_progress_at.saturating_add_micros(definition.inactivity_timeout_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[[journey]]\nname = \"j\"\ninactivity_timeout = \"30m\"\n";
    const STEP_A: &str = "[[journey.step]]\nname = \"a\"\ntype = \"login\"\n";
    const STEP_B: &str = "[[journey.step]]\nname = \"b\"\ntype = \"logout\"\n";

    fn load(text: &str) -> Result<JourneyDefinitions, JourneyError> {
        JourneyDefinitions::from_toml(text, &Taxonomy::builtin())
    }

    #[test]
    fn builtin_definitions_load_with_the_banking_example() {
        let all = JourneyDefinitions::builtin(&Taxonomy::builtin()).expect("built-in is valid");
        let banking = all
            .get("personal_data_verification")
            .expect("banking example");
        let names: Vec<&str> = banking.steps().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "signed_in",
                "prompted",
                "verification_started",
                "address_checked",
                "contact_checked",
                "income_checked",
                "completed"
            ]
        );
        assert_eq!((banking.start_index(), banking.complete_index()), (0, 6));
        assert!(banking.in_order() && banking.reentry());
        assert_eq!(
            banking.inactivity_timeout_micros(),
            30 * 60 * Micros::PER_SECOND
        );
        assert_eq!(banking.lookback_events(), 5);
        let loan = all.get("loan_application").expect("loan");
        assert!(!loan.in_order());
        assert!(all.get("card_activation").is_some());
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn defaults_apply() {
        let all = load(&format!("{HEAD}{STEP_A}{STEP_B}")).expect("valid");
        let j = all.get("j").expect("j");
        assert_eq!((j.start_index(), j.complete_index()), (0, 1));
        assert!(j.in_order() && !j.reentry());
        assert_eq!(j.lookback_events(), 5);
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                format!("{HEAD}[[journey.step]]\nname = \"a\"\ntype = \"teleport\"\n{STEP_B}"),
                "line 6",
                "unknown type \"teleport\"",
            ),
            (HEAD.to_string(), "line 1", "no steps"),
            (
                format!("{HEAD}{STEP_A}{STEP_B}{HEAD}{STEP_A}{STEP_B}"),
                "line 11",
                "defined twice",
            ),
            (
                format!(
                    "{HEAD}[[journey.step]]\nname = \"a\"\nreason = \"campaign_offer\"\n\ninitiator = \"customer\"\n{STEP_B}"
                ),
                "line 8",
                "reason \"campaign_offer\" is never started by the customer",
            ),
            (
                format!("{HEAD}[[journey.step]]\nname = \"a\"\nchannel = \"fax\"\n{STEP_B}"),
                "line 6",
                "unknown channel \"fax\"",
            ),
            (
                format!("{HEAD}[[journey.step]]\nname = \"a\"\nreason = \"teleporting\"\n{STEP_B}"),
                "line 6",
                "unknown reason",
            ),
            (
                format!(
                    "{HEAD}[[journey.step]]\nname = \"a\"\nchannel = \"branch\"\nchannel_class = \"online\"\n{STEP_B}"
                ),
                "line 7",
                "channel \"branch\" is offline",
            ),
            (
                format!("{HEAD}{STEP_A}[[journey.step]]\nname = \"a\"\ntype = \"logout\"\n"),
                "line 7",
                "step \"a\": a step with this name is defined twice",
            ),
            (
                format!("{HEAD}{STEP_A}[[journey.step]]\nname = \"b\"\nchannel_class = \"online\"\n"),
                "line 7",
                "matches every event",
            ),
            (
                format!("{HEAD}{STEP_A}[[journey.step]]\nname = \"b\"\ntype = \"logout\"\nattributes = {{ page = [] }}\n"),
                "line 10",
                "empty list",
            ),
            (
                format!("{HEAD}complete = \"z\"\n{STEP_A}{STEP_B}"),
                "line 4",
                "complete names no step: \"z\"",
            ),
            (
                format!("{HEAD}start = \"b\"\n{STEP_A}{STEP_B}[[journey.step]]\nname = \"c\"\ntype = \"purchase\"\n"),
                "line 5",
                "step \"a\" lies outside start..complete",
            ),
            (
                "[[journey]]\nname = \"j\"\ninactivity_timeout = \"soon\"\n".to_string() + STEP_A + STEP_B,
                "line 3",
                "inactivity_timeout \"soon\"",
            ),
            (
                "[[journey]]\nname = \"j\"\ninactivity_timeout = \"0s\"\n".to_string() + STEP_A + STEP_B,
                "line 3",
                "above zero",
            ),
            (
                format!("{HEAD}{STEP_A}{STEP_B}[[journey.abandon]]\ntype = \"flying\"\n"),
                "line 11",
                "abandon: unknown type",
            ),
            (
                "[[journey]]\nname = \"j k\"\ninactivity_timeout = \"1m\"\n".to_string() + STEP_A + STEP_B,
                "line 2",
                "only letters",
            ),
            (
                "[[journey]]\nname = \"j\"\ninactivity_timeout = \"400000years\"\n".to_string()
                    + STEP_A
                    + STEP_B,
                "line 3",
                "longer than time can count",
            ),
            (
                "[[journey]]\nname = \"j\"\ninactivity_timeout = \"2920000d\"\n".to_string()
                    + STEP_A
                    + STEP_B,
                "line 3",
                "longer than 36500 days",
            ),
            (
                format!("{HEAD}{STEP_A}{STEP_B}[[journey.abandon]]\ntype = [\"login\", \"logout\"]\n"),
                "line 10",
                "abandon: matches every event of the start step \"a\", so the journey never starts",
            ),
            (
                format!("{HEAD}[[journey.step]]\nname = \"a\"\ntype = \"login\"\nchannel = \"web\"\nattributes = {{ method = \"sso\" }}\n{STEP_B}[[journey.abandon]]\ntype = \"login\"\nchannel_class = \"online\"\n"),
                "line 12",
                "never starts",
            ),
            (
                format!("{HEAD}lookback_events = 51\n{STEP_A}{STEP_B}"),
                "line 4",
                "above the limit of 50",
            ),
            (format!("{HEAD}in_ordr = true\n{STEP_A}{STEP_B}"), "line 4", "in_ordr"),
        ];
        for (text, line, reason) in cases {
            let err = load(&text).expect_err(&text).to_string();
            assert!(
                err.contains(line) && err.contains(reason),
                "{text}\n-> {err}"
            );
        }
    }

    #[test]
    fn an_abandon_rule_narrower_than_the_start_step_is_kept() {
        // Only some start events abandon: the others start the journey.
        for abandon in [
            "channel = \"web\"\n",
            "type = \"login\"\ninitiator = \"company\"\n",
            "type = \"login\"\nattributes = { method = \"sso\" }\n",
        ] {
            let text = format!("{HEAD}{STEP_A}{STEP_B}[[journey.abandon]]\n{abandon}");
            let all = load(&text).unwrap_or_else(|e| panic!("{abandon}: {e}"));
            assert_eq!(all.len(), 1);
        }
    }

    #[test]
    fn an_unordered_journey_may_start_and_complete_anywhere() {
        let text =
            format!("{HEAD}in_order = false\nstart = \"b\"\ncomplete = \"a\"\n{STEP_A}{STEP_B}");
        let all = load(&text).expect("valid");
        let j = all.get("j").expect("j");
        assert_eq!((j.start_index(), j.complete_index()), (1, 0));
        let same = format!("{HEAD}complete = \"a\"\n{STEP_A}{STEP_B}");
        assert!(load(&same)
            .expect_err("start = complete")
            .to_string()
            .contains("same step"));
    }
}
