//! Per-connection machinery of the event loop: the [`connection::Connection`] record, its
//! [`outq::OutQueue`] of shared output chunks, and its [`flood::TokenBucket`].
//!
//! Nothing here polls or decides; `crate::driver::poll` does, using these pieces.

pub mod connection;
pub mod flood;
pub mod outq;
