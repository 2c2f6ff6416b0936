/* Loading ONNX models into the graph IR (protobuf-c code generated at build
 * time from the system's onnx.proto). */
#ifndef QL_ONNX_H
#define QL_ONNX_H

#include "graph.h"
#include "status.h"

typedef struct ql_model {
    ql_graph *graph;
    char *path;
    char *producer;       /* producer_name + version, may be "" */
    int64_t ir_version;
    int64_t opset;        /* default-domain opset */
    uint64_t fingerprint; /* FNV-1a 64 of the file bytes */
} ql_model;

/* Loads, validates and prepares a model: parse, import initializers and
 * Constant nodes, bind ops (one error listing every unsupported op with its
 * nodes), topological sort, simplification passes (passes.h), shape
 * inference, op prepare. Errors name the file. */
ql_status ql_model_load(const char *path, ql_model **out, ql_error *err);
/* Same, from memory; `name` is used in messages. */
ql_status ql_model_load_buffer(const void *buf, size_t len, const char *name,
                               ql_model **out, ql_error *err);
void ql_model_free(ql_model *m);

/* Parses only (no passes, no prepare): the raw graph as the file states it,
 * ops bound, sorted, shapes inferred. Used by tests and `info --raw`. */
ql_status ql_onnx_parse(const void *buf, size_t len, const char *name, ql_model **out,
                        ql_error *err);

/* Parses a serialized TensorProto (as in the ONNX backend test data's
 * input_N.pb/output_N.pb) into a new owned tensor. */
ql_status ql_onnx_tensor_parse(const void *buf, size_t len, const char *name, ql_tensor **out,
                               char **tensor_name, ql_error *err);

#endif
