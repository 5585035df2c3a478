#!/usr/bin/env bash
# The quickstart (README's first command). As root on Debian 12: installs what it needs with
# apt, builds release binaries, makes a small busybox image locally (no internet, nothing is
# pulled), starts berthd on a private root, imports the image with `berth` and runs a container
# that prints something (berthd -> our containerd-shim-runc-v2 -> runc).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=packaging/lib.sh
. packaging/lib.sh

require_root
require_debian
apt_install runc busybox-static gcc libc6-dev
find_cargo

say "cargo build --release"
cargo build --release --workspace --bins
bin="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"

out=/var/tmp/berth-quickstart
image=docker.io/library/busybox:test
say "building the busybox test image from /bin/busybox into $out"
"$bin/berth-testimage" "$out" >/dev/null
echo "image $image"
echo "  OCI layout:  $out/busybox"
echo "  import tar:  $out/busybox.oci.tar"

# A private berthd: its own root, state and socket, so it never touches /var/lib/berth.
root="$out/root"
state=/run/berth-quickstart
sock="$state/berth.sock"
cat >"$out/config.toml" <<CONF
# berthd config written by packaging/quickstart.sh (containerd's config.toml keys)
version = 2
root = "$root"
state = "$state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
CONF

say "starting berthd (config $out/config.toml, log $out/berthd.log)"
# Our shim (containerd-shim-runc-v2) sits next to berthd: first in PATH.
PATH="$bin:$PATH" "$bin/berthd" --config "$out/config.toml" >"$out/berthd.log" 2>&1 &
berthd_pid=$!
stop_berthd() {
    if kill -0 "$berthd_pid" 2>/dev/null; then
        kill -TERM "$berthd_pid" 2>/dev/null || true
        wait "$berthd_pid" 2>/dev/null || true
    fi
}
trap stop_berthd EXIT
for _ in $(seq 100); do
    [ -S "$sock" ] && break
    kill -0 "$berthd_pid" 2>/dev/null || { tail -n 30 "$out/berthd.log" >&2; die "berthd exited during start-up (log above)"; }
    sleep 0.1
done
[ -S "$sock" ] || { tail -n 30 "$out/berthd.log" >&2; die "berthd did not create $sock within 10s"; }

berth() { "$bin/berth" --address "$sock" --namespace default "$@"; }

say "berth images import $out/busybox.oci.tar"
berth images import "$out/busybox.oci.tar"

say "berth run --rm $image quickstart ..."
if ! berth run --rm "$image" "quickstart-$$" sh -c \
    'echo "Hello from a berth container! hostname=$(hostname) pid=$$ user=$(id -un)"; echo "kernel: $(uname -sr)"'; then
    tail -n 30 "$out/berthd.log" >&2
    die "the container did not run (berthd log above)"
fi

stop_berthd
trap - EXIT

cat <<NEXT

==> Done: berthd started, imported a locally built image and ran a container through our shim.
Try next:
  - start berthd again and keep it running:
      sudo $bin/berthd --config $out/config.toml &   # finds our shim next to itself
  - then use the berth CLI (ctr's commands) or containerd's own ctr against it:
      sudo $bin/berth --address $sock images ls
      sudo $bin/berth --address $sock run --rm -t $image shell sh
      sudo ctr --address $sock run -d $image bg sleep 600 && sudo ctr --address $sock tasks ls
  - the multi-layer image (whiteouts, hardlinks): $out/layers.oci.tar
  - run every test:                 sudo ./packaging/test.sh
  - read how berth fits together:   ARCHITECTURE.md
NEXT
