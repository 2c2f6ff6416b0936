/* A fixed pool of worker threads running parallel-for loops, and the
 * execution context kernels receive (threads + scratch memory). */
#ifndef QL_POOL_H
#define QL_POOL_H

#include <pthread.h>
#include <stddef.h>

#include "op.h"

typedef struct ql_pool ql_pool;

/* n_threads <= 0 means the number of online cores. NULL on failure. */
ql_pool *ql_pool_new(int n_threads);
void ql_pool_free(ql_pool *p);
int ql_pool_threads(const ql_pool *p);
/* Default thread count: online cores. */
int ql_default_threads(void);

struct ql_exec_ctx {
    ql_pool *pool;
    void *scratch;
    size_t scratch_size;
    /* Fused activation the executor asks a Conv/Gemm kernel to apply to its
     * output: clamp to [post_lo, post_hi] when post_clamp is set (Relu is
     * [0, inf), Clip its range). Kernels that cannot fuse leave it unset. */
    int post_clamp;
    float post_lo, post_hi;
    /* Residual add the executor asks a Conv kernel to apply: a tensor of the
     * output's shape added to the result before the clamp (NULL: none). */
    const float *post_add;
};

void ql_ctx_init(ql_exec_ctx *ctx, ql_pool *pool);
void ql_ctx_destroy(ql_exec_ctx *ctx);

/* The first error of work shared over threads, and the flag that tells
 * the others to stop. */
typedef struct ql_first_error {
    pthread_mutex_t lock;
    ql_status st;
    ql_error err;
    volatile int stop;
} ql_first_error;

void ql_first_error_init(ql_first_error *f);
void ql_first_error_destroy(ql_first_error *f);
/* Keeps st and err when they are the first; sets stop either way. */
void ql_first_error_set(ql_first_error *f, ql_status st, const ql_error *err);

#endif
