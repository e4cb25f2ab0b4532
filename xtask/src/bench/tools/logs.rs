//! Reading the tools' build logs: how many steps each answered from its cache.

use super::{Builder, Kind};

impl Builder {
    /// prints it: BuildKit's `#N CACHED` for a vertex named `[stage i/n] INSTRUCTION`
    /// (FROM excluded), Buildah's `--> Using cache`, Kaniko's `Using caching version of
    /// cmd`, rbuild's `CACHED`.
    pub fn cached_steps(&self, text: &str) -> usize {
        match &self.kind {
            Kind::Rbuild { .. } | Kind::Restricted { .. } => {
                text.lines().filter(|l| l.contains("CACHED")).count()
            }
            Kind::Docker { .. } | Kind::BuildKit { .. } => buildkit_cached_steps(text),
            // Kaniko: `Using caching version of cmd: RUN ...` for a RUN (or, with
            // --cache-copy-layers, a COPY) found in its cache repository.
            Kind::Kaniko { .. } => text
                .lines()
                .filter(|l| l.contains("Using caching version of cmd"))
                .count(),
            Kind::Skipped { .. } => 0,
            Kind::Buildah { .. } => text
                .lines()
                .filter(|l| l.trim_start().starts_with("--> Using cache"))
                .count(),
        }
    }
}

fn buildkit_cached_steps(text: &str) -> usize {
    let mut steps = std::collections::HashSet::new();
    let mut cached = std::collections::HashSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((id, what)) = rest.split_once(' ') else {
            continue;
        };
        if what.starts_with('[') && !what.contains("] FROM ") {
            steps.insert(id.to_string());
        } else if what.trim() == "CACHED" {
            cached.insert(id.to_string());
        }
    }
    steps.intersection(&cached).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn counts_cached_steps_as_each_tool_prints_them() {
        let docker = &Builder::docker_buildkit("docker".into(), "unix:///d.sock".into());
        let log = "#4 [1/3] FROM r/b@sha256:ab\n#4 CACHED\n#5 [2/3] COPY a /a\n#5 CACHED\n\
                   #6 [3/3] RUN true\n#6 DONE 0.1s\n#7 exporting to image\n";
        assert_eq!(docker.cached_steps(log), 1);
        let buildah = &Builder::buildah(Path::new("/w"));
        assert_eq!(
            buildah.cached_steps("STEP 2/3: COPY a /a\n--> Using cache 12ab\nSTEP 3/3: RUN true\n"),
            1
        );
    }
}
