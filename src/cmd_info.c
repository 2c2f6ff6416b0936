/* `qlens info`: a model's inputs, outputs and layers (after simplification),
 * with output shapes, parameter counts and MACs, as text or JSON. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine/onnx.h"
#include "engine/op.h"

static void info_usage(FILE *f)
{
    fprintf(f, "Usage: qlens info [--json] MODEL.onnx\n\n"
               "Shows the model's inputs and outputs and, per node after simplification\n"
               "(BatchNorm folded, constant shape sub-graphs folded, Identity dropped):\n"
               "name, op, output shape, parameters and MACs for batch 1.\n\n"
               "  --json     print one JSON object instead of a table\n"
               "  -h, --help show this help\n");
}

static cJSON *shape_json(const ql_value *v)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < v->ndim; i++)
        cJSON_AddItemToArray(a, v->dims[i] < 0 ? cJSON_CreateNull()
                                               : cJSON_CreateNumber((double)v->dims[i]));
    return a;
}

static cJSON *io_json(const ql_graph *g, const int *ids, int n)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const ql_value *v = &g->values[ids[i]];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", v->name);
        cJSON_AddStringToObject(o, "dtype", ql_dtype_info(v->dtype)->name);
        cJSON_AddItemToObject(o, "shape", shape_json(v));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static int print_json(const ql_model *m)
{
    const ql_graph *g = m->graph;
    cJSON *root = cJSON_CreateObject();
    char fp[32];
    snprintf(fp, sizeof fp, "%016" PRIx64, m->fingerprint);
    cJSON_AddStringToObject(root, "model", m->path);
    cJSON_AddStringToObject(root, "fingerprint", fp);
    cJSON_AddNumberToObject(root, "opset", (double)m->opset);
    cJSON_AddNumberToObject(root, "ir_version", (double)m->ir_version);
    cJSON_AddStringToObject(root, "producer", m->producer ? m->producer : "");
    cJSON_AddItemToObject(root, "inputs", io_json(g, g->inputs, g->n_inputs));
    cJSON_AddItemToObject(root, "outputs", io_json(g, g->outputs, g->n_outputs));
    cJSON *nodes = cJSON_AddArrayToObject(root, "nodes");
    int64_t params = 0, macs = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", n->name);
        cJSON_AddStringToObject(o, "op", n->op_type);
        cJSON *ins = cJSON_AddArrayToObject(o, "inputs");
        for (int j = 0; j < n->n_in; j++)
            cJSON_AddItemToArray(ins, n->in[j] < 0 ? cJSON_CreateString("")
                                                    : cJSON_CreateString(g->values[n->in[j]].name));
        cJSON *outs = cJSON_AddArrayToObject(o, "outputs");
        for (int j = 0; j < n->n_out; j++)
            if (n->out[j] >= 0) {
                cJSON *vo = cJSON_CreateObject();
                cJSON_AddStringToObject(vo, "name", g->values[n->out[j]].name);
                cJSON_AddItemToObject(vo, "shape", shape_json(&g->values[n->out[j]]));
                cJSON_AddItemToArray(outs, vo);
            }
        int64_t p = ql_node_params(g, n), mc = ql_node_macs(g, n);
        params += p;
        macs += mc;
        cJSON_AddNumberToObject(o, "params", (double)p);
        cJSON_AddNumberToObject(o, "macs", (double)mc);
        cJSON_AddItemToArray(nodes, o);
    }
    cJSON_AddNumberToObject(root, "total_params", (double)params);
    cJSON_AddNumberToObject(root, "total_macs", (double)macs);
    return cli_json_print(root) == 0 ? 0 : 1;
}

/* Widens *w to fit s. */
static void fit(int *w, const char *s)
{
    size_t n = strlen(s);
    if (n > (size_t)*w)
        *w = n > 4096 ? 4096 : (int)n;
}

static void print_io(const char *title, const ql_graph *g, const int *ids, int n)
{
    char buf[128];
    int w = 24;
    for (int i = 0; i < n; i++)
        fit(&w, g->values[ids[i]].name);
    printf("%s:\n", title);
    for (int i = 0; i < n; i++) {
        const ql_value *v = &g->values[ids[i]];
        printf("  %-*s %-4s %s\n", w, v->name, ql_dtype_info(v->dtype)->name,
               ql_shape_str(v->ndim, v->dims, buf, sizeof buf));
    }
}

static const char *node_name(const ql_node *n) { return n->name[0] ? n->name : "-"; }

static const char *out_shape(const ql_graph *g, const ql_node *n, char *buf, size_t size)
{
    const ql_value *o = n->n_out && n->out[0] >= 0 ? &g->values[n->out[0]] : NULL;
    return o ? ql_shape_str(o->ndim, o->dims, buf, size) : "-";
}

static void print_text(const ql_model *m)
{
    const ql_graph *g = m->graph;
    char buf[128];
    printf("model:       %s\n", m->path);
    printf("opset:       %lld (ir %lld%s%s)\n", (long long)m->opset, (long long)m->ir_version,
           m->producer && m->producer[0] ? ", producer " : "", m->producer ? m->producer : "");
    printf("fingerprint: %016" PRIx64 "\n", m->fingerprint);
    print_io("inputs", g, g->inputs, g->n_inputs);
    print_io("outputs", g, g->outputs, g->n_outputs);
    printf("nodes: %d\n", g->n_nodes);
    /* columns as wide as their longest entry, so long names keep them aligned */
    int wn = 32, wo = 20, ws = 18;
    for (int i = 0; i < g->n_nodes; i++) {
        fit(&wn, node_name(&g->nodes[i]));
        fit(&wo, g->nodes[i].op_type);
        fit(&ws, out_shape(g, &g->nodes[i], buf, sizeof buf));
    }
    printf("  %4s  %-*s %-*s %-*s %10s %14s\n", "#", wn, "name", wo, "op", ws, "output", "params",
           "MACs");
    int64_t params = 0, macs = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        int64_t p = ql_node_params(g, n), mc = ql_node_macs(g, n);
        params += p;
        macs += mc;
        printf("  %4d  %-*s %-*s %-*s %10lld %14lld\n", i, wn, node_name(n), wo, n->op_type, ws,
               out_shape(g, n, buf, sizeof buf), (long long)p, (long long)mc);
    }
    printf("total: %lld parameters, %lld MACs per sample\n", (long long)params, (long long)macs);
}

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'h': info_usage(stdout); return 0;
        default: info_usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        cli_error("info", "expects exactly one MODEL.onnx (see 'qlens info --help')");
        return 2;
    }
    ql_error err = {{0}};
    ql_model *m = NULL;
    if (ql_model_load(argv[optind], &m, &err) != QL_OK) {
        cli_error("info", "%s", err.msg);
        return 1;
    }
    int rc = 0;
    if (json)
        rc = print_json(m);
    else
        print_text(m);
    ql_model_free(m);
    return rc;
}
