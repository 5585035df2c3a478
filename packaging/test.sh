#!/usr/bin/env bash
# The test command (README's second command; .ci/run calls exactly this).
# As root on Debian 12: installs the test dependencies with apt (only what is missing), then runs
# cargo fmt --check, clippy -D warnings and every test, unit and integration. Rerunnable: the
# harness cleans up after each test, so it passes twice in a row.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=packaging/lib.sh
. packaging/lib.sh

require_root
require_debian
apt_install \
    runc busybox-static docker-registry containerd skopeo umoci apache2-utils openssl jq \
    iproute2 systemd systemd-container kmod gcc libc6-dev
find_cargo

# containerd v2.3.4 (task API v3) for the interop tests: the shared copy next to the repo.
if [ -z "${BERTH_CONTAINERD2_DIR:-}" ] && [ -x ../shared/interop/containerd-v2.3.4/containerd ]; then
    BERTH_CONTAINERD2_DIR="$(cd ../shared/interop/containerd-v2.3.4 && pwd)"
    export BERTH_CONTAINERD2_DIR
fi
if [ -n "${BERTH_CONTAINERD2_DIR:-}" ]; then
    echo "containerd v2 interop tests use $BERTH_CONTAINERD2_DIR"
else
    echo "NOTE: BERTH_CONTAINERD2_DIR is not set: containerd v2.3.4 interop tests will report NOT RUN" >&2
fi

say "cargo fmt --all --check"
cargo fmt --all --check

say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Integration tests run berthd, berth and our shim as separate binaries: build them first
# (cargo test only builds other packages' binaries when those packages have integration tests).
say "cargo build --workspace --bins"
cargo build --workspace --bins

say "cargo test --workspace --no-fail-fast"
log="$(mktemp /tmp/berth-test-log.XXXXXX)"
stamp="$(mktemp /tmp/berth-test-stamp.XXXXXX)"
trap 'rm -f "$log" "$stamp"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

say "summary"
grep -E '^\s+Running |^test result:|^NOT RUN|\*\*\* NOT RUN' "$log" | sed 's/^ *//' || true
# Sum cargo's own per-binary "test result:" lines (nothing else in the log is counted).
read -r passed failed ignored < <(grep -E '^test result:' "$log" |
    sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/' |
    awk '{p+=$1; f+=$2; i+=$3} END {print p+0, f+0, i+0}')
notrun=$(grep -c '\*\*\* NOT RUN' "$log" || true)
echo "($ignored ignored by design, $notrun reported NOT RUN)"
echo "total: $passed passed, $failed failed"

# Anything the harness left behind would break the next run: show it.
leftovers=$(find /tmp -maxdepth 1 \( -name 'berth-ctrd-*' -o -name 'berthd-*' -o -name 'berth-registry-*' \) -newer "$stamp" 2>/dev/null || true)
if [ -n "$leftovers" ]; then
    echo "warning: test directories left behind (another test run may still be using them):" >&2
    echo "$leftovers" >&2
fi

if [ "$status" -ne 0 ]; then
    echo "FAILED: cargo test exited with $status" >&2
    exit "$status"
fi
echo "OK: fmt, clippy and all tests passed"
