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
}

/// [`OwnershipTable`] on the control socket: JSON maps take only string keys.
#[derive(Serialize, Deserialize)]
struct TableWire {
    owners: Vec<(u64, u64, Owner)>,
    devices: Vec<(u64, u64, Device)>,
    capabilities: Vec<(u64, u64, Option<Vec<u8>>)>,
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
        self.owners.is_empty() && self.devices.is_empty() && self.capabilities.is_empty()
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

    /// Takes in what a later step recorded: its entries win over this table's.
    pub fn merge(&mut self, later: OwnershipTable) {
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
