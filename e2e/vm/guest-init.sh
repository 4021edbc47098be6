#!/bin/busybox sh
# /init of the VM's initramfs (busybox sh, PID 1). Loads the bundled kernel
# modules, makes the root an overlay of the host's / (9p, read-only) under a
# tmpfs, and switches to it; guest-run.sh carries on there (busybox sh).
export PATH=/bin
/bin/busybox --install -s /bin

fail() {
  echo "vm-init: $*" >/dev/console
  echo o >/proc/sysrq-trigger
  sleep 5
  exit 1
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"

kver=$(cat /etc/vm/kver)
[ "$kver" = "$(uname -r)" ] || fail "modules are for $kver, kernel is $(uname -r)"
while read -r ko; do
  insmod "/lib/modules/$kver/$ko" || fail "insmod $ko"
done </etc/vm/modules.load

opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$opts,ro,cache=loose" hostroot /lower || fail "mount the host's / (9p)"
mount -t tmpfs -o mode=0755 tmpfs /upper || fail "mount tmpfs"
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot ||
  fail "mount the overlay root"

mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "mount /run"
mkdir -p /newroot/run/vm
cp /etc/vm/guest-run.sh /newroot/run/vm/guest-run.sh
mkdir -p /newroot/run/vm/bin
cp /bin/busybox /newroot/run/vm/bin/busybox
cp -a /lib/modules/"$kver" /newroot/run/vm/modules
for d in proc sys dev; do
  mount --move /$d /newroot/$d || fail "move /$d"
done
exec switch_root /newroot /run/vm/bin/busybox sh /run/vm/guest-run.sh
