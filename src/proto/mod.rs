//! Sans-IO protocol code: bytes in, decisions and bytes out. Nothing here touches a socket, a
//! thread or a clock, so the evented server, the blocking server, the load generator and the
//! tests all drive the very same parsers and encoders.

pub mod http;
pub mod sse;
pub mod ws;
