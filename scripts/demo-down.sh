#!/usr/bin/env bash
# Removes what `scripts/demo.sh --keep` left running: the stack's resources and the lab.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$(cat .pulumi-bin-path):$PATH" PULUMI_SKIP_UPDATE_CHECK=1
export PULUMI_BACKEND_URL="file://$PWD/.pulumi-demo" PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE:-bpfleet-demo}"
pulumi destroy --yes --skip-preview --non-interactive --stack dev
bash test/lab/lab.sh down demo
