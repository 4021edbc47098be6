# Second stage of the VM's init: busybox sh as PID 1 on the overlay root (the
# host's / read-only with a tmpfs on top). Sets up the guest, mounts the run's
# control directory and shares, runs the caller's command (written by run.sh
# to /run/vm/ctl/cmd) with the host's bash, records its exit code and powers
# off. Setup uses busybox applets from /run (tmpfs): every program started
# from the 9p root costs tens of milliseconds under TCG.
/run/vm/bin/busybox --install -s /run/vm/bin
PATH=/run/vm/bin
export PATH
ctl=/run/vm/ctl

poweroff_now() {
  sync
  echo o >/proc/sysrq-trigger
  sleep 10
  exit 1 # PID 1 exits: panic=-1 and -no-reboot end QEMU anyway
}
fail() {
  echo "vm-init: $*" >/dev/console
  poweroff_now
}

opts=trans=virtio,version=9p2000.L,msize=262144
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount /tmp"
mkdir -p /dev/shm /dev/pts /run/netns /run/lock "$ctl"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "mount /dev/shm"
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts || fail "mount /dev/pts"
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
mount --make-rshared / || fail "make / shared"
if [ ! -L /var/run ]; then
  rm -rf /var/run && ln -s /run /var/run
fi
kver=$(uname -r)
mkdir -p /lib/modules && ln -sfn /run/vm/modules /lib/modules/"$kver"
[ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }
hostname memif-vm
ip link set lo up || fail "lo up"
echo 1 >/proc/sys/kernel/printk

mount -t 9p -o "$opts,cache=none" vmctl "$ctl" || fail "mount the control directory (9p)"
# Shares: "<tag> TAB <path>" per line, parents before children.
tab=$(printf '\t')
while IFS="$tab" read -r tag path; do
  [ -n "$tag" ] || continue
  mkdir -p "$path" || fail "mkdir $path"
  mount -t 9p -o "$opts,cache=mmap" "$tag" "$path" || fail "mount share $path (9p)"
done <"$ctl/shares"
# Files: "<n> TAB <destination>" per line; the content is $ctl/files/<n>.
while IFS="$tab" read -r n dst; do
  [ -n "$n" ] || continue
  mkdir -p "$(dirname "$dst")" && rm -rf "$dst" && cp -a "$ctl/files/$n" "$dst" || fail "copy file to $dst"
done <"$ctl/files.list"

for t in /dev/ttyS1 /dev/ttyS2; do
  stty -F "$t" raw -echo 115200 || fail "stty $t"
done
/bin/bash "$ctl/cmd" </dev/null >/dev/ttyS1 2>/dev/ttyS2
rc=$?
# Whatever the script left running goes now, so that its output stops and
# the serial lines drain before power-off.
kill -KILL -1 2>/dev/null
sleep 0.2
for t in /dev/ttyS1 /dev/ttyS2; do stty -F "$t" >/dev/null 2>&1; done
echo "$rc" >"$ctl/rc.tmp" && mv "$ctl/rc.tmp" "$ctl/rc"
poweroff_now
