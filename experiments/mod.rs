//! The experiments behind `c10k run NAME`: each one a small program that starts the servers and
//! load generators it needs as child processes, prints a live view, and leaves JSON, CSV and an
//! SVG chart in `results/NAME/`.

mod chart;
mod client;
pub mod disconnect;
pub mod fanout;
pub mod full_duplex;
mod harness;
pub mod hostile;
pub mod idle_cost;
pub mod keepalive;
mod nginx;
pub mod overhead;
pub mod proxy;
mod report;
pub mod scaling;
pub mod slow_consumer;
pub mod starvation;
mod tls;
mod transport;
pub mod web;

/// `c10k run EXPERIMENT`
#[derive(Debug, clap::Subcommand)]
pub enum Experiment {
    /// Long-lived clients starve a blocking pool; the event loop keeps answering.
    Starvation(starvation::Args),
    /// Resident memory and threads per idle SSE / WebSocket connection, for both models.
    IdleCost(idle_cost::Args),
    /// Slowloris, silent, non-reading and flooding clients against each model: what ends each
    /// kind, what good clients notice, how long until the server is back to its baseline.
    Hostile(hostile::Args),
    /// Idle connections in steps against each model until it fails: user and kernel memory,
    /// threads and latency per connection, and the limit that stopped each model.
    Scaling(scaling::Args),
    /// One event to N subscribers, in steps: delivery latency, CPU per delivery and what a
    /// newcomer waits meanwhile, for each model beside the floor (a bare write loop).
    Fanout(fanout::Args),
    /// One connection, both directions at once: an echo that returns while its body is still
    /// being sent, a WebSocket that sends while broadcasts arrive, an answer after a half-close.
    FullDuplex(full_duplex::Args),
    /// The same requests on a new connection each, on one kept-alive connection, and
    /// pipelined: latency, server CPU per request and the TIME_WAIT sockets left behind.
    Keepalive(keepalive::Args),
    /// Subscribers that stop reading while large events are published: server memory stays
    /// bounded, the slow ones are cut off, the readers that keep up do not notice.
    SlowConsumer(slow_consumer::Args),
    /// Through a real nginx: proxy buffering against SSE and chunked streams, what a WebSocket
    /// upgrade needs from the proxy, and whether nginx "offloads" streams from a blocking pool.
    Proxy(proxy::Args),
    /// How long until each model frees a client that left: a FIN, a reset, and a client that
    /// silently vanishes (a link down in a network namespace), with and without heartbeats.
    Disconnect(disconnect::Args),
    /// The same messages by short polling, long polling, SSE, a chunked stream and a
    /// WebSocket: bytes and packets each way, server CPU and latency per message, 16 B to
    /// 64 KiB; what opening each costs, and TLS 1.3 full and resumed.
    Overhead(overhead::Args),
}

/// Each experiment's name and what it shows, for `c10k list`: the same doc comments that
/// `c10k run --help` prints.
pub fn list() -> Vec<(String, String)> {
    use clap::Subcommand;
    Experiment::augment_subcommands(clap::Command::new("run"))
        .get_subcommands()
        .map(|c| {
            let about = c.get_about().map(ToString::to_string).unwrap_or_default();
            (c.get_name().to_string(), about)
        })
        .collect()
}

/// Runs one experiment; an error is one sentence for the user.
pub fn run(experiment: &Experiment) -> Result<(), String> {
    match experiment {
        Experiment::Starvation(args) => starvation::run(args),
        Experiment::IdleCost(args) => idle_cost::run(args),
        Experiment::Hostile(args) => hostile::run(args),
        Experiment::Scaling(args) => scaling::run(args),
        Experiment::Fanout(args) => fanout::run(args),
        Experiment::FullDuplex(args) => full_duplex::run(args),
        Experiment::Keepalive(args) => keepalive::run(args),
        Experiment::SlowConsumer(args) => slow_consumer::run(args),
        Experiment::Proxy(args) => proxy::run(args),
        Experiment::Disconnect(args) => disconnect::run(args),
        Experiment::Overhead(args) => overhead::run(args),
    }
}
