//! Mapping between container uids/gids and host ids: for extracting a rootfs that a user
//! namespace will later see with the container's ids, and for writing a layer from files a
//! user namespace created (rootless builds), whose owners on disk are host ids.
//!
//! Its own crate so that the sandbox (which writes these maps for its user namespaces) and
//! the layer crate (which extracts and writes through them) share the type without either
//! depending on the other.

/// One contiguous range: container ids `container_start..container_start+len` are host ids
/// `host_start..host_start+len` (the format of `/proc/<pid>/uid_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container_start: u32,
    pub host_start: u32,
    pub len: u32,
}

/// uid and gid mappings. An id outside every range has no host id: extraction fails on it
/// rather than guessing, because a wrong owner is silent corruption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

impl IdMap {
    /// The usual rootless layout: container root is the calling user, container ids
    /// `1..=count` come from a subordinate range starting at `sub_start`.
    pub fn rootless(
        host_uid: u32,
        host_gid: u32,
        sub_uid_start: u32,
        sub_gid_start: u32,
        count: u32,
    ) -> Self {
        let ranges = |host: u32, sub: u32| {
            vec![
                IdRange {
                    container_start: 0,
                    host_start: host,
                    len: 1,
                },
                IdRange {
                    container_start: 1,
                    host_start: sub,
                    len: count,
                },
            ]
        };
        IdMap {
            uids: ranges(host_uid, sub_uid_start),
            gids: ranges(host_gid, sub_gid_start),
        }
    }

    /// Only container root, as the calling user: what an unprivileged process may map
    /// without subordinate ids.
    pub fn single(host_uid: u32, host_gid: u32) -> Self {
        let range = |host: u32| {
            vec![IdRange {
                container_start: 0,
                host_start: host,
                len: 1,
            }]
        };
        IdMap {
            uids: range(host_uid),
            gids: range(host_gid),
        }
    }

    /// The host uid of container uid `id`, if mapped.
    pub fn host_uid(&self, id: u64) -> Option<u32> {
        map_id(&self.uids, id)
    }

    /// The host gid of container gid `id`, if mapped.
    pub fn host_gid(&self, id: u64) -> Option<u32> {
        map_id(&self.gids, id)
    }
}

impl IdMap {
    /// The container uid of host uid `id`, if mapped (the inverse of [`IdMap::host_uid`]).
    pub fn container_uid(&self, id: u64) -> Option<u32> {
        unmap_id(&self.uids, id)
    }

    /// The container gid of host gid `id`, if mapped.
    pub fn container_gid(&self, id: u64) -> Option<u32> {
        unmap_id(&self.gids, id)
    }
}

fn unmap_id(ranges: &[IdRange], id: u64) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let offset = id.checked_sub(u64::from(r.host_start))?;
        if offset < u64::from(r.len) {
            u32::try_from(u64::from(r.container_start) + offset).ok()
        } else {
            None
        }
    })
}

fn map_id(ranges: &[IdRange], id: u64) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let offset = id.checked_sub(u64::from(r.container_start))?;
        if offset < u64::from(r.len) {
            u32::try_from(u64::from(r.host_start) + offset).ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_map_puts_root_on_the_user_and_others_in_the_subrange() {
        let map = IdMap::rootless(1000, 1001, 100_000, 200_000, 65536);
        assert_eq!(map.host_uid(0), Some(1000));
        assert_eq!(map.host_gid(0), Some(1001));
        assert_eq!(map.host_uid(1), Some(100_000));
        assert_eq!(map.host_gid(33), Some(200_032));
        assert_eq!(map.host_uid(65536), Some(165_535));
        assert_eq!(map.host_uid(65537), None);
    }

    #[test]
    fn container_ids_invert_host_ids() {
        let map = IdMap::rootless(1000, 1001, 100_000, 200_000, 65536);
        assert_eq!(map.container_uid(1000), Some(0));
        assert_eq!(map.container_gid(1001), Some(0));
        assert_eq!(map.container_uid(100_000), Some(1));
        assert_eq!(map.container_gid(200_032), Some(33));
        assert_eq!(map.container_uid(165_535), Some(65536));
        assert_eq!(map.container_uid(165_536), None);
        assert_eq!(map.container_uid(0), None);
        let single = IdMap::single(1000, 1000);
        assert_eq!(single.container_uid(1000), Some(0));
        assert_eq!(single.container_uid(1001), None);
        assert_eq!(single.host_gid(0), Some(1000));
    }
}
