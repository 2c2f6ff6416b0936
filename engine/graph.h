/* The graph IR: values (tensors flowing between nodes, with known or unknown
 * shapes, and constant data for initializers) and nodes in topological order.
 * A graph owns everything it points to and frees it in ql_graph_free(). */
#ifndef QL_GRAPH_H
#define QL_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

typedef enum {
    QL_ATTR_UNDEFINED,
    QL_ATTR_FLOAT,
    QL_ATTR_INT,
    QL_ATTR_STRING,
    QL_ATTR_TENSOR,
    QL_ATTR_FLOATS,
    QL_ATTR_INTS,
    QL_ATTR_STRINGS,
} ql_attr_type;

typedef struct ql_attr {
    char *name;
    ql_attr_type type;
    float f;
    int64_t i;
    char *s;        /* STRING (NUL-terminated copy) */
    int n;          /* element count of floats/ints/strings */
    float *floats;
    int64_t *ints;
    char **strings;
    ql_tensor *t;   /* TENSOR (owned) */
} ql_attr;

typedef struct ql_value {
    char *name;
    ql_dtype dtype;
    int ndim;                  /* -1: rank unknown */
    int64_t dims[QL_MAX_DIMS]; /* -1: unknown extent (e.g. dynamic batch) */
    ql_tensor *constant;       /* owned: initializer or folded constant; else NULL */
    int producer;              /* producing node index, -1 for inputs/constants */
    int n_consumers;           /* number of node input slots reading it */
    bool is_input;             /* a (non-constant) graph input */
    bool is_output;            /* a graph output */
} ql_value;

typedef struct ql_node {
    char *name;
    char *op_type;
    char *domain;      /* "" for the default ONNX domain */
    int op;            /* index into the op table (op.h), -1 if unsupported */
    int n_in, n_out;
    int *in, *out;     /* value indices; -1 for an absent optional input */
    int n_attr;
    ql_attr *attr;
    void *state;       /* op-private prepared data; freed by the op's release */
    bool dead;         /* marked for removal by a pass; see ql_graph_compact */
} ql_node;

typedef struct ql_graph {
    char *name;
    char *source;          /* path it was loaded from, for messages */
    int64_t opset;         /* opset of the default domain */
    ql_value *values;
    int n_values, cap_values;
    ql_node *nodes;
    int n_nodes, cap_nodes;
    int *inputs;           /* non-constant graph inputs, in model order */
    int n_inputs;
    int *outputs;
    int n_outputs;
    struct ql_name_map *names; /* value name -> index */
} ql_graph;

ql_graph *ql_graph_new(void);
void ql_graph_free(ql_graph *g);

/* Returns the index of the value named `name`, creating it if absent; -1 on
 * OOM. Pointers into g->values are invalidated by additions. */
int ql_graph_value(ql_graph *g, const char *name);
/* Index of an existing value or -1. */
int ql_graph_find_value(const ql_graph *g, const char *name);
/* Appends a node (copies strings, takes no attributes); returns its index or
 * -1 on OOM. Inputs/outputs are value indices (-1 allowed for inputs). */
int ql_graph_add_node(ql_graph *g, const char *name, const char *op_type,
                      const char *domain, int n_in, const int *in, int n_out,
                      const int *out);
/* Adds a copied attribute to node `node`; returns a pointer to fill. */
ql_attr *ql_node_add_attr(ql_graph *g, int node, const char *name, ql_attr_type type);
void ql_attr_clear(ql_attr *a);

/* Attribute look-ups; return the default when absent. */
const ql_attr *ql_node_attr(const ql_node *n, const char *name);
int64_t ql_attr_int(const ql_node *n, const char *name, int64_t dflt);
float ql_attr_float(const ql_node *n, const char *name, float dflt);
const char *ql_attr_string(const ql_node *n, const char *name, const char *dflt);
/* Returns the ints array and sets *count, or NULL (count 0) when absent. */
const int64_t *ql_attr_ints(const ql_node *n, const char *name, int *count);
const float *ql_attr_floats(const ql_node *n, const char *name, int *count);

/* Recomputes producers and consumer counts from the nodes. */
void ql_graph_link(ql_graph *g);
/* Sorts nodes topologically (stable w.r.t. file order); error names a cycle
 * or a value that is used but never produced. */
ql_status ql_graph_toposort(ql_graph *g, ql_error *err);
/* Removes dead nodes and values no longer referenced; relinks. */
void ql_graph_compact(ql_graph *g);
/* Resolves every node's op against the op table; one error lists every
 * unsupported op type with its node names. */
ql_status ql_graph_bind_ops(ql_graph *g, ql_error *err);
/* Static shape and dtype inference through the op table's infer functions,
 * with -1 for dims that depend on runtime (dynamic batch). */
ql_status ql_graph_infer_shapes(ql_graph *g, ql_error *err);
/* Runs each op's prepare (validation, constant packing). */
ql_status ql_graph_prepare(ql_graph *g, ql_error *err);

/* Whether the graph (bound and shape-inferred) keeps the samples of a
 * batch apart: every input has a free batch extent first, every value
 * computed from them keeps the samples along axis 0, and no node mixes
 * them (engine/samples.c has the rules, an allow-list). Then a batch run a
 * sample at a time, the outputs joined along axis 0, is the same
 * computation for every sample. */
bool ql_graph_samples_apart(const ql_graph *g);
/* Bytes of one sample of the graph's largest non-constant value, from the
 * static shapes (extents past axis 0; unknown extents count 0). */
int64_t ql_graph_max_sample_bytes(const ql_graph *g);

/* Multiply-accumulate count of one node for batch 1 (0 if not applicable). */
int64_t ql_node_macs(const ql_graph *g, const ql_node *n);
/* Parameter count of a node: elements of the learned tensors it reads
 * (weights, biases, normalisation scales...), not of constant arguments
 * such as Clip's bounds or Resize's scales. */
int64_t ql_node_params(const ql_graph *g, const ql_node *n);

#endif
