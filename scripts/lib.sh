# Shared helpers for the project's scripts. Sourced, not run.

# Installs the Debian packages the build and the test suite need, when any is missing.
# Needs root (CI and a fresh machine of this kind run as root).
ensure_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${missing[*]} (run as root, or install them first)" >&2
        return 1
    fi
    echo "==> installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What the test suite uses: a real registry, newuidmap/newgidmap, a static busybox for
# test root filesystems, htpasswd for basic-auth registries, setcap/getfattr for
# capability and xattr tests, and a real dockerd (Debian's docker.io) with openssl-made
# TLS certificates for the --engine dood/dind tests; objcopy (binutils) and the CA bundle
# for the builder images; patchelf for the Debian restricted test (its rbuild's libraries
# under /rbuild/lib) and, with git, for the restricted builder images' git.
TEST_PACKAGES=(docker-registry uidmap busybox-static apache2-utils libcap2-bin attr passwd docker.io openssl util-linux git openssh-client debootstrap tar binutils ca-certificates patchelf)

# What building rbuild and running the README's example need: a C compiler and linker for
# the crates that build C, and the static busybox the example's base image is made from.
SETUP_PACKAGES=(gcc libc6-dev busybox-static ca-certificates)

# The Rust toolchain the workspace needs (rust-version in Cargo.toml).
MIN_RUST=1.85

# Fails with how to get one when cargo is missing or older than $MIN_RUST.
require_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "rbuild needs a Rust toolchain, version $MIN_RUST or newer, and cargo is not on PATH." >&2
        echo "Install one with rustup (https://rustup.rs), then run this script again:" >&2
        echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
        echo '    . "$HOME/.cargo/env"' >&2
        return 1
    fi
    local have
    have=$(cargo --version | awk '{print $2}')
    if [ "$(printf '%s\n%s\n' "$MIN_RUST" "$have" | sort -V | head -n1)" != "$MIN_RUST" ]; then
        echo "rbuild needs Rust $MIN_RUST or newer; cargo here is $have (rustup update stable)" >&2
        return 1
    fi
}
