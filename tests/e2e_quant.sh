#!/bin/sh
# End-to-end tests of calibration on the shipped example: each activation
# algorithm at int8 per-channel stays within 0.5% top-1 of float on the
# 1,000 evaluation images; configs are deterministic and round-trip bit for
# bit; low-bit weights with AdaRound beat nearest rounding; bad inputs fail
# cleanly and never damage an existing config.
set -u
: "${QLENS:?}" "${QLENS_SRCDIR:?}"
ex="$QLENS_SRCDIR/examples/fmnist"
model="$ex/fmnist_resnet.onnx"
. "$QLENS_SRCDIR/tests/e2e_lib.sh"
check() { if eval "$2"; then ok "$1"; else ko "$1"; fi; }

# --- int8 per-channel, each activation algorithm, within 0.5% of float ------
for algo in kl percentile mse minmax; do
    expect_ok "calibrate $algo" "$QLENS" calibrate "$model" --data "$ex/calib.npy" \
        --algo "$algo" -o "$tmp/$algo.json"
    expect_ok "eval $algo" "$QLENS" eval "$model" --data "$ex/eval.npy" \
        --labels "$ex/eval_labels.npy" --config "$tmp/$algo.json" --json
    f=$(json_num top1_float <"$tmp/out")
    q=$(json_num top1_quant <"$tmp/out")
    echo "  $algo: top1_float=$f top1_quant=$q $(json_num cosine <"$tmp/out") cosine"
    # minmax is reported, not held to the bound (the issue names kl,
    # percentile and mse); it happens to hold on this model
    case $algo in minmax) continue ;; esac
    awk -v f="$f" -v q="$q" 'BEGIN { d = f - q; if (d < 0) d = -d; exit !(f != "" && d <= 0.005) }' &&
        ok "$algo within 0.5% of float" || ko "$algo within 0.5% of float ($f vs $q)"
done

# --- determinism and round trip --------------------------------------------------
expect_ok "calibrate again, 1 thread" "$QLENS" calibrate "$model" --data "$ex/calib.npy" \
    --algo kl --threads 1 -o "$tmp/kl1.json"
cmp -s "$tmp/kl.json" "$tmp/kl1.json" && ok "config identical across runs and threads" ||
    ko "config identical across runs and threads"
"$QLENS" eval "$model" --data "$ex/eval.npy" --config "$tmp/kl.json" --json --limit 200 >"$tmp/e1" 2>&1
"$QLENS" eval "$model" --data "$ex/eval.npy" --config "$tmp/kl1.json" --json --limit 200 --threads 1 >"$tmp/e2" 2>&1
for k in cosine sqnr_db mse max_abs agree; do
    [ "$(json_num $k <"$tmp/e1")" = "$(json_num $k <"$tmp/e2")" ] || ko "eval $k identical"
done
ok "eval metrics identical across threads"
expect_ok "stats out" "$QLENS" calibrate "$model" --data "$ex/calib.npy" --algo kl \
    --stats-out "$tmp/stats.bin" -o "$tmp/a.json"
expect_ok "stats in" "$QLENS" calibrate "$model" --stats-in "$tmp/stats.bin" --algo kl -o "$tmp/b.json"
cmp -s "$tmp/a.json" "$tmp/b.json" && ok "saved statistics reproduce the config" ||
    ko "saved statistics reproduce the config"
expect_ok "percentile parameter" "$QLENS" calibrate "$model" --stats-in "$tmp/stats.bin" \
    --algo percentile:p=99.9 -o "$tmp/p.json"
grep -q '"percentile:p=99.9"' "$tmp/p.json" && ok "canonical algorithm text" || ko "canonical algorithm text"

# --- bad inputs --------------------------------------------------------------------
cp "$tmp/kl.json" "$tmp/keep.json"
# a bad algorithm is a bad option value: a usage error, status 2
expect_status "unknown algorithm" 2 "" \
    "$QLENS" calibrate "$model" --data "$ex/calib.npy" --algo no-such-algo -o "$tmp/keep.json"
grep -q "^qlens calibrate: option --algo: algorithm 'no-such-algo': no activation algorithm" \
    "$tmp/err" && ok "unknown algorithm message" || ko "unknown algorithm message"
expect_status "unknown parameter" 2 \
    "qlens calibrate: option --algo: algorithm 'percentile:q=3': percentile has no parameter 'q' (parameters: p)" \
    "$QLENS" calibrate "$model" --data "$ex/calib.npy" --algo percentile:q=3 -o "$tmp/keep.json"
expect_status "parameter out of range" 2 \
    "qlens calibrate: option --algo: algorithm 'percentile:p=101': p=101 is out of range [50, 100]" \
    "$QLENS" calibrate "$model" --data "$ex/calib.npy" --algo percentile:p=101 -o "$tmp/keep.json"
expect_status "kl's max_clip out of range" 2 "" \
    "$QLENS" calibrate "$model" --data "$ex/calib.npy" --algo kl:max_clip=2 -o "$tmp/keep.json"
grep -q "option --algo: .*max_clip=2 is out of range" "$tmp/err" && ok "kl's max_clip message" ||
    ko "kl's max_clip message"
expect_status "activation algorithm as weight algorithm" 2 "" \
    "$QLENS" calibrate "$model" --data "$ex/calib.npy" --weight-algo kl -o "$tmp/keep.json"
grep -q "^qlens calibrate: option --weight-algo: algorithm 'kl': kl is not a weight algorithm" \
    "$tmp/err" && ok "weight algorithm message" || ko "weight algorithm message"
expect_fail "missing data" "no-such-file" \
    "$QLENS" calibrate "$model" --data "$tmp/no-such-file.npy" -o "$tmp/keep.json"
cmp -s "$tmp/kl.json" "$tmp/keep.json" && ok "failed runs leave the config untouched" ||
    ko "failed runs leave the config untouched"
# the same config with the first hex digit of the fingerprint changed
sed -E 's/"fingerprint": "0/"fingerprint": "X/; s/"fingerprint": "[1-9a-f]/"fingerprint": "0/; s/"fingerprint": "X/"fingerprint": "1/' \
    "$tmp/kl.json" >"$tmp/other.json"
cmp -s "$tmp/kl.json" "$tmp/other.json" && ko "test set-up: fingerprint not changed"
expect_fail "config of another model" "another model" \
    "$QLENS" eval "$model" --data "$ex/eval.npy" --config "$tmp/other.json"
sed 's/"defaults": {/"defaults": {"bogus": 1, /' "$tmp/kl.json" >"$tmp/bogus.json"
expect_fail "unknown key in config" "bogus" \
    "$QLENS" eval "$model" --data "$ex/eval.npy" --config "$tmp/bogus.json"
printf '{"qlens_config": 1, "layers": {"nope": {"precision": "int16"}}}\n' >"$tmp/nolayer.json"
expect_fail "unknown layer in config" 'nope' \
    "$QLENS" calibrate "$model" --data "$ex/calib.npy" --config "$tmp/nolayer.json" -o "$tmp/x.json"
[ -e "$tmp/x.json" ] && ko "no output after a failure" || ok "no output after a failure"
# encodings that do not fit the settings or the tensor are refused when the
# config is loaded, naming the file and the JSON path
sed '/"fc.weight": {/{n;s/"bits": 8/"bits": 4/}' "$tmp/kl.json" >"$tmp/wbits.json"
cmp -s "$tmp/kl.json" "$tmp/wbits.json" && ko "test set-up: weight bits not changed"
expect_status "weight bits unlike the settings" 1 \
    "qlens eval: $tmp/wbits.json: tensors.\"fc.weight\".bits: the encoding has 4 bits but layer '/fc/Gemm' has weight_bits 8 (recalibrate)" \
    "$QLENS" eval "$model" --data "$ex/eval.npy" --limit 2 --config "$tmp/wbits.json"
sed '/"fc.weight": {/{n;n;n;n;s/"axis": 0/"axis": 3/}' "$tmp/kl.json" >"$tmp/axis.json"
expect_status "weight axis outside the tensor" 1 \
    "qlens eval: $tmp/axis.json: tensors.\"fc.weight\".axis: no axis 3 in a tensor of rank 2 (axes 0 to 1)" \
    "$QLENS" eval "$model" --data "$ex/eval.npy" --limit 2 --config "$tmp/axis.json"
# every array of the entry cut to its first value: one channel, not 10
awk '/"fc.weight": \{/ { w = 1 } w && /^    \}/ { w = 0 }
     w && /: \[/ { sub(/, [^]]*\]/, "]") } { print }' "$tmp/kl.json" >"$tmp/count.json"
expect_status "channel count unlike the tensor" 1 \
    "qlens eval: $tmp/count.json: tensors.\"fc.weight\".scale: expected 10 values (one per channel along axis 0), got 1" \
    "$QLENS" eval "$model" --data "$ex/eval.npy" --limit 2 --config "$tmp/count.json"
printf '{"qlens_config": 1, "defaults": {"weight_bits": 4}}\n' >"$tmp/settings.json"
expect_status "eval with a config of settings only" 1 \
    "qlens eval: $tmp/settings.json: tensors: the config has no encodings (make them with 'qlens calibrate')" \
    "$QLENS" eval "$model" --data "$ex/eval.npy" --limit 2 --config "$tmp/settings.json"
awk '/"fc.weight": \{/ { skip = 1 } skip && /^    \}/ { skip = 0; next } !skip' "$tmp/kl.json" >"$tmp/nowt.json"
expect_status "missing weight encoding" 1 \
    "qlens eval: $tmp/nowt.json: tensors.\"fc.weight\": no encoding, but the settings quantize this tensor (recalibrate)" \
    "$QLENS" eval "$model" --data "$ex/eval.npy" --limit 2 --config "$tmp/nowt.json"

# --- a model with two outputs: both count, and each is reported ---------------
th="$QLENS_SRCDIR/tests/data/two_heads.onnx" thx="$QLENS_SRCDIR/tests/data/two_heads_x.npy"
expect_ok "two outputs: calibrate" "$QLENS" calibrate "$th" --data "$thx" --algo minmax \
    --per-tensor -o "$tmp/th.json"
expect_ok "two outputs: eval --json" "$QLENS" eval "$th" --data "$thx" --config "$tmp/th.json" --json
check "two outputs: json lists scores then dense" \
    'tr -d "\n" <"$tmp/out" | grep -q "\"outputs\":\[{\"name\":\"scores\",[^]]*},{\"name\":\"dense\","'
expect_ok "two outputs: eval" "$QLENS" eval "$th" --data "$thx" --config "$tmp/th.json"
check "two outputs: a line per output" \
    'grep -q "^per output: " "$tmp/out" && grep -q "^  *scores  *0\.[0-9]" "$tmp/out" && grep -q "^  *dense  *0\.[0-9]" "$tmp/out"'
# a layer of the second head only moves the second output
expect_ok "two outputs: sensitivity" "$QLENS" sensitivity "$th" --data "$thx" -c "$tmp/th.json" \
    --layer /head_b/Conv -o "$tmp/th.csv"
check "two outputs: the dense head's layer shows an error" \
    'sed -n 2p "$tmp/th.csv" | grep -q "^\"/head_b/Conv\"," && awk -F, "NR == 2 && \$4 < 1 && \$5 > 0 { found = 1 } END { exit !found }" "$tmp/th.csv"'

# --- low-bit weights: nearest rounding vs AdaRound (3-bit, 16-bit activations) ----
iters=${QLENS_ADAROUND_TEST_ITERS:-400}
expect_ok "3-bit nearest" "$QLENS" calibrate "$model" --data "$ex/calib.npy" --limit 64 \
    --weight-bits 3 --act-bits 16 -o "$tmp/w3.json"
expect_ok "3-bit adaround" "$QLENS" calibrate "$model" --data "$ex/calib.npy" --limit 64 \
    --weight-bits 3 --act-bits 16 --weight-algo "adaround:iterations=$iters" -o "$tmp/w3a.json"
"$QLENS" eval "$model" --data "$ex/eval.npy" --labels "$ex/eval_labels.npy" --config "$tmp/w3.json" --json >"$tmp/n" 2>&1
"$QLENS" eval "$model" --data "$ex/eval.npy" --labels "$ex/eval_labels.npy" --config "$tmp/w3a.json" --json >"$tmp/a" 2>&1
n=$(json_num top1_quant <"$tmp/n"); a=$(json_num top1_quant <"$tmp/a")
nc=$(json_num cosine <"$tmp/n"); ac=$(json_num cosine <"$tmp/a")
echo "  3-bit weights: nearest top1=$n cosine=$nc; adaround($iters it) top1=$a cosine=$ac"
awk -v n="$nc" -v a="$ac" 'BEGIN { exit !(n != "" && a != "" && a > n) }' &&
    ok "adaround improves on nearest at 3 bits" || ko "adaround improves on nearest at 3 bits"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
