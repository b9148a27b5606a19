//! Who may connect to the SQL servers: users with a salted SCRAM-SHA-256 password hash (never the
//! password), from a users file or the environment, and the limit on failed logins per address.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion_postgres::pgwire::api::auth::sasl::scram::gen_salted_password;
use rand::RngCore;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// PBKDF2 iterations of every stored hash (PostgreSQL's default for SCRAM-SHA-256).
pub const ITERATIONS: usize = 4096;
/// Prefix of a stored password hash.
const SCHEME: &str = "scram-sha-256";
/// A user name and password given in the environment instead of a users file.
pub const USER_ENV: &str = "RETENTION_SQL_USER";
pub const PASSWORD_ENV: &str = "RETENTION_SQL_PASSWORD";

/// A password hash: `scram-sha-256:<iterations>:<salt>:<salted password>` (base64), PBKDF2 over
/// the SASLprep'd password as SCRAM defines it. It cannot be turned back into the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub salt: Vec<u8>,
    pub salted: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// Hash `password` with a new random salt.
    pub fn new(password: &str) -> PasswordHash {
        let mut salt = vec![0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        PasswordHash::with_salt(password, salt)
    }

    fn with_salt(password: &str, salt: Vec<u8>) -> PasswordHash {
        let salted = gen_salted_password(password, &salt, ITERATIONS);
        PasswordHash { salt, salted }
    }

    /// Read a stored hash; the error says what was expected.
    pub fn parse(text: &str) -> std::result::Result<PasswordHash, String> {
        let expected = format!(
            "expected `{SCHEME}:{ITERATIONS}:<salt>:<hash>` as printed by `retention sql-user`"
        );
        let parts: Vec<&str> = text.trim().split(':').collect();
        let [scheme, iterations, salt, salted] = parts[..] else {
            return Err(expected);
        };
        if scheme != SCHEME || iterations != ITERATIONS.to_string() {
            return Err(expected);
        }
        let decode = |s: &str| BASE64.decode(s).map_err(|e| format!("{expected} ({e})"));
        Ok(PasswordHash {
            salt: decode(salt)?,
            salted: decode(salted)?,
        })
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        format!(
            "{SCHEME}:{ITERATIONS}:{}:{}",
            BASE64.encode(&self.salt),
            BASE64.encode(&self.salted)
        )
    }

    /// Whether `password` is the one hashed (in constant time).
    pub fn matches(&self, password: &str) -> bool {
        let candidate = gen_salted_password(password, &self.salt, ITERATIONS);
        candidate.ct_eq(&self.salted).into()
    }
}

/// The users file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    /// One entry per user.
    #[serde(default)]
    user: Vec<UserEntry>,
}

/// `[[user]]` of the users file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    /// Login name.
    name: String,
    /// The password hash printed by `retention sql-user NAME`.
    password: String,
}

/// The users who may log in.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: BTreeMap<String, PasswordHash>,
    /// Stands in for an unknown user, so that a wrong name fails exactly as a wrong password.
    decoy: Option<PasswordHash>,
}

impl Users {
    /// Users from `file` (TOML, `[[user]]` entries) and from `RETENTION_SQL_USER` and
    /// `RETENTION_SQL_PASSWORD` (hashed at start; the password is not kept).
    pub fn load(file: Option<&Path>) -> Result<Users> {
        let mut users = Users::default();
        if let Some(path) = file {
            users.add_file(path)?;
        }
        if let (Ok(name), Ok(password)) = (std::env::var(USER_ENV), std::env::var(PASSWORD_ENV)) {
            users.add(&name, PasswordHash::new(&password));
        }
        Ok(users)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let file: UsersFile = toml::from_str(&text).map_err(|e| Error::toml(path, &text, e))?;
        for (i, entry) in file.user.iter().enumerate() {
            let hash = PasswordHash::parse(&entry.password).map_err(|message| Error::Config {
                path: path.to_path_buf(),
                key: format!("user[{i}].password ({})", entry.name),
                message,
            })?;
            self.add(&entry.name, hash);
        }
        Ok(())
    }

    /// Add or replace a user.
    pub fn add(&mut self, name: &str, hash: PasswordHash) {
        self.by_name.insert(name.to_string(), hash);
        self.decoy
            .get_or_insert_with(|| PasswordHash::new(&uuid::Uuid::new_v4().to_string()));
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// The hash a login as `name` is checked against: the user's, or the decoy's.
    pub fn hash_for(&self, name: &str) -> Option<&PasswordHash> {
        self.by_name.get(name).or(self.decoy.as_ref())
    }

    /// Whether `name` logs in with `password` (Flight SQL's basic auth).
    pub fn check(&self, name: &str, password: &str) -> bool {
        let known = self.by_name.contains_key(name);
        let matches = self.hash_for(name).is_some_and(|h| h.matches(password));
        known && matches
    }
}

/// Failed logins per client address: after `max` failures within `window`, that address may not
/// try again until the oldest of them is `window` old.
#[derive(Debug)]
pub struct FailedLogins {
    max: usize,
    window: Duration,
    by_address: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailedLogins {
    pub fn new(max: usize, window: Duration) -> FailedLogins {
        FailedLogins {
            max,
            window,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// Count a failed login from `address` at `now`.
    pub fn record(&self, address: &str, now: Instant) {
        let mut map = self.by_address.lock().expect("lock");
        let failures = map.entry(address.to_string()).or_default();
        failures.push_back(now);
        while failures.len() > self.max {
            failures.pop_front();
        }
    }

    /// How long `address` must wait before it may try again, if it must.
    pub fn locked_for(&self, address: &str, now: Instant) -> Option<Duration> {
        let mut map = self.by_address.lock().expect("lock");
        let failures = map.get_mut(address)?;
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            failures.pop_front();
        }
        if failures.is_empty() {
            map.remove(address);
            return None;
        }
        (failures.len() >= self.max)
            .then(|| self.window - now.duration_since(*failures.front().expect("not empty")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_round_trips_and_checks_the_password_without_keeping_it() {
        let hash = PasswordHash::new("s3cret pass");
        let stored = hash.encode();
        assert!(stored.starts_with("scram-sha-256:4096:"));
        assert!(!stored.contains("s3cret"));
        let back = PasswordHash::parse(&stored).unwrap();
        assert_eq!(back, hash);
        assert!(back.matches("s3cret pass"));
        assert!(!back.matches("s3cret pasS"));
        assert_eq!(format!("{back:?}"), "PasswordHash(..)");
    }

    #[test]
    fn the_hash_is_scrams_salted_password() {
        // RFC 7677's example: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
        // Expected: Python's hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096), base64.
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let hash = PasswordHash::with_salt("pencil", salt);
        assert_eq!(
            BASE64.encode(&hash.salted),
            "xKSVEDI6tPlSysH6mUQZOeeOp01r6B3fcJbodRPcYV0="
        );
    }

    #[test]
    fn a_bad_stored_hash_says_what_was_expected() {
        let e = PasswordHash::parse("md5:abc").unwrap_err();
        assert!(e.contains("scram-sha-256:4096:<salt>:<hash>"), "{e}");
        let e = PasswordHash::parse("scram-sha-256:4096:!!:AAAA").unwrap_err();
        assert!(e.contains("Invalid"), "{e}");
    }

    #[test]
    fn users_come_from_a_file_and_a_bad_entry_names_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let hash = PasswordHash::new("pw").encode();
        std::fs::write(
            &path,
            format!("[[user]]\nname = \"ana\"\npassword = \"{hash}\"\n"),
        )
        .unwrap();
        let users = Users::load(Some(&path)).unwrap();
        assert_eq!(users.names(), vec!["ana"]);
        assert!(users.check("ana", "pw"));
        assert!(!users.check("ana", "wrong"));
        assert!(!users.check("bob", "pw"));

        std::fs::write(&path, "[[user]]\nname = \"ana\"\npassword = \"plain\"\n").unwrap();
        let e = Users::load(Some(&path)).unwrap_err().to_string();
        assert!(
            e.contains("users.toml") && e.contains("user[0].password"),
            "{e}"
        );
        std::fs::write(&path, "[[user]]\nname = \"ana\"\npasword = \"x\"\n").unwrap();
        let e = Users::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("users.toml:3:1: unknown field `pasword`"), "{e}");
    }

    #[test]
    fn an_address_is_locked_out_after_repeated_failures_for_the_window() {
        let limit = FailedLogins::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for s in 0..2 {
            limit.record("10.0.0.1", t0 + Duration::from_secs(s));
        }
        assert_eq!(
            limit.locked_for("10.0.0.1", t0 + Duration::from_secs(2)),
            None
        );
        limit.record("10.0.0.1", t0 + Duration::from_secs(2));
        assert_eq!(
            limit.locked_for("10.0.0.1", t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(limit.locked_for("10.0.0.2", t0), None);
        // The first failure ages out of the window: one more try is allowed.
        assert_eq!(
            limit.locked_for("10.0.0.1", t0 + Duration::from_secs(60)),
            None
        );
    }
}
