//! The `c10k` command line.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use c10k_lab::app::config::{Model, ServerConfig, Threads, MIN_RETAIN};
use c10k_lab::{blocking, doctor, evented, experiments, floor, load, sys, workers};

#[derive(Parser)]
#[command(
    name = "c10k",
    version,
    about = "See why long-lived connections starve a thread-per-connection server but not an event loop."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server that serves the contract (probe, SSE, stream, WebSocket, long poll, ...).
    Serve(ServeArgs),
    /// Hold many connections against a server and measure latency, failures and server cost.
    #[command(after_help = LOAD_EXAMPLES)]
    Load(Box<load::LoadArgs>),
    /// Run an experiment: live view while it runs, JSON, CSV and an SVG chart in results/NAME/.
    Run {
        #[command(subcommand)]
        experiment: experiments::Experiment,
    },
    /// List the experiments.
    List,
    /// Show the Linux limits that bound how many connections each model can hold here.
    Doctor,
    /// The misbehaving clients of `c10k run hostile`.
    #[command(hide = true)]
    Hostile(load::hostile::HostileArgs),
}

const DEFAULT: ServerConfig = ServerConfig::DEFAULT;

const LOAD_EXAMPLES: &str = "Examples:
  c10k load --target 127.0.0.1:8080 --kind ws --connections 10000 --ramp-per-sec 2000
  c10k load --url http://127.0.0.1:3000/events -H 'Authorization: Bearer TOKEN' \\
            --timestamp ts --probe-url http://127.0.0.1:3000/health
  c10k load --url ws://127.0.0.1:3000/socket --ws-protocol chat.v1 --connections 50000 \\
            --server-pid $(pgrep -f my-server) --json report.json";

#[derive(clap::Args)]
struct ServeArgs {
    /// Which I/O model serves.
    #[arg(long, value_enum, default_value_t = Model::Evented)]
    model: Model,
    /// Address to listen on; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long, default_value_t = DEFAULT.listen)]
    listen: SocketAddr,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = DEFAULT.backlog)]
    backlog: i32,
    /// Publish a `tick` event this often, in milliseconds; 0 turns ticks off.
    #[arg(long, default_value_t = DEFAULT.tick_ms)]
    tick_ms: u64,
    /// After this many milliseconds without a broadcast, SSE clients get a comment and WebSocket
    /// clients a ping; 0 turns heartbeats off.
    #[arg(long, default_value_t = DEFAULT.heartbeat_ms)]
    heartbeat_ms: u64,
    /// How long a long poll is held before it is answered `[]`, in milliseconds.
    #[arg(long, default_value_t = DEFAULT.poll_timeout_ms)]
    poll_timeout_ms: u64,
    /// A request head must arrive in full within this many milliseconds (slowloris defence).
    #[arg(long, default_value_t = DEFAULT.header_timeout_ms)]
    header_timeout_ms: u64,
    /// Keep-alive and WebSocket connections that send nothing for this long are closed.
    #[arg(long, default_value_t = DEFAULT.idle_timeout_ms)]
    idle_timeout_ms: u64,
    /// Bytes a connection may have waiting to be written before it is cut off as too slow.
    #[arg(long, default_value_t = DEFAULT.max_write_queue)]
    max_write_queue: usize,
    /// Largest WebSocket message accepted, in bytes (close 1009 past it).
    #[arg(long, default_value_t = DEFAULT.max_message)]
    max_message: usize,
    /// Events retained for `Last-Event-ID` replay and `/poll?after=` (at least 1024, as the
    /// contract promises).
    #[arg(long, default_value_t = DEFAULT.retain)]
    retain: usize,
    /// Bytes the retained events may take in all, every encoding counted: past it the oldest
    /// go first, whatever `--retain` says (the newest event is always kept).
    #[arg(long, default_value_t = DEFAULT.retain_bytes)]
    retain_bytes: usize,
    /// Subscribers written to per loop turn during a broadcast (evented model): smaller answers
    /// newcomers sooner during a big fan-out, larger spends fewer loop turns on it.
    #[arg(long, default_value_t = DEFAULT.fanout_batch)]
    fanout_batch: usize,
    /// Set SO_REUSEPORT, so several server processes can share one port; with --workers, each
    /// worker gets a socket of its own (the kernel spreads connections by a hash) instead of
    /// sharing one (the next idle worker takes the next connection).
    #[arg(long)]
    reuse_port: bool,
    /// Evented model: worker processes, each one thread and one loop, serving one address and
    /// one event stream. Past one process's descriptor limit and one core.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    workers: u32,
    /// Run as one worker of `--workers` (set by the supervisor).
    #[arg(long, hide = true)]
    worker: Option<evented::WorkerSpec>,
    /// Blocking model: worker threads (`1` is the sequential server) or `unbounded` (a thread per
    /// connection).
    #[arg(long, default_value_t = DEFAULT.threads)]
    threads: Threads,
    /// Blocking model with a pool: accepted connections that may wait for a free worker; past it
    /// the accept thread stops and the kernel's listen backlog holds the rest.
    #[arg(long, default_value_t = DEFAULT.accept_queue)]
    accept_queue: usize,
    /// Blocking model: stack size of connection threads in bytes (default: the std default).
    #[arg(long)]
    stack_size: Option<usize>,
}

impl ServeArgs {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            listen: self.listen,
            backlog: self.backlog,
            tick_ms: self.tick_ms,
            heartbeat_ms: self.heartbeat_ms,
            poll_timeout_ms: self.poll_timeout_ms,
            header_timeout_ms: self.header_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            max_write_queue: self.max_write_queue,
            max_message: self.max_message,
            retain: self.retain.max(MIN_RETAIN),
            retain_bytes: self.retain_bytes,
            fanout_batch: self.fanout_batch,
            reuse_port: self.reuse_port,
            threads: self.threads,
            accept_queue: self.accept_queue,
            stack_size: self.stack_size,
            ..DEFAULT
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Load(args) => load::run(&args),
        Command::Run { experiment } => experiments::run(&experiment),
        Command::List => {
            for (name, what) in experiments::list() {
                println!("{name:<12} {what}");
            }
            println!("\nrun one with: c10k run NAME   (options: c10k run NAME --help)");
            Ok(())
        }
        Command::Doctor => doctor::run(),
        Command::Hostile(args) => load::hostile::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("c10k: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    let cfg = args.config();
    let limit = sys::raise_fd_limit();
    if let Some(spec) = args.worker {
        return evented::serve_worker(cfg, spec).map_err(|e| format!("worker {}: {e}", spec.index));
    }
    match limit {
        Ok((soft, _)) => eprintln!("open file limit: {soft}"),
        Err(e) => eprintln!("could not read the open file limit: {e}"),
    }
    if args.workers > 1 && args.model == Model::Blocking {
        return Err("--workers runs the evented model; the blocking model is one process".into());
    }
    let listen = cfg.listen;
    let ready = |addr| {
        println!("listening on {addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    };
    match args.model {
        Model::Evented if args.workers > 1 => {
            let worker_args = std::env::args_os().skip(1).collect();
            workers::serve(cfg, args.workers as usize, worker_args, ready)
        }
        Model::Evented => evented::serve(cfg, ready),
        Model::Blocking => blocking::serve(cfg, ready),
        Model::Floor => floor::serve(cfg, args.workers as usize, ready),
    }
    .map_err(|e| format!("serving on {listen}: {e}"))
}
