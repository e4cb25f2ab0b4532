//! What the supervisor records for the layer writer: the owners and device nodes a
//! restricted step asked for, which the disk cannot hold (the build user owns every file).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The owner a restricted step gave a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The kind of a device node a restricted step created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    Char,
    Block,
}

/// A device node a restricted step created: on disk an empty regular file (only root may
/// create device nodes), in the image this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub kind: DeviceKind,
    pub major: u32,
    pub minor: u32,
    /// The permission bits, after the step's umask.
    pub mode: u32,
}

impl Device {
    /// `st_mode` of the node: its file type and permission bits.
    pub fn st_mode(&self) -> u32 {
        let kind = match self.kind {
            DeviceKind::Char => libc::S_IFCHR,
            DeviceKind::Block => libc::S_IFBLK,
        };
        kind | (self.mode & 0o7777)
    }
}

/// What the supervisor recorded, by inode (device and inode number): a rename or a hard
/// link keeps its entry, as it keeps a real owner. Inode numbers are only meaningful while
/// the files exist: the layer writer reads the table right after the step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TableWire", into = "TableWire")]
pub struct OwnershipTable {
    owners: BTreeMap<(u64, u64), Owner>,
    devices: BTreeMap<(u64, u64), Device>,
    /// `security.capability` values (file capabilities, `setcap`), which only a process
    /// with CAP_SETFCAP may write; `None`: removed (by `removexattr` or a chown).
    capabilities: BTreeMap<(u64, u64), Option<Vec<u8>>>,
    /// Copy-ups the step made (`copy_up.rs`): the new inode of a name, and the shared one
    /// it was copied from, so that whoever keeps a table of earlier steps gives the copy
    /// what it recorded for the old inode ([`Self::merge`]).
    copies: BTreeMap<(u64, u64), (u64, u64)>,
}

/// [`OwnershipTable`] on the control socket: JSON maps take only string keys.
#[derive(Serialize, Deserialize)]
struct TableWire {
    owners: Vec<(u64, u64, Owner)>,
    devices: Vec<(u64, u64, Device)>,
    capabilities: Vec<(u64, u64, Option<Vec<u8>>)>,
    #[serde(default)]
    copies: Vec<((u64, u64), (u64, u64))>,
}

impl From<TableWire> for OwnershipTable {
    fn from(wire: TableWire) -> Self {
        OwnershipTable {
            owners: wire
                .owners
                .into_iter()
                .map(|(d, i, o)| ((d, i), o))
                .collect(),
            devices: wire
                .devices
                .into_iter()
                .map(|(d, i, v)| ((d, i), v))
                .collect(),
            capabilities: wire
                .capabilities
                .into_iter()
                .map(|(d, i, v)| ((d, i), v))
                .collect(),
            copies: wire.copies.into_iter().collect(),
        }
    }
}

impl From<OwnershipTable> for TableWire {
    fn from(table: OwnershipTable) -> Self {
        TableWire {
            owners: table
                .owners
                .into_iter()
                .map(|((d, i), o)| (d, i, o))
                .collect(),
            devices: table
                .devices
                .into_iter()
                .map(|((d, i), v)| (d, i, v))
                .collect(),
            capabilities: table
                .capabilities
                .into_iter()
                .map(|((d, i), v)| (d, i, v))
                .collect(),
            copies: table.copies.into_iter().collect(),
        }
    }
}

impl OwnershipTable {
    /// The recorded owner of the inode `(dev, ino)`.
    pub fn get(&self, dev: u64, ino: u64) -> Option<Owner> {
        self.owners.get(&(dev, ino)).copied()
    }

    /// The recorded owner of `path` (not following a final symlink), `None` if no step
    /// changed it.
    pub fn owner_of(&self, path: &Path) -> io::Result<Option<Owner>> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(self.get(meta.dev(), meta.ino()))
    }

    /// The device node `path` stands for, `None` if it is not one a step created.
    pub fn device_of(&self, path: &Path) -> io::Result<Option<Device>> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(self.devices.get(&(meta.dev(), meta.ino())).copied())
    }

    /// The device node the inode `(dev, ino)` stands for, if a step created one.
    pub fn device(&self, dev: u64, ino: u64) -> Option<Device> {
        self.devices.get(&(dev, ino)).copied()
    }

    /// How many inodes have something recorded.
    pub fn len(&self) -> usize {
        let mut keys: std::collections::BTreeSet<&(u64, u64)> = self.owners.keys().collect();
        keys.extend(self.devices.keys());
        keys.extend(self.capabilities.keys());
        keys.len()
    }

    /// The `security.capability` the step gave `path` (not following a final symlink):
    /// `None` if it set or removed none, `Some(None)` if it removed it.
    pub fn capability_of(&self, path: &Path) -> io::Result<Option<Option<Vec<u8>>>> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(self.capabilities.get(&(meta.dev(), meta.ino())).cloned())
    }

    /// The recorded `security.capability` state of an inode (see [`Self::capability_of`]).
    pub fn capability(&self, key: (u64, u64)) -> Option<Option<&[u8]>> {
        self.capabilities.get(&key).map(|v| v.as_deref())
    }

    /// Every recorded `security.capability` change, by `(dev, ino)`.
    pub fn capabilities(&self) -> impl Iterator<Item = ((u64, u64), Option<&[u8]>)> + '_ {
        self.capabilities.iter().map(|(k, v)| (*k, v.as_deref()))
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
            && self.devices.is_empty()
            && self.capabilities.is_empty()
            && self.copies.is_empty()
    }

    /// Every copy-up recorded: `(new inode, the shared inode it was copied from)`.
    pub fn copies(&self) -> impl Iterator<Item = ((u64, u64), (u64, u64))> + '_ {
        self.copies.iter().map(|(k, v)| (*k, *v))
    }

    /// A name of the shared inode `old` was copied up to the new inode `new`: `new` gets
    /// what is recorded for `old` (owner, device, file capability), which keeps its own
    /// for its other names; what `new` already has stays (recorded after the copy).
    pub fn copied_up(&mut self, old: (u64, u64), new: (u64, u64)) {
        self.duplicate(old, new);
        self.copies.insert(new, old);
    }

    fn duplicate(&mut self, old: (u64, u64), new: (u64, u64)) {
        if let Some(owner) = self.owners.get(&old).copied() {
            self.owners.entry(new).or_insert(owner);
        }
        if let Some(device) = self.devices.get(&old).copied() {
            self.devices.entry(new).or_insert(device);
        }
        if let Some(capability) = self.capabilities.get(&old).cloned() {
            self.capabilities.entry(new).or_insert(capability);
        }
    }

    /// Every recorded owner, by `(dev, ino)`.
    pub fn owners(&self) -> impl Iterator<Item = ((u64, u64), Owner)> + '_ {
        self.owners.iter().map(|(k, v)| (*k, *v))
    }

    /// Every recorded device node, by `(dev, ino)`.
    pub fn devices(&self) -> impl Iterator<Item = ((u64, u64), Device)> + '_ {
        self.devices.iter().map(|(k, v)| (*k, *v))
    }

    /// Records `owner` for the inode `(dev, ino)`: what a build extracting or copying as
    /// the build user gives a file it cannot chown.
    pub fn record_owner(&mut self, key: (u64, u64), owner: Owner) {
        self.owners.insert(key, owner);
    }

    /// Records that the inode `(dev, ino)`, an empty regular file on the disk, stands for
    /// `device`.
    pub fn record_device(&mut self, key: (u64, u64), device: Device) {
        self.devices.insert(key, device);
    }

    /// Forgets everything recorded for the inode `(dev, ino)`: its file is gone, and a new
    /// file may get its number.
    pub fn forget(&mut self, key: (u64, u64)) {
        self.owners.remove(&key);
        self.devices.remove(&key);
        self.capabilities.remove(&key);
    }

    /// Takes in what a later step recorded: its entries win over this table's. A name the
    /// step copied up first gets what this table holds for the inode it was copied from.
    pub fn merge(&mut self, later: OwnershipTable) {
        for (new, old) in &later.copies {
            self.duplicate(*old, *new);
        }
        self.owners.extend(later.owners);
        self.devices.extend(later.devices);
        self.capabilities.extend(later.capabilities);
    }

    pub(super) fn set_owner(&mut self, key: (u64, u64), owner: Owner) {
        self.owners.insert(key, owner);
    }

    pub(super) fn set_device(&mut self, key: (u64, u64), device: Device) {
        self.devices.insert(key, device);
    }

    pub(super) fn set_capability(&mut self, key: (u64, u64), value: Option<Vec<u8>>) {
        self.capabilities.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_up_name_takes_the_old_inodes_entries_and_the_step_still_wins() {
        let (old, new, other) = ((1, 10), (1, 11), (1, 12));
        let mut stage = OwnershipTable::default();
        stage.record_owner(
            old,
            Owner {
                uid: 1000,
                gid: 1000,
            },
        );
        stage.record_owner(other, Owner { uid: 7, gid: 7 });
        stage.set_capability(other, Some(vec![1, 2]));
        let mut step = OwnershipTable::default();
        step.copied_up(old, new);
        step.copied_up(other, (1, 13));
        // Recorded after the copy-up of `other`: the step's own entry for the copy.
        step.set_owner((1, 13), Owner { uid: 5, gid: 6 });
        let step = serde_json::from_str(&serde_json::to_string(&step).unwrap()).unwrap();
        stage.merge(step);
        assert_eq!(
            stage.get(1, 11),
            Some(Owner {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(
            stage.get(1, 10),
            Some(Owner {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(stage.get(1, 13), Some(Owner { uid: 5, gid: 6 }));
        assert_eq!(stage.capability((1, 13)), Some(Some(&[1u8, 2][..])));
        assert_eq!(stage.copies().count(), 0, "the stage keeps no copy-ups");
    }

    #[test]
    fn a_copy_up_within_a_step_duplicates_what_it_recorded_for_the_old_inode() {
        let mut step = OwnershipTable::default();
        step.set_owner((1, 10), Owner { uid: 3, gid: 4 });
        step.copied_up((1, 10), (1, 11));
        assert_eq!(step.get(1, 11), Some(Owner { uid: 3, gid: 4 }));
        assert_eq!(step.copies().collect::<Vec<_>>(), vec![((1, 11), (1, 10))]);
    }
}
