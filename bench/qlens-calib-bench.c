/* Calibration benchmark: in one run, a plain float pass over the calibration
 * samples vs the statistics pass over the same samples (ratio), the time to
 * re-encode one tensor with each activation algorithm from saved statistics,
 * and optionally AdaRound over the whole model at its default settings.
 *
 *   qlens-calib-bench MODEL.onnx DATA [--limit N] [--threads T] [--repeat R] [--adaround]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/calibrate.h"
#include "engine/evaluate.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process (all threads): on a shared machine it
 * moves less than wall time with the other load, so the ratio of the two
 * passes' CPU times is a steadier second opinion on the wall ratio. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const ql_error *e)
{
    fprintf(stderr, "qlens-calib-bench: %s: %s\n", what, e->msg);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL DATA [--limit N] [--threads T] [--repeat R] [--adaround]\n",
                argv[0]);
        return 2;
    }
    long limit = 256, threads = 1, repeat = 3;
    int adaround = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--limit") && i + 1 < argc)
            limit = atol(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atol(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atol(argv[++i]);
        else if (!strcmp(argv[i], "--adaround"))
            adaround = 1;
        else {
            fprintf(stderr, "qlens-calib-bench: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    /* the plugins of the build tree this program belongs to */
    if (!getenv("QLENS_PLUGIN_PATH")) {
        char exe[4096], dir[4200];
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (len > 0) {
            exe[len] = '\0';
            char *slash = strrchr(exe, '/');
            if (slash)
                *slash = '\0';
            snprintf(dir, sizeof dir, "%s/../plugins/.libs", exe);
            setenv("QLENS_PLUGIN_PATH", dir, 1);
        }
    }
    ql_error err = {{0}};
    ql_model *m = NULL;
    ql_dataset *d = NULL;
    ql_plugins *ps = NULL;
    ql_qnet *q = NULL;
    if (ql_model_load(argv[1], &m, &err))
        die("model", &err);
    if (ql_dataset_load(argv[2], limit, &d, &err) ||
        ql_dataset_conform(d, &m->graph->values[m->graph->inputs[0]], &err))
        die("data", &err);
    if (ql_plugins_scan(&ps, &err) || ql_qnet_build(m->graph, &q, &err))
        die("setup", &err);

    /* float pass vs statistics pass, best of `repeat`, interleaved */
    double best_f = INFINITY, best_s = INFINITY, cpu_f = INFINITY, cpu_s = INFINITY;
    ql_calib_stats *stats = NULL;
    for (long r = 0; r < repeat; r++) {
        ql_eval_result res;
        ql_eval_opts eo = {.batch = 32, .n_threads = (int)threads};
        double t0 = now(), c0 = cpu_now();
        if (ql_eval_float(m, d, NULL, 0, &eo, &res, &err))
            die("float pass", &err);
        double tf = now() - t0, cf = cpu_now() - c0;
        ql_eval_result_clear(&res);
        ql_calib_stats_free(stats);
        stats = NULL;
        ql_calib_opts co = {.n_threads = (int)threads, .batch = 32};
        t0 = now();
        c0 = cpu_now();
        if (ql_calib_collect(m, q, d, &co, &stats, &err))
            die("statistics pass", &err);
        double ts = now() - t0, cs = cpu_now() - c0;
        best_f = tf < best_f ? tf : best_f;
        best_s = ts < best_s ? ts : best_s;
        cpu_f = cf < cpu_f ? cf : cpu_f;
        cpu_s = cs < cpu_s ? cs : cpu_s;
    }
    printf("model %s, %lld samples, %ld thread(s), best of %ld\n", argv[1], (long long)d->n,
           threads, repeat);
    printf("%-34s %10.1f ms   (cpu %.1f ms)\n", "float pass", best_f * 1e3, cpu_f * 1e3);
    printf("%-34s %10.1f ms   ratio %.2f (target <= 1.30)   (cpu %.1f ms, ratio %.2f)\n",
           "statistics pass", best_s * 1e3, best_s / best_f, cpu_s * 1e3, cpu_s / cpu_f);

    /* re-encoding one tensor from statistics: the largest histogram range */
    ql_qconfig *c = ql_qconfig_new();
    int v_big = -1;
    double r_big = -1;
    for (int v = 0; v < m->graph->n_values; v++) {
        int h = q->value_site[v] ? ql_calib_stats_find(stats, m->graph->values[v].name) : -1;
        if (h >= 0 && stats->hists[h].range > r_big) {
            r_big = stats->hists[h].range;
            v_big = v;
        }
    }
    const char *algos[] = {"minmax", "percentile", "kl", "mse"};
    for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++) {
        snprintf(c->defaults.act_algo, sizeof c->defaults.act_algo, "%s", algos[a]);
        double best = INFINITY;
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            if (ql_calib_encode_act(q, c, stats, ps, v_big, 8, &err))
                die("encode", &err);
            double t = now() - t0;
            best = t < best ? t : best;
        }
        char label[64];
        snprintf(label, sizeof label, "switch one tensor to %s", algos[a]);
        printf("%-34s %10.3f ms   (target < 10 ms)\n", label, best * 1e3);
    }
    if (adaround) {
        snprintf(c->defaults.act_algo, sizeof c->defaults.act_algo, "kl");
        snprintf(c->defaults.weight_algo, sizeof c->defaults.weight_algo, "adaround");
        ql_calib_opts co = {.n_threads = (int)threads, .batch = 32};
        double t0 = now();
        if (ql_calib_encode(m, q, c, stats, ps, d, &co, &err))
            die("adaround", &err);
        printf("%-34s %10.1f s    (target < 120 s on 2 threads)\n", "adaround, default settings",
               now() - t0);
    }
    ql_qconfig_free(c);
    ql_calib_stats_free(stats);
    ql_qnet_free(q);
    ql_plugins_free(ps);
    ql_dataset_free(d);
    ql_model_free(m);
    return 0;
}
