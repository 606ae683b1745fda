//! Per-connection machinery: the event loop's [`connection::Connection`] record, the
//! [`outq::OutQueue`] of shared output chunks written with `writev`, the [`flood::TokenBucket`],
//! the loop's [`meter`] of all output held (`--max-output-total`), the threaded driver's
//! [`sendq::SendChannel`] (a channel to a writer thread, bounded in
//! bytes), the [`transform::Transform`] between a socket and its framer, and [`tls`], the TLS
//! layer below it (rustls) for connections that came through a TLS door.
//!
//! Nothing here polls or decides; the drivers in `crate::driver` do, using these pieces.

pub mod connection;
pub mod flood;
pub mod meter;
pub mod outq;
pub mod sendq;
pub mod tls;
pub mod transform;
