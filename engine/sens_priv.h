/* Internal to the sensitivity analysis: the per-layer work items, the
 * cached batches of the current chunk, and the shared context, split
 * between sens_cache.c (preparation, reference runs, cache) and
 * sensitivity.c (the workers). */
#ifndef QL_SENS_PRIV_H
#define QL_SENS_PRIV_H

#include <pthread.h>

#include "evaluate.h"
#include "exec.h"
#include "sens_plan.h"

typedef struct layer_work {
    int layer;
    const ql_encoding **act; /* the mode's plan (n_values) */
    const ql_tensor **cst;
    ql_exec_quant plan;
    char *run;               /* re-run set (n_nodes) */
    int n_feeds, *feeds;
    char *lrun;              /* the layer's own nodes, for local runs */
    int n_lfeeds, *lfeeds;
    /* sums over samples */
    ql_metrics m;
    double loc_sig, loc_noise, w_noise, a_noise;
    int chunks_done;
} layer_work;

/* One batch of the current chunk: its input and cached tensors. */
typedef struct sens_batch {
    int64_t first, count;
    ql_tensor *input;
    ql_tensor **base;    /* per value: raw base value, or NULL */
    ql_tensor **flt;     /* per value: float value (== base when the base is float) */
    ql_tensor **ref_out; /* per graph output: float */
} sens_batch;

typedef struct sens_ctx {
    ql_graph *g;
    const ql_qnet *q;
    const int64_t *labels;
    const ql_sens_opts *o;
    sens_plans plans;
    bool float_base;
    ql_exec_quant base_plan;
    int n_work;
    layer_work *work;
    int *order;          /* work items, most expensive first */
    char *base_obs, *flt_obs, *out_obs;
    /* current chunk */
    int n_batches;
    sens_batch *batches;
    /* scheduling */
    pthread_mutex_t lock;
    int next;
    volatile int stop;
    int64_t done, total;
    ql_status st;
    ql_error err;
} sens_ctx;


typedef struct cache_obs {
    const char *mask;
    ql_tensor **dst;
    bool failed;
} cache_obs;

/* Plans, re-run and local sets and feed lists of the analysed layers
 * (rows), the cache masks, and the order workers take layers in. */
ql_status sens_prepare(sens_ctx *s, const int *rows, int n_rows, ql_error *err);
void sens_free_work(sens_ctx *s);
/* Bytes per sample the cache holds (static shapes, batch axis first). */
int64_t sens_bytes_per_sample(const sens_ctx *s);
/* Observer storing clones of the values co->mask selects into co->dst. */
bool sens_cache_observer(void *user, const ql_graph *g, int node, int value, const ql_tensor *t);
/* Reference run(s) over samples [c0, c1): fills s->batches. */
ql_status sens_run_base(sens_ctx *s, ql_exec *x, cache_obs *co, ql_batcher *bt, int64_t c0,
                        int64_t c1, ql_error *err);
void sens_free_batches(sens_ctx *s);

#endif
