//! The line protocol's session: greeting, what each line means, the idle timeout, and the rule
//! that lets unframed clients (the original sketch's) be heard.
//!
//! The protocol itself (parsing a line, rendering events) is [`crate::protocol::line`]; this is
//! the per-connection part: when the client was last heard from and whether an unfinished line
//! is waiting.

use std::net::SocketAddr;
use std::time::Instant;

use log::{info, trace};

use super::{Context, Now, Reason, Step, Wake, host_of};
use crate::core::{ClientId, Command, Core, LOBBY, Outbox};
use crate::framer::Frame;
use crate::protocol::line::{self, LineError, Request};

/// A line-protocol connection's state.
#[derive(Debug)]
pub struct LineSession {
    id: ClientId,
    /// The peer, for the host others see and for log lines.
    peer: SocketAddr,
    /// Last time a line arrived, for `--idle-timeout`.
    last_heard: Instant,
    /// Since when the framer has held an unfinished line with no byte added, for
    /// `--line-complete-after`.
    partial_since: Option<Instant>,
}

impl LineSession {
    pub fn new(id: ClientId, peer: SocketAddr, now: Instant) -> LineSession {
        LineSession {
            id,
            peer,
            last_heard: now,
            partial_since: None,
        }
    }

    /// Registers the client with the core under a guest nick and joins it to the lobby (events
    /// into `out`); the greeting in the reply must be sent before those events.
    pub fn welcome(&mut self, core: &mut Core, now: Now, out: &mut Outbox) -> Step {
        let nick = core.connect(self.id, &host_of(self.peer.ip()), now.wall);
        info!("{} connected as {nick}", self.peer);
        let greeting = line::render_welcome(&nick, LOBBY);
        core.handle(self.id, Command::Join(LOBBY.into()), now.wall, out);
        Step::reply(greeting)
    }

    /// Handles one framed line.
    pub fn on_frame(
        &mut self,
        ctx: &Context,
        core: &mut Core,
        frame: Frame<'_>,
        now: Now,
        out: &mut Outbox,
    ) -> Step {
        self.last_heard = now.at;
        let request = match frame {
            Frame::Line(bytes) => line::parse(bytes),
            Frame::TooLong => {
                info!(
                    "client #{}: line over --max-line {}, discarded",
                    self.id.0, ctx.max_line
                );
                Err(LineError::TooLong(ctx.max_line))
            }
        };
        trace!("client #{}: {request:?}", self.id.0);
        match request {
            Ok(Request::Chat(command)) => {
                core.handle(self.id, command, now.wall, out);
                Step::default()
            }
            Ok(Request::Quit(reason)) => Step::leave(Reason::Quit(reason)),
            Ok(Request::Help) => Step::reply(line::render_help()),
            Ok(Request::Nothing) => Step::default(),
            Err(error) => Step::reply(line::render_error(&error)),
        }
    }

    /// After input: an unfinished line left in the framer starts its clock, or restarts it if
    /// bytes were added (`fed`); none left stops it.
    pub fn note_partial(&mut self, partial: bool, fed: bool, now: Instant) {
        self.partial_since = match (partial, self.partial_since) {
            (false, _) => None,
            (true, Some(since)) if !fed => Some(since),
            (true, _) => Some(now),
        };
    }

    pub fn next_deadline(&self, ctx: &Context) -> Option<Instant> {
        let idle = ctx.idle_timeout.map(|t| self.last_heard + t);
        let complete = ctx
            .line_complete_after
            .zip(self.partial_since)
            .map(|(after, since)| since + after);
        match (idle, complete) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_deadline(&mut self, ctx: &Context, now: Instant) -> Wake {
        if let Some(idle) = ctx.idle_timeout
            && self.last_heard + idle <= now
        {
            info!("{}: silent for {idle:?} (--idle-timeout)", self.peer);
            return Wake::Close(Reason::Idle);
        }
        if let (Some(after), Some(since)) = (ctx.line_complete_after, self.partial_since)
            && since + after <= now
        {
            self.partial_since = None;
            return Wake::CompleteLine;
        }
        Wake::Rearm
    }
}
