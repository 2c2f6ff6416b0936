/* The executor's state, shared by exec.c and exec_split.c (whole samples
 * per thread on one-thread executors). Not for other files. */
#ifndef QL_EXEC_PRIV_H
#define QL_EXEC_PRIV_H

#include <stdbool.h>

#include "exec.h"
#include "memplan.h"
#include "op.h"
#include "pool.h"

#define QL_MAX_IO 16
#define QL_SPARE_MAX 16

struct ql_exec {
    ql_graph *g;
    ql_exec_opts opts;
    ql_pool *pool;
    ql_exec_ctx ctx;
    ql_tensor *slots;   /* per value: runtime header + data */
    char *have;         /* per value: slot holds data */
    int *refs;          /* per value: consumers still to run */
    /* Activation fusion (only without an observer, which must see every
     * tensor): fused_act[i] is the Relu/Clip node whose clamp node i's kernel
     * applies, or -1; fused_into[j] is that producer for the activation. */
    int *fused_act, *fused_into;
    float *fuse_lo, *fuse_hi;
    /* Residual fusion (Conv then Add, the conv output read by the Add alone
     * and neither watched nor quantized): fused_add[i] is the Add node whose
     * addition Conv node i applies in its kernel, add_other[i] the Add's
     * other operand (produced before node i). It is decided again at run
     * time (operand present, same shape); add_done[j] records that Add node
     * j was applied by its producer in this run. */
    int *fused_add, *add_other;
    char *add_done;
    const ql_tensor *pend_add; /* the addend offered to the node being run */
    ql_exec_quant quant; /* fake-quant plan, or all NULL for float */
    /* opts.reuse_buffers: released buffers by size, and the bytes of owned
     * value buffers live now and at most so far (live + spare <= peak) */
    void *spare[QL_SPARE_MAX];
    size_t spare_bytes[QL_SPARE_MAX];
    int n_spare;
    size_t live, peak;
    /* opts.reuse_buffers: planned buffers for the kinds of run seen */
    ql_memplan *mp;
    /* opts.split_samples: whether the graph allows it, and the per-thread
     * one-thread executors (made at the first split run) */
    bool split_ok;
    ql_exec **sub;
    int n_sub;
};

/* Runs a batch of n >= 2 samples a sample at a time, each thread on its
 * own one-thread executor (opts.split_samples), and joins the outputs. */
ql_status ql_exec_run_split(ql_exec *x, const ql_tensor *const *inputs, int64_t n,
                            ql_tensor **outputs, ql_error *err);

#endif
