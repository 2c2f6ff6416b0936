#!/bin/bash
# qlens vs ONNX Runtime benchmark driver (see bench/README.md).
#
# For each model {fmnist example, resnet18, mobilenet_v2} x threads {1,2} x
# batch {1,32} it runs the qlens side (qlens-bench) and the ORT side
# (node ort_run.js) with the same protocol and prints one table row:
# median latency of each, their ratio, each side's peak RSS and that ratio.
#
# Usage: bench/run.sh [--md] [--quick]
#   --md      print the table as Markdown (for bench/README.md)
#   --quick   one pass with a quarter of the timed iterations (a rough look)
#
# Environment (all optional):
#   QLENS_BENCH  path to the qlens-bench binary. Default: the first executable of
#                $BUILD_DIR/bench/qlens-bench, ./bench/qlens-bench (run from the
#                build tree's top directory), bench/qlens-bench beside this script
#                (in-tree build), build/bench/qlens-bench in the source tree.
#                When none is found the qlens columns read "n/a".
#   BUILD_DIR    a build tree's top directory (see QLENS_BENCH)
#   MODELS       models to run (default "fmnist resnet18 mobilenet_v2")
#   THREADS      thread counts (default "1 2")
#   BATCHES      batch sizes (default "1 32")
#   BENCH_SCALE  multiplies every timed-iteration count (default 1; --quick = 0.25)
#   BENCH_REPEAT runs of each side per row, alternating qlens and ORT; the run
#                with the lowest median counts (default 3; --quick = 1). This
#                keeps a burst of load from elsewhere on the machine out of the table.
#   BENCH_TIMEOUT  seconds one side may take for one row (default 900)
#   PYTHON       the Python with torch that makes the models (default /usr/bin/python3)
#   NODE         node (default node)
#
# Exit status: 1 when the ORT side failed on some row, else 0 (qlens rows that
# are n/a or fail, and rows whose model is missing, are shown in the table). Targets are summarised at
# the end but do not change the exit status.
set -u

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/.." && pwd)
MODELS_DIR=$BENCH_DIR/models
PYTHON=${PYTHON:-/usr/bin/python3}
NODE=${NODE:-node}
MODELS=${MODELS:-fmnist resnet18 mobilenet_v2}
THREADS=${THREADS:-1 2}
BATCHES=${BATCHES:-1 32}
BENCH_SCALE=${BENCH_SCALE:-1}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}
FORMAT=text

for arg in "$@"; do
    case $arg in
        --md) FORMAT=md ;;
        --quick) BENCH_SCALE=0.25 BENCH_REPEAT=1 ;;
        -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

die() { echo "run.sh: $*" >&2; exit 1; }

# ---- the ORT side: onnxruntime-node from bench/package-lock.json ----------
command -v "$NODE" >/dev/null 2>&1 || die "node not found (set NODE)"
if [ ! -f "$BENCH_DIR/node_modules/onnxruntime-node/package.json" ]; then
    echo "run.sh: installing onnxruntime-node into bench/node_modules" >&2
    # --ignore-scripts: the package's install script only fetches GPU files
    # from a host we cannot reach; the CPU library ships inside the package.
    (cd "$BENCH_DIR" && npm ci --ignore-scripts --no-audit --no-fund >&2) ||
        die "npm ci failed in $BENCH_DIR"
fi

# ---- models and inputs ------------------------------------------------------
model_path() {
    case $1 in
        fmnist) echo "$SRC_DIR/examples/fmnist/fmnist_resnet.onnx" ;;
        *) echo "$MODELS_DIR/$1.onnx" ;;
    esac
}
input_path() { echo "$MODELS_DIR/${1}_b$2.npy"; }

missing=0
for m in resnet18 mobilenet_v2; do
    [ -f "$(model_path $m)" ] || missing=1
done
for m in fmnist resnet18 mobilenet_v2; do
    for b in 1 32; do [ -f "$(input_path $m $b)" ] || missing=1; done
done
if [ $missing = 1 ]; then
    echo "run.sh: making bench models and inputs with $PYTHON" >&2
    "$PYTHON" "$BENCH_DIR/make_models.py" >&2 || die "make_models.py failed"
fi

# ---- the qlens side ---------------------------------------------------------
if [ -z "${QLENS_BENCH:-}" ]; then
    for c in ${BUILD_DIR:+"$BUILD_DIR/bench/qlens-bench"} ./bench/qlens-bench \
             "$BENCH_DIR/qlens-bench" "$SRC_DIR/build/bench/qlens-bench"; do
        if [ -x "$c" ] && [ -f "$c" ]; then QLENS_BENCH=$c; break; fi
    done
fi
if [ -n "${QLENS_BENCH:-}" ] && [ -x "$QLENS_BENCH" ]; then
    echo "run.sh: qlens side: $QLENS_BENCH" >&2
else
    echo "run.sh: qlens-bench not found${QLENS_BENCH:+ at $QLENS_BENCH}" \
         "(build it with make, or set QLENS_BENCH); qlens columns will read n/a" >&2
    QLENS_BENCH=
fi
echo "run.sh: ORT side: onnxruntime-node" \
     "$("$NODE" -p "require('$BENCH_DIR/node_modules/onnxruntime-node/package.json').version")" >&2

# ---- warm-up and timed iterations per model and batch -----------------------
# Chosen so that one pass of the ORT side over the whole table takes under half
# a minute on 2 cores and every timed window is at least ~0.2 s (medians of >= 5
# runs); with BENCH_REPEAT=3 and qlens at the target the table takes ~3 minutes.
plan() {  # model batch -> "warmup iters"
    case $1:$2 in
        fmnist:1) echo "20 200" ;;
        fmnist:*) echo "5 50" ;;
        resnet18:1) echo "3 20" ;;
        resnet18:*) echo "1 5" ;;
        mobilenet_v2:1) echo "5 40" ;;
        mobilenet_v2:*) echo "2 8" ;;
        *) echo "3 10" ;;
    esac
}

# ---- helpers -----------------------------------------------------------------
json_get() {  # json-line key -> value ("" when absent)
    printf '%s\n' "$1" | awk -v k="$2" '{
        if (match($0, "\"" k "\"[ \t]*:[ \t]*[^,} \t]+")) {
            s = substr($0, RSTART, RLENGTH); sub(/^[^:]*:[ \t]*/, "", s); print s } }'
}

run_side() {  # label cmd... -> the JSON line on stdout, or nothing on failure
    local label=$1 out err rc
    shift
    err=$(mktemp)
    out=$(timeout "$BENCH_TIMEOUT" "$@" 2>"$err")
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "run.sh: $label failed (exit $rc): $(head -c 300 "$err" | tr '\n' ' ')" >&2
        rm -f "$err"
        return 1
    fi
    rm -f "$err"
    printf '%s\n' "$out" | grep '^{' | tail -n 1
}

best() {  # json-line json-line -> the one with the lower median_ms (either may be "")
    if [ -z "$1" ]; then echo "$2"; return; fi
    if [ -z "$2" ]; then echo "$1"; return; fi
    if awk -v a="$(json_get "$1" median_ms)" -v b="$(json_get "$2" median_ms)" \
        'BEGIN { exit !(b + 0 < a + 0) }'; then echo "$2"; else echo "$1"; fi
}

# ---- the table ----------------------------------------------------------------
HDR=(model threads batch "qlens ms" "ORT ms" "ratio" "qlens MB" "ORT MB" "RSS ratio" "out_sum")
if [ $FORMAT = md ]; then
    printf '| %s ' "${HDR[@]}"; echo '|'
    printf '|%s' '---' '--:' '--:' '--:' '--:' '--:' '--:' '--:' '--:' '---'; echo '|'
else
    printf '%-13s %7s %5s %10s %10s %6s %9s %8s %9s  %s\n' "${HDR[@]}"
fi

ort_fail=0 rows=0 rows_q=0 rows_ok=0
for m in $MODELS; do
    model=$(model_path "$m")
    for t in $THREADS; do
        for b in $BATCHES; do
            input=$(input_path "$m" "$b")
            read -r warm iters <<<"$(plan "$m" "$b")"
            iters=$(awk -v n="$iters" -v s="$BENCH_SCALE" \
                'BEGIN { v = int(n * s + 0.5); print (v < 1 ? 1 : v) }')
            opts=(--threads "$t" --warmup "$warm" --iters "$iters")
            rows=$((rows + 1))
            q='' o='' qna=n/a ona=n/a
            if [ ! -f "$model" ]; then
                echo "run.sh: $model is missing; row $m/$t/$b skipped" >&2
            else
                qfail=0 ofail=0
                for ((r = 1; r <= BENCH_REPEAT; r++)); do
                    if [ -n "$QLENS_BENCH" ] && [ $qfail = 0 ]; then
                        j=$(run_side "qlens-bench $m t=$t b=$b" \
                            "$QLENS_BENCH" "$model" "$input" "${opts[@]}") || j=
                        if [ -n "$j" ]; then q=$(best "$q" "$j"); else qfail=1; fi
                    fi
                    if [ $ofail = 0 ]; then
                        j=$(run_side "ort_run.js $m t=$t b=$b" "$NODE" \
                            "$BENCH_DIR/ort_run.js" "$model" "$input" "${opts[@]}") || j=
                        if [ -n "$j" ]; then o=$(best "$o" "$j"); else ofail=1; fi
                    fi
                done
                # a side that failed on any run counts as failed for the row
                [ $qfail = 0 ] || { q=; qna=fail; }
                [ $ofail = 0 ] || { o=; ona=fail; ort_fail=1; }
            fi
            row=$(awk -v m="$m" -v t="$t" -v b="$b" -v fmt="$FORMAT" -v qna="$qna" -v ona="$ona" \
                -v hq="$([ -n "$q" ] && echo 1 || echo 0)" \
                -v ho="$([ -n "$o" ] && echo 1 || echo 0)" \
                -v qms="$(json_get "$q" median_ms)" -v oms="$(json_get "$o" median_ms)" \
                -v qkb="$(json_get "$q" peak_rss_kb)" -v okb="$(json_get "$o" peak_rss_kb)" \
                -v qs="$(json_get "$q" out_sum)" -v os="$(json_get "$o" out_sum)" '
                function ms(x) { return x < 10 ? sprintf("%.3f", x) : sprintf("%.1f", x) }
                function abs(x) { return x < 0 ? -x : x }
                BEGIN {
                    na = "n/a"
                    c[1] = m; c[2] = t; c[3] = b
                    c[4] = hq ? ms(qms) : qna; c[5] = ho ? ms(oms) : ona
                    c[6] = hq && ho && oms > 0 ? sprintf("%.2f", qms / oms) : na
                    c[7] = hq ? sprintf("%.1f", qkb / 1024) : qna
                    c[8] = ho ? sprintf("%.1f", okb / 1024) : ona
                    c[9] = hq && ho && okb > 0 ? sprintf("%.2f", qkb / okb) : na
                    # out_sum cross-check: float32, different summation orders
                    big = abs(qs) > abs(os) ? abs(qs) : abs(os)
                    c[10] = !(hq && ho) ? na : \
                        (abs(qs - os) <= 1e-3 * big + 1e-4 ? "ok" : "DIFF " qs " vs " os)
                    status = !(hq && ho) ? "" : \
                        (qms / oms <= 1.3 && qkb / okb <= 1.5 ? "met" : "missed")
                    if (fmt == "md") {
                        for (i = 1; i <= 10; i++) printf "| %s ", c[i]; printf "|"
                    } else {
                        printf "%-13s %7s %5s %10s %10s %6s %9s %8s %9s  %s", \
                            c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
                    }
                    printf "\t%s\n", status
                }')
            printf '%s\n' "${row%%$'\t'*}"
            case ${row##*$'\t'} in
                met) rows_q=$((rows_q + 1)); rows_ok=$((rows_ok + 1)) ;;
                missed) rows_q=$((rows_q + 1)) ;;
            esac
        done
    done
done

echo
echo "targets (qlens/ORT time ratio <= 1.3 and peak RSS ratio <= 1.5): met on" \
     "$rows_ok of $rows_q compared rows ($rows rows, $((rows - rows_q)) without both sides)"
exit $ort_fail
