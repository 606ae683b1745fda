//! Every IRC numeric pollchat sends, and the `FAIL` standard replies: the one place for their
//! codes and texts, like ngircd's `messages.h`. Nothing else in `src/` spells a numeric's code or
//! its fixed text; code writes a reply with [`Out::numeric`](super::Out::numeric) or
//! [`Out::numeric_with`](super::Out::numeric_with) from a constant here.
//!
//! A numeric is sent as `:server CODE me <middle parameters> <text>`. The caller gives the middle
//! parameters (a nick, a channel, a count); [`Numeric::text`] is what follows them verbatim: any
//! fixed words, then `:` and the fixed trailing text. `{}` in a text marks data the caller fills
//! in (a topic, a MOTD line, the nicks of a 353): those numerics are written with
//! [`Out::numeric_with`](super::Out::numeric_with).
//!
//! Names are the RFC 1459/2812 ones as modern.ircdocs.horse lists them; constants are in numeric
//! order (a test checks it). The `ERROR` line ([`super::render_close`]) and the `CAP` replies
//! (`crate::session::irc`) are not numerics and are each written in one place of their own.

/// One numeric reply: its code and the fixed part of its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numeric {
    /// The three-digit code, sent zero-padded (`001`).
    pub code: u16,
    /// The RFC name, for tests and debugging.
    pub name: &'static str,
    /// What follows the middle parameters, verbatim; `{}` marks a hole for data, empty when the
    /// numeric ends with its middle parameters.
    pub text: &'static str,
}

impl Numeric {
    /// How many holes (`{}`) the text has: the data [`Out::numeric_with`](super::Out::numeric_with)
    /// must be given.
    pub fn holes(&self) -> usize {
        self.text.matches("{}").count()
    }
}

/// Defines each numeric as a constant, and [`ALL`] listing them, from one list.
macro_rules! numerics {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $text:literal;)*) => {
        $(
            $(#[$doc])*
            pub const $name: Numeric = Numeric { code: $code, name: stringify!($name), text: $text };
        )*
        /// Every numeric above, in numeric order.
        pub const ALL: &[Numeric] = &[$($name),*];
    };
}

numerics! {
    /// Middle: none. Hole: `nick!user@host`.
    RPL_WELCOME = 1, ":Welcome to the pollchat IRC network, {}";
    /// Holes: the server's name, its version.
    RPL_YOURHOST = 2, ":Your host is {}, running version {}";
    /// Hole: when the server started (ISO 8601).
    RPL_CREATED = 3, ":This server was created {}";
    /// Middle: server, version; then the user mode letters and the channel mode letters,
    /// then those that take a parameter.
    RPL_MYINFO = 4, "iowz biklmnostv bklov";
    /// Middle: the ISUPPORT tokens.
    RPL_ISUPPORT = 5, ":are supported by this server";
    /// Middle: `K`, the banned host, when the ban ends (Unix seconds, 0: never), the user.
    /// Hole: the reason and who set it.
    RPL_STATSKLINE = 216, ":{}";
    /// Middle: the STATS letter.
    RPL_ENDOFSTATS = 219, ":End of /STATS report";
    /// Middle: the user modes (`+iw`; `z` over TLS).
    RPL_UMODEIS = 221, "";
    /// Holes: the visible user count, the invisible one.
    RPL_LUSERCLIENT = 251, ":There are {} users and {} invisible on 1 servers";
    /// Middle: how many server operators are online.
    RPL_LUSEROP = 252, ":IRC Operators online";
    /// Middle: the room count.
    RPL_LUSERCHANNELS = 254, ":channels formed";
    /// Hole: the user count.
    RPL_LUSERME = 255, ":I have {} clients and 0 servers";
    /// Middle: the user count, the most there have been. Holes: the same two.
    RPL_LOCALUSERS = 265, ":Current local users {}, max {}";
    /// Middle: the user count, the most there have been (one server: the local figures).
    /// Holes: the same two.
    RPL_GLOBALUSERS = 266, ":Current global users {}, max {}";
    /// Middle: nick, an ignore mask.
    RPL_SILELIST = 271, "";
    /// Middle: nick.
    RPL_ENDOFSILELIST = 272, ":End of Silence List";
    /// Middle: nick. Hole: its away message.
    RPL_AWAY = 301, ":{}";
    /// Hole: `nick=+user@host` entries.
    RPL_USERHOST = 302, ":{}";
    /// Hole: the nicks that are online.
    RPL_ISON = 303, ":{}";
    RPL_UNAWAY = 305, ":You are no longer marked as being away";
    RPL_NOWAWAY = 306, ":You have been marked as being away";
    /// Middle: nick, user, host. Hole: real name.
    RPL_WHOISUSER = 311, "* :{}";
    /// Middle: nick, server; then the server's description.
    RPL_WHOISSERVER = 312, ":pollchat";
    /// Middle: nick.
    RPL_WHOISOPERATOR = 313, ":is an IRC operator";
    /// Middle: nick, user, host, `*`. Hole: real name.
    RPL_WHOWASUSER = 314, ":{}";
    /// Middle: the mask asked about.
    RPL_ENDOFWHO = 315, ":End of /WHO list";
    /// Middle: nick, idle seconds, signon time.
    RPL_WHOISIDLE = 317, ":seconds idle, signon time";
    /// Middle: nick.
    RPL_ENDOFWHOIS = 318, ":End of /WHOIS list";
    /// Middle: nick. Hole: its rooms.
    RPL_WHOISCHANNELS = 319, ":{}";
    RPL_LISTSTART = 321, "Channel :Users  Name";
    /// Middle: room, member count. Hole: topic.
    RPL_LIST = 322, ":{}";
    RPL_LISTEND = 323, ":End of /LIST";
    /// Middle: room, then its modes and their arguments (`+ntk key`).
    RPL_CHANNELMODEIS = 324, "";
    /// Middle: room, creation time.
    RPL_CREATIONTIME = 329, "";
    /// Middle: room.
    RPL_NOTOPIC = 331, ":No topic is set";
    /// Middle: room. Hole: topic.
    RPL_TOPIC = 332, ":{}";
    /// Middle: room, who set the topic, when.
    RPL_TOPICWHOTIME = 333, "";
    /// Middle: nick. The user marked itself a bot (`+B`, IRCv3 bot-mode).
    RPL_WHOISBOT = 335, ":is a bot";
    /// Middle: nick invited, room.
    RPL_INVITING = 341, "";
    /// Middle: version, server. Hole: a description.
    RPL_VERSION = 351, ":{}";
    /// Middle: channel, user, host, server, nick, flags (`H`/`G`, then `@`/`+`). Hole: real
    /// name (after hop count 0).
    RPL_WHOREPLY = 352, ":0 {}";
    /// Middle: `=` (a public channel), room. Hole: nicks.
    RPL_NAMREPLY = 353, ":{}";
    /// Middle: the server (as the mask and as the server). Hole: its description.
    RPL_LINKS = 364, ":0 {}";
    /// Middle: the mask asked for.
    RPL_ENDOFLINKS = 365, ":End of LINKS list";
    /// Middle: room.
    RPL_ENDOFNAMES = 366, ":End of /NAMES list";
    /// Middle: room, mask, who set it, when (seconds).
    RPL_BANLIST = 367, "";
    /// Middle: room.
    RPL_ENDOFBANLIST = 368, ":End of channel ban list";
    /// Middle: the nick asked about.
    RPL_ENDOFWHOWAS = 369, ":End of WHOWAS";
    /// Hole: one line of INFO.
    RPL_INFO = 371, ":{}";
    /// Hole: one line of the message of the day.
    RPL_MOTD = 372, ":- {}";
    RPL_ENDOFINFO = 374, ":End of INFO list";
    /// Hole: the server's name.
    RPL_MOTDSTART = 375, ":- {} Message of the day -";
    RPL_ENDOFMOTD = 376, ":End of /MOTD command";
    /// Middle: nick. Holes: its real host and address (both the IP: no reverse DNS). Sent only
    /// to the user itself: everyone else sees only the cloaked host of 311.
    RPL_WHOISHOST = 378, ":is connecting from *@{} {}";
    RPL_YOUREOPER = 381, ":You are now an IRC operator";
    /// Middle: server. Hole: the time, readable.
    RPL_TIME = 391, ":{}";
    /// Middle: nick.
    ERR_NOSUCHNICK = 401, ":No such nick/channel";
    /// Middle: the server asked for (there is only this one).
    ERR_NOSUCHSERVER = 402, ":No such server";
    /// Middle: room.
    ERR_NOSUCHCHANNEL = 403, ":No such channel";
    /// Middle: room.
    ERR_CANNOTSENDTOCHAN = 404, ":Cannot send to channel";
    /// Middle: room.
    ERR_TOOMANYCHANNELS = 405, ":You have joined too many channels";
    /// Middle: the nick asked about.
    ERR_WASNOSUCHNICK = 406, ":There was no such nickname";
    /// Middle: the first target over the command's TARGMAX.
    ERR_TOOMANYTARGETS = 407, ":Too many targets. The rest were ignored";
    ERR_NOORIGIN = 409, ":No origin specified";
    /// Middle: the subcommand.
    ERR_INVALIDCAPCMD = 410, ":Invalid CAP command";
    /// Hole: the command (PRIVMSG).
    ERR_NORECIPIENT = 411, ":No recipient given ({})";
    ERR_NOTEXTTOSEND = 412, ":No text to send";
    ERR_INPUTTOOLONG = 417, ":Input line was too long";
    /// Middle: the command.
    ERR_UNKNOWNCOMMAND = 421, ":Unknown command";
    ERR_NOMOTD = 422, ":MOTD File is missing";
    /// Middle: server. pollchat has no administrator to name.
    ERR_NOADMININFO = 423, ":No administrative info available";
    ERR_NONICKNAMEGIVEN = 431, ":No nickname given";
    /// Middle: the nick refused.
    ERR_ERRONEUSNICKNAME = 432, ":Erroneous nickname";
    /// Middle: the nick refused.
    ERR_NICKNAMEINUSE = 433, ":Nickname is already in use";
    /// Middle: a room that cannot be created now (`--max-total-rooms`) or a nick held by the
    /// nick delay. Hole: [`UNAVAIL_ROOM`] or [`UNAVAIL_NICK`].
    ERR_UNAVAILRESOURCE = 437, ":{}";
    /// Middle: nick, room.
    ERR_USERNOTINCHANNEL = 441, ":They aren't on that channel";
    /// Middle: room.
    ERR_NOTONCHANNEL = 442, ":You're not on that channel";
    /// Middle: nick, room.
    ERR_USERONCHANNEL = 443, ":is already on channel";
    ERR_NOTREGISTERED = 451, ":You have not registered";
    /// Middle: the command.
    ERR_NEEDMOREPARAMS = 461, ":Not enough parameters";
    ERR_ALREADYREGISTERED = 462, ":You may not reregister";
    ERR_PASSWDMISMATCH = 464, ":Password incorrect";
    ERR_YOUREBANNEDCREEP = 465, ":You are banned from this server";
    /// Middle: room.
    ERR_CHANNELISFULL = 471, ":Cannot join channel (+l)";
    /// Middle: the mode letter.
    ERR_UNKNOWNMODE = 472, ":is unknown mode char to me";
    /// Middle: room.
    ERR_INVITEONLYCHAN = 473, ":Cannot join channel (+i)";
    /// Middle: room.
    ERR_BANNEDFROMCHAN = 474, ":Cannot join channel (+b)";
    /// Middle: room.
    ERR_BADCHANNELKEY = 475, ":Cannot join channel (+k)";
    /// Middle: room, `b`.
    ERR_BANLISTFULL = 478, ":Channel ban list is full";
    ERR_NOPRIVILEGES = 481, ":Permission Denied- You're not an IRC operator";
    /// Middle: room.
    ERR_CHANOPRIVSNEEDED = 482, ":You're not channel operator";
    ERR_UMODEUNKNOWNFLAG = 501, ":Unknown MODE flag";
    ERR_USERSDONTMATCH = 502, ":Can't change mode for other users";
    /// Middle: the mask that did not fit.
    ERR_SILELISTFULL = 511, ":Your silence list is full";
    /// Middle: the subject.
    ERR_HELPNOTFOUND = 524, ":No help available on this topic";
    /// Middle: nick. The user is connected over TLS.
    RPL_WHOISSECURE = 671, ":is using a secure connection";
    /// Middle: target, mode letter, the parameter. Hole: why.
    ERR_INVALIDMODEPARAM = 696, ":{}";
    /// Middle: the subject. Hole: the first line of its help.
    RPL_HELPSTART = 704, ":{}";
    /// Middle: the subject. Hole: one more line.
    RPL_HELPTXT = 705, ":{}";
    /// Middle: the subject.
    RPL_ENDOFHELP = 706, ":End of /HELP";
    /// Hole: `nick!user@host` entries, comma-separated.
    RPL_MONONLINE = 730, ":{}";
    /// Hole: nicks, comma-separated.
    RPL_MONOFFLINE = 731, ":{}";
    /// Hole: nicks, comma-separated.
    RPL_MONLIST = 732, ":{}";
    RPL_ENDOFMONLIST = 733, ":End of MONITOR list";
    /// Middle: the limit, the nick that did not fit.
    ERR_MONLISTFULL = 734, ":Monitor list is full";
}

/// The text of a 437 about a room.
pub const UNAVAIL_ROOM: &str =
    "Channel is temporarily unavailable: the server has all the rooms it keeps";
/// The text of a 437 about a nick (held by `--nick-delay`).
pub const UNAVAIL_NICK: &str = "Nick is temporarily unavailable: its owner left it moments ago";
/// The text of a 437 about a nick a clustered node cannot claim (Redis unreachable).
pub const UNAVAIL_CLUSTER: &str = "Nick is temporarily unavailable: cluster link down";
/// The text of a 437 about a room a clustered node cannot ask the cluster about.
pub const UNAVAIL_ROOM_CLUSTER: &str = "Channel is temporarily unavailable: cluster link down";
/// The text of a 437 about a nick asked for while another claim is under way.
pub const UNAVAIL_PENDING: &str = "Nick change already under way: wait for its answer";

/// An IRCv3 standard reply, `FAIL <command> <code> :<description>`: a line refused before it
/// was parsed, or a credential refused for how it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fail {
    pub code: &'static str,
    /// The description; `{}` marks a hole for data.
    pub text: &'static str,
}

/// A SILENCE mask that is not one word.
pub const FAIL_MASK: Fail = Fail {
    code: "INVALID_MASK",
    text: "{}",
};

/// UNKLINE of a mask no K-line has.
pub const FAIL_NO_SUCH_BAN: Fail = Fail {
    code: "NO_SUCH_BAN",
    text: "{}",
};

/// KLINE when the server keeps all the bans it may.
pub const FAIL_LIST_FULL: Fail = Fail {
    code: "LIST_FULL",
    text: "{}",
};

/// The line held a NUL byte.
pub const FAIL_NUL: Fail = Fail {
    code: "INVALID_TEXT",
    text: "Message rejected: it contains a NUL byte",
};
/// The line was not UTF-8.
pub const FAIL_UTF8: Fail = Fail {
    code: "INVALID_UTF8",
    text: "Message rejected: this server only accepts UTF-8",
};
/// A password sent in clear, refused (`session::credentials_refused`). Hole: the hint.
pub const FAIL_TLS_REQUIRED: Fail = Fail {
    code: "TLS_REQUIRED",
    text: "{}",
};
/// The core refused a text. Hole: its reason.
pub const FAIL_TEXT: Fail = Fail {
    code: "INVALID_TEXT",
    text: "{}",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_are_in_order_named_and_well_formed() {
        for pair in ALL.windows(2) {
            assert!(
                pair[0].code < pair[1].code,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for n in ALL {
            assert!((1..1000).contains(&n.code), "{}", n.name);
            assert!(n.name.starts_with("RPL_") || n.name.starts_with("ERR_"));
            // Replies (1xx–3xx) are RPL_, errors (4xx–5xx) ERR_; the later ranges mix both.
            if n.code < 600 {
                assert_eq!(n.name.starts_with("ERR_"), n.code >= 400, "{}", n.name);
            }
            // A hole in the trailing part only: the middle is the caller's.
            if let Some(hole) = n.text.find("{}") {
                assert!(n.text[..hole].contains(':'), "{}", n.name);
            }
            assert!(!n.text.contains(['\r', '\n']), "{}", n.name);
        }
    }
}
