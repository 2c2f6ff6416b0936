/* `qlens eval`: runs the float model over a dataset; top-1 accuracy with
 * labels, and throughput. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine/evaluate.h"
#include "progress.h"

static void eval_usage(FILE *f)
{
    fprintf(f,
            "Usage: qlens eval MODEL.onnx --data D [--labels L] [--limit N] [--batch B]\n"
            "                  [--threads T] [--json]\n\n"
            "Runs the float model on the samples in D and prints top-1 accuracy (with\n"
            "labels) and throughput.\n\n"
            "  -d, --data D      samples: a folder of .npy files, one batched .npy, or an\n"
            "                    IDX file (optionally gzipped)\n"
            "  -l, --labels L    integer class labels (.npy or IDX)\n"
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

int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},   {"labels", required_argument, NULL, 'l'},
        {"limit", required_argument, NULL, 'n'},  {"batch", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *labels_path = NULL;
    long limit = 0, batch = 0, threads = 0;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:l:n:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'l': labels_path = optarg; break;
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
    if (m->graph->n_inputs != 1) {
        ql_fail(&err, QL_ERR_UNSUPPORTED, "%s: eval needs a model with one input (it has %d)",
                m->path, m->graph->n_inputs);
        goto fail;
    }
    if (ql_dataset_load(data, limit, &d, &err) != QL_OK)
        goto fail;
    if (ql_dataset_conform(d, &m->graph->values[m->graph->inputs[0]], &err) != QL_OK)
        goto fail;
    if (labels_path) {
        if (ql_labels_load(labels_path, limit, &labels, &n_labels, &err) != QL_OK)
            goto fail;
        if (n_labels != d->n) {
            ql_fail(&err, QL_ERR_DATA, "%s has %lld labels but %s has %lld samples", labels_path,
                    (long long)n_labels, data, (long long)d->n);
            goto fail;
        }
        for (int64_t i = 0; i < n_labels; i++)
            if (labels[i] < 0) {
                ql_fail(&err, QL_ERR_DATA, "%s: label %lld is negative", labels_path, (long long)i);
                goto fail;
            }
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
