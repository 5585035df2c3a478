#!/usr/bin/env bash
# The quickstart (README's first command). As root on Debian 12: installs what it needs with
# apt, builds release binaries, makes a small busybox image locally (no internet, nothing is
# pulled), and runs a container that prints something.
#
# INTERIM: berthd cannot run containers yet, so the container runs through the runc-wrapper
# crate (target/release/berth-quickstart-run: unpack the image into a bundle, `runc run`).
# When berthd + our shim can run containers, this becomes: start berthd on a temporary root,
# `berth images import`, `berth run --rm`.
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
bin="${CARGO_TARGET_DIR:-target}/release"

out=/var/tmp/berth-quickstart
say "building the busybox test image from /bin/busybox into $out"
"$bin/berth-testimage" "$out" >/dev/null
echo "image: $(jq -r .busybox.name "$out/digests.json" 2>/dev/null || echo docker.io/library/busybox:test)"
echo "  OCI layout:    $out/busybox"
echo "  import tar:    $out/busybox.oci.tar"

say "running a container (runc via runc-wrapper)"
"$bin/berth-quickstart-run" "$out/busybox"

cat <<NEXT

==> Done. Try next:
  - another command in a fresh container:
      sudo $bin/berth-quickstart-run $out/busybox sh -c 'ls /; cat /etc/passwd'
  - the multi-layer image (whiteouts, hardlinks): $out/layers
  - import the image into a containerd:  sudo ctr images import $out/busybox.oci.tar
  - run every test:                      sudo ./packaging/test.sh
  - read how berth fits together:        ARCHITECTURE.md
NEXT
