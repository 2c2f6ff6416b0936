/* Benchmark driver: times qlens float inference on one input, with the same
 * protocol and output line as bench/ort_run.js, so bench/run.sh can compare
 * the two side by side. */
#include <stdio.h>
#include <stdlib.h>
#ifdef __GLIBC__ /* defined by stdio.h */
#include <malloc.h>
#endif
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "engine/dataset.h"
#include "engine/exec.h"
#include "engine/onnx.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* --profile: per-node wall time, from one observer call to the next (the
 * observer runs right after each node, so fusion is off in this mode).
 * --profile-fused watches only the values no Relu/Clip/Add reads alone, so
 * the executor fuses as it does unwatched: a fused group's time shows on
 * its last node, and nodes inside a group read 0. */
typedef struct prof {
    double last, *ms;
    int prev, fused;
} prof;

/* --profile-fused: the values a fusable consumer reads alone go unwatched */
static char *prof_watch(const ql_graph *g)
{
    char *w = malloc((size_t)g->n_values);
    if (!w)
        return NULL;
    for (int v = 0; v < g->n_values; v++)
        w[v] = 1;
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        if (strcmp(n->op_type, "Relu") && strcmp(n->op_type, "Clip") && strcmp(n->op_type, "Add"))
            continue;
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v >= 0 && g->values[v].n_consumers == 1 && !g->values[v].is_output)
                w[v] = 0;
        }
    }
    return w;
}

static bool prof_observe(void *user, const ql_graph *g, int node, int value, const ql_tensor *t)
{
    prof *p = user;
    (void)g, (void)value, (void)t;
    double now = now_ms();
    if (node != p->prev)
        p->ms[node] += now - p->last;
    p->prev = node;
    p->last = now_ms();
    return true;
}

static void prof_report(const ql_graph *g, const prof *p, int iters)
{
    double total = 0;
    for (int i = 0; i < g->n_nodes; i++)
        total += p->ms[i];
    fprintf(stderr, "per-node ms (mean of %d runs, %s), total %.3f\n", iters,
            p->fused ? "fused" : "unfused", total / iters);
    for (int i = 0; i < g->n_nodes; i++)
        fprintf(stderr, "%4d %-16s %-40s %9.4f %5.1f%%\n", i, g->nodes[i].op_type,
                g->nodes[i].name, p->ms[i] / iters, 100.0 * p->ms[i] / (total > 0 ? total : 1));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *model = NULL, *input = NULL;
    int threads = 1, warmup = 3, iters = 10, profile = 0;
#ifdef __GLIBC__
    /* Keep freed activation buffers in the heap for the next run, as ORT's
     * arena does: by default glibc maps every block over 128 KiB afresh and
     * unmaps it on free, so each inference pays page faults and zeroing for
     * all its activations (up to 1.8x the time on mobilenet_v2 at batch 32).
     * An application embedding the engine makes the same choice. */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--profile"))
            profile = 1;
        else if (!strcmp(argv[i], "--profile-fused"))
            profile = 2;
        else if (!model)
            model = argv[i];
        else if (!input)
            input = argv[i];
        else {
            fprintf(stderr, "qlens-bench: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!model || !input || iters < 1 || threads < 1) {
        fprintf(stderr, "usage: qlens-bench MODEL.onnx INPUT.npy [--threads T] [--warmup W] "
                        "[--iters N] [--profile | --profile-fused]\n");
        return 2;
    }
    ql_error err = {{0}};
    ql_model *m = NULL;
    ql_tensor *x = NULL;
    ql_exec *ex = NULL;
    double *times = calloc((size_t)iters, sizeof *times);
    double out_sum = 0;
    int rc = 1;
    prof pr = {.prev = -1, .fused = profile == 2};
    char *watch = NULL;
    if (ql_model_load(model, &m, &err) != QL_OK || ql_npy_load(input, &x, &err) != QL_OK)
        goto fail;
    /* as `qlens eval` runs a model: the samples of a batch shared out over
     * the threads where the graph keeps them apart (--profile watches every
     * tensor, so it runs batches whole) */
    ql_exec_opts o = {.n_threads = threads, .reuse_buffers = true, .split_samples = true};
    if (profile) {
        pr.ms = calloc((size_t)m->graph->n_nodes + 1, sizeof *pr.ms);
        if (!pr.ms) {
            ql_fail(&err, QL_ERR_NOMEM, "out of memory for the profile");
            goto fail;
        }
        o.observer = prof_observe;
        o.observer_user = &pr;
        if (pr.fused && !(o.observe = watch = prof_watch(m->graph))) {
            ql_fail(&err, QL_ERR_NOMEM, "out of memory for the profile");
            goto fail;
        }
    }
    if (ql_exec_new(m->graph, &o, &ex, &err) != QL_OK)
        goto fail;
    for (int it = 0; it < warmup + iters; it++) {
        ql_tensor *outs[16] = {0};
        const ql_tensor *in = x;
        double t0 = now_ms();
        pr.last = t0;
        pr.prev = -1;
        if (ql_exec_run(ex, &in, outs, &err) != QL_OK)
            goto fail;
        double t1 = now_ms();
        if (it >= warmup)
            times[it - warmup] = t1 - t0;
        if (profile && it + 1 == warmup)
            memset(pr.ms, 0, (size_t)m->graph->n_nodes * sizeof *pr.ms);
        if (it == warmup + iters - 1) {
            const float *y = outs[0]->data;
            for (int64_t k = 0; k < ql_tensor_numel(outs[0]); k++)
                out_sum += y[k];
        }
        for (int j = 0; j < m->graph->n_outputs && j < 16; j++)
            ql_tensor_free(outs[j]);
    }
    if (profile)
        prof_report(m->graph, &pr, iters);
    qsort(times, (size_t)iters, sizeof *times, cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"median_ms\":%.3f,\"min_ms\":%.3f,\"peak_rss_kb\":%ld,\"out_sum\":%.6g}\n",
           iters % 2 ? times[iters / 2] : 0.5 * (times[iters / 2 - 1] + times[iters / 2]),
           times[0], ru.ru_maxrss, out_sum);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "qlens-bench: %s\n", err.msg);
done:
    free(times);
    free(pr.ms);
    ql_exec_free(ex);
    free(watch);
    ql_tensor_free(x);
    ql_model_free(m);
    return rc;
}
