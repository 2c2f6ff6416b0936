/* `qlens calibrate`: the session lines `load`, [`load config BASE`],
 * [`data calib`], [`load stats`], `calibrate`, [`save stats`] and
 * `save config`; a failed run writes nothing. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "command.h"

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
            "  -h, --help            show this help\n\n"
            "The same as the qlens-script(5) lines: load MODEL; [load config BASE];\n"
            "[data calib D [limit N]]; [load stats S]; calibrate [algo A] ...;\n"
            "[save stats S]; save config FILE.\n");
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
    const char *stats_in = NULL, *stats_out = NULL, *wbits_s = NULL;
    const char *abits_s = NULL;
    long wbits = 0, abits = 0;
    int per_tensor = 0, c;
    cli_run_opts ro = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:o:a:w:c:n:b:t:h", opts, NULL)) != -1) {
        int r = cli_run_opt("calibrate", c, optarg, &ro);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
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
            wbits_s = optarg;
            break;
        case OPT_ABITS:
            if (cli_parse_int("calibrate", "--act-bits", optarg, 8, 16, &abits))
                return 2;
            if (abits != 8 && abits != 16) {
                cli_error("calibrate", "option --act-bits: '%s' is not 8 or 16", optarg);
                return 2;
            }
            abits_s = optarg;
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


    cli_session cs;
    ql_status st;
    int rc = 1;
    double t0 = progress_now();
    if (cli_session_open(&cs, "calibrate", ro.threads, ro.batch, false) != 0)
        goto done;
    /* a bad algorithm is a usage error, told apart before any work */
    if ((algo && cli_check_algo(&cs, "--algo", algo, QLP_KIND_ACTIVATION)) ||
        (walgo && cli_check_algo(&cs, "--weight-algo", walgo, QLP_KIND_WEIGHT))) {
        rc = 2;
        goto done;
    }
    cli_line bl = {0}, dl = {0}, sl = {0}, cl = {0}, ol = {0}, wl = {0};
    if (base)
        cli_words(&bl, "load", "config", base, (const char *)NULL);
    if (data) {
        cli_words(&dl, "data", "calib", data, (const char *)NULL);
        cli_opt(&dl, "limit", ro.limit_s);
    }
    if (stats_in)
        cli_words(&sl, "load", "stats", stats_in, (const char *)NULL);
    cli_words(&cl, "calibrate", (const char *)NULL);
    cli_opt(&cl, "algo", algo);
    cli_opt(&cl, "weight-algo", walgo);
    cli_opt(&cl, "weight-bits", wbits_s);
    cli_opt(&cl, "act-bits", abits_s ? (abits == 16 ? "16" : "8") : NULL);
    if (per_tensor)
        cli_words(&cl, "per-tensor", (const char *)NULL);
    if (stats_out)
        cli_words(&ol, "save", "stats", stats_out, (const char *)NULL);
    cli_words(&wl, "save", "config", out, (const char *)NULL);
    const cli_line *lines[] = {&bl, &dl, &sl, &cl, &ol, &wl};
    if ((st = cli_load(&cs, argv[optind])) != QL_OK)
        goto fail;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        if (lines[i]->n && (st = cli_exec(&cs, lines[i], false)) != QL_OK)
            goto fail;
    cli_phases_finish(&cs.phases);

    const session *s = cs.s;
    const ql_qnet *q = s->cur.model->q;
    const ql_qconfig *cfg = s->cur.cfg;
    int n_w = 0;
    for (int i = 0; i < q->n_layers; i++)
        n_w += q->layers[i].weight_value >= 0 && ql_qnet_layer_prec(q, cfg, i) != QL_PREC_FLOAT;
    fprintf(stderr,
            "qlens calibrate: %lld samples, %d layers (%d weighted), %d encodings "
            "(act %s, weights %s), %.2f s -> %s\n",
            (long long)s->cur.stats->s->samples, q->n_layers, n_w, cfg->n_tensors,
            cfg->defaults.act_algo, cfg->defaults.weight_algo, progress_now() - t0, out);
    rc = 0;
    goto done;
fail:
    rc = cli_fail_rc(st);
done:
    cli_session_close(&cs);
    return rc;
}
