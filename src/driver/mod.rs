//! Drivers: what moves bytes between sockets and the chat core.
//!
//! [`poll`] is the server: one `mio::Poll` loop on one thread. [`timer`] is its heap of
//! deadlines. Every driver uses the same framer, protocol and core; only the I/O model differs.

pub mod poll;
pub mod timer;
