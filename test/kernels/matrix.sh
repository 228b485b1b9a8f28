#!/usr/bin/env bash
# The kernel matrix: boots each Debian kernel (5.10, 6.1, 6.12) under qemu and, in
# each, loads every object in bpf/obj with the machine's bpftool and with Debian
# 11/12/13's bpftool, running one packet through every program. Results land in
# $KERNEL_RESULTS (default test/kernels/results, outside git), one <suite>.json each.
# Usage: test/kernels/matrix.sh [suite...]   (default: bullseye bookworm trixie)
set -euo pipefail
cd "$(dirname "$0")/../.."
here=$PWD
# The guest sees the machine's root; a checkout under its tmpfs dirs is bound in by boot.sh.
CACHE=${KERNEL_CACHE:-/var/cache/bpfleet/kernels}
RESULTS=$(readlink -f "${KERNEL_RESULTS:-test/kernels/results}")
suites=("$@"); [ ${#suites[@]} -gt 0 ] || suites=(bullseye bookworm trixie)

# Packages the matrix needs on a fresh Debian machine (scripts/setup.sh has them too).
missing=()
for pkg in qemu-system-x86 busybox-static kmod cpio xz-utils zstd; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

SUITES="${suites[*]}" bash test/kernels/fetch.sh >/dev/null
[ -n "$(ls bpf/obj/*.bpf.o 2>/dev/null)" ] || make -C bpf -s

tools='[{"name":"machine","path":"/usr/sbin/bpftool"}'
for s in bullseye bookworm trixie; do
  [ -x "$CACHE/bpftool-$s/bpftool" ] && tools="$tools,{\"name\":\"$s\",\"path\":\"$CACHE/bpftool-$s/bpftool\"}"
done
tools="$tools]"
shape_tools="machine=/usr/sbin/bpftool"
for s in bullseye bookworm trixie; do shape_tools="$shape_tools $s=$CACHE/bpftool-$s/bpftool"; done

mkdir -p "$RESULTS"
status=0
for suite in "${suites[@]}"; do
  out="$RESULTS/$suite.run"; rm -rf "$out"; mkdir -p "$out"
  job=$(mktemp)
  cat > "$job" <<JOB
set -e
cd '$here'
node test/kernels/guest.mjs '$here/bpf/obj' '$tools' /tmp/out/result.json
sh test/kernels/shapes.sh '$here' /tmp/out $shape_tools
JOB
  started=$(date +%s)
  if bash test/kernels/boot.sh "$suite" "$out" "$job"; then
    node -e '
      const fs = require("fs"); const [file, suite, secs] = process.argv.slice(1);
      const r = JSON.parse(fs.readFileSync(file, "utf8")); r.suite = suite; r.seconds = Number(secs);
      // What each bpftool printed for the commands whose JSON the provider parses (shapes.sh).
      r.shapes = {};
      for (const f of fs.readdirSync(require("path").dirname(file)).filter((n) => n.startsWith("shapes-"))) {
        const sections = {};
        for (const part of fs.readFileSync(`${require("path").dirname(file)}/${f}`, "utf8").split("@@").slice(1)) {
          const nl = part.indexOf("\n"); sections[part.slice(0, nl)] = part.slice(nl + 1).trim();
        }
        r.shapes[f.replace(/^shapes-|\.txt$/g, "")] = sections;
      }
      fs.writeFileSync(file.replace(/\.run\/result\.json$/, ".json"), JSON.stringify(r, null, 1));
    ' "$out/result.json" "$suite" "$(( $(date +%s) - started ))"
    echo "matrix: $suite done in $(( $(date +%s) - started )) s"
  else
    echo "matrix: $suite guest failed; its log:" >&2; cat "$out/log" >&2 || true; status=1
  fi
  rm -f "$job"
done
exit $status
