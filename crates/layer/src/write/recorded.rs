//! Owners, device nodes and file capabilities that are not on the disk but recorded per
//! inode: what a build that cannot give files their owners (the `restricted` isolation: a
//! non-root build user with no user namespace) keeps beside the files for the layer writer.

use std::collections::{BTreeMap, HashMap};

/// The kind of a recorded device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedDeviceKind {
    Char,
    Block,
}

/// A device node recorded for an inode that is an empty regular file on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedDevice {
    pub kind: RecordedDeviceKind,
    pub major: u32,
    pub minor: u32,
    /// Permission bits (and setuid/setgid/sticky) of the node.
    pub mode: u32,
}

/// The name file capabilities are stored under.
const CAPABILITY_XATTR: &str = "security.capability";

/// What the layer writer takes from a record instead of the disk, by `(st_dev, st_ino)`.
/// An inode with no recorded owner whose owner on the disk is `build_user` is written as
/// root's (`0:0` for uid and gid separately): the build user stands for container root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedInodes {
    pub owners: HashMap<(u64, u64), (u32, u32)>,
    pub devices: HashMap<(u64, u64), RecordedDevice>,
    /// `security.capability` values; `None`: removed.
    pub capabilities: HashMap<(u64, u64), Option<Vec<u8>>>,
    /// The build user's uid and gid on the disk.
    pub build_user: (u32, u32),
}

impl RecordedInodes {
    /// The owner to write for an inode whose owner on the disk is `disk`.
    pub(crate) fn owner(&self, key: (u64, u64), disk: (u64, u64)) -> (u64, u64) {
        if let Some(&(uid, gid)) = self.owners.get(&key) {
            return (uid.into(), gid.into());
        }
        let (user_uid, user_gid) = self.build_user;
        let uid = if disk.0 == u64::from(user_uid) {
            0
        } else {
            disk.0
        };
        let gid = if disk.1 == u64::from(user_gid) {
            0
        } else {
            disk.1
        };
        (uid, gid)
    }

    /// The xattrs to write for an inode: the disk's, with the recorded file capability
    /// set or removed.
    pub(crate) fn xattrs(
        &self,
        key: (u64, u64),
        disk: &BTreeMap<String, Vec<u8>>,
    ) -> Option<BTreeMap<String, Vec<u8>>> {
        let recorded = self.capabilities.get(&key)?;
        let mut xattrs = disk.clone();
        match recorded {
            Some(value) => xattrs.insert(CAPABILITY_XATTR.into(), value.clone()),
            None => xattrs.remove(CAPABILITY_XATTR),
        };
        Some(xattrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_owner_wins_and_the_build_user_is_root() {
        let mut recorded = RecordedInodes {
            build_user: (1000, 1000),
            ..Default::default()
        };
        recorded.owners.insert((1, 2), (123, 456));
        assert_eq!(recorded.owner((1, 2), (1000, 1000)), (123, 456));
        assert_eq!(recorded.owner((1, 3), (1000, 1000)), (0, 0));
        // Another id on the disk (gid 0 of OpenShift's random uid) stays as it is.
        assert_eq!(recorded.owner((1, 3), (1000, 0)), (0, 0));
        assert_eq!(recorded.owner((1, 3), (1001, 7)), (1001, 7));
    }

    #[test]
    fn a_recorded_capability_is_set_or_removed() {
        let mut recorded = RecordedInodes::default();
        recorded.capabilities.insert((1, 2), Some(vec![1, 2, 3]));
        recorded.capabilities.insert((1, 3), None);
        let mut disk = BTreeMap::new();
        disk.insert(CAPABILITY_XATTR.to_string(), vec![9]);
        disk.insert("user.x".to_string(), vec![7]);
        let set = recorded.xattrs((1, 2), &disk).unwrap();
        assert_eq!(set[CAPABILITY_XATTR], vec![1, 2, 3]);
        let removed = recorded.xattrs((1, 3), &disk).unwrap();
        assert!(!removed.contains_key(CAPABILITY_XATTR));
        assert_eq!(removed["user.x"], vec![7]);
        assert!(recorded.xattrs((1, 4), &disk).is_none());
    }
}
