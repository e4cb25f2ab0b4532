//! The state of one stage while it is built (BuildKit's `dispatchState`), and what a
//! finished stage leaves for the stages after it.

use std::path::PathBuf;

use rbuild_image::{Descriptor, Digest, History, ImageConfig};

use crate::base::LoadedImage;
use crate::history;

/// BuildKit's history comment on every entry a Dockerfile build adds.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// An overlay step's upper directory not moved into the stage's rootfs yet (a root build):
/// it is moved (`rbuild_snapshot::merge_upper`, renames) when a later step or stage needs
/// the files (`BuildContext::catch_up`), never after a stage's last step that nothing
/// reads. It stands for `layers[layer]`, the layer right above those on the rootfs.
pub(crate) struct PendingMerge {
    pub upper: PathBuf,
    pub changes: Vec<rbuild_layer::Change>,
    pub layer: usize,
}

/// A finished stage: its image and its root filesystem (kept for `COPY --from`; only the
/// first `applied` layers are on it: cache hits are applied when something reads it).
pub(crate) struct StageOutput {
    pub image: LoadedImage,
    pub rootfs: PathBuf,
    pub applied: usize,
    /// The stage's last overlay step's changes, not on `rootfs` yet.
    pub pending_merge: Option<PendingMerge>,
    pub fs_key: Digest,
    /// The stage's environment at its end (ENVs and ARG values) and its ARGs: a stage built
    /// `FROM` this one starts with them (BuildKit's `dispatchState.init`).
    pub env: Vec<(String, String)>,
    pub build_args: Vec<(String, String)>,
}

/// The state of the stage being built (BuildKit's `dispatchState`).
pub(crate) struct StageState {
    pub index: usize,
    pub label: String,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    pub rootfs: PathBuf,
    /// The LLB state's environment: image Env, then ARG values and ENVs as declared. Used
    /// for expansion and as RUN's environment.
    pub env: Vec<(String, String)>,
    /// The stage's ARGs with their values, for RUN's history string.
    pub build_args: Vec<(String, String)>,
    /// CMD was set in this stage (an ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// How many of `layers` are applied on `rootfs` (hits are applied only when a later
    /// step needs the files).
    pub applied: usize,
    /// The step just run left its layer off the rootfs (a rootless overlay step: the
    /// change is in its upper directory); `applied` says what the rootfs has, and the rest
    /// is applied with the layers of cache hits, when needed.
    pub layer_off_rootfs: bool,
    /// The last overlay step's upper directory, to be moved into `rootfs` when the files
    /// are needed.
    pub pending_merge: Option<PendingMerge>,
    /// The cache key of the file system the next step starts from.
    pub fs_key: Digest,
    /// Every step of this stage runs (`--no-cache`, `--no-cache-filter`).
    pub no_cache: bool,
    /// When the stage's last layer step ran: the `created` of the config-only history
    /// entries after it.
    pub clock: Option<String>,
    /// History entries of this stage still waiting for a `created` time.
    pub undated: Vec<usize>,
}

impl StageState {
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The working directory, cleaned: the config keeps an absolute WORKDIR as written
    /// (`/a/b/`, `/a/../b`, as BuildKit), while RUN's cwd and relative paths need the
    /// directory itself (runc resolves the cwd lexically too).
    pub(crate) fn workdir(&self) -> String {
        if self.config.config.working_dir.is_empty() {
            "/".into()
        } else {
            crate::fsops::join_container("/", &self.config.config.working_dir)
        }
    }

    pub(crate) fn shell(&self) -> Vec<String> {
        if self.config.config.shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            self.config.config.shell.clone()
        }
    }

    /// Adds a history entry. Its `created` is the time of the layer step it belongs to or
    /// follows (see [`StageState::date_history`]), so that a rebuild served from the cache
    /// repeats the first build's times and gives the same image.
    pub(crate) fn add_history(&mut self, created_by: String, with_layer: bool) {
        self.config.history.push(History {
            created: self.clock.clone(),
            created_by,
            comment: HISTORY_COMMENT.into(),
            empty_layer: !with_layer,
            ..Default::default()
        });
        if self.clock.is_none() || with_layer {
            self.undated.push(self.config.history.len() - 1);
        }
    }

    /// A layer step ran (or was reused) at `time`: it dates its own entry, the config-only
    /// entries before it that had no time yet, and those after it until the next one.
    /// With SOURCE_DATE_EPOCH (`epoch`) every time is the epoch.
    pub(crate) fn date_history(&mut self, time: &str, epoch: Option<i64>) {
        let time = match epoch {
            Some(epoch) => history::rfc3339(epoch, 0),
            None => time.to_string(),
        };
        for i in self.undated.drain(..) {
            self.config.history[i].created = Some(time.clone());
        }
        self.clock = Some(time);
    }
}
