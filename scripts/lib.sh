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
# TLS certificates for the --engine dood/dind tests.
TEST_PACKAGES=(docker-registry uidmap busybox-static apache2-utils libcap2-bin attr passwd docker.io openssl util-linux git openssh-client debootstrap python3 tar)
