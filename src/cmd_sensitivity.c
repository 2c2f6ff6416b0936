/* `qlens sensitivity`: the session lines `load`, `load config`, `data eval`,
 * `sensitivity ... keep-partial` and `export csv`; the table is the
 * command's report, --json is made from the session's table. Ctrl-C keeps
 * the rows done (exit status 130); bad option values exit 2. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void sensitivity_usage(FILE *f)
{
    fprintf(f,
            "Usage: qlens sensitivity MODEL.onnx --data D --config C [--labels L]\n"
            "                         [--mode M] [--metric S] [--limit N] [--threads T]\n"
            "                         [--batch B] [--cache-mb MB] [--layer NAME]\n"
            "                         [-o TABLE.csv] [--json]\n"
            "       qlens sensitivity MODEL.onnx --data D --config C --mode cumulative\n"
            "                         [--prefer float|int16] [--steps N] [--rank M]\n"
            "                         [--stats S] [options above]\n\n"
            "Measures, layer by layer, how far the model's outputs move from the float\n"
            "reference, and prints the layers worst first. The cumulative mode ranks\n"
            "the layers so (--rank, default single), sets them to float (or int16) one\n"
            "after another and prints the metrics after each step.\n\n"
            "  -d, --data D        samples (.npy folder, batched .npy, IDX)\n"
            "  -c, --config C      quant config from 'qlens calibrate'\n"
            "  -l, --labels L      labels, for top-1 accuracy\n"
            "  -m, --mode M        single (only this layer quantized, default), all-but\n"
            "                      (the config with this layer float), weights,\n"
            "                      activations, cumulative (the curve)\n"
            "  -s, --metric S      sort by cosine (default), mse, sqnr_db, max_abs,\n"
            "                      top1_agree, top1, local_sqnr_db\n"
            "  -n, --limit N       use only the first N samples\n"
            "  -t, --threads T     worker threads (default: number of cores)\n"
            "  -b, --batch B       batch size (default 32)\n"
            "      --cache-mb MB   activation cache budget (default 1024)\n"
            "      --layer NAME    analyse only this layer\n"
            "      --prefer P      cumulative: set layers to float (default) or int16\n"
            "      --steps N       cumulative: stop after N layers\n"
            "      --rank M        cumulative: the mode whose table ranks the layers\n"
            "      --stats S       cumulative: statistics from 'qlens calibrate --stats-out'\n"
            "                      (default: collected on the samples of --data)\n"
            "  -o, --output FILE   write the table as CSV\n"
            "      --json          print one JSON object instead of the table\n"
            "  -h, --help          show this help\n\n"
            "The same as the qlens-script(5) lines: load MODEL; load config C;\n"
            "data eval D [labels L] [limit N]; sensitivity [mode M] [metric S] ...\n"
            "keep-partial; [export csv FILE]. Cumulative: ...; load stats S (or data\n"
            "calib D; collect stats); sensitivity mode M; curve [prefer P] [steps N];\n"
            "[export csv curve FILE].\n");
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
    /* the results, then the layers not finished (no metrics) */
    for (int i = 0; i < t->n + t->n_pending; i++) {
        const ql_sens_row *r = &t->rows[i];
        bool have = r->done && r->m.n > 0;
        cJSON *e = cJSON_CreateObject();
        if (!e)
            break;
        cJSON_AddStringToObject(e, "layer", r->name);
        cJSON_AddStringToObject(e, "op", r->op);
        cJSON_AddStringToObject(e, "precision", ql_prec_name(r->precision));
        for (int k = 0; k < QL_SM_COUNT; k++)
            cli_json_number(e, ql_sens_metric_name((ql_sens_metric)k),
                            ql_sens_row_metric(r, (ql_sens_metric)k), have);
        cli_json_number(e, "weight_share", r->weight_share, have);
        if (t->mode == QL_SENS_ALL_BUT)
            cJSON_AddBoolToObject(e, "unchanged", r->unchanged);
        cJSON_AddBoolToObject(e, "done", r->done);
        cJSON_AddItemToArray(rows, e);
    }
    cJSON_AddItemToObject(o, "rows", rows);
    return cli_json_print(o);
}

static void curve_metrics_json(cJSON *e, const ql_metrics *m)
{
    bool lab = m->labelled > 0;
    cJSON_AddNumberToObject(e, "cosine", ql_metrics_cosine(m));
    cJSON_AddNumberToObject(e, "mse", ql_metrics_mse(m));
    cli_json_number(e, "sqnr_db", ql_metrics_sqnr_db(m), 1);
    cJSON_AddNumberToObject(e, "max_abs", m->max_abs);
    cJSON_AddNumberToObject(e, "top1_agree", ql_metrics_agree(m));
    cli_json_number(e, "top1", lab ? (double)m->correct_q / (double)m->labelled : 0.0, lab);
}

static int print_curve_json(const ses_curve *x, const char *model)
{
    const ql_curve *c = x->c;
    cJSON *o = cJSON_CreateObject(), *steps = cJSON_CreateArray(), *base = cJSON_CreateObject();
    if (!o || !steps || !base) {
        cJSON_Delete(o);
        cJSON_Delete(steps);
        cJSON_Delete(base);
        return -1;
    }
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "mode", "cumulative");
    cJSON_AddStringToObject(o, "rank", ql_sens_mode_name(c->ranked_mode));
    cJSON_AddStringToObject(o, "metric", ql_sens_metric_name(x->ranked_by));
    cJSON_AddStringToObject(o, "to", ql_prec_name(c->to));
    cJSON_AddNumberToObject(o, "samples", (double)c->samples);
    cJSON_AddBoolToObject(o, "partial", c->partial);
    if (c->base.n > 0) {
        curve_metrics_json(base, &c->base);
        cJSON_AddItemToObject(o, "base", base);
    } else { /* cancelled before the config was measured */
        cJSON_Delete(base);
        cJSON_AddNullToObject(o, "base");
    }
    for (int k = 0; k < c->n_total; k++) {
        const ql_curve_step *s = &c->steps[k];
        cJSON *e = cJSON_CreateObject();
        if (!e)
            break;
        cJSON_AddNumberToObject(e, "step", k + 1);
        cJSON_AddStringToObject(e, "layer", s->name);
        cJSON_AddStringToObject(e, "op", s->op);
        cJSON_AddStringToObject(e, "from", ql_prec_name(s->from));
        cJSON_AddStringToObject(e, "to", ql_prec_name(s->to));
        if (k < c->n)
            curve_metrics_json(e, &s->m);
        cJSON_AddBoolToObject(e, "done", k < c->n);
        cJSON_AddItemToArray(steps, e);
    }
    cJSON_AddItemToObject(o, "steps", steps);
    return cli_json_print(o);
}

int cmd_sensitivity(int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_CACHE, OPT_LAYER, OPT_BRUTE, OPT_PREFER, OPT_STEPS, OPT_RANK,
           OPT_STATS };
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},     {"config", required_argument, NULL, 'c'},
        {"labels", required_argument, NULL, 'l'},   {"mode", required_argument, NULL, 'm'},
        {"metric", required_argument, NULL, 's'},   {"limit", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},  {"batch", required_argument, NULL, 'b'},
        {"output", required_argument, NULL, 'o'},   {"json", no_argument, NULL, OPT_JSON},
        {"cache-mb", required_argument, NULL, OPT_CACHE},
        {"layer", required_argument, NULL, OPT_LAYER},
        {"brute-force", no_argument, NULL, OPT_BRUTE},
        {"prefer", required_argument, NULL, OPT_PREFER},
        {"steps", required_argument, NULL, OPT_STEPS},
        {"rank", required_argument, NULL, OPT_RANK},
        {"stats", required_argument, NULL, OPT_STATS},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *config = NULL, *labels = NULL, *out = NULL, *layer = NULL;
    const char *mode_s = NULL, *metric_s = NULL, *cache_s = NULL;
    const char *prefer = NULL, *steps_s = NULL, *rank_s = NULL, *stats_path = NULL;
    bool cumulative = false;
    ql_sens_mode mode;
    long steps = 0;
    ql_sens_metric metric = QL_SM_COSINE;
    long cache_mb = 0;
    int json = 0, brute = 0, c;
    cli_run_opts ro = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:c:l:m:s:n:t:b:o:h", opts, NULL)) != -1) {
        int r = cli_run_opt("sensitivity", c, optarg, &ro);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        switch (c) {
        case 'd': data = optarg; break;
        case 'c': config = optarg; break;
        case 'l': labels = optarg; break;
        case 'o': out = optarg; break;
        case OPT_JSON: json = 1; break;
        case OPT_LAYER: layer = optarg; break;
        case OPT_BRUTE: brute = 1; break;
        case 'm':
            cumulative = !strcmp(optarg, "cumulative");
            if (!cumulative && !ql_sens_mode_parse(optarg, &mode)) {
                cli_error("sensitivity",
                          "option --mode: '%s' is not single, all-but, weights, activations or "
                          "cumulative",
                          optarg);
                return 2;
            }
            mode_s = cumulative ? NULL : optarg;
            break;
        case OPT_RANK:
            if (!ql_sens_mode_parse(optarg, &mode)) {
                cli_error("sensitivity",
                          "option --rank: '%s' is not single, all-but, weights or activations",
                          optarg);
                return 2;
            }
            rank_s = optarg;
            break;
        case OPT_PREFER:
            if (strcmp(optarg, "int16") != 0 && strcmp(optarg, "float") != 0) {
                cli_error("sensitivity", "option --prefer: '%s' is not float or int16", optarg);
                return 2;
            }
            prefer = optarg;
            break;
        case OPT_STEPS:
            if (cli_parse_int("sensitivity", "--steps", optarg, 1, 1L << 20, &steps))
                return 2;
            steps_s = optarg;
            break;
        case OPT_STATS: stats_path = optarg; break;
        case 's':
            if (!ql_sens_metric_parse(optarg, &metric)) {
                cli_error("sensitivity", "option --metric: unknown metric '%s'", optarg);
                return 2;
            }
            metric_s = optarg;
            break;
        case OPT_CACHE:
            if (cli_parse_int("sensitivity", "--cache-mb", optarg, 1, 1L << 24, &cache_mb))
                return 2;
            cache_s = optarg;
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
    if (metric == QL_SM_TOP1 && !labels) {
        cli_error("sensitivity", "--metric top1 needs --labels");
        return 2;
    }
    if (!cumulative && (prefer || steps_s || rank_s || stats_path)) {
        cli_error("sensitivity", "--prefer, --steps, --rank and --stats go with --mode cumulative");
        return 2;
    }
    if (cumulative && layer) {
        cli_error("sensitivity", "--layer does not go with --mode cumulative");
        return 2;
    }
    if (cumulative)
        mode_s = rank_s;

    cli_session cs;
    ql_status st;
    int rc = 1;
    if (cli_session_open(&cs, "sensitivity", ro.threads, ro.batch, false) != 0)
        goto done;
    cli_line cl = {0}, dl = {0}, sl = {0}, ol = {0}, tl = {0}, tl2 = {0}, kl = {0};
    cli_words(&cl, "load", "config", config, (const char *)NULL);
    cli_words(&dl, "data", "eval", data, (const char *)NULL);
    cli_opt(&dl, "labels", labels);
    cli_opt(&dl, "limit", ro.limit_s);
    cli_words(&sl, "sensitivity", (const char *)NULL);
    cli_opt(&sl, "mode", mode_s);
    cli_opt(&sl, "metric", metric_s);
    cli_opt(&sl, "layer", layer);
    cli_opt(&sl, "cache-mb", cache_s);
    if (brute)
        cli_words(&sl, "brute-force", (const char *)NULL);
    if (!cumulative)
        cli_words(&sl, "keep-partial", (const char *)NULL);
    if (out)
        cli_words(&ol, "export", "csv", out, (const char *)NULL);
    if (cumulative) {
        /* the statistics the raised layers' encodings come from */
        if (stats_path) {
            cli_words(&tl, "load", "stats", stats_path, (const char *)NULL);
        } else {
            cli_words(&tl, "data", "calib", data, (const char *)NULL);
            cli_opt(&tl, "limit", ro.limit_s);
            cli_words(&tl2, "collect", "stats", (const char *)NULL);
        }
        cli_words(&kl, "curve", (const char *)NULL);
        cli_opt(&kl, "prefer", prefer);
        cli_opt(&kl, "steps", steps_s);
        cli_words(&kl, "keep-partial", (const char *)NULL);
        if (out) {
            ol.n = 0;
            cli_words(&ol, "export", "csv", "curve", out, (const char *)NULL);
        }
    }
    if ((st = cli_load(&cs, argv[optind])) != QL_OK)
        goto fail;
    if (layer && ql_qnet_find_layer(cs.s->cur.model->q, layer) < 0) {
        cli_error("sensitivity", "option --layer: '%s': no such layer in %s", layer, argv[optind]);
        rc = 2;
        goto done;
    }
    if ((st = cli_exec(&cs, &cl, false)) != QL_OK)
        goto fail;
    /* settings alone are a valid config but nothing to analyse: say which
     * file, as for the config's other problems */
    if (cs.s->cur.cfg->n_tensors == 0) {
        cli_error("sensitivity", "%s: tensors: the config has no encodings (make them with "
                                 "'qlens calibrate')", config);
        goto done;
    }
    if (cumulative) {
        if ((st = cli_exec(&cs, &dl, false)) != QL_OK || (st = cli_exec(&cs, &tl, false)) != QL_OK ||
            (tl2.n && (st = cli_exec(&cs, &tl2, false)) != QL_OK) ||
            (st = cli_exec(&cs, &sl, false)) != QL_OK ||
            (st = cli_exec(&cs, &kl, !json)) != QL_OK ||
            (out && (st = cli_exec(&cs, &ol, false)) != QL_OK))
            goto fail;
        cli_phases_finish(&cs.phases);
        const ql_curve *cv = cs.s->cur.curve->c;
        if (json && print_curve_json(cs.s->cur.curve, cs.s->cur.model->m->path) != 0) {
            cli_error("sensitivity", "out of memory printing the curve");
            goto done;
        }
        rc = 0;
        if (cv->partial) {
            fprintf(stderr, "qlens sensitivity: interrupted: %d of %d steps done%s\n", cv->n,
                    cv->n_total, out ? " (the CSV lists the rest with done=0)" : "");
            rc = 130;
        }
        goto done;
    }
    if ((st = cli_exec(&cs, &dl, false)) != QL_OK || (st = cli_exec(&cs, &sl, !json)) != QL_OK ||
        (out && (st = cli_exec(&cs, &ol, false)) != QL_OK))
        goto fail;
    cli_phases_finish(&cs.phases);
    const ql_sens_table *t = cs.s->cur.sens->t;
    if (json && print_json(t, cs.s->cur.model->m->path) != 0) {
        cli_error("sensitivity", "out of memory printing the table");
        goto done;
    }
    if (t->partial) {
        fprintf(stderr, "qlens sensitivity: interrupted: %d of %d layers done%s\n", t->n,
                t->n + t->n_pending, out ? " (the CSV lists the rest with done=0)" : "");
        rc = 130;
    } else {
        rc = 0;
    }
    goto done;
fail:
    rc = cli_fail_rc(st);
done:
    cli_session_close(&cs);
    return rc;
}
