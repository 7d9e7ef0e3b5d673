#!/usr/bin/env bash
# The harness as a user gets it: build the wheel, install it into a fresh
# virtualenv (no clone on the path), and run the installed suites against the
# example candidate from an empty folder, both ways the README gives.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gradcheck-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# from a copy of the working tree, so no stale build/ folder leaks into the wheel
mkdir "$WORK/src" && git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$WORK/src"
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" "$WORK/src/examples/my_layers"
"$PYTHON" -m venv "$WORK/venv"
PIP="$WORK/venv/bin/python -m pip"
$PIP install -q torch==2.13.0          # the CPU build, before pip could pick a CUDA one
$PIP install -q "$WORK"/dist/gradcheck-*.whl "$WORK"/dist/my_layers-*.whl

mkdir "$WORK/elsewhere" && cd "$WORK/elsewhere"
"$WORK/venv/bin/python" -c "import gradcheck, reference_impl, sys; assert 'site-packages' in gradcheck.__file__, gradcheck.__file__"
"$WORK/venv/bin/gradcheck" test --candidate my-layers --gradcheck-profile dev -q -p no:cacheprovider
"$WORK/venv/bin/python" -m pytest --pyargs gradcheck.suites --candidate my_layers:candidate \
    --gradcheck-profile dev -q -p no:cacheprovider -k "test_ops"
echo "wheel-check: the installed suites pass against the example candidate"
