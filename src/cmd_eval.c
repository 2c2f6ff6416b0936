/* `qlens eval`: runs the float model over a dataset; top-1 accuracy with
 * labels, and throughput. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine/evaluate.h"
#include "engine/qsim.h"
#include "progress.h"

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
            "  -h, --help        show this help\n");
}

static bool on_progress(void *user, int64_t done, int64_t total)
{
    (void)total;
    progress_update(user, done);
    return true;
}

static void json_metric(cJSON *o, const char *key, double v, int have)
{
    if (have && isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

/* Float vs fake-quant under a config. */
static int eval_quant(ql_model *m, const char *config, const ql_dataset *d,
                      const int64_t *labels, int64_t n_labels, long batch, long threads,
                      int json)
{
    ql_error err = {{0}};
    ql_qconfig *cfg = NULL;
    ql_qnet *q = NULL;
    ql_qsim *sim = NULL;
    ql_metrics mt;
    double secs = 0;
    int rc = 1;
    progress bar;
    if (ql_qconfig_load(config, &cfg, &err) != QL_OK || ql_qnet_build(m->graph, &q, &err) != QL_OK ||
        ql_qconfig_check(cfg, m, q, config, &err) != QL_OK)
        goto fail;
    if (ql_qsim_build(q, cfg, &sim, &err) != QL_OK) {
        ql_fail_prefix(&err, QL_ERR_ARG, "%s", config);
        goto fail;
    }
    progress_start(&bar, "eval", d->n);
    ql_eval_opts eo = {.batch = batch, .n_threads = (int)threads, .progress = on_progress,
                       .progress_user = &bar};
    ql_status st = ql_eval_compare(m, &sim->plan, d, labels, n_labels, &eo, &mt, &secs, &err);
    progress_finish(&bar);
    if (st != QL_OK)
        goto fail;
    double n = (double)mt.n, sq = ql_metrics_sqnr_db(&mt);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", m->path);
        cJSON_AddStringToObject(o, "config", config);
        cJSON_AddNumberToObject(o, "n", n);
        json_metric(o, "top1_float", (double)mt.correct_ref / n, labels != NULL);
        json_metric(o, "top1_quant", (double)mt.correct_q / n, labels != NULL);
        cJSON_AddNumberToObject(o, "agree", ql_metrics_agree(&mt));
        cJSON_AddNumberToObject(o, "cosine", ql_metrics_cosine(&mt));
        json_metric(o, "sqnr_db", sq, 1);
        cJSON_AddNumberToObject(o, "mse", ql_metrics_mse(&mt));
        cJSON_AddNumberToObject(o, "max_abs", mt.max_abs);
        cJSON_AddNumberToObject(o, "seconds", secs);
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("model:       %s\n", m->path);
        printf("config:      %s\n", config);
        printf("samples:     %lld\n", (long long)mt.n);
        if (labels) {
            printf("top-1 float: %.4f (%lld/%lld)\n", (double)mt.correct_ref / n,
                   (long long)mt.correct_ref, (long long)mt.n);
            printf("top-1 quant: %.4f (%lld/%lld)\n", (double)mt.correct_q / n,
                   (long long)mt.correct_q, (long long)mt.n);
        }
        printf("agreement:   %.4f\n", ql_metrics_agree(&mt));
        printf("cosine:      %.6f\n", ql_metrics_cosine(&mt));
        printf("SQNR:        %.2f dB\n", sq);
        printf("MSE:         %.6g (max abs %.6g)\n", ql_metrics_mse(&mt), mt.max_abs);
        printf("time:        %.3f s\n", secs);
    }
    rc = 0;
    goto done;
fail:
    cli_error("eval", "%s", err.msg);
done:
    ql_qsim_free(sim);
    ql_qnet_free(q);
    ql_qconfig_free(cfg);
    return rc;
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
    const char *data = NULL, *labels_path = NULL, *config = NULL;
    long limit = 0, batch = 0, threads = 0;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:l:c:n:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'l': labels_path = optarg; break;
        case 'c': config = optarg; break;
        case 'n':
            if (cli_parse_int("eval", "--limit", optarg, 1, 1L << 40, &limit))
                return 2;
            break;
        case 'b':
            if (cli_parse_int("eval", "--batch", optarg, 1, 1 << 20, &batch))
                return 2;
            break;
        case 't':
            if (cli_parse_int("eval", "--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
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

    int rc = 1;
    ql_error err = {{0}};
    ql_model *m = NULL;
    ql_dataset *d = NULL;
    int64_t *labels = NULL, n_labels = 0;
    ql_eval_result res = {0};
    progress bar;

    if (ql_model_load(argv[optind], &m, &err) != QL_OK)
        goto fail;
    if (cli_load_data(m, data, labels_path, limit, &d, &labels, &n_labels, &err) != QL_OK)
        goto fail;
    if (config) {
        rc = eval_quant(m, config, d, labels, n_labels, batch, threads, json);
        goto done;
    }
    progress_start(&bar, "eval", d->n);
    ql_eval_opts eo = {.batch = batch, .n_threads = (int)threads, .progress = on_progress,
                       .progress_user = &bar};
    ql_status st = ql_eval_float(m, d, labels, n_labels, &eo, &res, &err);
    progress_finish(&bar);
    if (st != QL_OK)
        goto fail;
    if (labels)
        for (int64_t i = 0; i < n_labels; i++)
            if (labels[i] >= res.n_classes) {
                ql_fail(&err, QL_ERR_DATA, "%s: label %lld is %lld but the model has %lld classes",
                        labels_path, (long long)i, (long long)labels[i], (long long)res.n_classes);
                goto fail;
            }

    double top1 = labels ? (double)res.correct / (double)res.n : 0.0;
    double sps = res.seconds > 0 ? (double)res.n / res.seconds : 0.0;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", m->path);
        cJSON_AddStringToObject(o, "data", data);
        cJSON_AddNumberToObject(o, "n", (double)res.n);
        if (labels) {
            cJSON_AddNumberToObject(o, "correct", (double)res.correct);
            cJSON_AddNumberToObject(o, "top1_float", top1);
        } else {
            cJSON_AddNullToObject(o, "correct");
            cJSON_AddNullToObject(o, "top1_float");
        }
        cJSON_AddNumberToObject(o, "batch", (double)res.batch);
        cJSON_AddNumberToObject(o, "threads", res.threads);
        cJSON_AddNumberToObject(o, "seconds", res.seconds);
        cJSON_AddNumberToObject(o, "samples_per_second", sps);
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("model:      %s\n", m->path);
        printf("samples:    %lld (batch %lld, %d threads)\n", (long long)res.n,
               (long long)res.batch, res.threads);
        if (labels)
            printf("top-1:      %.4f (%lld/%lld correct)\n", top1, (long long)res.correct,
                   (long long)res.n);
        printf("time:       %.3f s (%.1f samples/s)\n", res.seconds, sps);
    }
    rc = 0;
    goto done;
fail:
    cli_error("eval", "%s", err.msg);
done:
    ql_eval_result_clear(&res);
    free(labels);
    ql_dataset_free(d);
    ql_model_free(m);
    return rc;
}
