//! The experiments behind `c10k run NAME`: each one a small program that starts the servers and
//! load generators it needs as child processes, prints a live view, and leaves JSON, CSV and an
//! SVG chart in `results/NAME/`.

mod chart;
mod harness;
pub mod idle_cost;
pub mod starvation;

/// `c10k run EXPERIMENT`
#[derive(Debug, clap::Subcommand)]
pub enum Experiment {
    /// Long-lived clients starve a blocking pool; the event loop keeps answering.
    Starvation(starvation::Args),
    /// Resident memory and threads per idle SSE / WebSocket connection, for both models.
    IdleCost(idle_cost::Args),
}

/// One line per experiment, for `c10k list`.
pub const LIST: &[(&str, &str)] = &[
    (
        "starvation",
        "long-lived clients against a blocking pool and the event loop, with a probe asking both \"can you still answer?\"",
    ),
    (
        "idle-cost",
        "resident memory and threads per idle SSE / WebSocket connection, for both models",
    ),
];

/// Runs one experiment; an error is one sentence for the user.
pub fn run(experiment: &Experiment) -> Result<(), String> {
    match experiment {
        Experiment::Starvation(args) => starvation::run(args),
        Experiment::IdleCost(args) => idle_cost::run(args),
    }
}
