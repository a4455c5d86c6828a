//! The live dashboard of an experiment: a page in the browser fed by server-sent events from an
//! evented loop in the experiment's own process. The rows arrive as they are measured; a page
//! opened late gets the run so far at once, and one that loses its connection resumes where it
//! stopped.

mod feed;
mod server;

pub use server::Dashboard;
