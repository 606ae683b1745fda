//! Server operators' credentials: `--oper NAME:HASH` and `--oper-file FILE`, checked by IRC's
//! `OPER` and the line protocol's `/oper`.
//!
//! Only hashes are configured, never passwords: `pollchat hash-password` reads a password on
//! standard input and prints its Argon2id hash in the PHC string format
//! (`$argon2id$v=19$m=8192,t=2,p=1$salt$hash`), so no password shows in a process list or a
//! config file. Verifying one costs the loop a few milliseconds of CPU (the point of a password
//! hash), which is why `OPER` costs many flood tokens: a client cannot make the loop hash
//! passwords in a tight loop.

use std::fmt;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Argon2id with 8 MiB of memory and 2 passes: a few milliseconds here, some tens on a Pi, which
/// a server can afford per (rare, flood-charged) OPER; OWASP's minimum is 19 MiB × 2 for
/// interactive logins, and a stolen hash of a strong operator password is not where this
/// server's security lies. A hash made with other parameters (they are in the PHC string) is
/// verified with its own.
fn hasher() -> Argon2<'static> {
    let params = Params::new(8 * 1024, 2, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string of `password`'s hash, with a random salt.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("hashing cannot fail with valid parameters")
        .to_string()
}

/// Why an operator entry was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct BadOper(pub String);

impl fmt::Display for BadOper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One operator: a name and the hash of its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oper {
    pub name: String,
    pub hash: String,
}

impl Oper {
    /// `NAME:HASH` (the flag) or `NAME HASH` (a line of `--oper-file`).
    pub fn parse(entry: &str) -> Result<Oper, BadOper> {
        let entry = entry.trim();
        let (name, hash) = entry
            .split_once([':', ' ', '\t'])
            .ok_or_else(|| BadOper(format!("{entry:?}: expected NAME:HASH")))?;
        let (name, hash) = (name.trim(), hash.trim());
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BadOper(format!("{name:?}: an operator name is one word")));
        }
        PasswordHash::new(hash).map_err(|e| {
            BadOper(format!(
                "{name}: {e}: the hash is what `pollchat hash-password` prints"
            ))
        })?;
        Ok(Oper {
            name: name.to_string(),
            hash: hash.to_string(),
        })
    }

    /// The operators of a `--oper-file`: one `NAME HASH` a line; blank lines and `#` comments
    /// are skipped.
    pub fn parse_file(text: &str) -> Result<Vec<Oper>, BadOper> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Oper::parse)
            .collect()
    }
}

/// Whether `name` and `password` are an operator's. Every configured operator's hash is not
/// tried: the name picks one (compared in constant time), then its hash is verified (Argon2's
/// comparison is constant-time too). An unknown name costs a verification all the same, so a
/// guesser cannot tell a wrong name from a wrong password by the time the answer takes (unless
/// an operator's hash was made with costlier parameters than [`hash_password`]'s). With no
/// operators configured it answers at once.
/// The operators of an `--oper-file`: its text read and parsed, or why not.
pub fn read_file(path: &std::path::Path) -> Result<Vec<Oper>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    Oper::parse_file(&text).map_err(|e| e.to_string())
}

pub fn check(opers: &[Oper], name: &str, password: &str) -> bool {
    // With no operators there is no name to hide, and no reason to make the loop hash.
    if opers.is_empty() {
        return false;
    }
    let found = opers
        .iter()
        .find(|o| constant_time_eq(o.name.as_bytes(), name.as_bytes()));
    // A fixed hash to spend the same time on when the name is unknown.
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = match found {
        Some(o) => o.hash.as_str(),
        None => DECOY.get_or_init(|| hash_password("decoy")),
    };
    let ok = PasswordHash::new(hash)
        .is_ok_and(|h| hasher().verify_password(password.as_bytes(), &h).is_ok());
    ok && found.is_some()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_checks_its_password_and_nothing_else() {
        let hash = hash_password("operpassword");
        assert!(hash.starts_with("$argon2id$"));
        let opers = vec![Oper::parse(&format!("operuser:{hash}")).unwrap()];
        assert!(check(&opers, "operuser", "operpassword"));
        assert!(!check(&opers, "operuser", "wrong"));
        assert!(!check(&opers, "nobody", "operpassword"));
        assert!(!check(&[], "operuser", "operpassword"));
    }

    #[test]
    fn entries_are_checked_when_read() {
        assert!(Oper::parse("alice").is_err());
        assert!(Oper::parse("alice:plaintext").is_err());
        let hash = hash_password("x");
        let file = format!("# operators\n\nalice {hash}\nbob\t{hash}\n");
        let opers = Oper::parse_file(&file).unwrap();
        assert_eq!(opers.len(), 2);
        assert_eq!(opers[1].name, "bob");
    }
}
