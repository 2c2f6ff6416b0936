#!/bin/sh
# The ONNX backend conformance runner (tests/conformance.c) over Debian's
# libonnx-testdata: every case qlens claims must pass. Exit 77 (skipped)
# when the data is not installed.
: "${QLENS_BUILDDIR:?}"
data=${ONNX_TESTDATA:-/usr/share/libonnx-testdata/data}
if [ ! -d "$data/node" ]; then
    echo "ONNX test data not found in $data (Debian package libonnx-testdata): skipped"
    exit 77
fi
exec "$QLENS_BUILDDIR/tests/conformance" "$data"
