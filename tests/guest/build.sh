#!/usr/bin/env bash
# Build (once, cached) the other machine of the other-kernel tests: Debian 12's Linux 6.1
# (its package unpacked, not installed) and a busybox initramfs whose /init mounts the
# host's root read-only over 9p at /host, loads the virtio and 9p modules from the kernel
# package, and runs /host$GUEST_SCRIPT (given on the kernel command line) chrooted into
# the host's root, with a writable 9p share for the test's files, then powers off.
#
# Usage (as root): tests/guest/build.sh CACHE_DIR   -> CACHE_DIR/{vmlinuz,initrd.gz}
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ] && [ "$out/initrd.gz" -nt "$here/build.sh" ]; then
    exit 0
fi
mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
kpkg=$(apt-cache search '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1)
[ -n "$kpkg" ] || { echo "no linux-image-6.1.0-*-amd64 package" >&2; exit 1; }
kv=${kpkg#linux-image-}
(cd "$work" && apt-get download -q "$kpkg" >/dev/null 2>&1)
dpkg-deb -x "$work"/"${kpkg}"_*.deb "$work/k"
depmod -b "$work/k" "$kv"
r=$work/initramfs
mkdir -p "$r"/{bin,proc,sys,dev,host,lib/modules,etc}
cp /bin/busybox "$r/bin/busybox"
for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
for m in virtio_pci 9pnet_virtio 9p unix_diag; do
    modprobe -d "$work/k" -S "$kv" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$r/lib/modules/"
    basename "$ko" >>"$r/etc/modorder"
done
cat >"$r/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modorder); do insmod /lib/modules/$m; done
script=$(sed -n 's/.*guest_script=\([^ ]*\).*/\1/p' /proc/cmdline)
share=$(sed -n 's/.*guest_share=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host
# The host's root, read-only, with this machine's /proc, /dev, an empty /tmp and /run,
# and the test's directory writable over the second share.
mount -t proc proc /host/proc
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs tmpfs /host/run
mkdir -p "/host$share"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share "/host$share"
echo "@@ guest $(uname -r) running $script"
chroot /host /bin/sh "$script" >"/host$share/guest.log" 2>&1
echo "@@ guest done $?"
sync
poweroff -f
INIT
chmod +x "$r/init"
(cd "$r" && find . | cpio -o -H newc --quiet | gzip -6 >"$work/initrd.gz")
cp "$work/k/boot/vmlinuz-$kv" "$out/vmlinuz.tmp"
mv "$work/initrd.gz" "$out/initrd.gz"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$kpkg" >"$out/kernel"
