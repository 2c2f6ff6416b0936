/* Worker threads for parallel-for. Chunk k of a loop always runs on thread k
 * (the caller is thread 0), so per-thread scratch indexed by tid is safe and
 * results never depend on scheduling. A dynamic loop hands its items out to
 * whichever thread is free instead (tids stay unique, the split varies). */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor.h"

/* Workers and the caller spin briefly before sleeping on a condition
 * variable: the ops of one inference follow each other closely, and a futex
 * wake-up per op costs more than many small ops take. The spin is adaptive
 * (as glibc's adaptive mutexes): a wait that ends while spinning doubles the
 * budget, one that has to sleep halves it, so on a machine busy with other
 * work (where spinning only steals time from the thread waited for) the
 * pool soon just sleeps. It never yields: a sched_yield() with other
 * processes runnable gives away the rest of the time slice. */
#define SPIN_MAX 4096 /* checks, each after a few pauses: some tens of microseconds */
#define SPIN_MIN 16

struct ql_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    atomic_ulong generation; /* bumped for every loop (release: the task below is set) */
    atomic_int pending;      /* workers not done with the current loop */
    atomic_int sleepers;     /* workers asleep, or about to be, on start_cv */
    atomic_int caller_sleeps;/* the caller is asleep, or about to be, on done_cv */
    atomic_int quit;
    atomic_int spin;         /* current spin budget, in checks */
    int n_chunks;
    int64_t n;
    int64_t grain;       /* dynamic loops: items taken at a time, else 0 */
    atomic_llong next;   /* dynamic loops: the first item not yet taken */
    ql_range_fn fn;
    void *arg;
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

static inline void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    for (int k = 0; k < 4; k++)
        __builtin_ia32_pause();
#endif
}

/* Adapts the shared spin budget after a wait (a heuristic only: relaxed). */
static void spin_adapt(ql_pool *p, int spun_ok)
{
    int b = atomic_load_explicit(&p->spin, memory_order_relaxed);
    b = spun_ok ? (b < SPIN_MAX / 2 ? b * 2 : SPIN_MAX) : (b > 2 * SPIN_MIN ? b / 2 : SPIN_MIN);
    atomic_store_explicit(&p->spin, b, memory_order_relaxed);
}

static void run_chunk(ql_pool *p, int k)
{
    if (p->grain > 0) {
        for (;;) {
            int64_t begin = atomic_fetch_add_explicit(&p->next, p->grain, memory_order_relaxed);
            if (begin >= p->n)
                return;
            p->fn(p->arg, begin, begin + p->grain < p->n ? begin + p->grain : p->n, k);
        }
    }
    int64_t begin = p->n * k / p->n_chunks, end = p->n * (k + 1) / p->n_chunks;
    if (begin < end)
        p->fn(p->arg, begin, end, k);
}

/* Waits for a generation other than `seen` (or quit); returns it. The
 * sleepers count and the generation are both seq_cst, so either the
 * dispatcher sees this worker's count and wakes it, or the worker sees the
 * new generation before it sleeps. */
static unsigned long wait_work(ql_pool *p, unsigned long seen)
{
    int budget = atomic_load_explicit(&p->spin, memory_order_relaxed);
    for (int i = 0; i < budget; i++) {
        unsigned long g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&p->quit, memory_order_relaxed)) {
            spin_adapt(p, 1);
            return g;
        }
        spin_pause();
    }
    spin_adapt(p, 0);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    unsigned long g;
    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->quit))
        pthread_cond_wait(&p->start_cv, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker(void *varg)
{
    worker_arg *wa = varg;
    ql_pool *p = wa->pool;
    int tid = wa->tid;
    free(wa);
    unsigned long seen = 0;
    for (;;) {
        seen = wait_work(p, seen);
        if (atomic_load(&p->quit))
            break;
        /* every worker checks in, even without a chunk, so that no worker
         * can still be reading this task when the next one is written */
        if (tid < p->n_chunks)
            run_chunk(p, tid);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_sleeps)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
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
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_sleeps, 0);
    atomic_init(&p->quit, 0);
    atomic_init(&p->spin, SPIN_MIN);
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
    atomic_store(&p->quit, 1);
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

static void dispatch(ql_exec_ctx *ctx, int64_t n, int64_t grain, bool dynamic, ql_range_fn fn,
                     void *arg);

void ql_parallel_for(ql_exec_ctx *ctx, int64_t n, int64_t grain, ql_range_fn fn, void *arg)
{
    dispatch(ctx, n, grain, false, fn, arg);
}

void ql_parallel_for_dynamic(ql_exec_ctx *ctx, int64_t n, int64_t grain, ql_range_fn fn,
                             void *arg)
{
    dispatch(ctx, n, grain, true, fn, arg);
}

static void dispatch(ql_exec_ctx *ctx, int64_t n, int64_t grain, bool dynamic, ql_range_fn fn,
                     void *arg)
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
    /* the task is published by the generation's release store */
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->n_chunks = chunks;
    p->grain = dynamic ? grain : 0;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleepers)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->start_cv);
        pthread_mutex_unlock(&p->mu);
    }
    run_chunk(p, 0);
    int budget = atomic_load_explicit(&p->spin, memory_order_relaxed);
    for (int i = 0; i < budget; i++) {
        if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0) {
            spin_adapt(p, 1);
            return;
        }
        spin_pause();
    }
    spin_adapt(p, 0);
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_sleeps, 1);
    while (atomic_load(&p->pending) > 0)
        pthread_cond_wait(&p->done_cv, &p->mu);
    atomic_store(&p->caller_sleeps, 0);
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

void ql_first_error_init(ql_first_error *f)
{
    pthread_mutex_init(&f->lock, NULL);
    f->st = QL_OK;
    f->err.msg[0] = 0;
    f->stop = 0;
}

void ql_first_error_destroy(ql_first_error *f) { pthread_mutex_destroy(&f->lock); }

void ql_first_error_set(ql_first_error *f, ql_status st, const ql_error *err)
{
    pthread_mutex_lock(&f->lock);
    if (f->st == QL_OK) {
        f->st = st;
        f->err = *err;
    }
    f->stop = 1;
    pthread_mutex_unlock(&f->lock);
}
