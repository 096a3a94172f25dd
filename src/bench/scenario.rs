//! Scenarios: which operations a run sends, in what proportions. Adding one
//! is an `Op` (with its call in `ops.rs`) and a row in `Scenario::weights`.

use clap::ValueEnum;

/// What `journey bench run --scenario` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// AppendEvent of one new event.
    Append,
    /// AppendEvents of 100 new events of random customers.
    AppendBatch,
    /// AppendEvents of 100 new events of 10 random customers, 10 each (a
    /// channel forwarding sessions): one script call per customer.
    AppendSessions,
    /// AppendEvent of one new event that also carries the customer's
    /// cookie id (linked on its first use): the identity path.
    AppendIdentity,
    /// GetJourneyContext with max_events 50.
    Context,
    /// ListEvents, first page of 50.
    List,
    /// CheckContactFrequency of an email to a seeded customer.
    Check,
    /// GetJourneyContext against `journey bench echo-server`.
    Echo,
    /// 70 % context, 20 % append, 10 % contact check.
    Mix,
}

/// One kind of RPC a load task sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Append,
    AppendBatch,
    AppendSessions,
    AppendIdentity,
    Context,
    List,
    Check,
}

impl Scenario {
    /// The operations drawn, with their weights (any positive integers).
    pub fn weights(self) -> &'static [(Op, u32)] {
        match self {
            Self::Append => &[(Op::Append, 1)],
            Self::AppendBatch => &[(Op::AppendBatch, 1)],
            Self::AppendSessions => &[(Op::AppendSessions, 1)],
            Self::AppendIdentity => &[(Op::AppendIdentity, 1)],
            // The echo server answers the same request as the real one.
            Self::Context | Self::Echo => &[(Op::Context, 1)],
            Self::List => &[(Op::List, 1)],
            Self::Check => &[(Op::Check, 1)],
            Self::Mix => &[(Op::Context, 70), (Op::Append, 20), (Op::Check, 10)],
        }
    }

    /// The name on the command line and in reports.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// Draws the next operation from `weights`.
pub fn pick(weights: &[(Op, u32)], rng: &mut fastrand::Rng) -> Op {
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    let mut ticket = rng.u32(0..total.max(1));
    for &(op, weight) in weights {
        if ticket < weight {
            return op;
        }
        ticket -= weight;
    }
    weights[0].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_draws_in_proportion() {
        let mut rng = fastrand::Rng::with_seed(1);
        let draws: Vec<Op> = (0..10_000)
            .map(|_| pick(Scenario::Mix.weights(), &mut rng))
            .collect();
        let share = |op| draws.iter().filter(|&&d| d == op).count();
        assert!((6_700..7_300).contains(&share(Op::Context)));
        assert!((1_700..2_300).contains(&share(Op::Append)));
        assert!((800..1_200).contains(&share(Op::Check)));
    }

    #[test]
    fn names_match_the_command_line() {
        assert_eq!(Scenario::AppendBatch.name(), "append-batch");
        assert_eq!(Scenario::AppendSessions.name(), "append-sessions");
        assert_eq!(Scenario::Echo.name(), "echo");
    }
}
