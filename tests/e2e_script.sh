#!/bin/sh
# End-to-end tests of `qlens run`: the shipped quickstart runs the full flow
# (load, data, calibrate, eval, sensitivity, raise the worst layer, eval,
# save config and CSV); its output and files are identical at 1 and 2
# threads; a session saved with `save script` replays to the same files;
# failing lines stop the run with "FILE:LINE: reason" and status 1, usage
# errors give status 2.
set -u
: "${QLENS:?}" "${QLENS_SRCDIR:?}"
ex="$QLENS_SRCDIR/examples/fmnist"
. "$QLENS_SRCDIR/tests/e2e_lib.sh"
same() { if cmp -s "$2" "$3"; then ok "$1"; else ko "$1 ($2 and $3 differ)"; fi; }

# --- the quickstart, at 2 threads and at 1 -----------------------------------------
mkdir "$tmp/a" "$tmp/b"
expect_ok "quickstart runs" "$QLENS" run "$ex/quickstart.qls" --var OUT="$tmp/a" --threads 2
cp "$tmp/out" "$tmp/a/stdout"
sed 's/^/  | /' "$tmp/a/stdout"
for f in quickstart.json quickstart_sensitivity.csv quickstart_layers.csv quickstart_curve.csv; do
    [ -s "$tmp/a/$f" ] && ok "quickstart wrote $f" || ko "quickstart wrote $f"
done
grep -q '^worst layer: /' "$tmp/a/stdout" && ok "worst layer named" || ko "worst layer named"
worst=$(sed -n 's/^worst layer: //p' "$tmp/a/stdout")
grep -q "^\"$worst\",[^,]*,int16," "$tmp/a/quickstart_layers.csv" &&
    ok "worst layer raised to int16" || ko "worst layer raised to int16"
[ "$(grep -c '^samples:      1000$' "$tmp/a/stdout")" = 2 ] && ok "two evals on 1000 samples" ||
    ko "two evals on 1000 samples"
# top-1 after raising the worst layer stays within 0.5 points of float
f=$(sed -n 's/^top-1 float:  \([0-9.]*\).*/\1/p' "$tmp/a/stdout" | tail -n 1)
q=$(sed -n 's/^top-1 quant:  \([0-9.]*\).*/\1/p' "$tmp/a/stdout" | tail -n 1)
echo "  top-1 float $f, quantized $q"
awk -v f="$f" -v q="$q" 'BEGIN { d = f - q; if (d < 0) d = -d; exit !(f != "" && d <= 0.005) }' &&
    ok "quantized top-1 within 0.5 points" || ko "quantized top-1 within 0.5 points ($f vs $q)"
expect_ok "quickstart again, 1 thread" "$QLENS" run "$ex/quickstart.qls" --var OUT="$tmp/b" \
    --threads 1
same "stdout identical across threads" "$tmp/a/stdout" "$tmp/out"
for f in quickstart.json quickstart_sensitivity.csv quickstart_layers.csv quickstart_curve.csv; do
    same "$f identical across threads" "$tmp/a/$f" "$tmp/b/$f"
done
# the config it wrote is one the eval subcommand accepts, with the same metrics
expect_ok "qlens eval takes the config" "$QLENS" eval "$ex/fmnist_resnet.onnx" \
    --data "$ex/eval.npy" --labels "$ex/eval_labels.npy" --config "$tmp/a/quickstart.json"
c1=$(sed -n 's/^cosine: *//p' "$tmp/out")
c2=$(sed -n 's/^cosine: *//p' "$tmp/a/stdout" | tail -n 1)
[ -n "$c1" ] && [ "$c1" = "$c2" ] && ok "same cosine from qlens eval ($c1)" ||
    ko "same cosine from qlens eval ($c1 vs $c2)"

# --- save script: replay gives the same files ----------------------------------------
mkdir "$tmp/r"
cat >"$tmp/session.qls" <<EOF
load $ex/fmnist_resnet.onnx
data calib $ex/calib.npy limit 64
data eval $ex/eval.npy labels $ex/eval_labels.npy limit 100
calibrate algo mse
set layer /layer1/c1/Conv act-algo 'percentile:p=99.90'
set layer /fc/Gemm precision float
undo
set weight-bits 7
eval
sensitivity limit 20
save config \${DIR}/s.json
export csv \${DIR}/s.csv
export csv layers \${DIR}/l.csv
save script \${DIR}/saved.qls
EOF
expect_ok "session with save script" "$QLENS" run "$tmp/session.qls" --var DIR="$tmp/r"
cp "$tmp/out" "$tmp/r/stdout"
mkdir "$tmp/r0"
cp "$tmp/r/s.json" "$tmp/r/s.csv" "$tmp/r/l.csv" "$tmp/r0/"
grep -q "^set layer /layer1/c1/Conv act-algo percentile:p=99.9$" "$tmp/r/saved.qls" &&
    ok "saved script has canonical lines" || ko "saved script has canonical lines"
grep -q "precision float" "$tmp/r/saved.qls" && ko "undone line left out" || ok "undone line left out"
for k in 1 2; do
    rm -f "$tmp/r/s.json" "$tmp/r/s.csv" "$tmp/r/l.csv"
    expect_ok "replay $k" "$QLENS" run "$tmp/r/saved.qls" --threads "$k"
    for f in s.json s.csv l.csv; do same "replay $k: $f identical" "$tmp/r0/$f" "$tmp/r/$f"; done
    grep -v '^model: ' "$tmp/out" >"$tmp/replay.out"
    grep -v '^model: ' "$tmp/r/stdout" >"$tmp/orig.out"
    same "replay $k: same printed metrics" "$tmp/orig.out" "$tmp/replay.out"
done

# --- failures ------------------------------------------------------------------------
printf 'echo one\n\n# two\nload %s/fmnist_resnet.onnx\nset layer /no/such precision int16\necho never\n' \
    "$ex" >"$tmp/bad.qls"
expect_status "wrong layer name" 1 \
    "$tmp/bad.qls:5: set: no layer named '/no/such' (see 'show layers')" \
    "$QLENS" run "$tmp/bad.qls"
grep -q never "$tmp/out" && ko "stops at the failing line" || ok "stops at the failing line"
printf 'echo ok\nfrobnicate\n' >"$tmp/bad2.qls"
expect_status "unknown command" 1 "$tmp/bad2.qls:2: unknown command 'frobnicate' (see 'help')" \
    "$QLENS" run "$tmp/bad2.qls"
printf 'load %s/fmnist_resnet.onnx\ndata calib %s/none.npy\n' "$ex" "$ex" >"$tmp/bad3.qls"
expect_status "missing file" 1 "" "$QLENS" run "$tmp/bad3.qls"
grep -q "^$tmp/bad3.qls:2: data calib: .*none.npy" "$tmp/err" && ok "missing file named" ||
    ko "missing file named"
printf 'load ${MODEL}\n' >"$tmp/bad4.qls"
expect_status "undefined variable" 1 \
    "$tmp/bad4.qls:1: undefined variable 'MODEL' (set it with --var MODEL=VALUE)" \
    "$QLENS" run "$tmp/bad4.qls"
printf 'echo x\nset weight-bits 99\n' >"$tmp/bad5.qls"
expect_status "bad argument" 1 "$tmp/bad5.qls:2: set: weight-bits: '99' is not an integer in [2, 16]" \
    "$QLENS" run "$tmp/bad5.qls"
printf 'echo one\necho a\000b\necho never\n' >"$tmp/nul.qls"
expect_status "NUL byte in a line" 1 "$tmp/nul.qls:2: a NUL byte at column 7 (not a text file?)" \
    "$QLENS" run "$tmp/nul.qls"
grep -q never "$tmp/out" && ko "stops at the NUL byte" || ok "stops at the NUL byte"
expect_status "no such script" 1 "$tmp/none.qls: No such file or directory" \
    "$QLENS" run "$tmp/none.qls"
expect_status "no script" 2 "" "$QLENS" run
expect_status "two scripts" 2 "" "$QLENS" run "$tmp/bad.qls" "$tmp/bad2.qls"
expect_status "bad option" 2 "" "$QLENS" run --frobnicate "$tmp/bad.qls"
expect_status "bad --var" 2 "qlens run: option --var: 'X' is not NAME=VALUE" \
    "$QLENS" run --var X "$tmp/bad.qls"
expect_status "bad --threads" 2 "" "$QLENS" run --threads 0 "$tmp/bad.qls"

# --- standard input, --list-commands ---------------------------------------------------
printf 'echo "from stdin" ${A}\n' | "$QLENS" run - --var A=x >"$tmp/out" 2>"$tmp/err" &&
    [ "$(cat "$tmp/out")" = "from stdin x" ] && ok "script from stdin" || ko "script from stdin"
expect_ok "--list-commands" "$QLENS" run --list-commands
cp "$tmp/out" "$tmp/list"
printf 'help\n' >"$tmp/help.qls"
expect_ok "help command" "$QLENS" run "$tmp/help.qls"
same "help lists what --list-commands does" "$tmp/list" "$tmp/out"
grep -q '^export csv layers FILE$' "$tmp/list" && ok "list has synopses" || ko "list has synopses"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
