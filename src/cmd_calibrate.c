/* `qlens calibrate`: one statistics pass over calibration data, encodings
 * through the chosen algorithm plugins, and the quant config written
 * atomically. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine/calibrate.h"

static void calibrate_usage(FILE *f)
{
    fprintf(f,
            "Usage: qlens calibrate MODEL.onnx --data D -o CONFIG.json [--algo A]\n"
            "                       [--weight-algo W] [--weight-bits N] [--act-bits N]\n"
            "                       [--per-tensor] [--limit N] [--batch B] [--threads T]\n"
            "                       [--config BASE.json] [--stats-in S] [--stats-out S]\n\n"
            "Collects activation statistics on the calibration samples in D, computes\n"
            "the encoding of every quantizer and writes the quant config. An algorithm\n"
            "is NAME[:key=value,...], e.g. percentile:p=99.99 or adaround:iterations=2000\n"
            "('qlens plugins' lists them).\n\n"
            "  -d, --data D          calibration samples (.npy folder, batched .npy, IDX)\n"
            "  -o, --output FILE     the quant config to write\n"
            "  -a, --algo A          activation algorithm (default kl)\n"
            "  -w, --weight-algo W   weight algorithm (default minmax)\n"
            "      --weight-bits N   weight bits, 2 to 16 (default 8)\n"
            "      --act-bits N      activation bits, 8 or 16 (default 8)\n"
            "      --per-tensor      one weight encoding per tensor (default per channel)\n"
            "  -c, --config BASE     start from BASE's settings and per-layer overrides;\n"
            "                        options given here replace its defaults\n"
            "  -n, --limit N         use only the first N samples\n"
            "  -b, --batch B         batch size (default 32)\n"
            "  -t, --threads T       worker threads (default: number of cores)\n"
            "      --stats-in S      reuse statistics saved by --stats-out (no pass over D\n"
            "                        for activations; D is still needed by adaround)\n"
            "      --stats-out S     save the statistics\n"
            "  -h, --help            show this help\n");
}

int cmd_calibrate(int argc, char **argv)
{
    enum { OPT_WBITS = 256, OPT_ABITS, OPT_PER_TENSOR, OPT_STATS_IN, OPT_STATS_OUT };
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},
        {"output", required_argument, NULL, 'o'},
        {"algo", required_argument, NULL, 'a'},
        {"weight-algo", required_argument, NULL, 'w'},
        {"weight-bits", required_argument, NULL, OPT_WBITS},
        {"act-bits", required_argument, NULL, OPT_ABITS},
        {"per-tensor", no_argument, NULL, OPT_PER_TENSOR},
        {"config", required_argument, NULL, 'c'},
        {"limit", required_argument, NULL, 'n'},
        {"batch", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 't'},
        {"stats-in", required_argument, NULL, OPT_STATS_IN},
        {"stats-out", required_argument, NULL, OPT_STATS_OUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *out = NULL, *algo = NULL, *walgo = NULL, *base = NULL;
    const char *stats_in = NULL, *stats_out = NULL;
    long wbits = 0, abits = 0, limit = 0, batch = 0, threads = 0;
    int per_tensor = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:o:a:w:c:n:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'o': out = optarg; break;
        case 'a': algo = optarg; break;
        case 'w': walgo = optarg; break;
        case 'c': base = optarg; break;
        case OPT_STATS_IN: stats_in = optarg; break;
        case OPT_STATS_OUT: stats_out = optarg; break;
        case OPT_PER_TENSOR: per_tensor = 1; break;
        case OPT_WBITS:
            if (cli_parse_int("calibrate", "--weight-bits", optarg, 2, 16, &wbits))
                return 2;
            break;
        case OPT_ABITS:
            if (cli_parse_int("calibrate", "--act-bits", optarg, 8, 16, &abits))
                return 2;
            if (abits != 8 && abits != 16) {
                cli_error("calibrate", "option --act-bits: '%s' is not 8 or 16", optarg);
                return 2;
            }
            break;
        case 'n':
            if (cli_parse_int("calibrate", "--limit", optarg, 1, 1L << 40, &limit))
                return 2;
            break;
        case 'b':
            if (cli_parse_int("calibrate", "--batch", optarg, 1, 1 << 20, &batch))
                return 2;
            break;
        case 't':
            if (cli_parse_int("calibrate", "--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case 'h': calibrate_usage(stdout); return 0;
        default: calibrate_usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        cli_error("calibrate", "expects exactly one MODEL.onnx (see 'qlens calibrate --help')");
        return 2;
    }
    if (!data && !stats_in) {
        cli_error("calibrate", "--data is required");
        return 2;
    }
    if (!out) {
        cli_error("calibrate", "-o CONFIG.json is required");
        return 2;
    }

    int rc = 1;
    ql_error err = {{0}};
    ql_model *m = NULL;
    ql_dataset *d = NULL;
    ql_plugins *ps = NULL;
    ql_qconfig *cfg = NULL;
    ql_qnet *q = NULL;
    ql_calib_stats *stats = NULL;
    cli_phases phases;
    memset(&phases, 0, sizeof phases);
    double t0 = progress_now();

    if (ql_model_load(argv[optind], &m, &err) != QL_OK)
        goto fail;
    if (ql_plugins_scan(&ps, &err) != QL_OK)
        goto fail;
    if (base) {
        if (ql_qconfig_load(base, &cfg, &err) != QL_OK)
            goto fail;
    } else if (!(cfg = ql_qconfig_new())) {
        ql_fail(&err, QL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (ql_qnet_build(m->graph, &q, &err) != QL_OK)
        goto fail;
    if (base && ql_qconfig_check(cfg, m, q, base, &err) != QL_OK)
        goto fail;
    /* validate and canonicalise the algorithms before any work */
    const char *specs[2] = {algo ? algo : cfg->defaults.act_algo,
                            walgo ? walgo : cfg->defaults.weight_algo};
    char *dst[2] = {cfg->defaults.act_algo, cfg->defaults.weight_algo};
    const qlp_kind kinds[2] = {QLP_KIND_ACTIVATION, QLP_KIND_WEIGHT};
    for (int i = 0; i < 2; i++) {
        ql_algo a;
        char canon[QL_ALGO_MAX];
        if (ql_algo_parse(ps, specs[i], kinds[i], &a, &err) != QL_OK) {
            ql_fail_prefix(&err, QL_ERR_ARG, "%s", i ? "--weight-algo" : "--algo");
            goto fail;
        }
        ql_algo_format(&a, canon, sizeof canon);
        snprintf(dst[i], QL_ALGO_MAX, "%s", canon);
    }
    for (int i = 0; i < cfg->n_layers; i++) {
        ql_qlayer_cfg *L = &cfg->layers[i];
        if ((L->s.mask & QL_QS_ACT_ALGO) &&
            ql_algo_parse(ps, L->s.act_algo, QLP_KIND_ACTIVATION, &(ql_algo){0}, &err) != QL_OK) {
            ql_fail_prefix(&err, QL_ERR_ARG, "%s: layers.\"%s\".act_algo", base, L->name);
            goto fail;
        }
        if ((L->s.mask & QL_QS_WEIGHT_ALGO) &&
            ql_algo_parse(ps, L->s.weight_algo, QLP_KIND_WEIGHT, &(ql_algo){0}, &err) != QL_OK) {
            ql_fail_prefix(&err, QL_ERR_ARG, "%s: layers.\"%s\".weight_algo", base, L->name);
            goto fail;
        }
    }
    if (wbits)
        cfg->defaults.weight_bits = (int)wbits;
    if (abits)
        cfg->defaults.precision = abits == 16 ? QL_PREC_INT16 : QL_PREC_INT8;
    if (per_tensor)
        cfg->defaults.per_channel = false;

    if (data && cli_load_data(m, data, NULL, limit, &d, NULL, NULL, &err) != QL_OK)
        goto fail;
    cli_catch_interrupt();
    ql_calib_opts co = {.n_threads = (int)threads, .batch = batch,
                        .progress = cli_phase_progress, .progress_user = &phases,
                        .log = cli_log, .log_user = "calibrate", .cancel = &cli_cancel_flag};
    if (stats_in) {
        if (ql_calib_stats_load(stats_in, &stats, &err) != QL_OK)
            goto fail;
        if (stats->model_fingerprint != m->fingerprint) {
            ql_fail(&err, QL_ERR_ARG, "%s: the statistics were collected on another model",
                    stats_in);
            goto fail;
        }
    } else if (ql_calib_collect(m, q, d, &co, &stats, &err) != QL_OK) {
        goto fail;
    }
    if (stats_out && ql_calib_stats_save(stats, stats_out, &err) != QL_OK)
        goto fail;
    if (ql_calib_encode(m, q, cfg, stats, ps, d, &co, &err) != QL_OK)
        goto fail;
    cli_phases_finish(&phases);
    if (ql_qconfig_save(cfg, out, &err) != QL_OK)
        goto fail;
    int n_w = 0;
    for (int i = 0; i < q->n_layers; i++)
        n_w += q->layers[i].weight_value >= 0 &&
               ql_qnet_layer_prec(q, cfg, i) != QL_PREC_FLOAT;
    fprintf(stderr,
            "qlens calibrate: %lld samples, %d layers (%d weighted), %d encodings "
            "(act %s, weights %s), %.2f s -> %s\n",
            (long long)stats->samples, q->n_layers, n_w, cfg->n_tensors, cfg->defaults.act_algo,
            cfg->defaults.weight_algo, progress_now() - t0, out);
    rc = 0;
    goto done;
fail:
    cli_phases_finish(&phases);
    cli_error("calibrate", "%s", err.msg);
done:
    ql_calib_stats_free(stats);
    ql_qnet_free(q);
    ql_qconfig_free(cfg);
    ql_plugins_free(ps);
    ql_dataset_free(d);
    ql_model_free(m);
    return rc;
}
