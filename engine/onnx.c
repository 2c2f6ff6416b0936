/* ONNX import: protobuf-c unpacks the file, then the model is copied into
 * the graph IR (which owns everything) and the protobuf is freed at once.
 * Every failure names the file and, where it has one, the node or tensor.
 * Untrusted input: sizes are checked against the bytes present before any
 * allocation, and every optional protobuf string may be NULL. */
#include "onnx.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"
#include "onnx.pb-c.h"
#include "op.h"
#include "passes.h"

/* Newest default-domain opset whose operator semantics qlens knows. Older
 * opsets are accepted: each op's since_version decides (ql_graph_bind_ops). */
#define QL_ONNX_MAX_OPSET 21

typedef struct import_ctx {
    const char *name; /* file name for messages */
    char *dir;        /* folder of the model, for external data */
    ql_error *err;
    /* A value_info with a type qlens lacks is reported only once the ops are
     * known to be supported: the unsupported-op list is the more useful news. */
    ql_status pending;
    ql_error pending_err;
} import_ctx;

static const char *str_or(const char *s, const char *dflt) { return s && s[0] ? s : dflt; }

static uint64_t fnv1a64(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static const char *dtype_onnx_name(int t)
{
    static const char *const names[] = {"UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16",
                                        "INT16", "INT32", "INT64", "STRING", "BOOL",
                                        "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64",
                                        "COMPLEX128", "BFLOAT16"};
    return t >= 0 && t < (int)(sizeof names / sizeof names[0]) ? names[t] : "UNKNOWN";
}

/* True if a relative path stays inside its folder: not absolute and no ".."
 * component. */
static bool path_is_contained(const char *p)
{
    if (p[0] == '/')
        return false;
    for (const char *c = p; *c;) {
        size_t len = strcspn(c, "/");
        if (len == 2 && c[0] == '.' && c[1] == '.')
            return false;
        c += len;
        while (*c == '/')
            c++;
    }
    return true;
}

static bool parse_size(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return false;
    *out = v;
    return true;
}

/* Opens a tensor's external data (location relative to the model folder,
 * optional offset and length: the ONNX convention) and positions *fp at its
 * first byte, once the file is known to hold `want` bytes there. */
static ql_status open_external(import_ctx *ic, const Onnx__TensorProto *tp, const char *what,
                               size_t want, FILE **fp)
{
    *fp = NULL;
    const char *loc = NULL;
    long long offset = 0, length = -1;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = tp->external_data[i];
        if (!e->key || !e->value)
            continue;
        bool ok = true;
        if (!strcmp(e->key, "location"))
            loc = e->value;
        else if (!strcmp(e->key, "offset"))
            ok = parse_size(e->value, &offset);
        else if (!strcmp(e->key, "length"))
            ok = parse_size(e->value, &length);
        if (!ok)
            return ql_fail(ic->err, QL_ERR_FORMAT,
                           "%s: %s: external data %s '%s' is not a byte count", ic->name,
                           what, e->key, e->value);
    }
    if (!loc || !loc[0])
        return ql_fail(ic->err, QL_ERR_FORMAT, "%s: %s has external data without a location",
                       ic->name, what);
    if (!path_is_contained(loc))
        return ql_fail(ic->err, QL_ERR_FORMAT,
                       "%s: %s: external data location '%s' must be a relative path "
                       "inside the model's folder",
                       ic->name, what, loc);
    if (length >= 0 && (unsigned long long)length != want)
        return ql_fail(ic->err, QL_ERR_FORMAT,
                       "%s: %s: external data length %lld does not match its shape "
                       "(%zu bytes)",
                       ic->name, what, length, want);
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", ic->dir, loc) >= sizeof path)
        return ql_fail(ic->err, QL_ERR_IO, "%s: %s: external data path too long", ic->name,
                       what);
    FILE *f = fopen(path, "rb");
    if (!f)
        return ql_fail(ic->err, QL_ERR_IO, "%s: %s: cannot open external data '%s': %s",
                       ic->name, what, path, strerror(errno));
    struct stat sb;
    /* check the size before anything is allocated for the claimed shape */
    if (fstat(fileno(f), &sb) != 0 || (unsigned long long)sb.st_size < (unsigned long long)offset ||
        (unsigned long long)sb.st_size - (unsigned long long)offset < want ||
        fseeko(f, (off_t)offset, SEEK_SET) != 0) {
        fclose(f);
        return ql_fail(ic->err, QL_ERR_FORMAT,
                       "%s: %s: external data '%s' is shorter than offset %lld + %zu bytes",
                       ic->name, what, path, offset, want);
    }
    *fp = f;
    return QL_OK;
}

/* Elements held in the typed field that carries dtype dt. */
static size_t typed_count(const Onnx__TensorProto *tp, ql_dtype dt)
{
    switch (dt) {
    case QL_F32: return tp->n_float_data;
    case QL_I64: return tp->n_int64_data;
    default: return tp->n_int32_data; /* int8/uint8/int16/int32/bool */
    }
}

/* Copies a TensorProto into a new owned tensor. `label` says what it is in
 * messages; NULL means "tensor '<its name>'". */
static ql_status tensor_from_proto(import_ctx *ic, const Onnx__TensorProto *tp,
                                   const char *label, ql_tensor **out)
{
    char what[512];
    if (label)
        snprintf(what, sizeof what, "%s", label);
    else
        snprintf(what, sizeof what, "tensor '%s'", str_or(tp->name, "?"));
    ql_dtype dt;
    *out = NULL;
    if (!ql_dtype_from_onnx(tp->data_type, &dt))
        return ql_fail(ic->err, QL_ERR_UNSUPPORTED,
                       "%s: %s has data type %s, which qlens does not support",
                       ic->name, what, dtype_onnx_name(tp->data_type));
    if (tp->segment)
        return ql_fail(ic->err, QL_ERR_UNSUPPORTED, "%s: %s is segmented, which qlens does not support",
                       ic->name, what);
    if (tp->n_dims > QL_MAX_DIMS)
        return ql_fail(ic->err, QL_ERR_UNSUPPORTED, "%s: %s has %zu dimensions (at most %d)",
                       ic->name, what, tp->n_dims, QL_MAX_DIMS);
    int64_t dims[QL_MAX_DIMS];
    int64_t numel = 1;
    for (size_t i = 0; i < tp->n_dims; i++) {
        dims[i] = tp->dims[i];
        if (dims[i] < 0 || (dims[i] > 0 && numel > (INT64_C(1) << 40) / dims[i]))
            return ql_fail(ic->err, QL_ERR_FORMAT, "%s: %s has an invalid dimension %lld",
                           ic->name, what, (long long)dims[i]);
        numel *= dims[i];
    }
    size_t es = ql_dtype_info(dt)->size, nbytes = (size_t)numel * es;
    bool external = tp->has_data_location &&
                    tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    /* validate the amount of data before allocating for the claimed shape */
    FILE *ext = NULL;
    if (external) {
        ql_status est = open_external(ic, tp, what, nbytes, &ext);
        if (est != QL_OK)
            return est;
    } else {
        size_t have = tp->has_raw_data ? tp->raw_data.len / es : typed_count(tp, dt);
        if ((tp->has_raw_data && tp->raw_data.len != nbytes) || have != (size_t)numel)
            return ql_fail(ic->err, QL_ERR_FORMAT,
                           "%s: %s holds %zu elements but its shape needs %lld",
                           ic->name, what, have, (long long)numel);
    }
    ql_tensor *t = ql_tensor_new(dt, (int)tp->n_dims, dims);
    ql_status st = QL_OK;
    if (!t) {
        st = ql_fail(ic->err, QL_ERR_NOMEM, "%s: out of memory for %s", ic->name, what);
    } else if (numel == 0) {
        /* nothing to copy (typed fields may be NULL) */
    } else if (ext) {
        if (fread(t->data, 1, nbytes, ext) != nbytes)
            st = ql_fail(ic->err, QL_ERR_IO, "%s: %s: cannot read its external data", ic->name, what);
    } else if (tp->has_raw_data) {
        memcpy(t->data, tp->raw_data.data, nbytes); /* little-endian, as is the host */
    } else if (dt == QL_F32) {
        memcpy(t->data, tp->float_data, nbytes);
    } else if (dt == QL_I64) {
        memcpy(t->data, tp->int64_data, nbytes);
    } else {
        for (int64_t i = 0; i < numel; i++) {
            int32_t v = tp->int32_data[i];
            switch (dt) {
            case QL_I8: ((int8_t *)t->data)[i] = (int8_t)v; break;
            case QL_U8: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
            case QL_BOOL: ((uint8_t *)t->data)[i] = v != 0; break;
            case QL_I16: ((int16_t *)t->data)[i] = (int16_t)v; break;
            default: ((int32_t *)t->data)[i] = v; break;
            }
        }
    }
    if (ext)
        fclose(ext);
    if (st != QL_OK) {
        ql_tensor_free(t);
        return st;
    }
    *out = t;
    return QL_OK;
}

/* Sets a value's dtype and shape from a ValueInfoProto (if it says). Types
 * qlens lacks become ic->pending. */
static void apply_value_info(import_ctx *ic, ql_graph *g, const Onnx__ValueInfoProto *vi,
                                  int v)
{
    const Onnx__TypeProto *tp = vi->type;
    const char *vname = str_or(vi->name, "?");
    if (!tp || tp->value_case == ONNX__TYPE_PROTO__VALUE__NOT_SET)
        return;
    if (tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) {
        if (ic->pending == QL_OK)
            ic->pending = ql_fail(&ic->pending_err, QL_ERR_UNSUPPORTED,
                                  "%s: value '%s' is not a tensor (sequences, maps and optionals "
                                  "are not supported)",
                                  ic->name, vname);
        return;
    }
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    ql_value *val = &g->values[v];
    if (tt->has_elem_type && tt->elem_type != 0 && !ql_dtype_from_onnx(tt->elem_type, &val->dtype)) {
        if (ic->pending == QL_OK)
            ic->pending = ql_fail(&ic->pending_err, QL_ERR_UNSUPPORTED,
                                  "%s: value '%s' has data type %s, which qlens does not support",
                                  ic->name, vname, dtype_onnx_name(tt->elem_type));
        return;
    }
    if (!tt->shape)
        return;
    if (tt->shape->n_dim > QL_MAX_DIMS) {
        if (ic->pending == QL_OK)
            ic->pending = ql_fail(&ic->pending_err, QL_ERR_UNSUPPORTED,
                                  "%s: value '%s' has %zu dimensions (at most %d)", ic->name, vname,
                                  tt->shape->n_dim, QL_MAX_DIMS);
        return;
    }
    val->ndim = (int)tt->shape->n_dim;
    for (size_t i = 0; i < tt->shape->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
        /* dim_param (symbolic, e.g. a dynamic batch) and absent dims: unknown */
        val->dims[i] = d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
                               d->dim_value >= 0
                           ? d->dim_value
                           : -1;
    }
}

/* IR version 1 attributes may lack a type: infer it from the field set. */
static int attr_type(const Onnx__AttributeProto *ap)
{
    if (ap->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
        return ap->type;
    if (ap->has_f)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    if (ap->has_i)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    if (ap->has_s)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    if (ap->t)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    if (ap->g)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
    if (ap->n_floats)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
    if (ap->n_ints)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    if (ap->n_strings)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
    return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

static char *dup_bytes(const ProtobufCBinaryData *b)
{
    char *s = malloc(b->len + 1);
    if (!s)
        return NULL;
    if (b->len)
        memcpy(s, b->data, b->len);
    s[b->len] = '\0';
    return s;
}

static ql_status import_attr(import_ctx *ic, ql_graph *g, int node, const Onnx__AttributeProto *ap)
{
    const ql_node *n = &g->nodes[node];
    ql_attr *a;
    if (!ap->name || !ap->name[0])
        return ql_fail(ic->err, QL_ERR_FORMAT, "%s: node '%s' (%s) has an attribute without a name",
                       ic->name, n->name, n->op_type);
    switch (attr_type(ap)) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
        if (!(a = ql_node_add_attr(g, node, ap->name, QL_ATTR_FLOAT)))
            goto oom;
        a->f = ap->f;
        return QL_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
        if (!(a = ql_node_add_attr(g, node, ap->name, QL_ATTR_INT)))
            goto oom;
        a->i = ap->i;
        return QL_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
        if (!(a = ql_node_add_attr(g, node, ap->name, QL_ATTR_STRING)) || !(a->s = dup_bytes(&ap->s)))
            goto oom;
        return QL_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: {
        if (!ap->t)
            break;
        ql_tensor *t = NULL;
        char label[512];
        snprintf(label, sizeof label, "node '%s' (%s): attribute '%s'", n->name, n->op_type, ap->name);
        ql_status st = tensor_from_proto(ic, ap->t, label, &t);
        if (st != QL_OK)
            return st;
        if (!(a = ql_node_add_attr(g, node, ap->name, QL_ATTR_TENSOR))) {
            ql_tensor_free(t);
            goto oom;
        }
        a->t = t;
        return QL_OK;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        if (!(a = ql_node_add_attr(g, node, ap->name, QL_ATTR_FLOATS)) ||
            !(a->floats = malloc((ap->n_floats + 1) * sizeof *a->floats)))
            goto oom;
        a->n = (int)ap->n_floats;
        if (ap->n_floats)
            memcpy(a->floats, ap->floats, ap->n_floats * sizeof *a->floats);
        return QL_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        if (!(a = ql_node_add_attr(g, node, ap->name, QL_ATTR_INTS)) ||
            !(a->ints = malloc((ap->n_ints + 1) * sizeof *a->ints)))
            goto oom;
        a->n = (int)ap->n_ints;
        if (ap->n_ints)
            memcpy(a->ints, ap->ints, ap->n_ints * sizeof *a->ints);
        return QL_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS:
        if (!(a = ql_node_add_attr(g, node, ap->name, QL_ATTR_STRINGS)) ||
            !(a->strings = calloc(ap->n_strings + 1, sizeof *a->strings)))
            goto oom;
        a->n = (int)ap->n_strings; /* set first: ql_attr_clear frees a->n strings */
        for (size_t i = 0; i < ap->n_strings; i++)
            if (!(a->strings[i] = dup_bytes(&ap->strings[i])))
                goto oom;
        return QL_OK;
    default:
        break;
    }
    /* An op qlens does not know (If, Loop, Scan, ...) is reported with all the
     * other unsupported ops by ql_graph_bind_ops; its attributes never matter. */
    if (ql_op_find(n->op_type, n->domain) < 0)
        return QL_OK;
    return ql_fail(ic->err, QL_ERR_UNSUPPORTED,
                   "%s: node '%s' (%s): attribute '%s' is a graph, sparse tensor, tensor list or "
                   "type, which qlens does not support",
                   ic->name, n->name, n->op_type, ap->name);
oom:
    return ql_fail(ic->err, QL_ERR_NOMEM, "%s: out of memory", ic->name);
}

/* Binds a new constant to value v, taking ownership of t. */
static void set_constant(ql_graph *g, int v, ql_tensor *t)
{
    ql_value *val = &g->values[v];
    ql_tensor_free(val->constant);
    val->constant = t;
    val->dtype = t->dtype;
    val->ndim = t->ndim;
    memcpy(val->dims, t->dims, sizeof t->dims);
}

static bool default_domain(const char *d) { return !d || !d[0] || !strcmp(d, "ai.onnx"); }

/* Constant nodes whose value is known become constant values; returns 1 if
 * handled (then *st says how it went), 0 to import the node as a node. */
static int import_constant(import_ctx *ic, ql_graph *g, const Onnx__NodeProto *np,
                           const char *nm, ql_status *st)
{
    if (strcmp(np->op_type, "Constant") != 0 || !default_domain(np->domain) || np->n_output != 1 ||
        !np->output[0][0] || np->n_attribute != 1 || !np->attribute[0]->name)
        return 0;
    const Onnx__AttributeProto *ap = np->attribute[0];
    ql_tensor *t = NULL;
    *st = QL_OK;
    if (!strcmp(ap->name, "value") && ap->t) {
        char label[512];
        snprintf(label, sizeof label, "node '%s' (Constant): value of '%s'", nm, np->output[0]);
        if ((*st = tensor_from_proto(ic, ap->t, label, &t)) != QL_OK)
            return 1;
    } else if (!strcmp(ap->name, "value_float") || !strcmp(ap->name, "value_int")) {
        bool isf = ap->name[6] == 'f';
        if ((t = ql_tensor_new(isf ? QL_F32 : QL_I64, 0, NULL))) {
            if (isf)
                *(float *)t->data = ap->f;
            else
                *(int64_t *)t->data = ap->i;
        }
    } else if (!strcmp(ap->name, "value_floats") || !strcmp(ap->name, "value_ints")) {
        bool isf = ap->name[6] == 'f';
        int64_t n = isf ? (int64_t)ap->n_floats : (int64_t)ap->n_ints;
        t = ql_tensor_new(isf ? QL_F32 : QL_I64, 1, &n);
        if (t && n)
            memcpy(t->data, isf ? (const void *)ap->floats : (const void *)ap->ints,
                   (size_t)n * (isf ? sizeof(float) : sizeof(int64_t)));
    } else {
        return 0; /* sparse_value, strings: left to the op, which refuses them */
    }
    int v = t ? ql_graph_value(g, np->output[0]) : -1;
    if (v < 0) {
        ql_tensor_free(t);
        *st = ql_fail(ic->err, QL_ERR_NOMEM, "%s: out of memory", ic->name);
        return 1;
    }
    if (g->values[v].constant || g->values[v].is_input || g->values[v].producer >= 0) {
        ql_tensor_free(t);
        *st = ql_fail(ic->err, QL_ERR_FORMAT,
                      "%s: node '%s' (Constant) writes '%s', which is already defined", ic->name,
                      nm, np->output[0]);
        return 1;
    }
    set_constant(g, v, t);
    return 1;
}

/* Imports one NodeProto (node index i in the file). */
static ql_status import_node(import_ctx *ic, ql_graph *g, const Onnx__NodeProto *np, size_t i)
{
    char auto_name[64];
    const char *nm = np->name;
    if (!np->op_type || !np->op_type[0])
        return ql_fail(ic->err, QL_ERR_FORMAT, "%s: node %zu has no op type", ic->name, i);
    if (!nm || !nm[0]) { /* unnamed nodes get a stable name from their position */
        snprintf(auto_name, sizeof auto_name, "%.40s_%zu", np->op_type, i);
        nm = auto_name;
    }
    ql_status st = QL_OK;
    if (import_constant(ic, g, np, nm, &st))
        return st;
    enum { MAX_IO = 64 };
    int vin[MAX_IO], vout[MAX_IO];
    if (np->n_input > MAX_IO || np->n_output > MAX_IO)
        return ql_fail(ic->err, QL_ERR_UNSUPPORTED, "%s: node '%s' has more than %d inputs or outputs",
                       ic->name, nm, MAX_IO);
    /* an empty name is an absent optional input or an unused output */
    for (size_t j = 0; j < np->n_input; j++) {
        vin[j] = -1;
        if (np->input[j][0] && (vin[j] = ql_graph_value(g, np->input[j])) < 0)
            goto oom;
    }
    for (size_t j = 0; j < np->n_output; j++) {
        vout[j] = -1;
        if (np->output[j][0] && (vout[j] = ql_graph_value(g, np->output[j])) < 0)
            goto oom;
    }
    int node = ql_graph_add_node(g, nm, np->op_type, np->domain, (int)np->n_input, vin,
                                 (int)np->n_output, vout);
    if (node < 0)
        goto oom;
    for (size_t j = 0; j < np->n_output; j++) {
        if (vout[j] < 0)
            continue;
        ql_value *val = &g->values[vout[j]];
        if (val->constant || val->is_input)
            return ql_fail(ic->err, QL_ERR_FORMAT,
                           "%s: node '%s' writes '%s', which is a graph input or initializer",
                           ic->name, nm, np->output[j]);
        if (val->producer >= 0)
            return ql_fail(ic->err, QL_ERR_FORMAT, "%s: node '%s' writes '%s', which node '%s' also writes",
                           ic->name, nm, np->output[j], g->nodes[val->producer].name);
        val->producer = node; /* relinked after sorting; here only to catch duplicates */
    }
    for (size_t j = 0; j < np->n_attribute; j++)
        if ((st = import_attr(ic, g, node, np->attribute[j])) != QL_OK)
            return st;
    return QL_OK;
oom:
    return ql_fail(ic->err, QL_ERR_NOMEM, "%s: out of memory", ic->name);
}

static ql_status import_graph(import_ctx *ic, const Onnx__ModelProto *mp, ql_graph *g)
{
    const Onnx__GraphProto *gp = mp->graph;
    ql_status st = QL_OK;
    int *ins = NULL, *outs = NULL;

    g->opset = 0;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        if (default_domain(o->domain))
            g->opset = o->version;
    }
    if (g->opset > QL_ONNX_MAX_OPSET)
        return ql_fail(ic->err, QL_ERR_UNSUPPORTED,
                       "%s: the model uses opset %lld of the default ONNX domain; qlens supports "
                       "opsets up to %d",
                       ic->name, (long long)g->opset, QL_ONNX_MAX_OPSET);
    free(g->name);
    if (!(g->name = strdup(gp->name ? gp->name : "")))
        goto oom;

    /* initializers: constant values */
    for (size_t i = 0; i < gp->n_initializer; i++) {
        const Onnx__TensorProto *tp = gp->initializer[i];
        if (!tp->name || !tp->name[0])
            return ql_fail(ic->err, QL_ERR_FORMAT, "%s: initializer %zu has no name", ic->name, i);
        int v = ql_graph_value(g, tp->name);
        if (v < 0)
            goto oom;
        if (g->values[v].constant)
            return ql_fail(ic->err, QL_ERR_FORMAT, "%s: initializer '%s' is defined twice", ic->name,
                           tp->name);
        ql_tensor *t = NULL;
        if ((st = tensor_from_proto(ic, tp, NULL, &t)) != QL_OK)
            return st;
        set_constant(g, v, t);
    }
    if (gp->n_sparse_initializer)
        return ql_fail(ic->err, QL_ERR_UNSUPPORTED, "%s: sparse initializers are not supported", ic->name);

    /* inputs: those that are initializers are constants (ONNX IR < 4 lists both) */
    ins = malloc((gp->n_input + 1) * sizeof *ins);
    outs = malloc((gp->n_output + 1) * sizeof *outs);
    if (!ins || !outs)
        goto oom;
    int n_in = 0;
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        if (!vi->name || !vi->name[0]) {
            st = ql_fail(ic->err, QL_ERR_FORMAT, "%s: graph input %zu has no name", ic->name, i);
            goto cleanup;
        }
        int v = ql_graph_value(g, vi->name);
        if (v < 0)
            goto oom;
        if (g->values[v].constant)
            continue;
        if (g->values[v].is_input) {
            st = ql_fail(ic->err, QL_ERR_FORMAT, "%s: graph input '%s' is listed twice", ic->name,
                         vi->name);
            goto cleanup;
        }
        apply_value_info(ic, g, vi, v);
        g->values[v].is_input = true;
        ins[n_in++] = v;
    }

    for (size_t i = 0; i < gp->n_node; i++)
        if ((st = import_node(ic, g, gp->node[i], i)) != QL_OK)
            goto cleanup;

    /* without a default-domain opset only other domains' nodes make sense;
     * those are listed as unsupported ops by ql_graph_bind_ops */
    for (int i = 0; g->opset <= 0 && i < g->n_nodes; i++)
        if (default_domain(g->nodes[i].domain)) {
            st = ql_fail(ic->err, QL_ERR_FORMAT,
                         "%s: node '%s' (%s) is in the default ONNX domain, but the model "
                         "imports no opset of it",
                         ic->name, g->nodes[i].name, g->nodes[i].op_type);
            goto cleanup;
        }

    /* declared shapes of intermediate values: hints where inference cannot tell */
    for (size_t i = 0; i < gp->n_value_info; i++) {
        const Onnx__ValueInfoProto *vi = gp->value_info[i];
        int v = vi->name ? ql_graph_find_value(g, vi->name) : -1;
        if (v >= 0 && !g->values[v].constant && !g->values[v].is_input)
            apply_value_info(ic, g, vi, v);
    }
    int n_out = 0;
    for (size_t i = 0; i < gp->n_output; i++) {
        const Onnx__ValueInfoProto *vi = gp->output[i];
        int v = vi->name && vi->name[0] ? ql_graph_find_value(g, vi->name) : -1;
        if (v < 0) {
            st = ql_fail(ic->err, QL_ERR_FORMAT, "%s: graph output '%s' is never produced", ic->name,
                         str_or(vi->name, "?"));
            goto cleanup;
        }
        if (!g->values[v].constant && !g->values[v].is_input)
            apply_value_info(ic, g, vi, v);
        outs[n_out++] = v;
    }
    if (n_out == 0) {
        st = ql_fail(ic->err, QL_ERR_FORMAT, "%s: the graph has no outputs", ic->name);
        goto cleanup;
    }
    g->inputs = ins;
    g->n_inputs = n_in;
    g->outputs = outs;
    g->n_outputs = n_out;
    ins = outs = NULL;
cleanup:
    free(ins);
    free(outs);
    return st;
oom:
    st = ql_fail(ic->err, QL_ERR_NOMEM, "%s: out of memory", ic->name);
    goto cleanup;
}

/* The folder holding `name`, for external data ("." when it has none). */
static char *folder_of(const char *name)
{
    const char *slash = strrchr(name, '/');
    if (!slash)
        return strdup(".");
    if (slash == name)
        return strdup("/");
    return strndup(name, (size_t)(slash - name));
}

static ql_status parse(const void *buf, size_t len, const char *name, ql_model **out, ql_error *err)
{
    ql_status st = QL_OK;
    ql_model *m = NULL;
    import_ctx ic = {.name = name, .err = err};
    Onnx__ModelProto *mp = NULL;
    *out = NULL;

    if (len == 0)
        return ql_fail(err, QL_ERR_FORMAT, "%s: the file is empty, not an ONNX model", name);
    mp = onnx__model_proto__unpack(NULL, len, buf);
    if (!mp)
        return ql_fail(err, QL_ERR_FORMAT, "%s: not an ONNX model (the protobuf is corrupt or truncated)",
                       name);
    /* random bytes can decode as a protobuf of unknown fields: insist on a graph */
    if (!mp->graph || (!mp->graph->n_node && !mp->graph->n_output)) {
        st = ql_fail(err, QL_ERR_FORMAT, "%s: not an ONNX model (no graph)", name);
        goto cleanup;
    }
    ic.dir = folder_of(name);
    m = calloc(1, sizeof *m);
    if (!ic.dir || !m || !(m->graph = ql_graph_new()))
        goto oom;
    char producer[256];
    snprintf(producer, sizeof producer, "%s%s%s", mp->producer_name ? mp->producer_name : "",
             mp->producer_version && mp->producer_version[0] ? " " : "",
             mp->producer_version ? mp->producer_version : "");
    free(m->graph->source);
    if (!(m->path = strdup(name)) || !(m->producer = strdup(producer)) ||
        !(m->graph->source = strdup(name)))
        goto oom;
    m->ir_version = mp->ir_version;
    m->fingerprint = fnv1a64(buf, len);
    if ((st = import_graph(&ic, mp, m->graph)) != QL_OK)
        goto cleanup;
    m->opset = m->graph->opset;
    if ((st = ql_graph_bind_ops(m->graph, err)) != QL_OK) {
        ql_fail_prefix(err, st, "%s", name);
        goto cleanup;
    }
    if (ic.pending != QL_OK) {
        st = ql_fail(err, ic.pending, "%s", ic.pending_err.msg);
        goto cleanup;
    }
    if ((st = ql_graph_toposort(m->graph, err)) != QL_OK ||
        (st = ql_graph_infer_shapes(m->graph, err)) != QL_OK) {
        ql_fail_prefix(err, st, "%s", name);
        goto cleanup;
    }
cleanup:
    if (mp)
        onnx__model_proto__free_unpacked(mp, NULL);
    free(ic.dir);
    if (st != QL_OK) {
        ql_model_free(m);
        return st;
    }
    *out = m;
    return QL_OK;
oom:
    st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", name);
    goto cleanup;
}

ql_status ql_onnx_parse(const void *buf, size_t len, const char *name, ql_model **out, ql_error *err)
{
    return parse(buf, len, name, out, err);
}

ql_status ql_model_load_buffer(const void *buf, size_t len, const char *name, ql_model **out,
                               ql_error *err)
{
    ql_model *m = NULL;
    ql_status st = parse(buf, len, name, &m, err);
    if (st != QL_OK)
        return st;
    if ((st = ql_passes_run(m->graph, err)) != QL_OK ||
        (st = ql_graph_infer_shapes(m->graph, err)) != QL_OK ||
        (st = ql_graph_prepare(m->graph, err)) != QL_OK) {
        ql_fail_prefix(err, st, "%s", name);
        ql_model_free(m);
        return st;
    }
    *out = m;
    return QL_OK;
}

ql_status ql_model_load(const char *path, ql_model **out, ql_error *err)
{
    void *buf = NULL;
    size_t len = 0;
    *out = NULL;
    ql_status st = ql_read_file(path, false, &buf, &len, err);
    if (st != QL_OK)
        return st;
    st = ql_model_load_buffer(buf, len, path, out, err);
    free(buf);
    return st;
}

void ql_model_free(ql_model *m)
{
    if (!m)
        return;
    ql_graph_free(m->graph);
    free(m->path);
    free(m->producer);
    free(m);
}

ql_status ql_onnx_tensor_parse(const void *buf, size_t len, const char *name, ql_tensor **out,
                               char **tensor_name, ql_error *err)
{
    import_ctx ic = {.name = name, .dir = NULL, .err = err};
    ql_status st = QL_OK;
    *out = NULL;
    if (tensor_name)
        *tensor_name = NULL;
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, buf);
    if (!tp)
        return ql_fail(err, QL_ERR_FORMAT, "%s: not a serialized ONNX tensor", name);
    if (!(ic.dir = folder_of(name))) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", name);
        goto cleanup;
    }
    if ((st = tensor_from_proto(&ic, tp, NULL, out)) != QL_OK)
        goto cleanup;
    if (tensor_name && !(*tensor_name = strdup(tp->name ? tp->name : ""))) {
        ql_tensor_free(*out);
        *out = NULL;
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", name);
    }
cleanup:
    free(ic.dir);
    onnx__tensor_proto__free_unpacked(tp, NULL);
    return st;
}
