#!/bin/sh
# End-to-end tests of `qlens sensitivity` and `qlens autoprec` on the shipped
# example: tables identical whatever the thread count, CSV and JSON shapes,
# Ctrl-C keeps the rows done, autoprec reaches a target the config misses
# and writes overrides with reasons; bad arguments fail cleanly.
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
check "Ctrl-C: said so" 'grep -q "interrupted" "$tmp/err"'

# --- autoprec -------------------------------------------------------------------
"$QLENS" eval "$model" --data "$ex/eval.npy" -c "$cfg" --limit 128 --json >"$tmp/ev.json" 2>/dev/null
sq=$(json_num sqnr_db <"$tmp/ev.json")
target=$(awk -v s="$sq" 'BEGIN { printf "%.2f", s + 3 }')
expect_ok "autoprec sqnr_db>=$target (config has $sq)" "$QLENS" autoprec "$model" \
    --data "$ex/eval.npy" --limit 128 -c "$cfg" --target "sqnr_db>=$target" \
    --stats "$tmp/stats.bin" -o "$tmp/new.json"
check "autoprec took steps" 'grep -q "^step 1:" "$tmp/out"'
check "overrides carry reasons" 'grep -q "autoprec: all-but sqnr_db gain" "$tmp/new.json"'
"$QLENS" eval "$model" --data "$ex/eval.npy" -c "$tmp/new.json" --limit 128 --json >"$tmp/ev2.json" 2>/dev/null
sq2=$(json_num sqnr_db <"$tmp/ev2.json")
check "new config meets the target ($sq2 >= $target)" \
    'awk -v a="$sq2" -v b="$target" "BEGIN { exit !(a + 0 >= b + 0) }"'
expect_ok "autoprec re-collects statistics, --march" "$QLENS" autoprec "$model" \
    --data "$ex/eval.npy" --limit 64 -c "$cfg" --target "cosine>=0.5" --march nash-e \
    -o "$tmp/same.json"
check "a met target changes nothing" 'grep -q "^before:" "$tmp/out" && ! grep -q "^step" "$tmp/out"'

# --- errors -----------------------------------------------------------------------
expect_fail "bad mode" "is not single, all-but" "$QLENS" sensitivity "$model" \
    --data "$ex/eval.npy" -c "$cfg" --mode everything
expect_fail "no config" "required" "$QLENS" sensitivity "$model" --data "$ex/eval.npy"
expect_fail "unknown layer" "no such layer" "$QLENS" sensitivity "$model" \
    --data "$ex/eval.npy" -c "$cfg" --limit 8 --layer nope
expect_fail "bad target" "expected METRIC>=VALUE" "$QLENS" autoprec "$model" \
    --data "$ex/eval.npy" -c "$cfg" --target "cosine=1" -o "$tmp/x.json"
expect_fail "top1 target needs labels" "needs --labels" "$QLENS" autoprec "$model" \
    --data "$ex/eval.npy" -c "$cfg" --target "top1_drop<=0.2" -o "$tmp/x.json"
expect_fail "unknown march" "unknown march" "$QLENS" autoprec "$model" \
    --data "$ex/eval.npy" -c "$cfg" --target "cosine>=0.9" --march nash-z -o "$tmp/x.json"
check "failed autoprec wrote nothing" '[ ! -e "$tmp/x.json" ]'

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
