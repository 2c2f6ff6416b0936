/* `qlens eval`: the session lines `load`, `data eval`, then `eval float`,
 * or `load config` and `eval` with a quant config; the text report is the
 * eval command's, --json is made from the session's last eval. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void eval_usage(FILE *f)
{
    fprintf(f,
            "Usage: qlens eval MODEL.onnx --data D [--labels L] [--config C] [--limit N]\n"
            "                  [--batch B] [--threads T] [--json]\n\n"
            "Runs the float model on the samples in D and prints top-1 accuracy (with\n"
            "labels) and throughput. With a quant config, runs the float and the\n"
            "fake-quantized model side by side and compares their outputs.\n\n"
            "  -d, --data D      samples: a folder of .npy files, one batched .npy, or an\n"
            "                    IDX file (optionally gzipped)\n"
            "  -l, --labels L    integer class labels (.npy or IDX)\n"
            "  -c, --config C    quant config from 'qlens calibrate': float vs quantized\n"
            "  -n, --limit N     use only the first N samples\n"
            "  -b, --batch B     batch size (default 32; a fixed-batch model uses its own)\n"
            "  -t, --threads T   worker threads (default: number of cores)\n"
            "      --json        print one JSON object\n"
            "  -h, --help        show this help\n\n"
            "The same as the qlens-script(5) lines: load MODEL; data eval D [labels L]\n"
            "[limit N]; then eval float, or load config C; eval.\n");
}

static int print_json(const session *s, const char *data, const char *config)
{
    const ses_eval *e = &s->cur.last_eval;
    const ql_metrics *m = &e->m;
    double n = (double)m->n;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -1;
    cJSON_AddStringToObject(o, "model", s->cur.model->m->path);
    if (e->float_only) {
        cJSON_AddStringToObject(o, "data", data);
        cJSON_AddNumberToObject(o, "n", n);
        cli_json_number(o, "correct", (double)m->correct_ref, e->labels);
        cli_json_number(o, "top1_float", (double)m->correct_ref / n, e->labels);
        cJSON_AddNumberToObject(o, "batch", (double)e->batch);
        cJSON_AddNumberToObject(o, "threads", e->threads);
        cJSON_AddNumberToObject(o, "seconds", e->seconds);
        cJSON_AddNumberToObject(o, "samples_per_second", e->seconds > 0 ? n / e->seconds : 0.0);
    } else {
        cJSON_AddStringToObject(o, "config", config);
        cJSON_AddNumberToObject(o, "n", n);
        cli_json_number(o, "top1_float", (double)m->correct_ref / n, e->labels);
        cli_json_number(o, "top1_quant", (double)m->correct_q / n, e->labels);
        cJSON_AddNumberToObject(o, "agree", ql_metrics_agree(m));
        cJSON_AddNumberToObject(o, "cosine", ql_metrics_cosine(m));
        cli_json_number(o, "sqnr_db", ql_metrics_sqnr_db(m), 1);
        cJSON_AddNumberToObject(o, "mse", ql_metrics_mse(m));
        cJSON_AddNumberToObject(o, "max_abs", m->max_abs);
        /* each float output alone, in output order */
        const ql_graph *g = s->cur.model->m->graph;
        cJSON *outs = cJSON_AddArrayToObject(o, "outputs");
        for (int j = 0; outs && j < e->n_out; j++) {
            const ql_metrics *om = &e->out[j];
            cJSON *it = om->n > 0 ? cJSON_CreateObject() : NULL;
            if (!it)
                continue;
            cJSON_AddStringToObject(it, "name", g->values[g->outputs[j]].name);
            cJSON_AddNumberToObject(it, "cosine", ql_metrics_cosine(om));
            cli_json_number(it, "sqnr_db", ql_metrics_sqnr_db(om), 1);
            cJSON_AddNumberToObject(it, "mse", ql_metrics_mse(om));
            cJSON_AddNumberToObject(it, "max_abs", om->max_abs);
            cJSON_AddItemToArray(outs, it);
        }
        cJSON_AddNumberToObject(o, "seconds", e->seconds);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        return -1;
    printf("%s\n", text);
    free(text);
    return 0;
}

int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},   {"labels", required_argument, NULL, 'l'},
        {"limit", required_argument, NULL, 'n'},  {"batch", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *labels = NULL, *config = NULL;
    int json = 0, c;
    cli_run_opts ro = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:l:c:n:b:t:h", opts, NULL)) != -1) {
        int r = cli_run_opt("eval", c, optarg, &ro);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        switch (c) {
        case 'd': data = optarg; break;
        case 'l': labels = optarg; break;
        case 'c': config = optarg; break;
        case 'j': json = 1; break;
        case 'h': eval_usage(stdout); return 0;
        default: eval_usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        cli_error("eval", "expects exactly one MODEL.onnx (see 'qlens eval --help')");
        return 2;
    }
    if (!data) {
        cli_error("eval", "--data is required");
        return 2;
    }

    cli_session cs;
    ql_status st;
    int rc = 1;
    if (cli_session_open(&cs, "eval", ro.threads, ro.batch, true) != 0)
        goto done;
    cli_line dl = {0}, cl = {0}, el = {0};
    cli_words(&dl, "data", "eval", data, (const char *)NULL);
    cli_opt(&dl, "labels", labels);
    cli_opt(&dl, "limit", ro.limit_s);
    if (config)
        cli_words(&cl, "load", "config", config, (const char *)NULL);
    cli_words(&el, "eval", config ? NULL : "float", (const char *)NULL);
    if ((st = cli_load(&cs, argv[optind])) != QL_OK || (st = cli_exec(&cs, &dl, false)) != QL_OK ||
        (config && (st = cli_exec(&cs, &cl, false)) != QL_OK))
        goto fail;
    /* settings alone are a valid config (a base for calibrate) but nothing to
     * evaluate: say which file, as for the config's other problems */
    if (config && cs.s->cur.cfg->n_tensors == 0) {
        cli_error("eval", "%s: tensors: the config has no encodings (make them with "
                          "'qlens calibrate')", config);
        goto done;
    }
    if (!json) {
        printf("model:        %s\n", argv[optind]);
        if (config)
            printf("config:       %s\n", config);
    }
    if ((st = cli_exec(&cs, &el, !json)) != QL_OK)
        goto fail;
    if (json && print_json(cs.s, data, config) != 0) {
        cli_error("eval", "out of memory");
        goto done;
    }
    rc = 0;
    goto done;
fail:
    rc = cli_fail_rc(st);
done:
    cli_session_close(&cs);
    return rc;
}
