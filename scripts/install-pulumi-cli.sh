#!/usr/bin/env bash
# Builds the real Pulumi CLI (`pulumi`) and the Node.js language host
# (`pulumi-language-nodejs`) from Go modules served by the Go module proxy,
# caches them outside git keyed by version, and prints the bin directory on
# its last stdout line:
#
#   PATH="$(scripts/install-pulumi-cli.sh | tail -1):$PATH"
#
# The bin directory also gets `pulumi-resource-pulumi-nodejs`, the launcher the
# engine runs for `pulumi.dynamic.Resource` providers (it resolves
# `@pulumi/pulumi/cmd/dynamic-provider` from the program's directory).
#
# Environment:
#   PULUMI_CLI_VERSION  CLI version to build (default below; must match the
#                       exact `@pulumi/pulumi` version in package.json)
#   BPFLEET_CACHE       cache root (default /var/cache/bpfleet)
#
# Why two builds: the language host module
# github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3 has no tags
# and the module proxy reachable here serves none of its pseudo-versions. Until
# v3.68.0 the same host lived inside github.com/pulumi/pulumi/sdk/v3 itself, so
# it is built from sdk/v3 v3.68.0 in a module of its own. The newer CLI drives
# it fine for `up`/`preview`/`refresh`/`destroy` with @pulumi/pulumi 3.260.0.
set -euo pipefail

PULUMI_CLI_VERSION="${PULUMI_CLI_VERSION:-3.260.0}"
PULUMI_CLI_VERSION="${PULUMI_CLI_VERSION#v}"
LANGHOST_SDK_VERSION="3.68.0" # newest sdk/v3 that still contains nodejs/cmd/pulumi-language-nodejs
CLIPBOARD_REPLACE="github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e"

CACHE_ROOT="${BPFLEET_CACHE:-/var/cache/bpfleet}"
# Bump RECIPE when the build below changes, so stale caches are rebuilt.
RECIPE=1
VERSION_DIR="${CACHE_ROOT}/pulumi/v${PULUMI_CLI_VERSION}"
BIN_DIR="${VERSION_DIR}/bin"
STAMP="${VERSION_DIR}/.complete-r${RECIPE}"

log() { echo "install-pulumi-cli: $*" >&2; }

if [[ -f "$STAMP" && -x "$BIN_DIR/pulumi" && -x "$BIN_DIR/pulumi-language-nodejs" \
      && -x "$BIN_DIR/pulumi-resource-pulumi-nodejs" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

mkdir -p "${CACHE_ROOT}/pulumi"

# One builder at a time; the others wait and then find the cache filled.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${CACHE_ROOT}/pulumi/.lock"
  flock 9
  if [[ -f "$STAMP" ]]; then
    echo "$BIN_DIR"
    exit 0
  fi
fi

if ! command -v go >/dev/null 2>&1; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { log "Go not found (looked on PATH and in /usr/local/go/bin)"; exit 1; }
# pulumi v3.260.0 declares go 1.26.6; the machine's Go must be at least that
# (GOTOOLCHAIN=local keeps the go command from trying to fetch another one).
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0
if [[ -z "${HOME:-}" ]]; then
  export GOPATH="${CACHE_ROOT}/go"
  export GOCACHE="${CACHE_ROOT}/go-build"
fi

WORK="$(mktemp -d "${CACHE_ROOT}/pulumi/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bin"

log "building pulumi v${PULUMI_CLI_VERSION} (cold: about 4-6 min on 2 cores, module downloads included)"

# --- the CLI -----------------------------------------------------------------
CLI_DIR="$WORK/cli"
mkdir -p "$CLI_DIR"
cat >"$CLI_DIR/go.mod" <<EOF
module bpfleet.local/pulumi-cli

go 1.26

require (
	github.com/pulumi/pulumi/pkg/v3 v${PULUMI_CLI_VERSION}
	github.com/pulumi/pulumi/sdk/v3 v${PULUMI_CLI_VERSION}
)

// The non-local replace from pulumi's own go.mod files.
replace github.com/atotto/clipboard => ${CLIPBOARD_REPLACE}
EOF
cat >"$CLI_DIR/tools.go" <<'EOF'
//go:build tools

package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
EOF
(
  cd "$CLI_DIR"
  go mod tidy >&2
  go build -trimpath -tags osusergo,grpcnotrace \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v${PULUMI_CLI_VERSION}" \
    -o "$WORK/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi >&2
)

# --- the Node.js language host -------------------------------------------------
HOST_DIR="$WORK/langhost"
mkdir -p "$HOST_DIR"
cat >"$HOST_DIR/go.mod" <<EOF
module bpfleet.local/pulumi-language-nodejs

go 1.18

require github.com/pulumi/pulumi/sdk/v3 v${LANGHOST_SDK_VERSION}

// As in sdk/v3 v${LANGHOST_SDK_VERSION}'s own go.mod.
replace golang.org/x/text => golang.org/x/text v0.3.6
EOF
cat >"$HOST_DIR/tools.go" <<'EOF'
//go:build tools

package tools

import _ "github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs"
EOF
(
  cd "$HOST_DIR"
  go mod tidy >&2
  go build -trimpath -tags osusergo,grpcnotrace \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v${LANGHOST_SDK_VERSION}" \
    -o "$WORK/bin/pulumi-language-nodejs" github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs >&2
)

# --- the dynamic-provider launcher ----------------------------------------------
# Same script @pulumi/pulumi ships at node_modules/@pulumi/pulumi/pulumi-resource-pulumi-nodejs;
# taken from the sdk/v3 module so that the bin directory is complete on its own.
SDK_DIR="$(cd "$CLI_DIR" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)"
install -m 0755 "$SDK_DIR/nodejs/dist/pulumi-resource-pulumi-nodejs" "$WORK/bin/pulumi-resource-pulumi-nodejs"

"$WORK/bin/pulumi" version >&2

rm -rf "$VERSION_DIR"
mkdir -p "$VERSION_DIR"
mv "$WORK/bin" "$BIN_DIR"
touch "$STAMP"
log "installed into $BIN_DIR"
echo "$BIN_DIR"
