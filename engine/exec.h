/* The executor: runs a prepared graph in float, from the start or from any
 * node with supplied inputs, calling an observer on every tensor produced.
 * Intermediate buffers are freed as soon as their last consumer has run. */
#ifndef QL_EXEC_H
#define QL_EXEC_H

#include <stdbool.h>

#include "graph.h"
#include "status.h"
#include "tensor.h"

/* Sees every tensor as it is produced: node index, value index and data
 * (owned by the executor, valid only during the call). Return false to
 * cancel the run. */
typedef bool (*ql_observer_fn)(void *user, const ql_graph *g, int node, int value,
                               const ql_tensor *t);

typedef struct ql_exec_opts {
    int n_threads;              /* <= 0: number of online cores */
    ql_observer_fn observer;    /* optional */
    void *observer_user;
    /* optional, per value: non-zero for the values the observer needs; NULL
     * means all. Values not needed may be fused away (Conv+Relu). Borrowed:
     * changes take effect at the next ql_exec_set_quant. */
    const char *observe;
    /* call the observer before a value's fake-quantization (default: after,
     * i.e. the observer sees what consumers read) */
    bool observe_raw;
    const volatile int *cancel; /* optional: non-zero stops the run (QL_ERR_CANCELLED) */
    /* keep released value buffers for later outputs of the same size, in
     * this run and the next ones, never holding more than the executor's
     * peak working memory (many short runs otherwise pay page faults for
     * memory the allocator gave back); and plan them: after the first run
     * of a kind (nodes run, feed shapes, fake-quant plan), later runs of
     * that kind lay their buffers out in one arena where a buffer takes
     * memory its run released earlier, still in cache (engine/memplan.h).
     * Outputs handed to the caller are never arena memory. */
    bool reuse_buffers;
    /* ql_exec_run on a batch of two or more samples: one sample at a time,
     * the samples shared out over the threads, each thread with a
     * one-thread executor of its own (a sample's activations stay in
     * cache, and the threads never wait for each other between nodes).
     * Only when the graph keeps samples apart (ql_graph_samples_apart) and
     * there is no observer; otherwise, and for a single sample, the threads
     * share each node as usual. Every sample is then computed as a batch of
     * one whatever the batch size and thread count, so the results depend
     * on neither. ql_exec_run_from and ql_exec_run_nodes are not affected. */
    bool split_samples;
} ql_exec_opts;

typedef struct ql_exec ql_exec;

/* The graph must have been bound, shape-inferred and prepared; it must
 * outlive the executor. */
ql_status ql_exec_new(ql_graph *g, const ql_exec_opts *opts, ql_exec **out, ql_error *err);

/* Fake-quant execution: per value, an encoding applied (quantize-dequantize)
 * as the value is produced or fed, and a replacement for constant values
 * (fake-quantized weights and biases). Arrays have g->n_values entries, NULL
 * entries mean float; they are borrowed and must outlive the runs. */
typedef struct ql_exec_quant {
    const struct ql_encoding *const *act;
    const ql_tensor *const *constants;
} ql_exec_quant;
/* Switches the executor to fake-quant (q != NULL) or float (q == NULL). */
ql_status ql_exec_set_quant(ql_exec *x, const ql_exec_quant *q, ql_error *err);
void ql_exec_free(ql_exec *x);
int ql_exec_threads(const ql_exec *x);
/* The executor's threads (ql_parallel_for in op.h), for work an observer
 * does between nodes, when they are idle. */
struct ql_exec_ctx *ql_exec_context(ql_exec *x);

/* Runs the whole graph. inputs[i] feeds g->inputs[i] (shapes checked against
 * the graph, dynamic dims free). outputs[j] receives a new owned tensor for
 * g->outputs[j]; the caller frees them. */
ql_status ql_exec_run(ql_exec *x, const ql_tensor *const *inputs, ql_tensor **outputs,
                      ql_error *err);

/* Runs nodes [start_node, n_nodes) in order. feeds[k] supplies value
 * feed_ids[k]; every value read by those nodes that is produced before
 * start_node (or is a graph input) must be fed. outputs as in ql_exec_run;
 * an output not computed from start_node on is returned as a copy of its feed. */
ql_status ql_exec_run_from(ql_exec *x, int start_node, int n_feeds, const int *feed_ids,
                           const ql_tensor *const *feeds, ql_tensor **outputs,
                           ql_error *err);

/* Runs only the nodes with run[i] != 0, in order. Every value they read
 * that none of them produces must be fed (or be a constant); outputs as in
 * ql_exec_run_from. In fake-quant mode a fed value with an encoding is
 * quantized on entry (quantizing an already quantized value changes
 * nothing). */
ql_status ql_exec_run_nodes(ql_exec *x, const char *run, int n_feeds, const int *feed_ids,
                            const ql_tensor *const *feeds, ql_tensor **outputs, ql_error *err);

#endif
