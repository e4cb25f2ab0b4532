#!/usr/bin/env bash
# The README's first command: prepares a fresh machine (Debian 12, root) and runs a real
# multi-stage build with RUN steps, from nothing: the base image is made locally from
# Debian's static busybox (no public registry is needed), then examples/hello is built on it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

require_rust
ensure_packages "${SETUP_PACKAGES[@]}"
echo "==> building rbuild (release)"
cargo build --release --quiet --bin rbuild
# Installed where root's and users' PATH look (a user without root gets ~/.local/bin).
if [ "$(id -u)" = 0 ]; then
    BIN_DIR=/usr/local/bin
else
    BIN_DIR=$HOME/.local/bin
fi
mkdir -p "$BIN_DIR"
install -m 0755 target/release/rbuild "$BIN_DIR/rbuild"
RBUILD=$BIN_DIR/rbuild
echo "==> installed $RBUILD"
echo "==> $($RBUILD --version)"
$RBUILD info

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "==> making a busybox base image from /bin/busybox"
mkdir -p "$work/base/rootfs/bin" "$work/base/rootfs/etc" "$work/base/rootfs/tmp" "$work/base/rootfs/root"
chmod 1777 "$work/base/rootfs/tmp"
cp /bin/busybox "$work/base/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$work/base/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/base/rootfs/etc/passwd"
echo 'root:x:0:' > "$work/base/rootfs/etc/group"
cat > "$work/base/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
CMD ["sh"]
DOCKERFILE
$RBUILD build --progress plain -t busybox:latest "$work/base"

echo "==> building examples/hello (two stages, a RUN heredoc, COPY --from)"
$RBUILD build --progress plain -t hello:latest -o "type=local,dest=$work/hello-rootfs" examples/hello
echo "==> the image's /greeting.txt says: $(cat "$work/hello-rootfs/greeting.txt")"
$RBUILD images

cat <<EOF
==> done. rbuild is installed as $RBUILD; images are in the store (${RBUILD_ROOT:-the default store}).
    Run the image with Docker:   $RBUILD save hello:latest -o hello.tar && docker load -i hello.tar && docker run --rm hello:latest
    Or look at its files:        $RBUILD build -o type=local,dest=DIR examples/hello
EOF
