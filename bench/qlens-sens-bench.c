/* Sensitivity benchmark: every layer of a model, incremental (cached
 * reference activations, re-run sets) vs naive full re-execution per layer,
 * in the same process, for each thread count; checks that both give the
 * same table bit for bit. The config is calibrated in process (minmax).
 *
 *   qlens-sens-bench MODEL.onnx DATA [--limit N] [--threads 1,2] [--repeat R]
 *                    [--mode M] [--batch B] [--side both|incr|naive]
 *
 * CPU time (user + system of the process, all threads) is printed next to
 * the wall time: on a shared machine it shows whether a second thread got
 * a core. --side runs one side only (for perf), with no comparison.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "engine/calibrate.h"
#include "engine/sensitivity.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void die(const char *what, const ql_error *e)
{
    fprintf(stderr, "qlens-sens-bench: %s: %s\n", what, e->msg);
    exit(1);
}

static bool same(const ql_sens_table *a, const ql_sens_table *b)
{
    if (a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++)
        if (memcmp(&a->rows[i].m, &b->rows[i].m, sizeof a->rows[i].m) ||
            memcmp(&a->rows[i].local_sqnr_db, &b->rows[i].local_sqnr_db, sizeof(double)) ||
            memcmp(&a->rows[i].weight_share, &b->rows[i].weight_share, sizeof(double)))
            return false;
    return true;
}

/* One analysis: its wall time, and its CPU time in *cpu; the table
 * replaces *keep. Keeps the best wall time (and that run's CPU) in *best. */
static void timed(ql_model *m, const ql_qnet *q, const ql_qconfig *c, const ql_dataset *d,
                  const ql_sens_opts *o, ql_sens_table **keep, double *best, double *cpu)
{
    ql_error err = {{0}};
    ql_sens_table *t = NULL;
    double t0 = now(), c0 = cpu_now();
    if (ql_sensitivity(m, q, c, d, NULL, o, &t, &err) != QL_OK)
        die("sensitivity", &err);
    double s = now() - t0, cs = cpu_now() - c0;
    if (!(s >= *best)) {
        *best = s;
        *cpu = cs;
    }
    ql_sens_table_free(*keep);
    *keep = t;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr,
                "usage: %s MODEL DATA [--limit N] [--threads 1,2] [--repeat R] [--mode M] "
                "[--batch B] [--side both|incr|naive]\n",
                argv[0]);
        return 2;
    }
    long limit = 32, repeat = 2, batch = 32;
    const char *threads_s = "1,2", *side = "both";
    ql_sens_mode mode = QL_SENS_SINGLE;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--limit") && i + 1 < argc)
            limit = atol(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads_s = argv[++i];
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atol(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atol(argv[++i]);
        else if (!strcmp(argv[i], "--side") && i + 1 < argc &&
                 (!strcmp(argv[i + 1], "both") || !strcmp(argv[i + 1], "incr") ||
                  !strcmp(argv[i + 1], "naive")))
            side = argv[++i];
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc && ql_sens_mode_parse(argv[i + 1], &mode))
            i++;
        else {
            fprintf(stderr, "qlens-sens-bench: bad argument '%s'\n", argv[i]);
            return 2;
        }
    }
    ql_error err = {{0}};
    ql_model *m = NULL;
    ql_dataset *d = NULL;
    ql_plugins *ps = NULL;
    ql_qnet *q = NULL;
    ql_calib_stats *stats = NULL;
    ql_qconfig *c = ql_qconfig_new();
    if (ql_model_load(argv[1], &m, &err))
        die("model", &err);
    if (ql_dataset_load(argv[2], limit, &d, &err) ||
        ql_dataset_conform(d, &m->graph->values[m->graph->inputs[0]], &err))
        die("data", &err);
    if (ql_plugins_scan(&ps, &err) || ql_qnet_build(m->graph, &q, &err))
        die("setup", &err);
    snprintf(c->defaults.act_algo, sizeof c->defaults.act_algo, "minmax");
    ql_calib_opts co = {.batch = batch};
    if (ql_calib_collect(m, q, d, &co, &stats, &err) ||
        ql_calib_encode(m, q, c, stats, ps, d, &co, &err))
        die("calibrate", &err);

    const char *base = strrchr(argv[1], '/') ? strrchr(argv[1], '/') + 1 : argv[1];
    bool do_incr = strcmp(side, "naive") != 0, do_naive = strcmp(side, "incr") != 0;
    printf("%-22s %-7s %7s %6s %7s %10s %10s %7s %9s %9s %9s %9s\n", "model", "mode", "samples",
           "layers", "threads", "naive_s", "incr_s", "ratio", "speedup", "identical", "naive_cpu",
           "incr_cpu");
    /* the thread counts take turns, repeat by repeat, so that a slow
     * stretch of a shared host weighs on every row alike */
    enum { MAXT = 16 };
    int ts[MAXT], nt = 0;
    for (const char *p = threads_s; *p && nt < MAXT;) {
        ts[nt++] = atoi(p);
        if (!(p = strchr(p, ',')))
            break;
        p++;
    }
    ql_sens_table *ti[MAXT] = {0}, *tb[MAXT] = {0};
    double si[MAXT], sb[MAXT], ci[MAXT], cb[MAXT];
    for (int k = 0; k < nt; k++)
        si[k] = sb[k] = ci[k] = cb[k] = NAN;
    for (long r = 0; r < repeat; r++)
        for (int k = 0; k < nt; k++) {
            ql_sens_opts o = {.mode = mode, .n_threads = ts[k], .batch = batch};
            if (do_incr)
                timed(m, q, c, d, &o, &ti[k], &si[k], &ci[k]);
            o.brute_force = true;
            if (do_naive)
                timed(m, q, c, d, &o, &tb[k], &sb[k], &cb[k]);
        }
    int fails = 0;
    for (int k = 0; k < nt; k++) {
        bool ok = ti[k] && tb[k] && same(ti[k], tb[k]);
        fails += ti[k] && tb[k] && !ok;
        printf("%-22s %-7s %7lld %6d %7d %10.3f %10.3f %7.3f %8.2fx %9s %9.3f %9.3f\n", base,
               ql_sens_mode_name(mode), (long long)d->n, ti[k] ? ti[k]->n : tb[k]->n, ts[k],
               sb[k], si[k], si[k] / sb[k], si[0] / si[k],
               !ti[k] || !tb[k] ? "-" : ok ? "yes" : "NO", cb[k], ci[k]);
        ql_sens_table_free(ti[k]);
        ql_sens_table_free(tb[k]);
    }
    ql_calib_stats_free(stats);
    ql_qconfig_free(c);
    ql_qnet_free(q);
    ql_plugins_free(ps);
    ql_dataset_free(d);
    ql_model_free(m);
    return fails ? 1 : 0;
}
