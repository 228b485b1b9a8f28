#!/usr/bin/env bash
# The quickstart, end to end on this machine: a lab fleet of two hosts (network
# namespaces with their own sshd and bpffs) and two clients, the root Pulumi.yaml
# deployed to it with the real Pulumi CLI, and proof that the firewall drops the
# denied client. Safe to run again. `--keep` leaves the lab and the stack up.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "demo: run as root (it creates network namespaces)" >&2; exit 1; fi
keep=false
[ "${1:-}" = "--keep" ] && keep=true

bash scripts/setup.sh
export PATH="$(cat .pulumi-bin-path):$PATH"
export PULUMI_SKIP_UPDATE_CHECK=1
export PULUMI_BACKEND_URL="file://$PWD/.pulumi-demo"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE:-bpfleet-demo}"
mkdir -p .pulumi-demo

lab_json=$(bash test/lab/lab.sh up demo --hosts 2 --clients 2 | tail -n 1)
teardown() {
  pulumi destroy --yes --skip-preview --non-interactive --stack dev >/dev/null 2>&1 || true
  bash test/lab/lab.sh down demo >/dev/null 2>&1 || true
}
$keep || trap teardown EXIT

pulumi stack select dev --non-interactive 2>/dev/null || pulumi stack init dev --non-interactive
pulumi config set labFile "$lab_json"
pulumi up --yes --non-interactive

c1=$(node -e 'const l=require(process.argv[1]); console.log(l.clients[0].netns)' "$lab_json")
c2=$(node -e 'const l=require(process.argv[1]); console.log(l.clients[1].netns)' "$lab_json")
h1=$(node -e 'const l=require(process.argv[1]); console.log(l.hosts[0].address)' "$lab_json")
echo
echo "== client c1 is denied: its ping to host h1 ($h1) must go unanswered"
if ip netns exec "$c1" ping -n -c 2 -W 1 "$h1"; then echo "demo: FAILED, c1 reached h1" >&2; exit 1; fi
echo "== client c2 is not denied: its ping to h1 is answered"
ip netns exec "$c2" ping -n -c 2 -W 1 "$h1"
echo
echo "== pulumi refresh reads the maps and counters back from the hosts"
pulumi refresh --yes --non-interactive --skip-preview >/dev/null
pulumi stack export | node -e '
  const state = JSON.parse(require("fs").readFileSync(0, "utf8"));
  for (const r of state.deployment.resources.filter((r) => r.type.endsWith(":XdpFirewall"))) {
    const { host, interface: dev, counters, programId } = r.outputs;
    console.log(`${host.address} ${dev}: program ${programId}, dropped ${counters.dropPackets} packets, passed ${counters.passPackets}`);
  }'
if $keep; then
  echo "demo: lab and stack left running; try 'pulumi config set --path deny[3] 198.51.100.0/24 && pulumi preview --diff'"
  echo "      with PULUMI_BACKEND_URL=$PULUMI_BACKEND_URL PULUMI_CONFIG_PASSPHRASE=$PULUMI_CONFIG_PASSPHRASE PATH=$(cat .pulumi-bin-path):\$PATH"
  echo "      clean up with: bash scripts/demo-down.sh"
fi
echo "demo: OK"
