#!/bin/sh
# Renders the demo's HTML run report in headless Chromium (Debian's
# `chromium` package: apt-get install -y chromium) and saves a screenshot.
#
#   tests/report/screenshot.sh [REPORT.html] [OUT.png]
#
# Without arguments it runs the demo (pipelines/crm_nightly.yaml on
# data/sample, outputs under target/report-demo/) with --report, then
# writes docs/report.png. The browser gets no network: the report must
# render from the file alone.
set -eu
cd "$(dirname "$0")/../.."
report="${1:-}"
out="${2:-docs/report.png}"
if [ -z "$report" ]; then
    report=target/report-demo/report.html
    rm -rf target/report-demo
    cargo run --quiet --locked -- run pipelines/crm_nightly.yaml \
        --var out=target/report-demo/out --report "$report" >/dev/null
fi
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
    echo "chromium is not installed (apt-get install -y chromium)" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
raw="$(mktemp --suffix=.png)"
profile="$(mktemp -d)"
trap 'rm -rf "$raw" "$profile"' EXIT
width="${WIDTH:-1100}"
height="${HEIGHT:-5200}"
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-extensions --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$profile" --proxy-server=127.0.0.1:9 \
    --window-size="$width,$height" --screenshot="$raw" "file://$(realpath "$report")" 2>/dev/null
# Chromium writes a full-colour PNG; a palette of 128 colours keeps it small
# (Pillow: PYTHON=target/ref-venv/bin/python with pillow==11.0.0).
python="${PYTHON:-python3}"
if "$python" -c "import PIL" 2>/dev/null; then
    "$python" - "$raw" "$out" <<'PY'
import sys
from PIL import Image
img = Image.open(sys.argv[1]).convert("RGB")
img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(sys.argv[2], optimize=True)
PY
else
    cp "$raw" "$out"
fi
echo "$out: $(wc -c < "$out") bytes"
