#!/usr/bin/env bash
# Create bench/.venv-trl: TRL 0.23.1 (the last release with DDPOTrainer) and the libraries its DDPO runs with.
# Idempotent: does nothing if the venv exists and imports the pinned versions.
# torch/torchvision come from this machine's local disk through the pip constraint at /etc/xdg/pip.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv-trl
PINS=(torch==2.14.1 torchvision==0.29.1 trl==0.23.1 diffusers==0.42.1 transformers==5.24.0 peft==0.21.2
      accelerate==1.15.0 datasets==5.2.0)

check() {
  "$VENV/bin/python" - "${PINS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
bad = [p for p in sys.argv[1:] if version(p.split("==")[0]) != p.split("==")[1]]
from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline  # noqa: F401
sys.exit(1 if bad else 0)
PY
}

if [ -x "$VENV/bin/python" ] && check; then
  echo "$VENV is ready"; exit 0
fi
start=$SECONDS
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "${PINS[@]}" 2>&1 | grep -v "^WARNING: Location .* is ignored" || true
check || { echo "$VENV: install done but the pinned versions / trl DDPO do not import" >&2; exit 1; }
echo "$VENV ready in $((SECONDS - start)) s"
