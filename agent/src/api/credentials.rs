//! Who is calling the local API, and whether they may.
//!
//! The kernel records the caller's credentials when it connects: SO_PEERCRED gives the
//! uid, the primary gid and the pid; SO_PEERGROUPS (Linux 4.13+) the supplementary
//! groups, which SO_PEERCRED lacks. Without them a technician added to the group with
//! `adduser tech fuota-agent` (a supplementary group) would be refused. Looking the
//! groups up by user name instead would ask what the user would get at the next login,
//! not what the calling process has.

use std::os::fd::AsRawFd;

/// The caller of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Effective uid (`u32::MAX` when the kernel did not say).
    pub uid: u32,
    /// Effective primary gid.
    pub gid: u32,
    /// Process id, when known (for the log).
    pub pid: Option<i32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Caller {
    /// The credentials of the process at the other end of `stream`. A caller whose
    /// credentials cannot be read gets an identity that no policy accepts.
    pub fn of(stream: &tokio::net::UnixStream) -> Caller {
        let Ok(credentials) = stream.peer_cred() else {
            return Caller {
                uid: u32::MAX,
                gid: u32::MAX,
                pid: None,
                groups: Vec::new(),
            };
        };
        Caller {
            uid: credentials.uid(),
            gid: credentials.gid(),
            pid: credentials.pid(),
            groups: peer_groups(stream.as_raw_fd()),
        }
    }
}

/// Who may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerPolicy {
    /// The agent's own effective uid.
    pub agent_uid: u32,
    /// The API group; `None`: root and the agent's user only.
    pub group_id: Option<u32>,
}

impl CallerPolicy {
    /// `Ok` for root, the agent's user and members of the group; otherwise the refusal,
    /// in words that say what to do.
    pub fn check(&self, caller: &Caller) -> Result<(), String> {
        if caller.uid == 0 || caller.uid == self.agent_uid {
            return Ok(());
        }
        if let Some(group) = self.group_id {
            if caller.gid == group || caller.groups.contains(&group) {
                return Ok(());
            }
        }
        let group = match self.group_id.and_then(group_name) {
            Some(name) => format!(
                "root or a member of the group {name:?} (add yourself with `sudo adduser $USER {name}`, then log in again)"
            ),
            None => "root or the agent's own user".to_string(),
        };
        Err(format!(
            "permission denied: uid {} may not use the fuota-agent API; it is open to {group}",
            caller.uid
        ))
    }
}

fn group_name(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|group| group.name)
}

/// The supplementary groups of the peer of the Unix socket `fd` (SO_PEERGROUPS); empty
/// if the kernel cannot say.
fn peer_groups(fd: std::os::fd::RawFd) -> Vec<u32> {
    // NGROUPS_MAX is 65536; start small and grow to what the kernel asks for (ERANGE
    // sets the needed length).
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..3 {
        let mut length = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a live buffer of `length` bytes for the duration of the
        // call, `length` is a valid pointer, and `fd` is the open socket of the caller's
        // connection (borrowed from the stream, which outlives this call).
        let result = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut length,
            )
        };
        let count = length as usize / std::mem::size_of::<libc::gid_t>();
        if result == 0 {
            groups.truncate(count.min(groups.len()));
            return groups;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return Vec::new();
        }
        groups.resize(count.max(groups.len() * 2), 0);
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            uid,
            gid,
            pid: Some(1234),
            groups: groups.to_vec(),
        }
    }

    const POLICY: CallerPolicy = CallerPolicy {
        agent_uid: 990,
        group_id: Some(990),
    };

    #[test]
    fn root_the_agent_and_group_members_are_served() {
        assert_eq!(POLICY.check(&caller(0, 0, &[])), Ok(()));
        assert_eq!(POLICY.check(&caller(990, 990, &[])), Ok(()));
        assert_eq!(
            POLICY.check(&caller(1000, 990, &[])),
            Ok(()),
            "primary group"
        );
        assert_eq!(
            POLICY.check(&caller(1000, 1000, &[27, 990])),
            Ok(()),
            "supplementary group"
        );
    }

    #[test]
    fn others_are_refused_with_what_to_do() {
        let refusal = POLICY.check(&caller(1000, 1000, &[27, 100])).unwrap_err();
        assert!(refusal.contains("uid 1000"), "{refusal}");
        assert!(refusal.contains("permission denied"), "{refusal}");
        let no_group = CallerPolicy {
            agent_uid: 990,
            group_id: None,
        };
        let refusal = no_group.check(&caller(1000, 990, &[990])).unwrap_err();
        assert!(refusal.contains("the agent's own user"), "{refusal}");
    }

    #[tokio::test]
    async fn a_connection_reports_this_process_s_credentials_and_groups() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().expect("socket pair");
        let caller = Caller::of(&ours);
        assert_eq!(caller.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(caller.gid, nix::unistd::getegid().as_raw());
        assert_eq!(caller.pid, Some(std::process::id() as i32));
        let mut expected: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .into_iter()
            .map(|gid| gid.as_raw())
            .collect();
        let mut reported = caller.groups.clone();
        expected.sort_unstable();
        reported.sort_unstable();
        assert_eq!(reported, expected);
    }
}
