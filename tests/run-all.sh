#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with a Rust toolchain.
#
# As root it installs what the tests drive (tmux, vim, screen, emacs-nox, python3, htop,
# less, strace, debootstrap, qemu, systemd for systemd-analyze, Slurm and munge for the
# batch-job test, which starts its own controller and node), creates the ordinary users the unprivileged tests run as,
# and builds (once) a Debian trixie root filesystem and a Linux 6.1 guest for the tests that
# resume elsewhere; as another user it checks that those are present. Then it builds, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

programs=(tmux vim screen emacs python3 htop less strace script runuser useradd ps cmp debootstrap
    qemu-system-x86_64 busybox cpio depmod systemd-analyze slurmctld slurmd sbatch munged timeout)
packages=(tmux vim screen emacs-nox python3 htop less strace bsdutils util-linux passwd procps diffutils debootstrap
    qemu-system-x86 busybox-static cpio kmod systemd slurmctld slurmd slurm-client munge coreutils)

missing=()
for p in "${programs[@]}"; do
    command -v "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "run-all: installing ${packages[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # No service starts at install (munge, slurmctld, slurmd): the tests run their own.
        own_policy=
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            own_policy=1
        fi
        apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
        [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
    else
        echo "run-all: missing ${missing[*]}; as root run: apt-get install ${packages[*]}" >&2
        exit 1
    fi
fi

if [ "$(id -u)" = 0 ]; then
    for u in crterm-test crterm-test2; do
        id -u "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u"
    done
    # A supplementary group, so that the tests see groups carried.
    usermod -aG users crterm-test
fi

# Another Debian release's root filesystem (other glibc, vim, python), for the tests that
# resume inside it; built once and kept (about 40 s and 450 MB).
cache=${CRTERM_TEST_CACHE:-/var/tmp/crterm-test-cache}
export CRTERM_OTHER_ROOT="$cache/trixie"
if [ "$(id -u)" = 0 ] && [ ! -x "$CRTERM_OTHER_ROOT/usr/bin/screen" ]; then
    echo "run-all: building a Debian trixie root in $CRTERM_OTHER_ROOT"
    mkdir -p "$cache"
    rm -rf "$CRTERM_OTHER_ROOT.tmp"
    debootstrap --variant=minbase --include=vim-nox,python3,screen trixie \
        "$CRTERM_OTHER_ROOT.tmp" >"$cache/debootstrap.log" 2>&1 ||
        { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    mv "$CRTERM_OTHER_ROOT.tmp" "$CRTERM_OTHER_ROOT"
fi

# Another machine for the other-kernel tests: Debian 12's Linux 6.1 (unpacked, not
# installed) and an initramfs, booted under QEMU's emulator by the tests.
export CRTERM_GUEST="$cache/guest"
if [ "$(id -u)" = 0 ]; then
    tests/guest/build.sh "$CRTERM_GUEST"
fi

if [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)" = 0 ]; then
    echo "run-all: user namespaces are disabled (user.max_user_namespaces = 0)" >&2
    exit 1
fi

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# Tests that need root are marked #[ignore = "needs root ..."]: as root they all run; as
# another user they are reported as ignored, with their reason, and counted as skipped.
include=()
if [ "$(id -u)" = 0 ]; then
    include=(--include-ignored)
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --all-targets --no-fail-fast -- "${include[@]}" 2>&1 | tee "$log" || status=$?
# One closing line with the totals of every test binary, and what was skipped and why.
grep -E '^test .* \.\.\. ignored' "$log" | sed 's/^test /skipped: /' || true
awk '/^test result:/ { for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
