//! The users file, `DATA_DIR/users`: the user table and every permission, kept so
//! that users and permissions made at run time survive a restart, as RabbitMQ's do.
//!
//! It is a [`crate::store::snapshot`] file (magic `AMQRUSR1`, `u32` payload length,
//! `u32` CRC-32, payload), replaced atomically after every change. The payload: a `u32`
//! count of users, each as its name, its hashing algorithm (always
//! `rabbit_password_hashing_sha256`), its password hash (RabbitMQ's layout, see
//! [`super::User`]: 4 salt bytes then SHA-256 of salt and password; never the password
//! itself) and a `u32` count of tags; then a `u32` count of permissions, each as user,
//! vhost, and the configure, write and read patterns; then a `u32` count of topic
//! permissions, each as user, vhost, exchange, and the write and read patterns (absent
//! in files written before there were topic permissions). Every string and byte string
//! is a `u32` length then its bytes (UTF-8 for strings).
//!
//! Vhosts are not in it: they come from the vhost list (`vhost-names`), which is
//! authoritative; permissions on a vhost that is not there any more are dropped at load.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use super::topic::{TopicPermission, TopicTable};
use super::{HASH_LEN, Permission, User, Users};
use crate::store::snapshot::{self, SnapshotError};

const MAGIC: &[u8; 8] = b"AMQRUSR1";
/// The file's name in the data directory.
pub(crate) const FILE: &str = "users";
/// The only password hashing algorithm, named as RabbitMQ names it.
const HASHING: &str = "rabbit_password_hashing_sha256";

/// Why a users file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersFileError {
    /// Bad magic, truncated, or a checksum mismatch.
    #[error("users file is damaged ({0})")]
    Damaged(#[from] SnapshotError),
    /// The checksum matches but the payload holds an invalid value.
    #[error("users file is malformed: {0}")]
    Malformed(&'static str),
}

impl Users {
    /// The user table and permissions as users-file contents.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(256);
        put_len(&mut p, self.users.len());
        for (name, user) in &self.users {
            put_bytes(&mut p, name.as_bytes());
            put_bytes(&mut p, HASHING.as_bytes());
            put_bytes(&mut p, &user.hash);
            put_len(&mut p, user.tags.len());
            for tag in &user.tags {
                put_bytes(&mut p, tag.as_bytes());
            }
        }
        put_len(&mut p, self.permissions.len());
        for ((user, vhost), perm) in &self.permissions {
            for s in [user, vhost, &perm.configure, &perm.write, &perm.read] {
                put_bytes(&mut p, s.as_bytes());
            }
        }
        let topic = self.list_topic_permissions();
        put_len(&mut p, topic.len());
        for (user, vhost, exchange, write, read) in &topic {
            for s in [user, vhost, exchange, write, read] {
                put_bytes(&mut p, s.as_bytes());
            }
        }
        snapshot::seal(MAGIC, &p)
    }

    /// Reads users-file contents written by [`Users::encode`]. The result knows no
    /// vhosts yet and limits `guest` to loopback, as [`Users::default`] does.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, UsersFileError> {
        let mut r = Reader(snapshot::unseal(MAGIC, bytes)?);
        let mut users = BTreeMap::new();
        for _ in 0..r.u32()? {
            let name = r.string()?;
            if r.string()? != HASHING {
                return Err(UsersFileError::Malformed(
                    "unknown password hashing algorithm",
                ));
            }
            let hash = r.bytes()?.to_vec();
            // Empty: a user without a password (imported with `password_hash: ""`).
            if !hash.is_empty() && hash.len() != HASH_LEN {
                return Err(UsersFileError::Malformed(
                    "password hash of the wrong length",
                ));
            }
            let tags = (0..r.u32()?)
                .map(|_| r.string())
                .collect::<Result<_, _>>()?;
            users.insert(name, User { hash, tags });
        }
        let mut permissions = BTreeMap::new();
        for _ in 0..r.u32()? {
            let (user, vhost) = (r.string()?, r.string()?);
            let (configure, write, read) = (r.string()?, r.string()?, r.string()?);
            if !users.contains_key(&user) {
                return Err(UsersFileError::Malformed("permission of an unknown user"));
            }
            let perm = Permission::new(&configure, &write, &read)
                .map_err(|_| UsersFileError::Malformed("invalid permission pattern"))?;
            permissions.insert((user, vhost), perm);
        }
        // Topic permissions: files written before they existed end here.
        let mut topic = TopicTable::new();
        if !r.0.is_empty() {
            for _ in 0..r.u32()? {
                let (user, vhost, exchange) = (r.string()?, r.string()?, r.string()?);
                let (write, read) = (r.string()?, r.string()?);
                if !users.contains_key(&user) {
                    return Err(UsersFileError::Malformed(
                        "topic permission of an unknown user",
                    ));
                }
                let perm = TopicPermission::new(&user, &vhost, &write, &read)
                    .map_err(|_| UsersFileError::Malformed("invalid topic permission pattern"))?;
                topic
                    .entry(user)
                    .or_default()
                    .entry(vhost)
                    .or_default()
                    .insert(exchange, perm);
            }
        }
        if !r.0.is_empty() {
            return Err(UsersFileError::Malformed("trailing bytes"));
        }
        Ok(Self {
            users,
            vhosts: BTreeSet::new(),
            permissions,
            topic,
            loopback_only: vec!["guest".to_owned()],
            generation: 0,
        })
    }
}

/// The user table kept in the data directory `root`; `None` if there is none yet (a
/// fresh data directory). A damaged file is an error naming it, never a fresh start
/// (that would bring back a deleted `guest`).
pub(crate) fn load(root: &Path) -> io::Result<Option<Users>> {
    let path = root.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Users::decode(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Atomically replaces the users file in `root` with `bytes` (from [`Users::encode`]),
/// unless it already holds exactly those bytes: a start-up that changes nothing writes
/// nothing, so it succeeds on a full disk.
pub(crate) fn save(root: &Path, bytes: &[u8]) -> io::Result<()> {
    if std::fs::read(root.join(FILE)).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    snapshot::write(root, FILE, bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.join(FILE).display())))
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], UsersFileError> {
        if self.0.len() < n {
            return Err(UsersFileError::Malformed("truncated payload"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, UsersFileError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self) -> Result<&'a [u8], UsersFileError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, UsersFileError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| UsersFileError::Malformed("not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Users {
        let mut users = Users::default();
        users.add_vhost("orders é");
        users.add_user("app", "s3cret", vec!["monitoring".into(), "x".into()]);
        users
            .set_permissions("app", "orders é", "^app\\.", "", ".*")
            .expect("set");
        users.delete_user("guest").expect("guest");
        users.add_user("nobody", "pw", vec![]);
        users
    }

    #[test]
    fn users_hashes_tags_and_permissions_round_trip_without_passwords() {
        let users = sample();
        let bytes = users.encode();
        assert!(
            !bytes.windows(6).any(|w| w == b"s3cret"),
            "the password itself is never written"
        );
        let mut back = Users::decode(&bytes).expect("decodes");
        assert_eq!(back.list_users(), users.list_users());
        assert!(back.check_password("app", "s3cret") && !back.check_password("app", "x"));
        assert_eq!(back.users["app"].hash, users.users["app"].hash, "same salt");
        assert!(
            !back.check_password("guest", "guest"),
            "deleted stays deleted"
        );
        back.add_vhost("orders é");
        let p = back.permissions("app", "orders é").expect("kept");
        assert_eq!((&*p.configure, &*p.write, &*p.read), ("^app\\.", "", ".*"));
        assert!(p.allows(super::super::Access::Configure, "app.q"));
        assert!(!p.allows(super::super::Access::Write, "app.q"));
        assert_eq!(back.list_permissions().len(), 1);
        assert!(back.permissions("nobody", "/").is_none());
        // An empty table is a table, not "no file".
        let mut none = Users::decode(&bytes).expect("decodes");
        none.delete_user("app").expect("app");
        none.delete_user("nobody").expect("nobody");
        let empty = Users::decode(&none.encode()).expect("empty decodes");
        assert!(empty.list_users().is_empty());
    }

    #[test]
    fn damaged_files_are_refused_not_half_loaded() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Users::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 16..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x20;
            assert_eq!(
                Users::decode(&flipped).map(drop),
                Err(UsersFileError::Damaged(SnapshotError::Checksum)),
                "flip at {i}"
            );
        }
        let other = snapshot::seal(b"AMQRDEF1", b"");
        assert_eq!(
            Users::decode(&other).map(drop),
            Err(UsersFileError::Damaged(SnapshotError::Magic))
        );
        // A sealed payload with a bad hash length is malformed, not a panic.
        let mut p = Vec::new();
        put_len(&mut p, 1);
        put_bytes(&mut p, b"u");
        put_bytes(&mut p, HASHING.as_bytes());
        put_bytes(&mut p, b"short");
        put_len(&mut p, 0);
        put_len(&mut p, 0);
        assert!(matches!(
            Users::decode(&snapshot::seal(MAGIC, &p)),
            Err(UsersFileError::Malformed(_))
        ));
    }

    #[test]
    fn load_names_the_file_and_missing_is_none() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(load(dir.path()).expect("missing").is_none());
        save(dir.path(), &sample().encode()).expect("save");
        let back = load(dir.path()).expect("load").expect("present");
        assert!(back.check_password("app", "s3cret"));
        std::fs::write(dir.path().join(FILE), b"AMQRUSR1\x05\0\0\0").expect("truncate");
        let err = load(dir.path()).expect_err("damaged");
        assert!(
            err.to_string()
                .contains(&dir.path().join(FILE).display().to_string()),
            "{err}"
        );
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
