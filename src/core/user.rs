//! A connected user as the core sees it: nick, rooms and presence.

use std::sync::Arc;

use super::event::Millis;

#[derive(Debug)]
pub struct User {
    pub nick: Arc<str>,
    /// Keys (in `Core::rooms`) of the rooms this user is in, in join order.
    pub rooms: Vec<usize>,
    /// Where a message without a room goes (the line protocol's plain lines).
    pub current: Option<usize>,
    pub away: Option<Arc<str>>,
    pub connected_at: Millis,
    /// When the user last sent a message; whois shows the idle time from it.
    pub last_active: Millis,
}
