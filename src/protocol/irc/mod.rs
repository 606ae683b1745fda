//! IRC (RFC 1459/2812 as modern.ircdocs.horse describes it): parsing client messages and
//! rendering core events and numerics as IRC lines.
//!
//! Like [`super::line`], this module keeps no state and does no I/O; the per-connection state
//! (registration, capabilities) lives in `crate::session::irc`. Every line produced ends in
//! `\r\n`. Parameters that come from users (nicks, rooms, texts) have passed the core's checks, so
//! none contains CR, LF or NUL, and those that could contain spaces are always sent as the
//! trailing parameter: no user input can split or forge a line.
//!
//! The code and text of every numeric are in [`numeric`]; [`Out`] writes them.

pub mod numeric;
pub mod tags;

use std::fmt::{Display, Write as _};

use self::numeric::*;
use super::iso8601;
use crate::core::cloak::real_host;
use crate::core::modes::{MAX_BANS, Mode, ModeChange, mode_string};
use crate::core::{
    ClientTags, Error, Event, Listing, Member, Millis, MsgId, MsgKind, Source, Stats, WhoisInfo,
    names, names::LABEL_MAX, names::NICK_MAX, names::ROOM_MAX, user::SILENCE_MAX, watch::WATCH_MAX,
};

/// A line's budget without its tags, as RFC 1459 sets it: 512 bytes including CRLF.
pub const MAX_LINE: usize = 510;
/// Extra bytes allowed for tags once `message-tags` is negotiated.
pub const MAX_TAGS: usize = 4096;

/// One parsed client message.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The tag section as sent, without its `@` and the space after it (empty if none):
    /// [`tags::client_tags`] reads what of it is relayed.
    pub tags: &'a str,
    /// Upper-cased command or numeric.
    pub command: String,
    pub params: Vec<&'a str>,
}

/// Parses a line (already known to be UTF-8, without its line end). `None` for a blank line.
/// A source prefix sent by a client is ignored, as servers do.
pub fn parse(line: &str) -> Option<Message<'_>> {
    let mut rest = line.trim_start_matches(' ');
    let mut tags = "";
    if let Some(tagged) = rest.strip_prefix('@') {
        let (t, r) = tagged.split_once(' ').unwrap_or((tagged, ""));
        tags = t;
        rest = r.trim_start_matches(' ');
    }
    if let Some(prefixed) = rest.strip_prefix(':') {
        rest = prefixed
            .split_once(' ')
            .map_or("", |(_, r)| r)
            .trim_start_matches(' ');
    }
    let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if command.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        // RFC 1459: at most 15 parameters; the 15th takes the rest of the line.
        if params.len() == 14 {
            params.push(rest);
            break;
        }
        let (param, next) = rest.split_once(' ').unwrap_or((rest, ""));
        params.push(param);
        rest = next;
    }
    Some(Message {
        tags,
        command: command.to_ascii_uppercase(),
        params,
    })
}

/// The byte length of a line's tags (including `@` and the space after them), if it has any.
pub fn tags_len(line: &[u8]) -> usize {
    if line.first() == Some(&b'@') {
        line.iter()
            .position(|&b| b == b' ')
            .map_or(line.len(), |i| i + 1)
    } else {
        0
    }
}

/// `nick!user@host`.
pub fn prefix(s: &Source) -> String {
    format!("{}!{}@{}", s.nick, s.user, s.host)
}

/// A text as a CTCP ACTION (`/me`) if it is one.
pub fn split_action(text: &str) -> (&str, MsgKind) {
    match text.strip_prefix("\u{1}ACTION ") {
        Some(action) => (
            action.strip_suffix('\u{1}').unwrap_or(action),
            MsgKind::Action,
        ),
        None => (text, MsgKind::Normal),
    }
}

/// Builds server lines.
pub struct Out<'a> {
    pub buf: String,
    /// The server's name, the source of numerics.
    pub server: &'a str,
    /// The recipient's nick (`*` before registration), the first parameter of numerics.
    pub me: &'a str,
}

impl<'a> Out<'a> {
    pub fn new(server: &'a str, me: &'a str) -> Out<'a> {
        Out {
            buf: String::with_capacity(128),
            server,
            me,
        }
    }

    /// `:server CODE me <middle...> <text>`: a numeric whose text has no hole.
    pub fn numeric(&mut self, n: Numeric, middle: &[&dyn Display]) {
        self.numeric_with(n, middle, &[]);
    }

    /// `:server CODE me <middle...> <text>` with the holes (`{}`) of the numeric's text filled
    /// by `fill`, in order: the trailing data of 332, 353, 372….
    pub fn numeric_with(&mut self, n: Numeric, middle: &[&dyn Display], fill: &[&dyn Display]) {
        debug_assert_eq!(n.holes(), fill.len(), "{}", n.name);
        let start = self.buf.len();
        let _ = write!(self.buf, ":{} {:03} {}", self.server, n.code, self.me);
        for m in middle {
            let _ = write!(self.buf, " {m}");
        }
        if !n.text.is_empty() {
            self.buf.push(' ');
            let mut pieces = n.text.split("{}");
            self.buf.push_str(pieces.next().unwrap_or(""));
            for (piece, data) in pieces.zip(fill) {
                let _ = write!(self.buf, "{data}{piece}");
            }
        }
        self.end_line(start);
    }

    /// A numeric whose trailing part is a space-separated list (353's nicks, 319's rooms,
    /// 303's nicks…): as many lines as it takes to keep each within [`MAX_LINE`]; one line with
    /// an empty list if there is nothing to list.
    pub fn numeric_list<I>(&mut self, n: Numeric, middle: &[&dyn Display], items: I)
    where
        I: IntoIterator,
        I::Item: Display,
    {
        // The length of the line without its list and CRLF.
        let start = self.buf.len();
        self.numeric_with(n, middle, &[&""]);
        let head = self.buf.len() - start - 2;
        self.buf.truncate(start);
        let mut current = String::new();
        for item in items {
            // Written in place; moved to a new line if it made this one too long.
            let mark = current.len();
            if mark > 0 {
                current.push(' ');
            }
            let _ = write!(current, "{item}");
            if mark > 0 && head + current.len() > MAX_LINE {
                let item_start = mark + 1;
                self.numeric_with(n, middle, &[&&current[..mark]]);
                current.drain(..item_start);
            }
        }
        self.numeric_with(n, middle, &[&current]);
    }

    /// Ends the line begun at `start` with CRLF, first cutting it to [`MAX_LINE`] bytes (tags
    /// aside) at a character boundary, ending in `…`, should it be longer: a client that cuts
    /// at 512 bytes must never read the rest as a line of its own. Messages are split before
    /// they get here ([`split_text`]); this only catches what no rule bounds (a long
    /// `--server-name` with a long real name in 352).
    fn end_line(&mut self, start: usize) {
        let body = start + tags_len(&self.buf.as_bytes()[start..]);
        if self.buf.len() - body > MAX_LINE {
            let mut cut = body + MAX_LINE - '…'.len_utf8();
            while !self.buf.is_char_boundary(cut) {
                cut -= 1;
            }
            self.buf.truncate(cut);
            self.buf.push('…');
        }
        self.buf.push_str("\r\n");
    }

    /// `FAIL <command> <code> :<text>`, a standard reply, with the text's holes filled by `fill`.
    pub fn fail(&mut self, f: Fail, command: &str, fill: &[&dyn Display]) {
        let start = self.buf.len();
        let _ = write!(self.buf, ":{} FAIL {command} {} :", self.server, f.code);
        let mut pieces = f.text.split("{}");
        self.buf.push_str(pieces.next().unwrap_or(""));
        for (piece, data) in pieces.zip(fill) {
            let _ = write!(self.buf, "{data}{piece}");
        }
        self.end_line(start);
    }

    /// Any line, verbatim (cut to [`MAX_LINE`] like every line).
    pub fn raw(&mut self, line: std::fmt::Arguments<'_>) {
        let start = self.buf.len();
        let _ = self.buf.write_fmt(line);
        self.end_line(start);
    }

    /// A PRIVMSG or NOTICE of `text` from `from` to `target`, split into as many lines as it
    /// takes to keep each within [`MAX_LINE`] (a line user may send up to `--max-line` bytes),
    /// each with the `tags` the recipient gets.
    fn message(
        &mut self,
        tags: &LineTags<'_>,
        from: &Source,
        target: &str,
        text: &str,
        kind: MsgKind,
    ) {
        let head = format!(":{} {} {target} :", prefix(from), verb(kind));
        let wrap = if kind == MsgKind::Action {
            "\u{1}ACTION \u{1}".len()
        } else {
            0
        };
        let budget = MAX_LINE.saturating_sub(head.len() + wrap);
        for (n, piece) in split_text(text, budget).into_iter().enumerate() {
            let start = self.buf.len();
            tags.write(n, &mut self.buf);
            let _ = write!(self.buf, "{head}{}", body(piece, kind));
            self.end_line(start);
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf.into_bytes()
    }
}

/// The `ERROR` line sent before the server closes a connection.
pub fn render_close(reason: &str) -> Vec<u8> {
    format!("ERROR :Closing link: ({reason})\r\n").into_bytes()
}

/// ISUPPORT tokens (005).
/// `max_rooms` is announced as CHANLIMIT.
///
/// A 005 line holds at most 13 tokens (15 parameters in all): [`isupport_lines`] splits them.
pub fn isupport(max_rooms: usize) -> String {
    format!(
        "CASEMAPPING=ascii CHANTYPES=# PREFIX=(ov)@+ CHANMODES=b,k,l,imnst MODES={MODES} \
         MAXLIST=b:{MAX_BANS} NICKLEN={NICK_MAX} CHANNELLEN={ROOM_MAX} \
         TOPICLEN={LABEL_MAX} AWAYLEN={LABEL_MAX} NETWORK=pollchat \
         KICKLEN={LABEL_MAX} CHANLIMIT=#:{max_rooms} UTF8ONLY \
         TARGMAX=NAMES:{NAMES_TARGETS},NOTICE:{MESSAGE_TARGETS},PRIVMSG:{MESSAGE_TARGETS},TAGMSG:{MESSAGE_TARGETS},WHOIS:{WHOIS_TARGETS} \
         MAXTARGETS={MESSAGE_TARGETS} SILENCE={SILENCE_MAX} MONITOR={WATCH_MAX} BOT=B"
    )
}

/// The ISUPPORT tokens in groups of at most 13, one 005 line each.
pub fn isupport_lines(max_rooms: usize) -> Vec<String> {
    let all = isupport(max_rooms);
    let tokens: Vec<&str> = all.split(' ').collect();
    tokens.chunks(13).map(|c| c.join(" ")).collect()
}

/// Targets one PRIVMSG, NOTICE or TAGMSG may name (TARGMAX, MAXTARGETS): each is a fan-out, so a
/// comma list must not turn one line into dozens of them.
pub const MESSAGE_TARGETS: usize = 4;
/// Rooms one NAMES may list (each a reply of up to `--big-room` names).
pub const NAMES_TARGETS: usize = 1;
/// Nicks one WHOIS may ask about.
pub const WHOIS_TARGETS: usize = 1;
/// Mode changes with a parameter one MODE may make (MODES).
pub const MODES: usize = 4;

/// LUSERS replies; with the most users there have been (`peak`), also 265 and 266 (one
/// server: local and global are the same figures).
pub fn lusers(o: &mut Out<'_>, stats: &Stats, with_peak: bool) {
    let Stats {
        users,
        invisible,
        opers,
        rooms,
        peak,
    } = *stats;
    o.numeric_with(RPL_LUSERCLIENT, &[], &[&(users - invisible), &invisible]);
    o.numeric(RPL_LUSEROP, &[&opers]);
    o.numeric(RPL_LUSERCHANNELS, &[&rooms]);
    o.numeric_with(RPL_LUSERME, &[], &[&users]);
    if with_peak {
        o.numeric_with(RPL_LOCALUSERS, &[&users, &peak], &[&users, &peak]);
        o.numeric_with(RPL_GLOBALUSERS, &[&users, &peak], &[&users, &peak]);
    }
}

fn verb(kind: MsgKind) -> &'static str {
    if kind == MsgKind::Notice {
        "NOTICE"
    } else {
        "PRIVMSG"
    }
}

/// A message's text as sent: actions wrapped in CTCP.
fn body(text: &str, kind: MsgKind) -> std::borrow::Cow<'_, str> {
    match kind {
        MsgKind::Action => format!("\u{1}ACTION {text}\u{1}").into(),
        _ => text.into(),
    }
}

/// The tags of a message line, as one class of recipients gets them.
#[derive(Default)]
struct LineTags<'t> {
    /// `server-time`: when it was said.
    time: Option<Millis>,
    /// `message-tags`: the server's msgid prefix ([`msgid_prefix`]) and the message's number.
    msgid: Option<(&'t str, MsgId)>,
    /// `message-tags`: the sender's client tags, in wire form.
    client: Option<&'t str>,
    /// `message-tags`: the sender is a bot (`+B`): the `bot` tag (IRCv3 bot-mode).
    bot: bool,
}

impl<'t> LineTags<'t> {
    /// The tags of a live message for a recipient with server-time (`time`) and message-tags
    /// (`msgids`: the server's msgid prefix) or without them.
    fn live(
        time: bool,
        now: Millis,
        msgids: Option<&'t str>,
        id: MsgId,
        client: &'t ClientTags,
        from: &Source,
    ) -> LineTags<'t> {
        LineTags {
            time: time.then_some(now),
            msgid: msgids.map(|p| (p, id)),
            client: msgids.and(client.as_deref()),
            bot: msgids.is_some() && from.bot,
        }
    }

    /// `@time=…;msgid=…;+client… ` (what there is of it) for the `piece`th line of a message
    /// (0 for the first; a message split in several lines gives each its own msgid).
    fn write(&self, piece: usize, buf: &mut String) {
        let mut sep = '@';
        if let Some(at) = self.time {
            let secs = iso8601(at);
            let _ = write!(
                buf,
                "{sep}time={}.{:03}Z",
                &secs[..secs.len() - 1],
                at % 1000
            );
            sep = ';';
        }
        if let Some((prefix, id)) = self.msgid {
            let _ = write!(buf, "{sep}msgid={prefix}{id:x}");
            if piece > 0 {
                let _ = write!(buf, "-{piece}");
            }
            sep = ';';
        }
        if self.bot {
            let _ = write!(buf, "{sep}bot");
            sep = ';';
        }
        if let Some(client) = self.client {
            let _ = write!(buf, "{sep}{client}");
            sep = ';';
        }
        if sep == ';' {
            buf.push(' ');
        }
    }
}

/// The start of every msgid this server gives out: eight characters drawn at random when it
/// starts, so that the number after them (which starts again at 1) makes ids that are unique
/// across restarts too. Random enough for that without a syscall: std's `RandomState` keys are
/// seeded by the OS once per process.
pub fn msgid_prefix(started: Millis) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(started);
    base32(h.finish())
}

/// The msgid prefix of every node of a cluster (`--backplane-prefix`): the same on every node,
/// so a room message keeps one msgid across nodes (its number, from the node that sent it, is
/// unique in the cluster: `Core::set_node_number`), and different for clusters sharing a Redis.
/// (FNV-1a, not a random hash: every process must compute the same.)
pub fn cluster_msgid_prefix(prefix: &str) -> String {
    let hash = prefix.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    base32(hash)
}

/// Eight characters of `bits`, in lower-case base 32.
fn base32(mut bits: u64) -> String {
    (0..8)
        .map(|_| {
            let c = b"0123456789abcdefghijklmnopqrstuv"[(bits & 31) as usize];
            bits >>= 5;
            c as char
        })
        .collect()
}

/// Renders a core event as IRC lines for one recipient. `me` is its nick; `time`: it negotiated
/// server-time; `now`: the time to tag live messages with. Events sent to more than one
/// recipient never depend on `me`, so their bytes are shared by every IRC recipient with the
/// same `time` setting.
pub fn render(event: &Event, server: &str, me: &str, time: bool, now: Millis) -> Vec<u8> {
    render_with(event, server, me, time, NamesStyle::default(), None, now)
}

/// How NAMES shows a member, by the client's capabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamesStyle {
    /// `multi-prefix`: every prefix (`@+alice`), not only the highest.
    pub multi: bool,
    /// `userhost-in-names`: `alice!al@host`, not only the nick.
    pub userhost: bool,
}

/// [`render`] for a client whose capabilities change how NAMES looks, and that may have
/// negotiated `message-tags`: `msgids` is then the server's [`msgid_prefix`], and its messages
/// carry a `msgid` and their sender's client tags (and it gets TAGMSG, which others never see).
pub fn render_with(
    event: &Event,
    server: &str,
    me: &str,
    time: bool,
    names_style: NamesStyle,
    msgids: Option<&str>,
    now: Millis,
) -> Vec<u8> {
    let mut o = Out::new(server, me);
    match event {
        Event::Message {
            room,
            from,
            text,
            kind,
            tags,
            id,
        } => {
            let tags = LineTags::live(time, now, msgids, *id, tags, from);
            o.message(&tags, from, room, text, *kind);
        }
        // History is replayed only to clients that can show when it was said (with no tags
        // but the time: the history keeps none).
        Event::History {
            room,
            from,
            text,
            kind,
            at,
        } if time => {
            let tags = LineTags {
                time: Some(*at),
                ..LineTags::default()
            };
            o.message(&tags, from, room, text, *kind)
        }
        Event::History { .. } | Event::CurrentRoom { .. } => {}
        Event::Private {
            from,
            to,
            text,
            kind,
            tags,
            id,
        } => {
            let tags = LineTags::live(time, now, msgids, *id, tags, from);
            o.message(&tags, from, to, text, *kind);
        }
        Event::TagMsg { from, to, tags, id } => {
            if msgids.is_some() {
                let start = o.buf.len();
                LineTags::live(time, now, msgids, *id, tags, from).write(0, &mut o.buf);
                let _ = write!(o.buf, ":{} TAGMSG {to}", prefix(from));
                o.end_line(start);
            }
        }
        Event::Joined { room, who } => o.raw(format_args!(":{} JOIN {room}", prefix(who))),
        Event::Parted {
            room,
            who,
            reason: Some(r),
        } => o.raw(format_args!(":{} PART {room} :{r}", prefix(who))),
        Event::Parted {
            room,
            who,
            reason: None,
        } => o.raw(format_args!(":{} PART {room}", prefix(who))),
        Event::Quit { who, reason } => o.raw(format_args!(":{} QUIT :{reason}", prefix(who))),
        Event::NickChanged { old, new } => o.raw(format_args!(":{} NICK :{new}", prefix(old))),
        Event::TopicChanged { room, by, topic } => o.raw(format_args!(
            ":{} TOPIC {room} :{}",
            prefix(by),
            topic.as_deref().unwrap_or("")
        )),
        Event::TopicIs {
            room,
            topic: Some(t),
        } => {
            o.numeric_with(RPL_TOPIC, &[room], &[&t.text]);
            o.numeric(RPL_TOPICWHOTIME, &[room, &t.by, &(t.at / 1000)]);
        }
        Event::TopicIs { room, topic: None } => o.numeric(RPL_NOTOPIC, &[room]),
        Event::Names {
            room,
            members,
            listing: Listing::Who,
            part,
            ..
        } => {
            let channel = if room.starts_with('#') { &**room } else { "*" };
            for m in members {
                let s = &m.source;
                let here = if m.away { 'G' } else { 'H' };
                let oper = if m.oper { "*" } else { "" };
                let bot = if s.bot { "B" } else { "" };
                let flags = format!("{here}{oper}{}{bot}", m.status.prefixes());
                o.numeric_with(
                    RPL_WHOREPLY,
                    &[&channel, &s.user, &s.host, &server, &s.nick, &flags],
                    &[&s.realname],
                );
            }
            if part.last {
                o.numeric(RPL_ENDOFWHO, &[room]);
            }
        }
        Event::Names {
            room,
            members,
            part,
            secret,
            ..
        } => names(&mut o, room, members, part.last, names_style, *secret),
        Event::Found {
            members,
            listing: Listing::Userhost,
        } => {
            let list: Vec<String> = members
                .iter()
                .map(|m| {
                    let away = if m.away { '-' } else { '+' };
                    format!(
                        "{}={away}{}@{}",
                        m.source.nick, m.source.user, m.source.host
                    )
                })
                .collect();
            o.numeric_list(RPL_USERHOST, &[], list);
        }
        Event::Found { members, .. } => {
            o.numeric_list(RPL_ISON, &[], members.iter().map(|m| &*m.source.nick));
        }
        Event::RoomList { rooms, part } => {
            if part.first {
                o.numeric(RPL_LISTSTART, &[]);
            }
            // A room with no members (the permanent lobby, when nobody is in it) is not
            // listed: to IRC a channel exists while someone is in it.
            for r in rooms.iter().filter(|r| r.members > 0) {
                let topic = r.topic.as_deref().unwrap_or("");
                o.numeric_with(RPL_LIST, &[&r.name, &r.members], &[&topic]);
            }
            if part.last {
                o.numeric(RPL_LISTEND, &[]);
            }
        }
        // The driver pages it through `Core::page`; nothing of its own to say.
        Event::Page(_) => {}
        Event::Whois(w) => whois(&mut o, w),
        Event::RoomInfo {
            room,
            created_at,
            modes,
        } => {
            let mut middle: Vec<&dyn std::fmt::Display> = vec![room];
            let words: Vec<&str> = modes.split(' ').collect();
            middle.extend(words.iter().map(|w| w as &dyn std::fmt::Display));
            o.numeric(RPL_CHANNELMODEIS, &middle);
            o.numeric(RPL_CREATIONTIME, &[room, &(created_at / 1000)]);
        }
        Event::ModeChanged { room, by, changes } => o.raw(format_args!(
            ":{} MODE {room} {}",
            prefix(by),
            mode_string(changes)
        )),
        Event::Kicked {
            room,
            by,
            nick,
            reason,
        } => o.raw(format_args!(":{} KICK {room} {nick} :{reason}", prefix(by))),
        Event::Invited { room, by, nick } => {
            o.raw(format_args!(":{} INVITE {nick} {room}", prefix(by)))
        }
        Event::Inviting { room, nick } => o.numeric(RPL_INVITING, &[nick, room]),
        Event::WasHere { mask, found } => {
            if found.is_empty() {
                o.numeric(ERR_WASNOSUCHNICK, &[&safe(mask)]);
            }
            let server = o.server;
            for (s, _) in found {
                o.numeric_with(
                    RPL_WHOWASUSER,
                    &[&s.nick, &s.user, &s.host, &'*'],
                    &[&s.realname],
                );
                o.numeric(RPL_WHOISSERVER, &[&s.nick, &server]);
            }
            // The end names who was found (a mask's match), else what was asked.
            match found.first() {
                Some((s, _)) => o.numeric(RPL_ENDOFWHOWAS, &[&s.nick]),
                None => o.numeric(RPL_ENDOFWHOWAS, &[&safe(mask)]),
            }
        }
        Event::YouAreOper { nick } => {
            o.numeric(RPL_YOUREOPER, &[]);
            o.raw(format_args!(":{nick} MODE {nick} :+o"));
        }
        // The driver closes the connection instead (see `Event::Killed`).
        Event::Killed { .. } => {}
        // The driver hands it to the session (see `Event::Registration`).
        Event::Registration(_) => {}
        Event::BanList { room, bans } => {
            for b in bans {
                o.numeric(RPL_BANLIST, &[room, &b.mask, &b.by, &(b.at / 1000)]);
            }
            o.numeric(RPL_ENDOFBANLIST, &[room]);
        }
        // The core's `Stats` carries no peak: the session's LUSERS asks the core for it.
        Event::Stats(stats) => lusers(&mut o, stats, false),
        Event::UserModes {
            nick,
            changed: Some(changed),
            ..
        } => o.raw(format_args!(":{nick} MODE {nick} :{changed}")),
        Event::UserModes {
            changed: None,
            modes,
            ..
        } => o.numeric(RPL_UMODEIS, &[modes]),
        Event::Wallops { from, text } => o.raw(format_args!(":{} WALLOPS :{text}", prefix(from))),
        Event::SilenceList { masks } => {
            for mask in masks {
                o.numeric(RPL_SILELIST, &[&me, mask]);
            }
            o.numeric(RPL_ENDOFSILELIST, &[&me]);
        }
        Event::Online { who } => {
            let entries: Vec<String> = who.iter().map(|s| prefix(s)).collect();
            for chunk in comma_chunks(&entries) {
                o.numeric_with(RPL_MONONLINE, &[], &[&chunk]);
            }
        }
        Event::Offline { nicks } => {
            for chunk in comma_chunks(nicks) {
                o.numeric_with(RPL_MONOFFLINE, &[], &[&chunk]);
            }
        }
        Event::WatchList { nicks } => {
            for chunk in comma_chunks(nicks) {
                o.numeric_with(RPL_MONLIST, &[], &[&chunk]);
            }
            o.numeric(RPL_ENDOFMONLIST, &[]);
        }
        Event::ServerBanSet {
            mask,
            until,
            reason,
            disconnected,
        } => {
            let (server, me) = (o.server, o.me);
            let how_long = crate::protocol::ban_end(*until);
            o.raw(format_args!(
                ":{server} NOTICE {me} :K-line added for {mask} {how_long}: {reason} ({disconnected} disconnected)"
            ))
        }
        Event::ServerBanLifted { mask } => {
            let (server, me) = (o.server, o.me);
            o.raw(format_args!(
                ":{server} NOTICE {me} :K-line for {mask} removed"
            ))
        }
        Event::ServerBanList { bans } => {
            for b in bans {
                let (user, host) = b.mask.split_once('@').unwrap_or(("*", &b.mask));
                let until = b.until.map_or(0, |u| u.div_ceil(1000));
                o.numeric_with(
                    RPL_STATSKLINE,
                    &[&'K', &host, &until, &user],
                    &[&format_args!("{} (by {})", b.reason, b.by)],
                );
            }
            o.numeric(RPL_ENDOFSTATS, &[&'k']);
        }
        // Only a change is confirmed, as servers do.
        Event::Silenced {
            nick,
            set,
            mask,
            changed: true,
        } => {
            let sign = if *set { '+' } else { '-' };
            o.raw(format_args!(":{nick} SILENCE {sign}{mask}"))
        }
        Event::Silenced { changed: false, .. } => {}
        Event::ClusterLink { up } => {
            let (server, me) = (o.server, o.me);
            let text = if *up {
                "is back: messages reach them again (what was said here meanwhile did not)"
            } else {
                "is down: messages reach this server's users only until it is back"
            };
            o.raw(format_args!(
                ":{server} NOTICE {me} :*** The link to the other servers of the cluster {text}"
            ))
        }
        Event::NickLost { nick, guest } => {
            let server = o.server;
            o.raw(format_args!(
                ":{server} NOTICE {guest} :*** Your nick {nick} was taken on another server of the cluster while the link to it was down: you are {guest} now"
            ))
        }
        Event::AwayIs { away: true } => o.numeric(RPL_NOWAWAY, &[]),
        Event::AwayIs { away: false } => o.numeric(RPL_UNAWAY, &[]),
        Event::TargetAway { nick, message } => o.numeric_with(RPL_AWAY, &[nick], &[message]),
        Event::Error(e) => error(&mut o, e),
    }
    o.into_bytes()
}

/// Whether a `+k` or `+l` in `modes` found no parameter (so [`parse_modes`] left it out of
/// `changes`).
pub fn lacks_parameter(modes: &str, changes: &[ModeChange]) -> bool {
    let mut set = true;
    let mut wanted = 0;
    for letter in modes.chars() {
        match letter {
            '+' => set = true,
            '-' => set = false,
            'k' | 'l' if set => wanted += 1,
            _ => {}
        }
    }
    let given = changes
        .iter()
        .filter(|c| matches!(c.mode, Mode::Key(Some(_)) | Mode::Limit(Some(_))))
        .count();
    given < wanted
}

/// A MODE argument list (`+o-v+l alice bob 10`) as changes, in order. A letter that needs a
/// parameter and has none left is skipped, as servers do; at most [`MODES`] changes take
/// parameters (the rest are ignored). An unknown letter is kept for the core to refuse (472).
pub fn parse_modes(modes: &str, args: &[&str]) -> Vec<ModeChange> {
    let mut args = args.iter().take(MODES);
    let mut set = true;
    let mut changes = Vec::new();
    for letter in modes.chars() {
        let mode = match letter {
            '+' => {
                set = true;
                continue;
            }
            '-' => {
                set = false;
                continue;
            }
            'o' | 'v' | 'b' => {
                let Some(arg) = args.next() else { continue };
                let arg = arg.to_string();
                match letter {
                    'o' => Mode::Op(arg),
                    'v' => Mode::Voice(arg),
                    _ => Mode::Ban(arg),
                }
            }
            'k' if set => match args.next() {
                Some(key) => Mode::Key(Some(key.to_string())),
                None => continue,
            },
            'k' => {
                // RFC 1459 gives the key to unset it too; a modern client may not.
                args.next();
                Mode::Key(None)
            }
            'l' if set => match args.next() {
                Some(n) => Mode::Limit(Some(n.parse().unwrap_or(0))),
                None => continue,
            },
            'l' => Mode::Limit(None),
            other => Mode::Flag(other),
        };
        changes.push(ModeChange { set, mode });
        if changes.len() >= 2 * MODES + 8 {
            break;
        }
    }
    changes
}

/// A member as NAMES shows it: its highest prefix (or all of them, `multi-prefix`) and its nick
/// (or `nick!user@host`, `userhost-in-names`): `@alice`, `+bob`, `@+carol!c@host`.
struct Prefixed<'m>(&'m Member, NamesStyle);

impl std::fmt::Display for Prefixed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = self.0.status.prefixes();
        let shown = if self.1.multi {
            all
        } else {
            all.get(..1).unwrap_or("")
        };
        let s = &self.0.source;
        if self.1.userhost {
            write!(f, "{shown}{}!{}@{}", s.nick, s.user, s.host)
        } else {
            write!(f, "{shown}{}", s.nick)
        }
    }
}

/// 353 lines kept under 512 bytes, then (on the last page) 366.
fn names(
    o: &mut Out<'_>,
    room: &str,
    members: &[Member],
    last: bool,
    style: NamesStyle,
    secret: bool,
) {
    if !members.is_empty() {
        // `=`: a public channel, `@` a secret one (listed only to its members). Each nick
        // with its highest prefix (`@` operator, `+` voice), or all of them for `multi-prefix`.
        let nicks = members.iter().map(|m| Prefixed(m, style));
        let kind = if secret { '@' } else { '=' };
        o.numeric_list(RPL_NAMREPLY, &[&kind, &room], nicks);
    }
    if last {
        o.numeric(RPL_ENDOFNAMES, &[&room]);
    }
}

/// `text` in pieces of at most `budget` bytes (at least one, even for an empty text), cut at
/// character boundaries, after a space where one falls in the second half of a piece. The
/// pieces put together are the text.
pub fn split_text(text: &str, budget: usize) -> Vec<&str> {
    // Room for one character of any width, so that every piece makes progress.
    let budget = budget.max(4);
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > budget {
        let mut cut = budget;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(space) = rest[..cut].rfind(' ')
            && space + 1 > cut / 2
        {
            cut = space + 1;
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces.push(rest);
    pieces
}

fn whois(o: &mut Out<'_>, w: &WhoisInfo) {
    let s = &w.source;
    let nick = &s.nick;
    o.numeric_with(RPL_WHOISUSER, &[nick, &s.user, &s.host], &[&s.realname]);
    let server = w.node.as_deref().unwrap_or(o.server);
    o.numeric(RPL_WHOISSERVER, &[nick, &server]);
    if !w.rooms.is_empty() {
        o.numeric_list(RPL_WHOISCHANNELS, &[nick], w.rooms.iter().map(|r| &**r));
    }
    if let Some(away) = &w.away {
        o.numeric_with(RPL_AWAY, &[nick], &[away]);
    }
    if w.oper {
        o.numeric(RPL_WHOISOPERATOR, &[nick]);
    }
    if w.secure {
        o.numeric(RPL_WHOISSECURE, &[nick]);
    }
    if s.bot {
        o.numeric(RPL_WHOISBOT, &[nick]);
    }
    if let Some(ip) = w.address {
        let real = real_host(ip);
        o.numeric_with(RPL_WHOISHOST, &[nick], &[&real, &real]);
    }
    // (0: a user of another node of a cluster, whose times this node does not know.)
    if w.connected_at != 0 {
        o.numeric(
            RPL_WHOISIDLE,
            &[nick, &w.idle_secs, &(w.connected_at / 1000)],
        );
    }
    o.numeric(RPL_ENDOFWHOIS, &[nick]);
}

/// Comma-joined lists of `items`, each short enough for one line (MONITOR's numerics).
fn comma_chunks<T: AsRef<str>>(items: &[T]) -> Vec<String> {
    let mut chunks: Vec<String> = Vec::new();
    for item in items {
        match chunks.last_mut() {
            Some(last) if last.len() + 1 + item.as_ref().len() <= LIST_LINE_MAX => {
                last.push(',');
                last.push_str(item.as_ref());
            }
            _ => chunks.push(item.as_ref().to_string()),
        }
    }
    chunks
}

/// The longest list a numeric carries in one line, leaving room for the server's name, the
/// code and the recipient within 512 bytes.
const LIST_LINE_MAX: usize = 400;

/// A user mode string (`+iw-o`) as (set, letter) pairs in order; a string without a sign
/// sets.
pub fn parse_user_modes(modes: &str) -> Vec<(bool, char)> {
    let mut set = true;
    let mut changes = Vec::new();
    for c in modes.chars().take(16) {
        match c {
            '+' => set = true,
            '-' => set = false,
            c => changes.push((set, c)),
        }
    }
    changes
}

/// Core errors as numerics.
pub fn error(o: &mut Out<'_>, e: &Error) {
    match e {
        Error::NickInUse(n) => o.numeric(ERR_NICKNAMEINUSE, &[n]),
        // A reserved nick is as unusable as a malformed one, whoever holds it (nobody).
        Error::InvalidNick(n) | Error::ReservedNick(n) => {
            o.numeric(ERR_ERRONEUSNICKNAME, &[&safe(n)])
        }
        Error::InvalidRoom(r) | Error::NoSuchRoom(r) => o.numeric(ERR_NOSUCHCHANNEL, &[&safe(r)]),
        Error::NoSuchNick(n) => o.numeric(ERR_NOSUCHNICK, &[&safe(n)]),
        Error::NotInRoom(r) => o.numeric(ERR_NOTONCHANNEL, &[r]),
        Error::CannotSend(r) | Error::Muted(r) => o.numeric(ERR_CANNOTSENDTOCHAN, &[r]),
        Error::TooManyRooms { room, .. } => o.numeric(ERR_TOOMANYCHANNELS, &[&safe(room)]),
        Error::ServerRoomsFull { room, .. } => {
            o.numeric_with(ERR_UNAVAILRESOURCE, &[&safe(room)], &[&UNAVAIL_ROOM])
        }
        Error::NickDelayed { nick, .. } => {
            o.numeric_with(ERR_UNAVAILRESOURCE, &[&safe(nick)], &[&UNAVAIL_NICK])
        }
        // Only a message without a target gets this, and every IRC message names one.
        Error::NoCurrentRoom => o.numeric_with(ERR_NORECIPIENT, &[], &[&"PRIVMSG"]),
        Error::NoText => o.numeric(ERR_NOTEXTTOSEND, &[]),
        Error::BadText => o.fail(FAIL_TEXT, "*", &[e]),
        Error::NotOperator(r) => o.numeric(ERR_CHANOPRIVSNEEDED, &[r]),
        Error::UserNotInRoom { nick, room } => {
            o.numeric(ERR_USERNOTINCHANNEL, &[&safe(nick), room])
        }
        Error::AlreadyInRoom { nick, room } => o.numeric(ERR_USERONCHANNEL, &[nick, room]),
        Error::InviteOnly(r) => o.numeric(ERR_INVITEONLYCHAN, &[r]),
        Error::BadKey(r) => o.numeric(ERR_BADCHANNELKEY, &[r]),
        Error::RoomFull(r) => o.numeric(ERR_CHANNELISFULL, &[r]),
        Error::Banned(r) => o.numeric(ERR_BANNEDFROMCHAN, &[r]),
        Error::BanListFull(r) => o.numeric(ERR_BANLISTFULL, &[r, &'b']),
        Error::UnknownMode(c) => o.numeric(ERR_UNKNOWNMODE, &[&safe(&c.to_string())]),
        Error::InvalidKey(r) => o.numeric_with(ERR_INVALIDMODEPARAM, &[r, &'k', &"*"], &[e]),
        Error::InvalidLimit(r) => o.numeric_with(ERR_INVALIDMODEPARAM, &[r, &'l', &"*"], &[e]),
        Error::InvalidMask(r) => o.numeric_with(ERR_INVALIDMODEPARAM, &[r, &'b', &"*"], &[e]),
        Error::NotServerOperator => o.numeric(ERR_NOPRIVILEGES, &[]),
        Error::BadOperLogin => o.numeric(ERR_PASSWDMISMATCH, &[]),
        Error::UnknownUserMode(_) => o.numeric(ERR_UMODEUNKNOWNFLAG, &[]),
        Error::SilenceFull(mask) => o.numeric(ERR_SILELISTFULL, &[&safe(mask)]),
        Error::InvalidIgnoreMask => o.fail(FAIL_MASK, "SILENCE", &[e]),
        Error::InvalidServerMask(_) => o.fail(FAIL_MASK, "KLINE", &[e]),
        Error::NoSuchServerBan(_) => o.fail(FAIL_NO_SUCH_BAN, "UNKLINE", &[e]),
        Error::ServerBansFull => o.fail(FAIL_LIST_FULL, "KLINE", &[e]),
        Error::ClusterDown(nick) => {
            o.numeric_with(ERR_UNAVAILRESOURCE, &[&safe(nick)], &[&UNAVAIL_CLUSTER])
        }
        Error::NickPending(nick) => {
            o.numeric_with(ERR_UNAVAILRESOURCE, &[&safe(nick)], &[&UNAVAIL_PENDING])
        }
        Error::RoomClusterDown(room) => o.numeric_with(
            ERR_UNAVAILRESOURCE,
            &[&safe(room)],
            &[&UNAVAIL_ROOM_CLUSTER],
        ),
        Error::WatchListFull(nicks) => {
            // The nicks not added, as many as one line holds (nicks have no spaces).
            let mut list = nicks.as_str();
            while list.len() > LIST_LINE_MAX {
                list = list.rsplit_once(',').map_or("", |(head, _)| head);
            }
            o.numeric(ERR_MONLISTFULL, &[&WATCH_MAX, &list])
        }
    }
}

/// A client-supplied word echoed in a middle parameter: never empty, never with a space or a
/// leading colon (which would change how the line parses), nor with an invisible character
/// (which could reorder how the rest of the line shows).
/// It is cut to [`SAFE_MAX`] bytes: a word echoed from a 510-byte line would otherwise push the
/// numeric's own text past the line's end.
pub fn safe(word: &str) -> String {
    let w: String = word
        .chars()
        .filter(|&c| !c.is_whitespace() && !c.is_control() && !names::is_invisible(c))
        .collect();
    let w = w.trim_start_matches(':');
    if w.is_empty() {
        "*".into()
    } else {
        names::clip(w, SAFE_MAX)
    }
}

/// The longest client word echoed in a numeric: longer than any valid nick or room name.
pub const SAFE_MAX: usize = ROOM_MAX + 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Part;

    #[test]
    fn parses_commands_params_and_trailing() {
        let m = parse("privmsg #a :hello  world").unwrap();
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#a", "hello  world"]);
        let m = parse("@time=x;+typing=1 :nick!u@h JOIN #a,#b").unwrap();
        assert_eq!(m.tags, "time=x;+typing=1");
        assert_eq!((m.command.as_str(), m.params), ("JOIN", vec!["#a,#b"]));
        assert_eq!(parse("JOIN #a").unwrap().tags, "");
        assert_eq!(
            parse("USER u 0 * :Real Name").unwrap().params,
            ["u", "0", "*", "Real Name"]
        );
        assert_eq!(parse("TOPIC #a :").unwrap().params, ["#a", ""]);
        assert_eq!(parse("PING   x  ").unwrap().params, ["x"]);
        assert_eq!(parse(""), None);
        assert_eq!(parse("   "), None);
        let many = parse("X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16").unwrap();
        assert_eq!(many.params.len(), 15);
        assert_eq!(many.params[14], "15 16");
    }

    #[test]
    fn tags_and_actions() {
        assert_eq!(tags_len(b"@a=b :x PRIVMSG"), 5);
        assert_eq!(tags_len(b"PRIVMSG"), 0);
        assert_eq!(
            split_action("\u{1}ACTION waves\u{1}"),
            ("waves", MsgKind::Action)
        );
        assert_eq!(split_action("hi"), ("hi", MsgKind::Normal));
    }

    #[test]
    fn renders_messages_with_and_without_server_time() {
        let from = Source::new("alice", "al", "10.0.0.1", "Alice");
        let m = Event::Message {
            room: "#a".into(),
            from,
            text: "hi there".into(),
            kind: MsgKind::Action,
            tags: None,
            id: 1,
        };
        let plain = String::from_utf8(render(&m, "srv", "bob", false, 0)).unwrap();
        assert_eq!(
            plain,
            ":alice!al@10.0.0.1 PRIVMSG #a :\u{1}ACTION hi there\u{1}\r\n"
        );
        let tagged = String::from_utf8(render(&m, "srv", "bob", true, 1_500)).unwrap();
        assert!(
            tagged.starts_with("@time=1970-01-01T00:00:01.500Z :alice!al@10.0.0.1 PRIVMSG"),
            "{tagged}"
        );
    }

    #[test]
    fn names_are_split_under_512_bytes() {
        let members: Vec<Member> = (0..300)
            .map(|i| Member {
                source: Source::new(&format!("nick{i:04}"), "u", "h", "r"),
                away: false,
                status: Default::default(),
                oper: false,
            })
            .collect();
        let out = String::from_utf8(render(
            &Event::Names {
                room: "#big".into(),
                members,
                listing: Listing::Names,
                total: 300,
                part: Part::WHOLE,
                secret: false,
            },
            "srv",
            "me",
            false,
            0,
        ))
        .unwrap();
        let lines: Vec<&str> = out.split_terminator("\r\n").collect();
        assert!(lines.len() > 2);
        assert!(lines.iter().all(|l| l.len() + 2 <= 512));
        let listed: usize = lines
            .iter()
            .filter(|l| l.contains(" 353 "))
            .map(|l| l.rsplit(':').next().unwrap().split(' ').count())
            .sum();
        assert_eq!(listed, 300);
        assert_eq!(
            *lines.last().unwrap(),
            ":srv 366 me #big :End of /NAMES list"
        );
    }

    #[test]
    fn numerics_are_written_from_their_constants() {
        let mut o = Out::new("srv", "me");
        o.numeric(ERR_NOSUCHNICK, &[&"bob"]);
        o.numeric(RPL_TOPICWHOTIME, &[&"#a", &"bob", &42]);
        o.numeric(RPL_LUSEROP, &[&0]);
        o.numeric_with(RPL_YOURHOST, &[], &[&"srv", &"v1"]);
        o.numeric_with(RPL_TOPIC, &[&"#a"], &[&"a: topic"]);
        o.fail(FAIL_UTF8, "PRIVMSG", &[]);
        assert_eq!(
            o.buf,
            ":srv 401 me bob :No such nick/channel\r\n\
             :srv 333 me #a bob 42\r\n\
             :srv 252 me 0 :IRC Operators online\r\n\
             :srv 002 me :Your host is srv, running version v1\r\n\
             :srv 332 me #a :a: topic\r\n\
             :srv FAIL PRIVMSG INVALID_UTF8 :Message rejected: this server only accepts UTF-8\r\n"
        );
    }

    /// Lines made of the pieces that matter to the parser (spaces, `:`, `@`, words), and any
    /// characters at all.
    fn irc_like_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(" ".to_string()),
            Just(":".to_string()),
            Just("@".to_string()),
            "[a-zA-Z0-9#=;,!.]{1,6}",
            any::<char>().prop_map(String::from),
        ];
        prop_oneof![
            proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat()),
            any::<String>(),
        ]
    }

    #[test]
    fn mode_strings_become_changes_in_order() {
        let changes = parse_modes("+o-v+lk-t+q", &["alice", "bob", "10", "key", "extra"]);
        let got: Vec<(bool, Mode)> = changes.into_iter().map(|c| (c.set, c.mode)).collect();
        assert_eq!(
            got,
            [
                (true, Mode::Op("alice".into())),
                (false, Mode::Voice("bob".into())),
                (true, Mode::Limit(Some(10))),
                (true, Mode::Key(Some("key".into()))),
                (false, Mode::Flag('t')),
                (true, Mode::Flag('q')),
            ]
        );
        // A letter without its parameter is skipped; the list of changes is bounded.
        assert_eq!(parse_modes("+o", &[]), []);
        assert!(parse_modes(&"+m".repeat(500), &[]).len() <= 2 * MODES + 8);
    }

    proptest::proptest! {
        /// Any MODE arguments: no panic, a bounded list of changes, at most MODES of them with
        /// a parameter taken from the arguments.
        #[test]
        fn any_mode_string_parses_to_a_bounded_list(
            modes in ".{0,64}",
            args in proptest::collection::vec("[a-z0-9*!@]{0,12}", 0..8),
        ) {
            let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
            let changes = parse_modes(&modes, &args);
            proptest::prop_assert!(changes.len() <= 2 * MODES + 8);
            let with_args = changes
                .iter()
                .filter(|c| matches!(c.mode, Mode::Op(_) | Mode::Voice(_) | Mode::Ban(_) | Mode::Key(Some(_)) | Mode::Limit(Some(_))))
                .count();
            proptest::prop_assert!(with_args <= MODES);
        }

        #[test]
        fn parse_never_panics_and_keeps_its_promises(line in irc_like_line()) {
            if let Some(m) = parse(&line) {
                proptest::prop_assert!(m.params.len() <= 15, "{:?}", m.params);
                proptest::prop_assert!(!m.command.is_empty());
                proptest::prop_assert!(!m.command.contains(' '));
                proptest::prop_assert_eq!(&m.command, &m.command.to_ascii_uppercase());
            }
        }
    }

    #[test]
    fn echoed_words_cannot_change_the_line_shape() {
        assert_eq!(safe("a b"), "ab");
        assert_eq!(safe(":x"), "x");
        assert_eq!(safe(""), "*");
        assert_eq!(safe(":"), "*");
        assert_eq!(safe("::x"), "x");
    }

    /// Every line of `out` is within 512 bytes with its CRLF, tags aside, and has no CR, LF or
    /// NUL inside.
    fn assert_lines_fit(out: &[u8]) {
        let out = std::str::from_utf8(out).unwrap();
        assert!(out.is_empty() || out.ends_with("\r\n"));
        for line in out.split_terminator("\r\n") {
            let body = &line[tags_len(line.as_bytes())..];
            assert!(body.len() + 2 <= 512, "{} bytes: {line}", body.len() + 2);
            assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
        }
    }

    #[test]
    fn long_lists_are_split_into_lines_that_fit() {
        let rooms: Vec<std::sync::Arc<str>> =
            (0..32).map(|i| format!("#{i:0>49}").into()).collect();
        let whois = Event::Whois(WhoisInfo {
            source: Source::new(&"n".repeat(32), "u", "h", &"r".repeat(300)),
            rooms: rooms.clone(),
            away: Some("a".repeat(300).into()),
            idle_secs: 1,
            connected_at: 0,
            address: Some("1234:5678:9abc:def0:1234:5678:9abc:def0".parse().unwrap()),
            oper: true,
            secure: true,
            node: None,
        });
        let out = render(&whois, "irc.example.org", &"m".repeat(32), false, 0);
        assert_lines_fit(&out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(
            " 378 mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn :is connecting \
             from *@1234:5678:9abc:def0:1234:5678:9abc:def0 1234:5678:9abc:def0:1234:5678:9abc:def0\r\n"
        ));
        let listed: usize = text
            .lines()
            .filter(|l| l.contains(" 319 "))
            .map(|l| l.rsplit(" :").next().unwrap().split(' ').count())
            .sum();
        assert_eq!(listed, 32, "every room once");
        let members: Vec<Member> = (0..200)
            .map(|i| Member {
                source: Source::new(&format!("{i:0>32}"), "u", "h", "r"),
                away: false,
                status: Default::default(),
                oper: false,
            })
            .collect();
        let ison = Event::Found {
            members,
            listing: Listing::Ison,
        };
        let out = render(&ison, "srv", "me", false, 0);
        assert_lines_fit(&out);
        assert!(String::from_utf8(out).unwrap().lines().count() > 1);
    }

    #[test]
    fn split_text_cuts_at_character_boundaries_and_prefers_spaces() {
        assert_eq!(split_text("", 10), [""]);
        assert_eq!(
            split_text("hello world again", 12),
            ["hello world ", "again"]
        );
        assert_eq!(split_text("ééééé", 5), ["éé", "éé", "é"]);
        assert_eq!(split_text("abcdefgh", 4), ["abcd", "efgh"]);
    }

    proptest::proptest! {
        #[test]
        fn messages_of_any_length_arrive_whole_in_lines_that_fit(
            chars in proptest::collection::vec(
                proptest::sample::select(vec!['a', ' ', 'é', '€', '😀', '\u{1}']),
                0..2000,
            ),
            nick_len in 1usize..=32,
            room_len in 1usize..50,
            action in proptest::bool::ANY,
            time in proptest::bool::ANY,
        ) {
            let text: String = chars.into_iter().collect();
            let from = Source::new(&"n".repeat(nick_len), "u123456789", "0:0:0:0:0:ffff:ffff:ffff", "r");
            let kind = if action { MsgKind::Action } else { MsgKind::Normal };
            let room = format!("#{}", "r".repeat(room_len));
            for event in [
                Event::Message { room: room.as_str().into(), from: from.clone(), text: text.as_str().into(), kind, tags: None, id: 1 },
                Event::Private { from: from.clone(), to: "n".repeat(32).into(), text: text.as_str().into(), kind, tags: None, id: 1 },
            ] {
                let out = render(&event, "irc.example.org", "me", time, 1_500);
                assert_lines_fit(&out);
                // Put the pieces back together: nothing lost, nothing added.
                let out = String::from_utf8(out).unwrap();
                let mut whole = String::new();
                for line in out.split_terminator("\r\n") {
                    let body = &line[tags_len(line.as_bytes())..];
                    let (_, piece) = body.split_once(" :").unwrap();
                    let piece = match kind {
                        MsgKind::Action => piece
                            .strip_prefix("\u{1}ACTION ")
                            .and_then(|p| p.strip_suffix('\u{1}'))
                            .unwrap(),
                        _ => piece,
                    };
                    whole.push_str(piece);
                }
                proptest::prop_assert_eq!(&whole, &text);
            }
        }
    }
}
