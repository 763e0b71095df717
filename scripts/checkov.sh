#!/usr/bin/env bash
# Scan the Bicep in infra/ with checkov, in a virtual environment of its own (.venv-scan),
# created or refreshed from requirements-scan.txt when that file changes.
#
#   scripts/checkov.sh            # exit 0 only with zero failed checks and zero parse errors
#   scripts/checkov.sh --list     # extra arguments go to checkov (e.g. a non-compact run)
#
# Any exception to a check is an inline `//checkov:skip=CKV_...:reason` inside the resource
# in the Bicep, where a reviewer sees it next to the setting it excuses.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CHECKOV_VENV:-$root/.venv-scan}"
requirements="$root/requirements-scan.txt"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

stamp="$venv/.requirements-scan.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/checkov" || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  echo "checkov.sh: installing $(grep -v '^#' "$requirements" | xargs) into $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -qq --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
fi

cd "$root"
status=0
output="$("$venv/bin/checkov" -d infra --framework bicep --skip-download --compact --quiet "$@")" || status=$?
printf '%s\n' "$output"

# checkov exits 0 when a file does not parse (it just skips it): treat that as a failure,
# and so a run that evaluated nothing.
if grep -Eq 'Parsing errors: [1-9]' <<<"$output"; then
  echo "checkov.sh: a Bicep file could not be parsed, so it was not scanned" >&2
  exit 1
fi
if [[ $status -eq 0 ]] && ! grep -Eq 'Passed checks: [1-9]' <<<"$output"; then
  echo "checkov.sh: no check passed: nothing was scanned?" >&2
  exit 1
fi
exit "$status"
