#!/usr/bin/env bash
# Builds the initramfs for the WireGuard VM suite.
# Usage: build-initramfs.sh OUT.cpio.gz NAME=BINARY...
#   each NAME=BINARY is copied to /bin/NAME together with every library `ldd` lists (same
#   paths, so the host's dynamic loader and glibc run unchanged in the guest).
# Env: KVER (default: newest /usr/lib/modules/*).
set -euo pipefail
OUT=$(realpath -m "$1"); shift
KVER=${KVER:-$(ls /usr/lib/modules | sort -V | tail -1)}
MODDIR=/usr/lib/modules/$KVER
HERE=$(dirname "$(realpath "$0")")
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || { echo "busybox not found: apt-get install busybox-static" >&2; exit 1; }
[ -f "$MODDIR/modules.dep" ] || { echo "no $MODDIR/modules.dep: apt-get install linux-image-amd64" >&2; exit 1; }
R=$(mktemp -d); trap 'rm -rf "$R"' EXIT
chmod 755 "$R"  # mktemp makes it 0700: the guest root must be traversable by other users
mkdir -p "$R"/{bin,sbin,proc,sys,dev,mnt,tmp,run,etc,lib/modules}

if ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "busybox at $BUSYBOX is dynamically linked: apt-get install busybox-static" >&2; exit 1
fi
cp "$BUSYBOX" "$R/bin/busybox"; ln -s busybox "$R/bin/sh"

copy_dyn() { # copy_dyn SRC DST
  install -D -m755 "$1" "$R$2"
  ldd "$1" | grep -o '/[^ ]*' | while read -r lib; do
    [ -e "$R$lib" ] || install -D -m755 "$(readlink -f "$lib")" "$R$lib"
  done
}
WG=$(command -v wg || true)
[ -n "$WG" ] || { echo "wg not found: apt-get install wireguard-tools" >&2; exit 1; }
copy_dyn "$WG" /bin/wg
# The Rust binaries without their debug info: a debug build of sentra or sentra-agent is
# ~340 MB with it (wasmtime/cranelift), more than the guest's RAM can unpack next to the
# compressed image ("Initramfs unpacking failed: write error"). Code is unchanged.
# Scripts (wg-quick) are copied as they are.
for spec in "$@"; do
  src=$(readlink -f "${spec#*=}")
  if [ "$(head -c4 "$src" | od -An -c | tr -d ' ')" != '177ELF' ]; then
    install -D -m755 "$src" "$R/bin/${spec%%=*}"
    continue
  fi
  copy_dyn "$src" "/bin/${spec%%=*}"
  strip --strip-debug "$R/bin/${spec%%=*}" || { echo "strip failed (binutils)" >&2; exit 1; }
done

# kernel modules in dependency order (modules.dep lines are "path: dep dep ...")
declare -A seen; order=()
resolve() {
  local p=$1 d
  [ -n "${seen[$p]:-}" ] && return 0; seen[$p]=1
  for d in $(awk -F': *' -v m="$p" '$1==m {print $2; exit}' "$MODDIR/modules.dep"); do resolve "$d"; done
  order+=("$p")
}
add_mod() {
  local path
  path=$(awk -F: -v m="/$1.ko" '{ p=$1; sub(/\.(xz|zst|gz)$/, "", p) } index(p,m) && index(p,m)==length(p)-length(m)+1 {print $1; exit}' "$MODDIR/modules.dep")
  if [ -z "$path" ]; then
    if grep -q "/$1.ko" "$MODDIR/modules.builtin" 2>/dev/null; then return 0; fi
    echo "kernel module $1 not found in $MODDIR" >&2; exit 1
  fi
  resolve "$path"
}
for m in wireguard virtio_pci 9pnet_virtio 9p; do add_mod "$m"; done
: > "$R/lib/modules/load-order"
for p in "${order[@]}"; do
  f=$(basename "$p"); f=${f%.xz}; f=${f%.zst}; f=${f%.gz}
  case "$p" in
    *.xz) xz -dc "$MODDIR/$p" ;;
    *.zst) zstd -dc "$MODDIR/$p" ;;
    *.gz) gzip -dc "$MODDIR/$p" ;;
    *) cat "$MODDIR/$p" ;;
  esac > "$R/lib/modules/$f"
  echo "$f" >> "$R/lib/modules/load-order"
done
install -m755 "$HERE/init" "$R/init"
install -m755 "$HERE/agent-check" "$R/bin/agent-check"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT"
echo "built $OUT ($(du -h "$OUT" | cut -f1)) for $KVER"
