#!/bin/sh
# End-to-end tests of `qlens sensitivity` and `qlens autoprec` on the shipped
# example: tables identical whatever the thread count, CSV and JSON shapes,
# all-but measures what the config with the layer set to float gives,
# Ctrl-C keeps the rows done and lists the others apart, autoprec reaches a
# target the config misses and writes overrides with reasons; bad arguments
# fail cleanly, bad option values (impossible targets too) with status 2.
set -u
: "${QLENS:?}" "${QLENS_SRCDIR:?}"
ex="$QLENS_SRCDIR/examples/fmnist"
model="$ex/fmnist_resnet.onnx"
. "$QLENS_SRCDIR/tests/e2e_lib.sh"
check() { if eval "$2"; then ok "$1"; else ko "$1"; fi; }

expect_ok "calibrate" "$QLENS" calibrate "$model" --data "$ex/calib.npy" --algo minmax \
    --limit 256 -o "$tmp/cfg.json" --stats-out "$tmp/stats.bin"
cfg="$tmp/cfg.json"

# --- tables: thread count changes nothing; CSV and JSON shapes --------------
expect_ok "single, 1 thread" "$QLENS" sensitivity "$model" --data "$ex/eval.npy" \
    --labels "$ex/eval_labels.npy" -c "$cfg" --limit 96 --threads 1 -o "$tmp/t1.csv"
expect_ok "single, 2 threads" "$QLENS" sensitivity "$model" --data "$ex/eval.npy" \
    --labels "$ex/eval_labels.npy" -c "$cfg" --limit 96 --threads 2 -o "$tmp/t2.csv"
check "CSV identical for 1 and 2 threads" 'cmp -s "$tmp/t1.csv" "$tmp/t2.csv"'
check "CSV header" '[ "$(head -n 1 "$tmp/t1.csv")" = "layer,op,precision,cosine,mse,sqnr_db,max_abs,top1_agree,top1,local_sqnr_db,weight_share,done" ]'
check "CSV has one row per layer, all done" \
    '[ "$(tail -n +2 "$tmp/t1.csv" | grep -c ",1\$")" = 17 ] && [ "$(wc -l <"$tmp/t1.csv")" = 18 ]'
check "table sorted worst first (cosine ascending)" \
    'tail -n +2 "$tmp/t1.csv" | awk -F, "NR>1 && \$4 < prev {bad=1} {prev=\$4} END {exit bad}"'
expect_ok "all-but, json" "$QLENS" sensitivity "$model" --data "$ex/eval.npy" -c "$cfg" \
    --limit 64 --mode all-but --metric mse --json
check "json: mode, not partial, 17 rows" \
    'grep -q "\"mode\":[[:space:]]*\"all-but\"" "$tmp/out" && grep -q "\"partial\":[[:space:]]*false" "$tmp/out" && [ "$(grep -c "\"layer\":" "$tmp/out")" = 17 ]'
# all-but is what the config with that layer set to float computes: here
# a layer whose int8 readers keep its output quantized
layer=/layer2/c1/Conv
cat >"$tmp/float.qls" <<EOF
load $model
load config $cfg
load stats $tmp/stats.bin
set layer $layer precision float
save config $tmp/float.json
EOF
expect_ok "config with $layer float" "$QLENS" run "$tmp/float.qls"
"$QLENS" eval "$model" --data "$ex/eval.npy" -c "$tmp/float.json" --limit 64 --json \
    >"$tmp/evf.json" 2>/dev/null
expect_ok "all-but, one layer" "$QLENS" sensitivity "$model" --data "$ex/eval.npy" -c "$cfg" \
    --limit 64 --mode all-but --layer "$layer" --json
sq_eval=$(json_num sqnr_db <"$tmp/evf.json")
sq_sens=$(json_num sqnr_db <"$tmp/out")
check "all-but $layer = eval of the config with it float ($sq_sens vs $sq_eval dB)" \
    'awk -v a="$sq_sens" -v b="$sq_eval" "BEGIN { d = a - b; exit !(a != \"\" && d < 0.001 && d > -0.001) }"'
expect_ok "weights mode, one layer" "$QLENS" sensitivity "$model" --data "$ex/eval.npy" \
    -c "$cfg" --limit 32 --mode weights --layer /layer1/c1/Conv -o "$tmp/one.csv"
check "one layer, one row" '[ "$(wc -l <"$tmp/one.csv")" = 2 ]'
expect_ok "tiny cache budget still works" "$QLENS" sensitivity "$model" --data "$ex/eval.npy" \
    -c "$cfg" --limit 40 --cache-mb 1 --threads 2

# --- Ctrl-C: rows so far written, marked ------------------------------------
"$QLENS" sensitivity "$model" --data "$ex/eval.npy" -c "$cfg" --threads 1 --batch 8 \
    -o "$tmp/part.csv" >"$tmp/out" 2>"$tmp/err" &
pid=$!
sleep 1
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
check "Ctrl-C exits 130" '[ "$rc" = 130 ]'
check "Ctrl-C: CSV written, some rows not done" \
    '[ -f "$tmp/part.csv" ] && [ "$(wc -l <"$tmp/part.csv")" = 18 ] && tail -n +2 "$tmp/part.csv" | grep -q ",0\$"'
check "Ctrl-C: rows not done come last, without metrics" \
    'tail -n +2 "$tmp/part.csv" | awk "/,0\$/ { if (\$0 !~ /,,,,,,,,,0\$/) bad = 1; seen = 1; next } seen { bad = 1 } END { exit bad }"'
check "Ctrl-C: the table shows finished rows only" \
    'grep -q "partial" "$tmp/out" && ! grep -q "not done" "$tmp/out" && [ "$(grep -c "^ *[0-9]" "$tmp/out")" = "$(tail -n +2 "$tmp/part.csv" | grep -c ",1\$")" ]'
check "Ctrl-C: said so" 'grep -q "interrupted" "$tmp/err"'

# --- autoprec -------------------------------------------------------------------
"$QLENS" eval "$model" --data "$ex/eval.npy" -c "$cfg" --limit 128 --json >"$tmp/ev.json" 2>/dev/null
sq=$(json_num sqnr_db <"$tmp/ev.json")
target=$(awk -v s="$sq" 'BEGIN { printf "%.2f", s + 3 }')
expect_ok "autoprec sqnr_db>=$target (config has $sq)" "$QLENS" autoprec "$model" \
    --data "$ex/eval.npy" --limit 128 -c "$cfg" --target "sqnr_db>=$target" \
    --stats "$tmp/stats.bin" -o "$tmp/new.json"
check "autoprec took steps" 'grep -q "^step 1:" "$tmp/out"'
check "overrides carry reasons" 'grep -q "autoprec: step 1 of [0-9]* for sqnr_db>=$target" "$tmp/new.json"'
check "every raise tried is printed, with its outcome" \
    'grep -q "^pass 1:" "$tmp/out" && grep -q "(predicted .*): kept" "$tmp/out" && grep -q "^after: sqnr_db" "$tmp/out"'
check "as many overrides as steps" \
    '[ "$(grep -c "\"reason\":[[:space:]]*\"autoprec: step" "$tmp/new.json")" = "$(grep -c "^step [0-9]*:" "$tmp/out")" ]'
"$QLENS" eval "$model" --data "$ex/eval.npy" -c "$tmp/new.json" --limit 128 --json >"$tmp/ev2.json" 2>/dev/null
sq2=$(json_num sqnr_db <"$tmp/ev2.json")
check "new config meets the target ($sq2 >= $target)" \
    'awk -v a="$sq2" -v b="$target" "BEGIN { exit !(a + 0 >= b + 0) }"'
# int16 raises only activation bits: when they stop helping, float raises
# follow (+14 dB is beyond what activation bits give whatever the sample
# count: 64 samples, this being autoprec's longest run)
"$QLENS" eval "$model" --data "$ex/eval.npy" -c "$cfg" --limit 64 --json >"$tmp/ev64.json" 2>/dev/null
sq64=$(json_num sqnr_db <"$tmp/ev64.json")
target16=$(awk -v s="$sq64" 'BEGIN { printf "%.2f", s + 14 }')
expect_ok "autoprec sqnr_db>=$target16, int16 then float" "$QLENS" autoprec "$model" \
    --data "$ex/eval.npy" --limit 64 -c "$cfg" --target "sqnr_db>=$target16" \
    --stats "$tmp/stats.bin" -o "$tmp/new16.json"
check "int16 raises ran out, said so, float raises met the target" \
    'grep -q "^int16 raises stopped helping" "$tmp/out" && grep -q "^step [0-9]*: .* -> float" "$tmp/out" && grep -q "target sqnr_db>=$target16 met" "$tmp/err"'
expect_ok "autoprec re-collects statistics, --march" "$QLENS" autoprec "$model" \
    --data "$ex/eval.npy" --limit 64 -c "$cfg" --target "cosine>=0.5" --march nash-e \
    -o "$tmp/same.json"
check "a met target changes nothing" 'grep -q "^before:" "$tmp/out" && ! grep -q "^step" "$tmp/out"'

# --- errors -----------------------------------------------------------------------
expect_fail "bad mode" "is not single, all-but" "$QLENS" sensitivity "$model" \
    --data "$ex/eval.npy" -c "$cfg" --mode everything
expect_fail "no config" "required" "$QLENS" sensitivity "$model" --data "$ex/eval.npy"
ap() { "$QLENS" autoprec "$model" --data "$ex/eval.npy" -c "$cfg" -o "$tmp/x.json" "$@"; }
expect_status "bad target: exit 2" 2 \
    "qlens autoprec: option --target 'cosine=1': expected METRIC>=VALUE or METRIC<=VALUE" \
    ap --target "cosine=1"
expect_status "garbage target: exit 2" 2 \
    "qlens autoprec: option --target 'garbage': expected METRIC>=VALUE or METRIC<=VALUE" \
    ap --target garbage
expect_status "an error metric at least: exit 2" 2 \
    "qlens autoprec: option --target mse>=0.1: mse is an error, lower when better (the float model has the least); write mse<=0.1" \
    ap --target "mse>=0.1"
expect_status "cosine above 1: exit 2" 2 \
    "qlens autoprec: option --target cosine>=2: no model reaches it (cosine is at most 1)" \
    ap --target "cosine>=2"
expect_status "top1 as a percentage: exit 2" 2 \
    "qlens autoprec: option --target top1>=93: no model reaches it (top1 is at most 1: a fraction, not a percentage)" \
    ap --labels "$ex/eval_labels.npy" --target "top1>=93"
expect_status "top1 target needs labels: exit 2" 2 "qlens autoprec: target top1_drop needs --labels" \
    ap --target "top1_drop<=0.2"
expect_status "unknown march: exit 2" 2 \
    "qlens autoprec: option --march: unknown march 'nash-z' (expected nash-b-lite, nash-b, nash-b-plus, nash-e, nash-m, nash-h or nash-p)" \
    ap --target "cosine>=0.9" --march nash-z
expect_status "bad --prefer: exit 2" 2 "qlens autoprec: option --prefer: 'double' is not int16 or float" \
    ap --target "cosine>=0.9" --prefer double
expect_status "unknown layer: exit 2" 2 \
    "qlens sensitivity: option --layer: 'nope': no such layer in $model" \
    "$QLENS" sensitivity "$model" --data "$ex/eval.npy" -c "$cfg" --limit 8 --layer nope
expect_status "bad --limit: exit 2" 2 \
    "qlens sensitivity: option --limit: 'x' is not an integer in [1, 1099511627776]" \
    "$QLENS" sensitivity "$model" --data "$ex/eval.npy" -c "$cfg" --limit x
# a config of settings only: the file is named, as eval names it
printf '{"qlens_config": 1, "defaults": {"weight_bits": 4}}\n' >"$tmp/settings.json"
expect_status "sensitivity with a config of settings only" 1 \
    "qlens sensitivity: $tmp/settings.json: tensors: the config has no encodings (make them with 'qlens calibrate')" \
    "$QLENS" sensitivity "$model" --data "$ex/eval.npy" --limit 8 -c "$tmp/settings.json"
expect_status "autoprec with a config of settings only" 1 \
    "qlens autoprec: $tmp/settings.json: tensors: the config has no encodings (make them with 'qlens calibrate')" \
    "$QLENS" autoprec "$model" --data "$ex/eval.npy" --limit 8 -c "$tmp/settings.json" \
    --target "cosine>=0.9" -o "$tmp/x.json"
check "failed autoprec wrote nothing" '[ ! -e "$tmp/x.json" ]'

# --- the cumulative curve -----------------------------------------------------
expect_ok "cumulative to float" "$QLENS" sensitivity "$model" --data "$ex/eval.npy" \
    --labels "$ex/eval_labels.npy" -c "$cfg" --limit 64 --mode cumulative -o "$tmp/curve.csv"
check "curve CSV: header, the config and one step per layer" \
    '[ "$(head -n 1 "$tmp/curve.csv")" = "step,layer,op,from,to,cosine,mse,sqnr_db,max_abs,top1_agree,top1,done" ] && [ "$(wc -l <"$tmp/curve.csv")" = 19 ] && sed -n 2p "$tmp/curve.csv" | grep -q "^0,,,,,"'
check "curve to float ends at the float model (no error left)" \
    'tail -n 1 "$tmp/curve.csv" | awk -F, "\$1 == 17 && \$5 == \"float\" && \$6 == 1 && \$7 == 0 && \$8 == \"inf\" && \$12 == 1 { ok = 1 } END { exit !ok }"'
check "curve report printed" 'grep -q "^curve: 17 steps to float, most sensitive first (single table by cosine), 64 samples" "$tmp/out"'
expect_ok "cumulative to int16, all-but ranking, json" "$QLENS" sensitivity "$model" \
    --data "$ex/eval.npy" -c "$cfg" --limit 32 --mode cumulative --rank all-but \
    --prefer int16 --steps 2 --stats "$tmp/stats.bin" --json
check "curve json: two int16 steps ranked by all-but" \
    'grep -q "\"rank\":[[:space:]]*\"all-but\"" "$tmp/out" && grep -q "\"to\":[[:space:]]*\"int16\"" "$tmp/out" && [ "$(grep -c "\"step\":" "$tmp/out")" = 2 ]'
expect_status "curve options without the cumulative mode" 2 \
    "qlens sensitivity: --prefer, --steps, --rank and --stats go with --mode cumulative" \
    "$QLENS" sensitivity "$model" --data "$ex/eval.npy" -c "$cfg" --prefer int16
expect_status "bad --rank" 2 \
    "qlens sensitivity: option --rank: 'cumulative' is not single, all-but, weights or activations" \
    "$QLENS" sensitivity "$model" --data "$ex/eval.npy" -c "$cfg" --mode cumulative --rank cumulative

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
