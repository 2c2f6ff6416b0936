/* Graph simplification passes run after loading. Each returns the number of
 * rewrites it made (>= 0) or a negative value on failure (err filled). */
#ifndef QL_PASSES_H
#define QL_PASSES_H

#include "graph.h"
#include "status.h"

/* Removes Identity and Dropout (inference mode) nodes, rewiring consumers. */
int ql_pass_drop_identity(ql_graph *g, ql_error *err);
/* Folds BatchNormalization into a preceding Conv/ConvTranspose/Gemm whose
 * output it alone consumes (weights and bias rewritten). */
int ql_pass_fold_batchnorm(ql_graph *g, ql_error *err);
/* Evaluates nodes whose inputs are all constant, and shape sub-graphs
 * (Shape/Gather/Unsqueeze/Concat feeding Reshape) whose result is static or
 * only copies the dynamic batch dimension. */
int ql_pass_fold_constants(ql_graph *g, ql_error *err);
/* All of the above to a fixed point, then compacts the graph. */
ql_status ql_passes_run(ql_graph *g, ql_error *err);

#endif
