//! The state file: every attachment, written before `attach` answers, read
//! back when memifd starts.
//!
//! Writes go to a temporary file that is fsynced and renamed over the old
//! one, then the directory is fsynced, so a crash leaves either the old or
//! the new state, never a mix. A file that cannot be read, or of another
//! version, is moved aside (`state.json.bad-<unix time>`) and reported; it
//! never keeps memifd from starting.
//!
//! One memifd owns a state directory ([`lock_dir`]): a second one on the
//! same directory refuses to start instead of restoring (and dropping) the
//! first one's attachments.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::AttachRequest;

/// The lock file in the state directory: held (`flock`, exclusive) by
/// the one memifd that owns the directory, for its whole life; it holds
/// that memifd's pid. The kernel drops the lock when the process dies, so
/// a crash never leaves the directory locked.
pub const LOCK_FILE: &str = "memifd.lock";

/// Why the state directory cannot be ours.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("state directory {dir} is in use by another memifd (pid {pid}, lock {lock}); one memifd per state directory")]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        pid: String,
    },
    #[error("cannot lock the state directory {dir}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Ownership of a state directory; released on drop (or process exit).
#[derive(Debug)]
pub struct DirLock {
    _file: nix::fcntl::Flock<File>,
}

/// Takes the state directory `dir` for this process, creating it if
/// needed; refuses, naming the holder's pid, when another process holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(io)?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut f) => {
            f.set_len(0).map_err(io)?;
            writeln!(&mut *f, "{}", std::process::id()).map_err(io)?;
            Ok(DirLock { _file: f })
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(&lock)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".into());
            Err(LockError::Held {
                dir: dir.to_path_buf(),
                lock,
                pid,
            })
        }
        Err((_, e)) => Err(io(e.into())),
    }
}

/// Version of the state file's format.
pub const STATE_VERSION: u32 = 1;

/// One attachment as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persisted {
    pub request: AttachRequest,
    pub socket_id: crate::ids::AttachmentId,
    pub created: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    attachments: Vec<Persisted>,
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No state file: a first start.
    Missing,
    Found(Vec<Persisted>),
    /// The file was unusable and moved to `to`.
    MovedAside {
        to: PathBuf,
        reason: String,
    },
}

/// Reads the state file at `path`.
pub fn load(path: &Path) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return move_aside(path, format!("cannot read it: {e}")),
    };
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    match serde_json::from_slice::<Version>(&bytes) {
        Err(e) => move_aside(path, format!("not a state file: {e}")),
        Ok(v) if v.version != STATE_VERSION => move_aside(
            path,
            format!(
                "version {} is not the supported version {STATE_VERSION}",
                v.version
            ),
        ),
        Ok(_) => match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(f) => Loaded::Found(f.attachments),
            Err(e) => move_aside(path, format!("corrupt: {e}")),
        },
    }
}

fn move_aside(path: &Path, reason: String) -> Loaded {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut to = path.as_os_str().to_owned();
    to.push(format!(".bad-{now}"));
    let to = PathBuf::from(to);
    if let Err(e) = std::fs::rename(path, &to) {
        return Loaded::MovedAside {
            to,
            reason: format!("{reason}; moving it aside failed too: {e}"),
        };
    }
    Loaded::MovedAside { to, reason }
}

/// Writes every attachment durably (temp file, fsync, rename, fsync dir).
pub fn save(path: &Path, attachments: &[Persisted]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let body = serde_json::to_vec(&serde_json::json!({
        "version": STATE_VERSION,
        "attachments": attachments,
    }))
    .expect("state serializes");
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AttachmentKey, MemifSpec};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("memifd-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_state_directory_has_one_owner_until_it_lets_go() {
        let d = dir("lock");
        let first = lock_dir(&d).expect("first lock");
        let pid = std::process::id().to_string();
        match lock_dir(&d) {
            Err(LockError::Held {
                dir: held, pid: p, ..
            }) => {
                assert_eq!(held, d);
                assert_eq!(p, pid);
            }
            other => panic!("second lock: {other:?}"),
        }
        let msg = lock_dir(&d).unwrap_err().to_string();
        assert!(
            msg.contains(&d.display().to_string()) && msg.contains(&pid),
            "{msg}"
        );
        drop(first);
        let _again = lock_dir(&d).expect("free again after drop");
        let _ = std::fs::remove_dir_all(&d);
    }

    fn one() -> Persisted {
        Persisted {
            request: AttachRequest {
                key: AttachmentKey {
                    container_id: "c".into(),
                    ifname: "memif-eth1".into(),
                },
                network: "blue".into(),
                netns: "/run/netns/p".into(),
                socket: None,
                spec: MemifSpec::default(),
                ips: vec![],
                pod: None,
                steer: None,
                vni: None,
            },
            socket_id: crate::ids::AttachmentId(7),
            created: 1,
        }
    }

    #[test]
    fn round_trip_and_missing() {
        let d = dir("rt");
        let p = d.join("state.json");
        assert!(matches!(load(&p), Loaded::Missing));
        save(&p, &[one()]).unwrap();
        match load(&p) {
            Loaded::Found(v) => assert_eq!(v, vec![one()]),
            other => panic!("{other:?}"),
        }
        assert!(!d.join("state.json.tmp").exists());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn corrupt_and_unknown_version_are_moved_aside() {
        for (tag, text, want) in [
            ("garbage", "{not json", "not a state file"),
            (
                "version",
                r#"{"version": 99, "attachments": []}"#,
                "version 99",
            ),
            (
                "shape",
                r#"{"version": 1, "attachments": [{"x": 1}]}"#,
                "corrupt",
            ),
        ] {
            let d = dir(tag);
            let p = d.join("state.json");
            std::fs::write(&p, text).unwrap();
            match load(&p) {
                Loaded::MovedAside { to, reason } => {
                    assert!(reason.contains(want), "{tag}: {reason}");
                    assert!(to.exists() && !p.exists(), "{tag}");
                    assert_eq!(std::fs::read_to_string(to).unwrap(), text);
                }
                other => panic!("{tag}: {other:?}"),
            }
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
