//! The load generator: holds many long-lived connections and measures what they get.

/// `c10k load` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Address of the server under load.
    #[arg(long)]
    pub target: std::net::SocketAddr,
}

/// Runs `c10k load`; an error is one sentence for the user.
pub fn run(_args: &LoadArgs) -> Result<(), String> {
    Err("the load generator is not built yet".to_string())
}
