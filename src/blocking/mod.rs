//! The blocking server: `std::net` and one OS thread per connection (or a fixed pool of them).

use std::io;
use std::net::SocketAddr;

use crate::app::config::ServerConfig;

/// Serves `cfg` until SIGINT or SIGTERM; `ready` gets the bound address.
pub fn serve(_cfg: ServerConfig, _ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    Err(io::Error::other("the blocking model is not built yet"))
}
