#!/bin/sh
# End-to-end tests of the qlens program on the shipped example and on bad
# inputs: every failure must be a clear, located message and a non-zero exit.
set -u
: "${QLENS:?}" "${QLENS_SRCDIR:?}"
ex="$QLENS_SRCDIR/examples/fmnist"
fx="$QLENS_SRCDIR/tests/data"
. "$QLENS_SRCDIR/tests/e2e_lib.sh"

# --- basics -------------------------------------------------------------------
expect_ok "version" "$QLENS" --version
grep -q '^qlens [0-9]' "$tmp/out" || ko "version text"
expect_ok "help" "$QLENS" --help
grep -q 'eval' "$tmp/out" && grep -q 'info' "$tmp/out" || ko "help lists commands"
expect_fail "unknown command" "unknown command 'frobnicate'" "$QLENS" frobnicate
expect_fail "bad option value" "option --limit: 'abc' is not an integer" \
    "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$ex/eval.npy" --limit abc
expect_status "bad option value is a usage error" 2 "" \
    "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$ex/eval.npy" --limit abc
expect_status "bad algorithm is a usage error" 2 "" \
    "$QLENS" calibrate "$ex/fmnist_resnet.onnx" --data "$ex/calib.npy" --algo nosuch -o "$tmp/c.json"
[ -e "$tmp/c.json" ] && ko "nothing written after a usage error"

# --- info -----------------------------------------------------------------------
expect_ok "info" "$QLENS" info "$ex/fmnist_resnet.onnx"
grep -q 'input' "$tmp/out" && grep -q 'Conv' "$tmp/out" && grep -q 'MACs' "$tmp/out" ||
    ko "info shows inputs, convs and MACs"
grep -q 'BatchNormalization' "$tmp/out" && ko "info: BatchNormalization should be folded"
expect_ok "info --json" "$QLENS" info --json "$ex/fmnist_resnet.onnx"
grep -q '"total_macs"' "$tmp/out" && grep -q '"nodes"' "$tmp/out" || ko "info --json keys"
# parameters are learned tensors, not constant arguments (Clip's bounds, Pad's
# value, Resize's scales, a scalar factor); a long node name keeps the table
# aligned: every row of it as long as the header
expect_ok "info, long names and constant arguments" "$QLENS" info "$fx/info_args.onnx"
awk '/^  +# +name/ { t = 1; w = length($0); next } /^total:/ { t = 0 }
     t && length($0) != w { bad = 1; print "  misaligned: " $0 } END { exit bad }' "$tmp/out" &&
    ok "info table aligned" || ko "info table aligned"
for row in "Conv 112" "Clip 0" "Pad 0" "Resize 0" "Mul 0" "Add 4"; do
    set -- $row
    awk -v op="$1" -v p="$2" '$3 == op { found = 1; if ($5 != p) bad = 1 } END { exit bad || !found }' \
        "$tmp/out" && ok "info: $1 has $2 parameters" || ko "info: $1 has $2 parameters"
done
grep -q '^total: 116 parameters' "$tmp/out" && ok "info total parameters" || ko "info total parameters"
expect_ok "info --json, constant arguments" "$QLENS" info --json "$fx/info_args.onnx"
[ "$(json_num total_params <"$tmp/out")" = 116 ] && ok "info --json total_params" ||
    ko "info --json total_params"

# --- eval: exactly the count of correct samples PyTorch measured ----------------
want=$(sed -n 's/.*"correct": *\([0-9]*\).*/\1/p' "$ex/reference.json")
expect_ok "eval --json" "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$ex/eval.npy" \
    --labels "$ex/eval_labels.npy" --json
got=$(sed -n 's/.*"correct":\([0-9]*\).*/\1/p' "$tmp/out")
if [ -n "$want" ] && [ "$got" = "$want" ]; then ok "eval top-1 matches PyTorch ($got/1000)"
else ko "eval top-1: got '$got' correct, PyTorch measured '$want'"; fi
grep -q '"top1_float":0\.' "$tmp/out" && grep -q '"seconds":' "$tmp/out" && grep -q '"n":1000' "$tmp/out" ||
    ko "eval --json keys"
for t in 1 2; do
    expect_ok "eval threads $t batch 7" "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$ex/eval.npy" \
        --labels "$ex/eval_labels.npy" --json --threads $t --batch 7
    g2=$(sed -n 's/.*"correct":\([0-9]*\).*/\1/p' "$tmp/out")
    [ "$g2" = "$got" ] || ko "eval with $t threads, batch 7: $g2 correct vs $got"
done
expect_ok "eval --limit" "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$ex/eval.npy" \
    --labels "$ex/eval_labels.npy" --limit 100 --json
grep -q '"n":100,' "$tmp/out" || ko "eval --limit 100 runs 100 samples"
idx=/usr/share/datasets/fashion-mnist
if [ -r "$idx/t10k-images-idx3-ubyte.gz" ]; then
    expect_ok "eval on gzipped IDX" "$QLENS" eval "$ex/fmnist_resnet.onnx" \
        --data "$idx/t10k-images-idx3-ubyte.gz" --labels "$idx/t10k-labels-idx1-ubyte.gz" \
        --limit 1000 --json
    g3=$(sed -n 's/.*"correct":\([0-9]*\).*/\1/p' "$tmp/out")
    [ "$g3" = "$got" ] || ko "IDX (first 1000 test images) gives $g3 correct, .npy gives $got"
fi

# --- bad inputs -----------------------------------------------------------------
expect_fail "missing model" "nonexistent.onnx" "$QLENS" info "$tmp/nonexistent.onnx"
head -c 3000 "$ex/fmnist_resnet.onnx" > "$tmp/truncated.onnx"
expect_fail "truncated model" "truncated.onnx" "$QLENS" info "$tmp/truncated.onnx"
# deterministic "random" bytes
awk 'BEGIN { s = 7; for (i = 0; i < 4096; i++) { s = (s * 1103515245 + 12345) % 2147483648; printf "%c", s % 256 } }' \
    > "$tmp/random.onnx"
expect_fail "random bytes" "random.onnx" "$QLENS" info "$tmp/random.onnx"
: > "$tmp/empty.onnx"
expect_fail "empty file" "empty.onnx" "$QLENS" info "$tmp/empty.onnx"
cp "$fx/wrong_shape.npy" "$tmp/not_a_model.onnx"
expect_fail "npy as model" "not_a_model.onnx" "$QLENS" info "$tmp/not_a_model.onnx"
expect_fail "wrong input shape" "does not match model input 'input'" \
    "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$fx/wrong_shape.npy"
expect_fail "NaN in data" "sample 2 has NaN at element 147" \
    "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$fx/nan_sample2.npy"
expect_fail "Inf in data" "sample 1 has Inf at element 3" \
    "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$fx/inf_sample1.npy"
expect_fail "missing data" "nothing-here.npy" \
    "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$tmp/nothing-here.npy"
expect_fail "float labels" "labels_bad.npy" \
    "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$ex/calib.npy" --labels "$fx/labels_bad.npy" --limit 2
# two int64 labels, 3 and 10^12: a .npy written byte by byte
{
    printf '\223NUMPY\001\000\166\000'
    printf "%-117s\n" "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }"
    printf '\003\000\000\000\000\000\000\000\000\020\245\324\350\000\000\000'
} >"$tmp/labels_big.npy"
expect_status "label out of range" 1 \
    "qlens eval: $tmp/labels_big.npy: label of sample 1 is 1000000000000, outside [0, 10)" \
    "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$ex/calib.npy" --labels "$tmp/labels_big.npy" --limit 2
expect_fail "label count" "labels but" \
    "$QLENS" eval "$ex/fmnist_resnet.onnx" --data "$ex/calib.npy" --labels "$ex/eval_labels.npy"
expect_fail "data required" "--data is required" "$QLENS" eval "$ex/fmnist_resnet.onnx"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
