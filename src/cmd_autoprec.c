/* `qlens autoprec`: raise the most sensitive layers to int16 or float until
 * the model meets a target, and write the config with those overrides. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine/sensitivity.h"

/* Nash marches; until march data files exist every one costs a layer by
 * its MACs. */
static const char *const marches[] = {"nash-b-lite", "nash-b", "nash-b-plus", "nash-e",
                                      "nash-m",      "nash-h", "nash-p"};

static void autoprec_usage(FILE *f)
{
    fprintf(f,
            "Usage: qlens autoprec MODEL.onnx --data D --config C --target METRIC>=VALUE\n"
            "                      -o NEW.json [--labels L] [--prefer int16|float]\n"
            "                      [--march M] [--stats S] [--limit N] [--threads T]\n"
            "                      [--batch B]\n\n"
            "Ranks the layers by how much the model gains when each alone stays float\n"
            "(all-but sensitivity) and raises them one at a time until the target holds.\n"
            "Targets: cosine, sqnr_db, top1_agree, top1 (fractions), mse, max_abs with\n"
            ">= or <=, and top1_drop<=P (percentage points; needs --labels).\n\n"
            "  -d, --data D        samples (.npy folder, batched .npy, IDX)\n"
            "  -c, --config C      quant config from 'qlens calibrate'\n"
            "  -T, --target T      e.g. cosine>=0.999 or top1_drop<=0.2\n"
            "  -o, --output FILE   the new config\n"
            "  -l, --labels L      labels (top1 and top1_drop targets)\n"
            "      --prefer P      raise int8 layers to int16 (default) or float\n"
            "      --march M       rank by gain per cost on M (nash-b-lite, nash-b,\n"
            "                      nash-b-plus, nash-e, nash-m, nash-h, nash-p)\n"
            "      --stats S       statistics from 'qlens calibrate --stats-out'\n"
            "                      (default: collected again from D)\n"
            "  -n, --limit N       use only the first N samples\n"
            "  -t, --threads T     worker threads (default: number of cores)\n"
            "  -b, --batch B       batch size (default 32)\n"
            "  -h, --help          show this help\n");
}

static bool on_progress(void *user, int64_t done, int64_t total)
{
    progress *p = user;
    p->total = total > 0 ? total : 1;
    progress_update(p, done);
    return !cli_cancel_flag;
}

int cmd_autoprec(int argc, char **argv)
{
    enum { OPT_PREFER = 256, OPT_MARCH, OPT_STATS };
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},    {"config", required_argument, NULL, 'c'},
        {"target", required_argument, NULL, 'T'},  {"output", required_argument, NULL, 'o'},
        {"labels", required_argument, NULL, 'l'},  {"prefer", required_argument, NULL, OPT_PREFER},
        {"march", required_argument, NULL, OPT_MARCH},
        {"stats", required_argument, NULL, OPT_STATS},
        {"limit", required_argument, NULL, 'n'},   {"threads", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *config = NULL, *target_s = NULL, *out = NULL, *labels_path = NULL;
    const char *march = NULL, *stats_path = NULL;
    bool prefer_int16 = true;
    long limit = 0, threads = 0, batch = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:c:T:o:l:n:t:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'c': config = optarg; break;
        case 'T': target_s = optarg; break;
        case 'o': out = optarg; break;
        case 'l': labels_path = optarg; break;
        case OPT_STATS: stats_path = optarg; break;
        case OPT_PREFER:
            if (strcmp(optarg, "int16") && strcmp(optarg, "float")) {
                cli_error("autoprec", "option --prefer: '%s' is not int16 or float", optarg);
                return 2;
            }
            prefer_int16 = strcmp(optarg, "int16") == 0;
            break;
        case OPT_MARCH:
            march = optarg;
            for (size_t i = 0; i < sizeof marches / sizeof marches[0] && march; i++)
                if (strcmp(optarg, marches[i]) == 0)
                    march = NULL;
            if (march) {
                cli_error("autoprec", "option --march: unknown march '%s'", optarg);
                return 2;
            }
            march = optarg;
            break;
        case 'n':
            if (cli_parse_int("autoprec", "--limit", optarg, 1, 1L << 40, &limit))
                return 2;
            break;
        case 't':
            if (cli_parse_int("autoprec", "--threads", optarg, 1, 256, &threads))
                return 2;
            break;
        case 'b':
            if (cli_parse_int("autoprec", "--batch", optarg, 1, 1 << 20, &batch))
                return 2;
            break;
        case 'h': autoprec_usage(stdout); return 0;
        default: autoprec_usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        cli_error("autoprec", "expects exactly one MODEL.onnx (see 'qlens autoprec --help')");
        return 2;
    }
    if (!data || !config || !target_s || !out) {
        cli_error("autoprec", "--data, --config, --target and -o are required");
        return 2;
    }

    int rc = 1;
    ql_error err = {{0}};
    ql_target target;
    ql_model *m = NULL;
    ql_dataset *d = NULL;
    int64_t *labels = NULL, n_labels = 0;
    ql_qconfig *cfg = NULL;
    ql_qnet *q = NULL;
    ql_plugins *ps = NULL;
    ql_calib_stats *stats = NULL;
    ql_autoprec_result res = {0};
    progress bar;
    memset(&bar, 0, sizeof bar);

    if (ql_target_parse(target_s, &target, &err) != QL_OK)
        goto fail;
    if ((!strcmp(target.metric, "top1") || !strcmp(target.metric, "top1_drop")) && !labels_path) {
        ql_fail(&err, QL_ERR_ARG, "target %s needs --labels", target.metric);
        goto fail;
    }
    if (ql_model_load(argv[optind], &m, &err) != QL_OK || ql_plugins_scan(&ps, &err) != QL_OK)
        goto fail;
    if (ql_qconfig_load(config, &cfg, &err) != QL_OK || ql_qnet_build(m->graph, &q, &err) != QL_OK ||
        ql_qconfig_check(cfg, m, q, config, &err) != QL_OK)
        goto fail;
    if (cli_load_data(m, data, labels_path, limit, &d, &labels, &n_labels, &err) != QL_OK)
        goto fail;
    cli_catch_interrupt();
    if (stats_path) {
        if (ql_calib_stats_load(stats_path, &stats, &err) != QL_OK)
            goto fail;
        if (stats->model_fingerprint != m->fingerprint) {
            ql_fail(&err, QL_ERR_ARG, "%s: the statistics were collected on another model",
                    stats_path);
            goto fail;
        }
    } else {
        ql_calib_opts co = {.n_threads = (int)threads, .batch = batch, .cancel = &cli_cancel_flag};
        if (ql_calib_collect(m, q, d, &co, &stats, &err) != QL_OK)
            goto fail;
    }
    progress_start(&bar, "all-but sensitivity", 1);
    ql_sens_opts so = {.mode = QL_SENS_ALL_BUT, .n_threads = (int)threads, .batch = batch,
                       .progress = on_progress, .progress_user = &bar,
                       .cancel = &cli_cancel_flag, .march = march};
    ql_status st = ql_autoprec(m, q, cfg, stats, ps, d, labels, &target, prefer_int16, &so, &res,
                               &err);
    progress_finish(&bar);
    if (st != QL_OK)
        goto fail;
    printf("before: %s %.6g\n", target.metric, ql_target_value(&target, &res.before));
    for (int i = 0; i < res.n_steps; i++) {
        const ql_autoprec_step *s = &res.steps[i];
        printf("step %d: %-32s %s -> %-5s %s %.6g\n", i + 1, q->layers[s->layer].name,
               ql_prec_name(s->from), ql_prec_name(s->to), target.metric,
               ql_target_value(&target, &s->after));
    }
    if (ql_qconfig_save(cfg, out, &err) != QL_OK)
        goto fail;
    fprintf(stderr, "qlens autoprec: target %s %s after %d step%s -> %s\n", target_s,
            res.met ? "met" : "NOT met", res.n_steps, res.n_steps == 1 ? "" : "s", out);
    rc = res.met ? 0 : 3;
    goto done;
fail:
    cli_error("autoprec", "%s", err.msg);
    if (cli_cancel_flag)
        rc = 130;
done:
    ql_autoprec_result_clear(&res);
    ql_calib_stats_free(stats);
    ql_plugins_free(ps);
    ql_qnet_free(q);
    ql_qconfig_free(cfg);
    free(labels);
    ql_dataset_free(d);
    ql_model_free(m);
    return rc;
}
