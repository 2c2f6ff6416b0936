/* `qlens sensitivity`: per-layer sensitivity of a quantized model, printed
 * worst first and optionally written as CSV; Ctrl-C keeps the rows done. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine/sensitivity.h"

static void sensitivity_usage(FILE *f)
{
    fprintf(f,
            "Usage: qlens sensitivity MODEL.onnx --data D --config C [--labels L]\n"
            "                         [--mode M] [--metric S] [--limit N] [--threads T]\n"
            "                         [--batch B] [--cache-mb MB] [--layer NAME]\n"
            "                         [-o TABLE.csv] [--json]\n\n"
            "Measures, layer by layer, how far the model's outputs move from the float\n"
            "reference, and prints the layers worst first.\n\n"
            "  -d, --data D        samples (.npy folder, batched .npy, IDX)\n"
            "  -c, --config C      quant config from 'qlens calibrate'\n"
            "  -l, --labels L      labels, for top-1 accuracy\n"
            "  -m, --mode M        single (only this layer quantized, default), all-but\n"
            "                      (everything but this layer), weights, activations\n"
            "  -s, --metric S      sort by cosine (default), mse, sqnr_db, max_abs,\n"
            "                      top1_agree, top1, local_sqnr_db\n"
            "  -n, --limit N       use only the first N samples\n"
            "  -t, --threads T     worker threads (default: number of cores)\n"
            "  -b, --batch B       batch size (default 32)\n"
            "      --cache-mb MB   activation cache budget (default 1024)\n"
            "      --layer NAME    analyse only this layer\n"
            "  -o, --output FILE   write the table as CSV\n"
            "      --json          print one JSON object instead of the table\n"
            "  -h, --help          show this help\n");
}

typedef struct sens_progress {
    progress bar;
} sens_progress;

static bool on_progress(void *user, int64_t done, int64_t total)
{
    sens_progress *p = user;
    p->bar.total = total > 0 ? total : 1;
    progress_update(&p->bar, done);
    return !cli_cancel_flag;
}

static void json_num(cJSON *o, const char *key, double v, int have)
{
    if (have && isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

static int print_json(const ql_sens_table *t, const char *model)
{
    cJSON *o = cJSON_CreateObject(), *rows = cJSON_CreateArray();
    if (!o || !rows) {
        cJSON_Delete(o);
        cJSON_Delete(rows);
        return -1;
    }
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "mode", ql_sens_mode_name(t->mode));
    cJSON_AddNumberToObject(o, "samples", (double)t->samples);
    cJSON_AddBoolToObject(o, "partial", t->partial);
    for (int i = 0; i < t->n; i++) {
        const ql_sens_row *r = &t->rows[i];
        cJSON *e = cJSON_CreateObject();
        if (!e)
            break;
        cJSON_AddStringToObject(e, "layer", r->name);
        cJSON_AddStringToObject(e, "op", r->op);
        cJSON_AddStringToObject(e, "precision", ql_prec_name(r->precision));
        for (int k = 0; k < QL_SM_COUNT; k++)
            json_num(e, ql_sens_metric_name((ql_sens_metric)k),
                     ql_sens_row_metric(r, (ql_sens_metric)k), r->m.n > 0);
        json_num(e, "weight_share", r->weight_share, r->m.n > 0);
        cJSON_AddBoolToObject(e, "done", r->done);
        cJSON_AddItemToArray(rows, e);
    }
    cJSON_AddItemToObject(o, "rows", rows);
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    if (!s)
        return -1;
    printf("%s\n", s);
    free(s);
    return 0;
}

static void fmt(char *buf, size_t n, const char *f, double v, bool have)
{
    if (!have || isnan(v))
        snprintf(buf, n, "-");
    else if (isinf(v))
        snprintf(buf, n, v > 0 ? "inf" : "-inf");
    else
        snprintf(buf, n, f, v);
}

static void print_table(const ql_sens_table *t)
{
    printf("%-4s %-32s %-18s %-5s %10s %9s %8s %8s %9s %7s\n", "rank", "layer", "op", "prec",
           "cosine", "sqnr_db", "agree", "top1", "local_db", "w_share");
    for (int i = 0; i < t->n; i++) {
        const ql_sens_row *r = &t->rows[i];
        bool have = r->m.n > 0;
        char c[32], s[32], a[32], t1[32], l[32], w[32];
        fmt(c, sizeof c, "%.6f", ql_sens_row_metric(r, QL_SM_COSINE), have);
        fmt(s, sizeof s, "%.2f", ql_sens_row_metric(r, QL_SM_SQNR), have);
        fmt(a, sizeof a, "%.4f", ql_sens_row_metric(r, QL_SM_TOP1_AGREE), have);
        fmt(t1, sizeof t1, "%.4f", ql_sens_row_metric(r, QL_SM_TOP1), have);
        fmt(l, sizeof l, "%.2f", r->local_sqnr_db, have);
        fmt(w, sizeof w, "%.3f", r->weight_share, have);
        printf("%-4d %-32.32s %-18.18s %-5s %10s %9s %8s %8s %9s %7s%s\n", i + 1, r->name, r->op,
               ql_prec_name(r->precision), c, s, a, t1, l, w, r->done ? "" : "  (not done)");
    }
}

int cmd_sensitivity(int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_CACHE, OPT_LAYER, OPT_BRUTE };
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},     {"config", required_argument, NULL, 'c'},
        {"labels", required_argument, NULL, 'l'},   {"mode", required_argument, NULL, 'm'},
        {"metric", required_argument, NULL, 's'},   {"limit", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},  {"batch", required_argument, NULL, 'b'},
        {"output", required_argument, NULL, 'o'},   {"json", no_argument, NULL, OPT_JSON},
        {"cache-mb", required_argument, NULL, OPT_CACHE},
        {"layer", required_argument, NULL, OPT_LAYER},
        {"brute-force", no_argument, NULL, OPT_BRUTE},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *config = NULL, *labels_path = NULL, *out = NULL, *layer = NULL;
    ql_sens_mode mode = QL_SENS_SINGLE;
    ql_sens_metric metric = QL_SM_COSINE;
    long limit = 0, threads = 0, batch = 0, cache_mb = 0;
    int json = 0, brute = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:c:l:m:s:n:t:b:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'c': config = optarg; break;
        case 'l': labels_path = optarg; break;
        case 'o': out = optarg; break;
        case OPT_JSON: json = 1; break;
        case OPT_LAYER: layer = optarg; break;
        case OPT_BRUTE: brute = 1; break;
        case 'm':
            if (!ql_sens_mode_parse(optarg, &mode)) {
                cli_error("sensitivity",
                          "option --mode: '%s' is not single, all-but, weights or activations",
                          optarg);
                return 2;
            }
            break;
        case 's':
            if (!ql_sens_metric_parse(optarg, &metric)) {
                cli_error("sensitivity", "option --metric: unknown metric '%s'", optarg);
                return 2;
            }
            break;
        case 'n':
            if (cli_parse_int("sensitivity", "--limit", optarg, 1, 1L << 40, &limit))
                return 2;
            break;
        case 't':
            if (cli_parse_int("sensitivity", "--threads", optarg, 1, 256, &threads))
                return 2;
            break;
        case 'b':
            if (cli_parse_int("sensitivity", "--batch", optarg, 1, 1 << 20, &batch))
                return 2;
            break;
        case OPT_CACHE:
            if (cli_parse_int("sensitivity", "--cache-mb", optarg, 1, 1L << 24, &cache_mb))
                return 2;
            break;
        case 'h': sensitivity_usage(stdout); return 0;
        default: sensitivity_usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        cli_error("sensitivity", "expects exactly one MODEL.onnx (see 'qlens sensitivity --help')");
        return 2;
    }
    if (!data || !config) {
        cli_error("sensitivity", "--data and --config are required");
        return 2;
    }
    if (metric == QL_SM_TOP1 && !labels_path) {
        cli_error("sensitivity", "--metric top1 needs --labels");
        return 2;
    }

    int rc = 1;
    ql_error err = {{0}};
    ql_model *m = NULL;
    ql_dataset *d = NULL;
    int64_t *labels = NULL, n_labels = 0;
    ql_qconfig *cfg = NULL;
    ql_qnet *q = NULL;
    ql_sens_table *t = NULL;
    sens_progress sp;
    memset(&sp, 0, sizeof sp);

    if (ql_model_load(argv[optind], &m, &err) != QL_OK)
        goto fail;
    if (ql_qconfig_load(config, &cfg, &err) != QL_OK || ql_qnet_build(m->graph, &q, &err) != QL_OK ||
        ql_qconfig_check(cfg, m, q, config, &err) != QL_OK)
        goto fail;
    if (cli_load_data(m, data, labels_path, limit, &d, &labels, &n_labels, &err) != QL_OK)
        goto fail;
    cli_catch_interrupt();
    progress_start(&sp.bar, "sensitivity", 1);
    ql_sens_opts so = {.mode = mode, .n_threads = (int)threads, .batch = batch,
                       .cache_bytes = (int64_t)cache_mb << 20, .brute_force = brute,
                       .only_layer = layer, .progress = on_progress, .progress_user = &sp,
                       .cancel = &cli_cancel_flag};
    ql_status st = ql_sensitivity(m, q, cfg, d, labels, &so, &t, &err);
    progress_finish(&sp.bar);
    if (st != QL_OK) {
        ql_fail_prefix(&err, st, "%s", config);
        goto fail;
    }
    ql_sens_table_sort(t, metric);
    if (out && ql_sens_table_write_csv(t, out, &err) != QL_OK)
        goto fail;
    if (json ? print_json(t, m->path) != 0 : (print_table(t), 0)) {
        ql_fail(&err, QL_ERR_NOMEM, "out of memory printing the table");
        goto fail;
    }
    if (t->partial) {
        int done = 0;
        for (int i = 0; i < t->n; i++)
            done += t->rows[i].done;
        fprintf(stderr, "qlens sensitivity: interrupted: %d of %d layers done%s\n", done, t->n,
                out ? " (the table marks the rest done=0)" : "");
        rc = 130;
    } else {
        rc = 0;
    }
    goto done;
fail:
    cli_error("sensitivity", "%s", err.msg);
done:
    ql_sens_table_free(t);
    ql_qnet_free(q);
    ql_qconfig_free(cfg);
    free(labels);
    ql_dataset_free(d);
    ql_model_free(m);
    return rc;
}
