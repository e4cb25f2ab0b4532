# The rbuild builder images, built by rbuild itself:
#
#   cargo xtask builder-image OUT_DIR
#
# builds a static, stripped rbuild and lays out the build context this file expects
# (OUT_DIR/context: the binary, the CA bundle, passwd/group, the busybox tree for :debug),
# then runs `rbuild build` on this file twice:
#   --target rbuild -> OUT_DIR/rbuild.tar        (rbuild:latest: no shell)
#   --target debug  -> OUT_DIR/rbuild-debug.tar  (rbuild:debug: busybox, for CI scripts)
#   --target restricted -> OUT_DIR/rbuild-restricted.tar (rbuild:restricted: RUN steps in
#                          a Kubernetes restricted pod, in place)
#   --target restricted-debian -> OUT_DIR/rbuild-restricted-debian.tar (the same for
#                          usrmerge bases: Debian, Ubuntu)
# All are `docker load`-able. No RUN step: the images build wherever rbuild runs.

FROM scratch AS rbuild
# rootfs/: /usr/local/bin/rbuild, the CA bundle, /etc/passwd and /etc/group (root and a
# build user 1000), /kaniko/executor (a link to rbuild, which reads Kaniko's flags when
# started under that name), /tmp (1777), /var/lib/rbuild (0700: root's store), /workspace.
COPY rootfs/ /
# The build user's home, where its store goes (~/.local/share/rbuild).
COPY --chown=1000:1000 home/ /home/
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
VOLUME ["/var/lib/rbuild"]
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/rbuild"]

FROM rbuild AS debug
# A static busybox and its applets in /busybox (where Kaniko's :debug image has them), and
# /bin/sh for CI systems that start `sh` by that name.
COPY debug/ /
ENV PATH=/usr/local/bin:/busybox:/bin

# The builder image for Kubernetes' restricted Pod Security level (rbuild:restricted,
# docs/ci/kubernetes-restricted.md). RUN steps run in this image's own `/` there (isolation
# restricted), which rbuild does only where /rbuild/in-place-root marks it. restricted/:
# /rbuild/bin/rbuild, the marker, the CA bundle in /rbuild/certs (a stage's /etc replaces
# the image's while a step runs), /rbuild/top, and nothing else but empty top-level
# directories, owned by the build user 1000 and group 0 and group-writable (OpenShift's
# random uid has gid 0): `/` itself is the container runtime's, so a stage's top-level
# entries this image lacks are laid out in /rbuild/top, where a step's paths to them are
# redirected (docs/sandbox.md). The store, /rbuild/state, is made by the first build.
#
# git (git contexts, ADD of a git URL) is Debian's, in /rbuild/bin with its libraries
# (git-lib), helpers (git-core) and an empty template directory; it reads no system-wide
# configuration: /etc is a stage's while its steps run.
FROM scratch AS restricted
COPY --chown=1000:0 restricted/ /
ENV PATH=/rbuild/bin \
    SSL_CERT_FILE=/rbuild/certs/ca-certificates.crt \
    GIT_EXEC_PATH=/rbuild/bin/git-core \
    GIT_TEMPLATE_DIR=/rbuild/bin/git-templates \
    GIT_CONFIG_NOSYSTEM=1 \
    GIT_SSL_CAINFO=/rbuild/certs/ca-certificates.crt
USER 1000:0
ENTRYPOINT ["/rbuild/bin/rbuild", "--root", "/rbuild/state"]

# rbuild:restricted for usrmerge bases (Debian, Ubuntu): the same files, but /bin, /lib,
# /lib64 and /sbin are the symlinks into /usr such a stage has. `/` is the runtime's, so
# the builder's top level must match the stage's: a directory cannot be turned into a
# symlink there, nor the reverse (busybox and Alpine stages, whose /bin is a directory, use
# rbuild:restricted). rbuild is static: it needs nothing under /lib.
FROM scratch AS restricted-debian
COPY --chown=1000:0 restricted-debian/ /
ENV PATH=/rbuild/bin \
    SSL_CERT_FILE=/rbuild/certs/ca-certificates.crt \
    GIT_EXEC_PATH=/rbuild/bin/git-core \
    GIT_TEMPLATE_DIR=/rbuild/bin/git-templates \
    GIT_CONFIG_NOSYSTEM=1 \
    GIT_SSL_CAINFO=/rbuild/certs/ca-certificates.crt
USER 1000:0
ENTRYPOINT ["/rbuild/bin/rbuild", "--root", "/rbuild/state"]
