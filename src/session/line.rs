//! The line protocol's session: greeting, what each line means, the idle timeout, and the rule
//! that lets unframed clients (the original sketch's) be heard.
//!
//! The protocol itself (parsing a line, rendering events) is [`crate::protocol::line`]; this is
//! the per-connection part: when the client was last heard from and whether an unfinished line
//! is waiting.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use log::{info, trace};

use super::{Context, Now, Protocol, Reason, Step, Tick, Wake, credentials_refused};
use crate::core::{ClientId, Command, Core, Error, Event, LOBBY, Outbox};
use crate::framer::Frame;
use crate::protocol::line::{self, LineError, Request};

/// A line-protocol connection's state.
#[derive(Debug)]
pub struct LineSession {
    id: ClientId,
    /// The peer's address and port, for the core (which shows others its cloak) and log lines (kept apart: a
    /// `SocketAddr` takes 32 bytes, these 20, and every connection keeps one).
    ip: IpAddr,
    port: u16,
    /// Last time a line arrived, for `--idle-timeout`.
    last_heard: Tick,
    /// Since when the framer has held an unfinished line with no byte added, for
    /// `--line-complete-after`.
    partial_since: Option<Tick>,
    /// The connection is encrypted (TLS): see `Session::secured`.
    pub(super) secure: bool,
}

impl LineSession {
    pub fn new(ctx: &Context, id: ClientId, peer: SocketAddr, now: Instant) -> LineSession {
        LineSession {
            id,
            ip: peer.ip(),
            port: peer.port(),
            last_heard: ctx.tick(now),
            partial_since: None,
            secure: false,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// Registers the client with the core under a guest nick and joins it to the lobby (events
    /// into `out`); the greeting in the reply must be sent before those events.
    pub fn welcome(&mut self, core: &mut Core, now: Now, out: &mut Outbox) -> Step {
        if let Some(why) = core.server_banned(crate::core::LINE_USER, self.ip, now.wall) {
            info!("{} refused: server ban ({why})", self.peer());
            return Step::leave(Reason::Banned(why));
        }
        let nick = core.connect(self.id, self.ip, now.wall, out);
        if self.secure {
            core.set_secure(self.id);
        }
        info!("{} connected as {nick}", self.peer());
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
        self.last_heard = ctx.tick(now.at);
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
            Ok(Request::Oper { name, password }) => {
                let peer = self.ip;
                if let Some(hint) = credentials_refused(ctx, self.secure, peer, Protocol::Line) {
                    log::warn!("{}: /oper sent in clear, refused", self.peer());
                    return Step::reply(line::render_tls_required(&hint));
                }
                // Checking a password hash is meant to be slow: ten lines' worth of tokens.
                let extra_cost = 9;
                if core.check_oper(&name, &password, now.wall) {
                    core.handle(self.id, Command::MakeOper, now.wall, out);
                    return Step {
                        extra_cost,
                        ..Step::default()
                    };
                }
                log::warn!("{}: wrong /oper name or password", self.peer());
                let refusal = Event::Error(Error::BadOperLogin);
                Step {
                    reply: line::render(&refusal),
                    extra_cost,
                    ..Step::default()
                }
            }
            Ok(Request::Nothing) => Step::default(),
            Err(error) => Step::reply(line::render_error(&error)),
        }
    }

    /// After input: an unfinished line left in the framer starts its clock, or restarts it if
    /// bytes were added (`fed`); none left stops it.
    pub fn note_partial(&mut self, ctx: &Context, partial: bool, fed: bool, now: Instant) {
        self.partial_since = match (partial, self.partial_since) {
            (false, _) => None,
            (true, Some(since)) if !fed => Some(since),
            (true, _) => Some(ctx.tick(now)),
        };
    }

    /// When the idle timeout and the unfinished line's pause end, whichever exist.
    fn deadlines(&self, ctx: &Context) -> (Option<Tick>, Option<Tick>) {
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        let idle = ctx.idle_timeout.map(|t| self.last_heard.after(ms(t)));
        let complete = ctx
            .line_complete_after
            .zip(self.partial_since)
            .map(|(after, since)| since.after(ms(after)));
        (idle, complete)
    }

    pub fn next_deadline(&self, ctx: &Context) -> Option<Instant> {
        let next = match self.deadlines(ctx) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|tick| ctx.instant(tick))
    }

    pub fn on_deadline(&mut self, ctx: &Context, now: Instant) -> Wake {
        let now = ctx.tick(now);
        let (idle, complete) = self.deadlines(ctx);
        if idle.is_some_and(|at| at <= now) {
            let idle = ctx.idle_timeout.unwrap_or_default();
            info!("{}: silent for {idle:?} (--idle-timeout)", self.peer());
            return Wake::Close(Reason::Idle);
        }
        if complete.is_some_and(|at| at <= now) {
            self.partial_since = None;
            return Wake::CompleteLine;
        }
        Wake::Rearm
    }
}
