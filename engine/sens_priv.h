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
    ql_qsim *own;            /* all-but: the plan's entries not in the full plan, or NULL */
    bool unchanged;          /* the plan is the base plan */
    ql_exec_quant plan;
    char *run;               /* re-run set (n_nodes) */
    int n_feeds, *feeds;
    char *lrun;              /* the layer's own nodes, for local runs */
    int n_lfeeds, *lfeeds;
    /* sums over samples */
    ql_metrics m;
    double loc_sig, loc_noise, w_noise, a_noise;
    int chunks_done;
    /* scheduling within a chunk: the next batch to run, and whether a
     * worker is running one (a layer's batches run one at a time, in order) */
    int next_batch;
    bool busy;
} layer_work;

/* One batch of the current chunk: its input and cached tensors, whose data
 * is carved from the batch's share of the chunk's arena (a tensor that does
 * not fit, which dynamic shapes allow, gets its own buffer). */
typedef struct sens_batch {
    int64_t first, count;
    char *mem;
    size_t mem_size, mem_used;
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
    int64_t unit;        /* samples a layer's runs take at a time; 0: whole batches */
    int n_work;
    layer_work *work;
    int *order;          /* work items, most expensive first */
    char *base_obs, *flt_obs;
    /* current chunk */
    int n_batches;
    sens_batch *batches;
    ql_metrics base_m;   /* all-but: the base plan's outputs against float */
    void *arena;         /* the chunk's cache memory, sens_bytes_per_sample per sample */
    /* scheduling */
    pthread_mutex_t lock;
    bool base_phase;     /* workers take batches for base runs, else layers */
    pthread_cond_t freed; /* a layer finished a batch (layer phase) */
    int next;            /* layer phase: the first item not yet taken */
    volatile int stop;
    int64_t done, total;
    ql_status st;
    ql_error err;
} sens_ctx;


typedef struct cache_obs {
    const char *mask;
    ql_tensor **dst;
    sens_batch *batch;
    bool failed;
    int64_t u0, un;  /* the run's samples: [u0, u0 + un) of the batch */
    int run;         /* the current run's number */
    int *seen;       /* per value: the number of the run that stored it last */
} cache_obs;

/* Plans, re-run and local sets and feed lists of the analysed layers
 * (rows), the cache masks, and the order workers take layers in. */
ql_status sens_prepare(sens_ctx *s, const int *rows, int n_rows, ql_error *err);
void sens_free_work(sens_ctx *s);
/* Bytes per sample the cache holds (static shapes, batch axis first). */
int64_t sens_bytes_per_sample(const sens_ctx *s);
/* Observer storing copies of the values co->mask selects into co->dst, in
 * co->batch's memory: a run of a unit of samples stores its slice of the
 * batch's tensors. */
bool sens_cache_observer(void *user, const ql_graph *g, int node, int value, const ql_tensor *t);
/* The batches of samples [c0, c1) with their inputs, caches still empty. */
ql_status sens_chunk_inputs(sens_ctx *s, ql_batcher *bt, int64_t c0, int64_t c1, ql_error *err);
/* Reference run(s) of batch b on x (whose observer is sens_cache_observer
 * on co): fills its cache. outs: scratch for n_outputs tensors. Batches are
 * independent, so workers run them in parallel. */
ql_status sens_base_batch(sens_ctx *s, ql_exec *x, cache_obs *co, int b, ql_tensor **outs,
                          ql_error *err);
void sens_free_batches(sens_ctx *s);

#endif
