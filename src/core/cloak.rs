//! Cloaked hosts: what other users see instead of a peer's IP address.
//!
//! Showing every user's address to everyone (`nick!user@203.0.113.7`) tells any stranger in a
//! room where to aim a flood or a denial of service. So the host in a user's `Source` is a keyed
//! hash of its address, e.g. `3f1a9c2e.b70d4e11.ip`: the same address always gives the same
//! cloak under one key (a regular is recognisable, and two connections from one host are seen
//! to be one host), but without the key it cannot be turned back into the address.
//!
//! The hash is SipHash-2-4, a keyed pseudo-random function, with a 128-bit key per server
//! (random at start-up, or derived from `--cloak-key` so that cloaks outlive a restart). A plain
//! hash would not do: IPv4 has only 2³² addresses, and anyone could hash them all and look a
//! cloak up; with a secret key that table cannot be built.
//!
//! A cloak has two labels: the first hashes the whole address, the second its network (an
//! IPv4 address's /24; an IPv6 address's `--ipv6-prefix` network, the host's network as every
//! per-address limit counts it). Two addresses of one IPv6 host's /64 thus share the second
//! label, so a later ban on a cloak can cover a host that changes addresses, as the limits do.
//! IPv4 cloaks end in `.ip`, IPv6 ones in `.ip6`; IPv4-mapped IPv6 addresses count as IPv4.
//!
//! The real address stays with the core (`User::ip`, 17 bytes) and is shown only to the user
//! itself (`WhoisInfo::address`).

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;
use siphasher::sip128::{Hasher128, SipHasher24 as SipHasher128};

/// A server's cloaking key and the IPv6 network size its cloaks group by.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cloak {
    key: [u8; 16],
    ipv6_prefix: u8,
}

/// The key stays out of logs and debug output: it is what keeps cloaks irreversible.
impl fmt::Debug for Cloak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cloak")
            .field("ipv6_prefix", &self.ipv6_prefix)
            .finish_non_exhaustive()
    }
}

impl Cloak {
    /// A cloak with this 128-bit key; IPv6 networks of `ipv6_prefix` bits (clamped to 128).
    pub fn new(key: [u8; 16], ipv6_prefix: u8) -> Cloak {
        Cloak {
            key,
            ipv6_prefix: ipv6_prefix.min(128),
        }
    }

    /// A cloak whose key is derived from an operator's phrase (`--cloak-key`): the same phrase
    /// gives the same cloaks after a restart. The derivation is one SipHash (128-bit output)
    /// of the phrase, not a slow password hash, so the phrase itself must be long and random
    /// (the flag asks for at least 16 characters): whoever learns it can reverse IPv4 cloaks.
    pub fn from_phrase(phrase: &str, ipv6_prefix: u8) -> Cloak {
        let mut h = SipHasher128::new();
        h.write(b"pollchat cloak key\0");
        h.write(phrase.as_bytes());
        Cloak::new(h.finish128().as_bytes(), ipv6_prefix)
    }

    /// A cloak with a random key: 16 bytes of `/dev/urandom`, or where that cannot be read,
    /// two hashes under std's `RandomState` (itself seeded from the operating system's random
    /// source). Cloaks then change with every start of the server.
    pub fn random(ipv6_prefix: u8) -> Cloak {
        let mut key = [0u8; 16];
        let urandom = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key));
        if urandom.is_err() {
            let state = std::collections::hash_map::RandomState::new();
            for (i, half) in key.chunks_mut(8).enumerate() {
                let mut h = state.build_hasher();
                h.write_usize(i);
                half.copy_from_slice(&h.finish().to_le_bytes());
            }
        }
        Cloak::new(key, ipv6_prefix)
    }

    /// The cloaked host of `ip`: `ADDR.NET.ip` (IPv4) or `ADDR.NET.ip6` (IPv6), each label
    /// eight hex digits.
    pub fn host(&self, ip: IpAddr) -> String {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let net = (bits & 0xffff_ff00).to_be_bytes();
                let (addr, net) = (self.label(4, 32, &v4.octets()), self.label(4, 24, &net));
                format!("{addr:08x}.{net:08x}.ip")
            }
            IpAddr::V6(v6) => {
                let prefix = u32::from(self.ipv6_prefix);
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                let net = (u128::from(v6) & mask).to_be_bytes();
                let addr = self.label(6, 128, &v6.octets());
                let net = self.label(6, self.ipv6_prefix, &net);
                format!("{addr:08x}.{net:08x}.ip6")
            }
        }
    }

    /// 32 bits of SipHash-2-4 under the key of (family, prefix length, masked address): the
    /// family and length keep a /24's label apart from an address's, and IPv4's from IPv6's.
    fn label(&self, family: u8, bits: u8, octets: &[u8]) -> u32 {
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write(&[family, bits]);
        h.write(octets);
        (h.finish() >> 32) as u32
    }
}

/// How a peer's real address is written (never a reverse-DNS name: a lookup would block the
/// loop). An IPv6 address starting with `:` gets a leading `0`, as IRC servers do, so that it
/// cannot be mistaken for a trailing parameter.
pub fn real_host(ip: IpAddr) -> String {
    let s = ip.to_string();
    if s.starts_with(':') {
        format!("0{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn labels(host: &str) -> Vec<&str> {
        host.split('.').collect()
    }

    #[test]
    fn a_cloak_is_deterministic_and_looks_like_a_host() {
        let c = Cloak::new([7; 16], 64);
        let host = c.host(ip("203.0.113.7"));
        assert_eq!(host, c.host(ip("203.0.113.7")));
        assert_eq!(host, Cloak::new([7; 16], 64).host(ip("203.0.113.7")));
        let l = labels(&host);
        assert_eq!(l.len(), 3, "{host}");
        assert!(
            l[..2]
                .iter()
                .all(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        assert_eq!(l[2], "ip");
        assert!(!host.contains("203") || !host.contains("113"), "{host}");
        // An IPv4-mapped IPv6 peer is its IPv4 address.
        assert_eq!(host, c.host(ip("::ffff:203.0.113.7")));
    }

    #[test]
    fn a_cloak_depends_on_the_key() {
        let a = Cloak::new([1; 16], 64).host(ip("192.0.2.1"));
        let b = Cloak::new([2; 16], 64).host(ip("192.0.2.1"));
        assert_ne!(labels(&a)[0], labels(&b)[0]);
        assert_ne!(labels(&a)[1], labels(&b)[1]);
        // A phrase gives the same key every time, and another phrase another key.
        let p = Cloak::from_phrase("correct horse battery staple", 64);
        assert_eq!(p, Cloak::from_phrase("correct horse battery staple", 64));
        assert_ne!(p, Cloak::from_phrase("correct horse battery stapler", 64));
        // Two random keys differ (2^-128 that they do not).
        assert_ne!(Cloak::random(64), Cloak::random(64));
        // The key is not printed.
        assert!(!format!("{p:?}").contains('['));
    }

    #[test]
    fn ipv4_addresses_of_one_slash_24_share_the_network_label() {
        let c = Cloak::new([3; 16], 64);
        let (a, b) = (c.host(ip("192.0.2.1")), c.host(ip("192.0.2.200")));
        let other = c.host(ip("192.0.3.1"));
        assert_ne!(labels(&a)[0], labels(&b)[0]);
        assert_eq!(labels(&a)[1], labels(&b)[1]);
        assert_ne!(labels(&a)[1], labels(&other)[1]);
    }

    #[test]
    fn ipv6_addresses_group_by_the_configured_prefix() {
        let c = Cloak::new([5; 16], 64);
        let a = c.host(ip("2001:db8:1:2::1"));
        let b = c.host(ip("2001:db8:1:2:ffff::9"));
        let other_net = c.host(ip("2001:db8:1:3::1"));
        assert!(a.ends_with(".ip6"), "{a}");
        assert_eq!(a, c.host(ip("2001:db8:1:2::1")));
        assert_ne!(labels(&a)[0], labels(&b)[0]);
        assert_eq!(labels(&a)[1], labels(&b)[1]);
        assert_ne!(labels(&a)[1], labels(&other_net)[1]);
        // With --ipv6-prefix 48 the two /64s are one network.
        let wide = Cloak::new([5; 16], 48);
        let (a, other_net) = (
            wide.host(ip("2001:db8:1:2::1")),
            wide.host(ip("2001:db8:1:3::1")),
        );
        assert_eq!(labels(&a)[1], labels(&other_net)[1]);
        // No colon: a cloak never reads as an IRC trailing parameter.
        assert!(!a.contains(':'));
    }

    #[test]
    fn known_answers_pin_the_cloak_across_versions() {
        // An operator who keeps --cloak-key expects the same cloaks after an upgrade: a change
        // of the derivation or of the labels must be deliberate (and said in the changelog).
        let c = Cloak::from_phrase("pollchat test cloak key", 64);
        assert_eq!(c.host(ip("127.0.0.1")), KNOWN_V4);
        assert_eq!(c.host(ip("2001:db8::1")), KNOWN_V6);
    }

    const KNOWN_V4: &str = "f1c0136b.a16b454c.ip";
    const KNOWN_V6: &str = "6d471ec7.f1136001.ip6";

    #[test]
    fn real_hosts_never_start_with_a_colon() {
        assert_eq!(real_host(ip("::1")), "0::1");
        assert_eq!(real_host(ip("10.0.0.1")), "10.0.0.1");
    }
}
