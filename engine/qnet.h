/* Where quantizers sit in a graph: the layers (computing nodes, with a
 * Relu/Clip that alone consumes them folded in), which activation tensors
 * carry their own encoding and which inherit one through data-movement ops,
 * and each weighted layer's weight, bias and channel axis. The rules are
 * documented in qlens-config(5); the compiler and simulators rely on them. */
#ifndef QL_QNET_H
#define QL_QNET_H

#include <stdbool.h>
#include <stdint.h>

#include "graph.h"
#include "onnx.h"
#include "qconfig.h"
#include "status.h"

typedef struct ql_qlayer {
    const char *name;  /* the main node's name (owned by the graph) */
    int node;          /* main node index */
    int act_node;      /* Relu/Clip folded into the layer, or -1 */
    int out_value;     /* value carrying the layer's output quantizer */
    int in_value;      /* first (data) input value, or -1 */
    int weight_value;  /* constant weight input, or -1 */
    int bias_value;    /* constant bias input, or -1 */
    int weight_axis;   /* output-channel axis of the weight */
    int64_t macs;      /* per sample (main node) */
} ql_qlayer;

typedef struct ql_qnet {
    const ql_graph *g;
    int n_layers;
    ql_qlayer *layers;   /* in node order */
    int *node_layer;     /* per node: the layer it belongs to, or -1 */
    /* per value: the value whose encoding it carries (itself for layer
     * outputs and graph inputs, the source for data-movement outputs), or -1
     * when it is never quantized (integer tensors, graph outputs, weights) */
    int *value_src;
    int *value_layer;    /* per value with value_src == itself: producing layer, -1 for inputs */
    bool *value_site;    /* per value: an activation quantizer site (value_src == itself) */
} ql_qnet;

ql_status ql_qnet_build(const ql_graph *g, ql_qnet **out, ql_error *err);
void ql_qnet_free(ql_qnet *q);
int ql_qnet_find_layer(const ql_qnet *q, const char *name);

/* Bits of the activation quantizer applied to each value under config c
 * (bits[v] for every value; 0: not quantized). A site produced by a
 * quantized layer takes that layer's precision; a graph input or the output
 * of a float layer is quantized only where a quantized layer reads it, with
 * the highest precision among those readers. */
void ql_qnet_act_bits(const ql_qnet *q, const ql_qconfig *c, int *bits);
/* Effective precision of layer i under c. */
ql_prec ql_qnet_layer_prec(const ql_qnet *q, const ql_qconfig *c, int i);

/* Checks a config against a model: fingerprint, that every layer override
 * names a layer and every tensor entry a quantizable tensor of the model,
 * that every encoding fits its tensor (axis, channel count, stored integer
 * count) and the settings (bits; a weight's axis), and, when the config has
 * encodings, that every tensor the settings quantize has one. Messages name
 * source and the JSON path. */
ql_status ql_qconfig_check(const ql_qconfig *c, const ql_model *m, const ql_qnet *q,
                           const char *source, ql_error *err);

#endif
