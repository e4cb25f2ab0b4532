# The rbuild builder images, built by rbuild itself:
#
#   cargo xtask builder-image OUT_DIR
#
# builds a static, stripped rbuild and lays out the build context this file expects
# (OUT_DIR/context: the binary, the CA bundle, passwd/group, the busybox tree for :debug),
# then runs `rbuild build` on this file twice:
#   --target rbuild -> OUT_DIR/rbuild.tar        (rbuild:latest: no shell)
#   --target debug  -> OUT_DIR/rbuild-debug.tar  (rbuild:debug: busybox, for CI scripts)
# Both are `docker load`-able. No RUN step: the images build wherever rbuild runs.

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
