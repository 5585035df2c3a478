# Shared helpers for packaging/*.sh (sourced, not run).

die() { echo "error: $*" >&2; exit 1; }
say() { printf '\n==> %s\n' "$*"; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "run as root (e.g. sudo $0): it installs packages with apt and runs containers"
}

require_debian() {
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        . /etc/os-release
        [ "${ID:-}" = debian ] || echo "warning: written for Debian 12, this is ${PRETTY_NAME:-unknown}" >&2
    fi
}

# apt_install PKG...: installs the packages that are not installed yet (nothing to do on
# reruns, so they stay fast and work offline once everything is there).
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "all required Debian packages are installed"
        return 0
    fi
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${missing[@]}"
}

# find_cargo: puts cargo on PATH (sudo resets PATH; rustup installs into ~/.cargo/bin of the
# invoking user) or explains how to install Rust.
find_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    local home d
    for home in "${HOME:-/root}" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)" /root; do
        d="$home/.cargo/bin"
        if [ -x "$d/cargo" ]; then
            export PATH="$d:$PATH"
            [ -d "$home/.rustup" ] && export RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
            export CARGO_HOME="${CARGO_HOME:-$home/.cargo}"
            return 0
        fi
    done
    die "cargo not found. Install Rust with rustup (https://rustup.rs); rust-toolchain.toml pins the version it will use"
}
