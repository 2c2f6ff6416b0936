/* Worker threads for parallel-for. Chunk k of a loop always runs on thread k
 * (the caller is thread 0), so per-thread scratch indexed by tid is safe and
 * results never depend on scheduling. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor.h"

struct ql_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    unsigned long generation; /* bumped for every loop */
    int pending;              /* chunks not finished */
    int n_chunks;
    int64_t n;
    ql_range_fn fn;
    void *arg;
    int quit;
};

typedef struct {
    ql_pool *pool;
    int tid;
} worker_arg;

int ql_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void run_chunk(ql_pool *p, int k)
{
    int64_t begin = p->n * k / p->n_chunks, end = p->n * (k + 1) / p->n_chunks;
    if (begin < end)
        p->fn(p->arg, begin, end, k);
}

static void *worker(void *varg)
{
    worker_arg *wa = varg;
    ql_pool *p = wa->pool;
    int tid = wa->tid;
    free(wa);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen)
            pthread_cond_wait(&p->start_cv, &p->mu);
        if (p->quit)
            break;
        seen = p->generation;
        if (tid < p->n_chunks) {
            pthread_mutex_unlock(&p->mu);
            run_chunk(p, tid);
            pthread_mutex_lock(&p->mu);
            if (--p->pending == 0)
                pthread_cond_signal(&p->done_cv);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

ql_pool *ql_pool_new(int n_threads)
{
    ql_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_threads = n_threads > 0 ? n_threads : ql_default_threads();
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = calloc((size_t)p->n_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < p->n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->pool = p;
            wa->tid = i;
        }
        if (!wa || pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            p->n_threads = i; /* run with the threads we got */
            break;
        }
    }
    return p;
}

void ql_pool_free(ql_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p);
}

int ql_pool_threads(const ql_pool *p) { return p ? p->n_threads : 1; }

void ql_parallel_for(ql_exec_ctx *ctx, int64_t n, int64_t grain, ql_range_fn fn, void *arg)
{
    if (n <= 0)
        return;
    ql_pool *p = ctx ? ctx->pool : NULL;
    if (grain < 1)
        grain = 1;
    int64_t max_chunks = (n + grain - 1) / grain;
    int chunks = p ? p->n_threads : 1;
    if (chunks > max_chunks)
        chunks = (int)max_chunks;
    if (chunks <= 1) {
        fn(arg, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->n_chunks = chunks;
    p->pending = chunks - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    run_chunk(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int ql_ctx_threads(const ql_exec_ctx *ctx) { return ctx ? ql_pool_threads(ctx->pool) : 1; }

void *ql_ctx_scratch(ql_exec_ctx *ctx, size_t bytes)
{
    if (bytes <= ctx->scratch_size)
        return ctx->scratch;
    ql_aligned_free(ctx->scratch);
    ctx->scratch = ql_aligned_alloc(bytes);
    ctx->scratch_size = ctx->scratch ? bytes : 0;
    return ctx->scratch;
}

void ql_ctx_init(ql_exec_ctx *ctx, ql_pool *pool)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->pool = pool;
}

void ql_ctx_destroy(ql_exec_ctx *ctx)
{
    ql_aligned_free(ctx->scratch);
    ctx->scratch = NULL;
    ctx->scratch_size = 0;
}
