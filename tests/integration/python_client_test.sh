#!/usr/bin/env bash
# python_client_test.sh -- a client written in Python from docs/ and proto/ alone (tests/interop/), run
# against the real broker, adapters and tools; TAP. It keeps the wire and the documents from drifting
# apart: where they disagree, this test fails.
#
# The Python classes are generated from proto/*.proto by protoc into the build directory, never kept in
# the repository. Debian's python3-zmq, python3-nacl and python3-protobuf serve Debian's own interpreter,
# /usr/bin/python3 (another python3 earlier on PATH would not see them). BIN names the tools to run (bin/
# or the sanitizer build's), BUILD the build directory; the driver removes every process and file it
# made, even on failure.
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
BUILD=${BUILD:-build/release}
gen=$BUILD/interop
rm -rf "$gen"
mkdir -p "$gen"
protoc --python_out="$gen" -Iproto proto/*.proto || { echo "not ok 1 - protoc --python_out"; echo "1..1"; exit 1; }
PYTHONPATH="$gen:tests/interop" PYTHONDONTWRITEBYTECODE=1 exec /usr/bin/python3 tests/interop/interop_test.py "$BIN"
