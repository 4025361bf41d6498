#!/usr/bin/env bash
# Installs the benchmark-only peers (bench/peers.py) into the project's venv: implicit and lightfm. They are not
# runtime dependencies, so requirements.txt does not list them.
#
# lightfm 1.17's setup.py assigns an attribute to __builtins__, which fails under pip's PEP 517 build backend
# ('dict' object has no attribute '__LIGHTFM_SETUP__'), so its sdist is fetched from PyPI and built with
# `setup.py bdist_wheel` directly (setuptools and wheel are already in the venv).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "${BIN:-.venv/bin}" && pwd)
# uv where `make venv` installed it and it reaches the index, pip otherwise.
install() {
  { [ -x "$BIN/uv" ] && "$BIN/uv" pip install --quiet --python "$BIN/python" "$@"; } || "$BIN/pip" install --quiet "$@"
}
"$BIN/python" -c "import implicit" 2>/dev/null || install implicit==0.7.3
install_lightfm() {   # every step chained: `set -e` does not hold inside a function called before `||`
  local work url
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  url=$("$BIN/python" -c "import json, urllib.request; request = urllib.request.Request(
      'https://pypi.org/simple/lightfm/', headers={'Accept': 'application/vnd.pypi.simple.v1+json'})
files = json.load(urllib.request.urlopen(request, timeout=60))['files']
print(next(f['url'] for f in files if f['filename'] == 'lightfm-1.17.tar.gz'))") &&
  "$BIN/python" -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" "$url" \
    "$work/lightfm.tar.gz" &&
  tar -xzf "$work/lightfm.tar.gz" -C "$work" &&
  # setuptools prints a page of deprecation notices for `setup.py bdist_wheel`: the build's output is shown only
  # when it fails
  { (cd "$work"/lightfm-1.17 && "$BIN/python" setup.py --quiet bdist_wheel > "$work/build.log" 2>&1) ||
    { cat "$work/build.log" >&2; false; }; } &&
  install "$work"/lightfm-1.17/dist/*.whl
}
# lightfm is the one peer that needs pypi.org itself (its sdist); where that cannot be reached, the benchmark
# runs without it and says so, rather than failing the set-up.
if ! "$BIN/python" -c "import lightfm" 2>/dev/null; then
  install_lightfm || echo "warning: lightfm 1.17 could not be built here; bench/quality.py will skip LightFM" >&2
fi
"$BIN/python" -c "import implicit; print('peers installed: implicit', implicit.__version__)"
"$BIN/python" -c "import lightfm; print('peers installed: lightfm', lightfm.__version__)" 2>/dev/null || true
