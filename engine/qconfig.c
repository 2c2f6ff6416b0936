/* The quant config: in-memory editing, validation, a deterministic JSON
 * writer (our own, so that key order, indentation and float digits never
 * depend on cJSON's printer) and atomic saving. Reading is qconfig_read.c;
 * both share the validators declared in qconfig_priv.h. */
#include "qconfig.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outfile.h"
#include "qconfig_priv.h"

#define QL_PREC_NAME_(e, s, b) s,
static const char *const prec_names[] = {QL_PREC_LIST(QL_PREC_NAME_)};
#undef QL_PREC_NAME_
#define QL_PREC_BITS_(e, s, b) b,
static const int prec_bits[] = {QL_PREC_LIST(QL_PREC_BITS_)};
#undef QL_PREC_BITS_
static_assert(sizeof prec_names / sizeof prec_names[0] == QL_PREC_COUNT,
              "precision name table out of step with ql_prec");

const char *ql_prec_name(ql_prec p)
{
    return (unsigned)p < QL_PREC_COUNT ? prec_names[p] : "?";
}

bool ql_prec_parse(const char *s, ql_prec *out)
{
    for (int i = 0; i < QL_PREC_COUNT; i++)
        if (!strcmp(s, prec_names[i])) {
            *out = (ql_prec)i;
            return true;
        }
    return false;
}

int ql_prec_bits(ql_prec p)
{
    return (unsigned)p < QL_PREC_COUNT ? prec_bits[p] : 0;
}

/* ---------------------------------------------------------------------------
 * In-memory config
 * ------------------------------------------------------------------------- */

ql_qsettings ql_qcfg_default_settings(void)
{
    ql_qsettings s = {.mask = QL_QS_ALL, .precision = QL_PREC_INT8, .weight_bits = 8,
                      .per_channel = true};
    strcpy(s.act_algo, "kl");
    strcpy(s.weight_algo, "minmax");
    return s;
}

ql_qconfig *ql_qconfig_new(void)
{
    ql_qconfig *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->version = QL_QCONFIG_VERSION;
    c->defaults = ql_qcfg_default_settings();
    return c;
}

static void layer_free(ql_qlayer_cfg *l)
{
    free(l->name);
    free(l->reason);
}

static void tensor_free(ql_qtensor_cfg *t)
{
    free(t->name);
    ql_encoding_clear(&t->enc);
    free(t->q);
}

void ql_qconfig_free(ql_qconfig *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_layers; i++)
        layer_free(&c->layers[i]);
    free(c->layers);
    ql_qconfig_clear_tensors(c);
    free(c->model_file);
    free(c);
}

/* Appends one zeroed element to an array of n. The arrays carry no
 * capacity: it is implied, growing to the next power of two, so appends
 * are amortised O(1) (removals only shrink n, which keeps the invariant). */
static void *grow(void *arr, int n, size_t elem)
{
    if (n > 0 && (n & (n - 1)))
        return arr;
    void *p = realloc(arr, (size_t)(n ? 2 * n : 1) * elem);
    return p;
}

ql_qconfig *ql_qconfig_clone(const ql_qconfig *c)
{
    ql_qconfig *d = ql_qconfig_new();
    if (!d)
        return NULL;
    d->version = c->version;
    d->fingerprint = c->fingerprint;
    d->defaults = c->defaults;
    d->calib_samples = c->calib_samples;
    if (c->model_file && !(d->model_file = strdup(c->model_file)))
        goto fail;
    for (int i = 0; i < c->n_layers; i++) {
        ql_qlayer_cfg *l = ql_qconfig_layer(d, c->layers[i].name);
        if (!l)
            goto fail;
        l->s = c->layers[i].s;
        if (c->layers[i].reason && !(l->reason = strdup(c->layers[i].reason)))
            goto fail;
    }
    for (int i = 0; i < c->n_tensors; i++) {
        const ql_qtensor_cfg *s = &c->tensors[i];
        ql_qtensor_cfg *t = ql_qconfig_tensor(d, s->name);
        if (!t || (s->enc.n && ql_encoding_copy(&t->enc, &s->enc, NULL) != QL_OK))
            goto fail;
        if (s->n_q) {
            if (!(t->q = malloc((size_t)s->n_q * sizeof *t->q)))
                goto fail;
            memcpy(t->q, s->q, (size_t)s->n_q * sizeof *t->q);
            t->n_q = s->n_q;
        }
    }
    return d;
fail:
    ql_qconfig_free(d);
    return NULL;
}

static ql_qlayer_cfg *find_layer(const ql_qconfig *c, const char *name)
{
    for (int i = 0; i < c->n_layers; i++)
        if (!strcmp(c->layers[i].name, name))
            return &c->layers[i];
    return NULL;
}

ql_qsettings ql_qconfig_layer_settings(const ql_qconfig *c, const char *layer)
{
    ql_qsettings s = c->defaults;
    const ql_qlayer_cfg *l = layer ? find_layer(c, layer) : NULL;
    if (!l)
        return s;
    unsigned m = l->s.mask;
    if (m & QL_QS_PRECISION)
        s.precision = l->s.precision;
    if (m & QL_QS_ACT_ALGO)
        memcpy(s.act_algo, l->s.act_algo, sizeof s.act_algo);
    if (m & QL_QS_WEIGHT_ALGO)
        memcpy(s.weight_algo, l->s.weight_algo, sizeof s.weight_algo);
    if (m & QL_QS_WEIGHT_BITS)
        s.weight_bits = l->s.weight_bits;
    if (m & QL_QS_PER_CHANNEL)
        s.per_channel = l->s.per_channel;
    s.mask = QL_QS_ALL;
    return s;
}

ql_qlayer_cfg *ql_qconfig_layer(ql_qconfig *c, const char *layer)
{
    ql_qlayer_cfg *l = find_layer(c, layer);
    if (l)
        return l;
    char *name = strdup(layer);
    ql_qlayer_cfg *arr = name ? grow(c->layers, c->n_layers, sizeof *arr) : NULL;
    if (!arr) {
        free(name);
        return NULL;
    }
    c->layers = arr;
    l = &arr[c->n_layers++];
    memset(l, 0, sizeof *l);
    l->name = name;
    return l;
}

void ql_qconfig_reset_layer(ql_qconfig *c, const char *layer, unsigned mask)
{
    ql_qlayer_cfg *l = find_layer(c, layer);
    if (!l)
        return;
    l->s.mask &= ~mask;
    if (l->s.mask)
        return;
    /* No field left: the override and its reason go. */
    layer_free(l);
    int i = (int)(l - c->layers);
    memmove(l, l + 1, (size_t)(c->n_layers - i - 1) * sizeof *l);
    c->n_layers--;
}

const ql_qtensor_cfg *ql_qconfig_find_tensor(const ql_qconfig *c, const char *name)
{
    for (int i = 0; i < c->n_tensors; i++)
        if (!strcmp(c->tensors[i].name, name))
            return &c->tensors[i];
    return NULL;
}

ql_qtensor_cfg *ql_qconfig_tensor(ql_qconfig *c, const char *name)
{
    ql_qtensor_cfg *t = (ql_qtensor_cfg *)ql_qconfig_find_tensor(c, name);
    if (t)
        return t;
    char *nm = strdup(name);
    ql_qtensor_cfg *arr = nm ? grow(c->tensors, c->n_tensors, sizeof *arr) : NULL;
    if (!arr) {
        free(nm);
        return NULL;
    }
    c->tensors = arr;
    t = &arr[c->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = nm;
    return t;
}

void ql_qconfig_clear_tensors(ql_qconfig *c)
{
    for (int i = 0; i < c->n_tensors; i++)
        tensor_free(&c->tensors[i]);
    free(c->tensors);
    c->tensors = NULL;
    c->n_tensors = 0;
}

/* ---------------------------------------------------------------------------
 * Validation shared by saving and loading. Each returns NULL or a message,
 * with the offending key (and index) in `where`.
 * ------------------------------------------------------------------------- */

const char *ql_qcfg_check_algo(const char *a)
{
    size_t n = strnlen(a, QL_ALGO_MAX);
    if (n == 0)
        return "must not be empty";
    if (n >= QL_ALGO_MAX)
        return "longer than 255 bytes";
    return NULL;
}

const char *ql_qcfg_check_settings(const ql_qsettings *s, char *where, size_t wn)
{
    const char *why = NULL;
    if ((s->mask & QL_QS_PRECISION) && (unsigned)s->precision >= QL_PREC_COUNT)
        snprintf(where, wn, "precision"), why = "expected one of int8, int16, float";
    else if ((s->mask & QL_QS_ACT_ALGO) && (why = ql_qcfg_check_algo(s->act_algo)))
        snprintf(where, wn, "act_algo");
    else if ((s->mask & QL_QS_WEIGHT_ALGO) && (why = ql_qcfg_check_algo(s->weight_algo)))
        snprintf(where, wn, "weight_algo");
    else if ((s->mask & QL_QS_WEIGHT_BITS) && (s->weight_bits < 2 || s->weight_bits > 16))
        snprintf(where, wn, "weight_bits"), why = "expected an integer from 2 to 16";
    return why;
}

const char *ql_qcfg_check_tensor(const ql_qtensor_cfg *t, char *where, size_t wn, char *buf,
                                 size_t bn)
{
    const ql_encoding *e = &t->enc;
    const char *why = ql_qspec_check(&e->spec);
    if (why) {
        snprintf(where, wn, "bits");
        return why;
    }
    if (e->spec.axis < -1 || e->spec.axis >= QL_MAX_DIMS) {
        snprintf(where, wn, "axis");
        return "expected -1 (per tensor) or a channel axis from 0 to 7";
    }
    snprintf(where, wn, "scale");
    if (e->n < 1)
        return "expected at least one value";
    if (e->spec.axis < 0 && e->n != 1)
        return "a per-tensor encoding (axis -1) has exactly one value";
    int64_t qmin, qmax;
    ql_qspec_range(&e->spec, &qmin, &qmax);
    for (int64_t c = 0; c < e->n; c++) {
        float s = e->scale[c], lo = e->lo[c], hi = e->hi[c];
        int32_t zp = e->zero_point[c];
        if (!(s > 0.0f) || !isfinite(s)) {
            snprintf(where, wn, "scale[%lld]", (long long)c);
            return "must be positive and finite";
        }
        snprintf(where, wn, "zero_point[%lld]", (long long)c);
        if (zp < qmin || zp > qmax) {
            snprintf(buf, bn, "outside the integer range [%lld, %lld]", (long long)qmin,
                     (long long)qmax);
            return buf;
        }
        int32_t fixed = e->spec.is_signed ? 0 : (int32_t)1 << (e->spec.bits - 1);
        if (e->spec.symmetric && zp != fixed) {
            snprintf(buf, bn, "must be %d for a symmetric %s encoding", (int)fixed,
                     e->spec.is_signed ? "signed" : "unsigned");
            return buf;
        }
        if (!isfinite(lo) || !isfinite(hi) || lo > hi) {
            snprintf(where, wn, "%s[%lld]", !isfinite(lo) ? "min" : "max", (long long)c);
            return !isfinite(lo) || !isfinite(hi) ? "must be finite" : "min is greater than max";
        }
    }
    snprintf(where, wn, "q");
    if (t->n_q < 0 || (t->n_q > 0 && !t->q))
        return "no values";
    if (t->n_q > 0 && e->spec.bits > 16)
        return "integer values are stored only for encodings of at most 16 bits";
    if (t->n_q % e->n) {
        snprintf(buf, bn, "%lld values are not a multiple of the %lld channels",
                 (long long)t->n_q, (long long)e->n);
        return buf;
    }
    for (int64_t i = 0; i < t->n_q; i++)
        if (t->q[i] < qmin || t->q[i] > qmax) {
            snprintf(where, wn, "q[%lld]", (long long)i);
            snprintf(buf, bn, "%d is outside the integer range [%lld, %lld]", (int)t->q[i],
                     (long long)qmin, (long long)qmax);
            return buf;
        }
    return NULL;
}

/* `prefix.key`, or `prefix."key"` with \ and " escaped when the key is not
 * a plain word (ONNX names often hold '/', '.' or spaces). */
void ql_qcfg_path_key(char *out, size_t n, const char *prefix, const char *key)
{
    bool plain = *key != '\0';
    for (const char *k = key; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
              (*k >= '0' && *k <= '9') || *k == '_' || *k == '-'))
            plain = false;
    size_t len = (size_t)snprintf(out, n, "%s%s", prefix, *prefix ? "." : "");
    if (plain) {
        snprintf(out + (len < n ? len : n - 1), n - (len < n ? len : n - 1), "%s", key);
        return;
    }
    if (len + 1 < n)
        out[len++] = '"';
    for (const char *k = key; *k && len + 3 < n; k++) {
        if (*k == '"' || *k == '\\')
            out[len++] = '\\';
        out[len++] = *k;
    }
    if (len + 1 < n)
        out[len++] = '"';
    out[len < n ? len : n - 1] = '\0';
}

/* ---------------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------------- */

typedef struct jbuf {
    char *p;
    size_t n, cap;
    bool oom;
} jbuf;

static void jb_add(jbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void jb_puts(jbuf *b, const char *s) { jb_add(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void jb_printf(jbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    assert(n >= 0 && (size_t)n < sizeof tmp);
    jb_add(b, tmp, (size_t)n);
}

static void jb_str(jbuf *b, const char *s)
{
    jb_puts(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            jb_printf(b, "\\%c", ch);
        else if (ch == '\n')
            jb_puts(b, "\\n");
        else if (ch == '\t')
            jb_puts(b, "\\t");
        else if (ch < 0x20)
            jb_printf(b, "\\u%04x", ch);
        else
            jb_add(b, (const char *)&ch, 1);
    }
    jb_puts(b, "\"");
}

/* The shortest %.Ng (N <= 9) that reads back as the same float32. Printed
 * in the current locale (so strtof can check it), then the decimal point is
 * made '.' as JSON requires. */
static void jb_float(jbuf *b, float v)
{
    char s[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, (double)v);
        float r = strtof(s, NULL);
        if (!memcmp(&r, &v, sizeof r))
            break;
    }
    const char *dp = localeconv()->decimal_point;
    char *at = dp && *dp && strcmp(dp, ".") ? strstr(s, dp) : NULL;
    if (at) {
        size_t dl = strlen(dp);
        *at = '.';
        memmove(at + 1, at + dl, strlen(at + dl) + 1);
    }
    jb_puts(b, s);
}

static void jb_floats(jbuf *b, const float *v, int64_t n)
{
    jb_puts(b, "[");
    for (int64_t i = 0; i < n; i++) {
        if (i)
            jb_puts(b, ", ");
        jb_float(b, v[i]);
    }
    jb_puts(b, "]");
}

static void jb_base64_i16(jbuf *b, const int32_t *q, int64_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t nb = (size_t)n * 2;
    uint32_t acc = 0;
    char out[4];
    jb_puts(b, "\"");
    for (size_t i = 0; i < nb; i += 3) {
        acc = 0;
        for (size_t k = 0; k < 3; k++) {
            size_t j = i + k;
            uint8_t byte = 0;
            if (j < nb)
                byte = (uint8_t)(((uint16_t)(int16_t)q[j / 2]) >> (8 * (j % 2)));
            acc = acc << 8 | byte;
        }
        for (int k = 0; k < 4; k++)
            out[k] = tab[(acc >> (18 - 6 * k)) & 63];
        if (i + 1 >= nb)
            out[2] = '=';
        if (i + 2 >= nb)
            out[3] = '=';
        jb_add(b, out, 4);
    }
    jb_puts(b, "\"");
}

static void jb_settings(jbuf *b, const ql_qsettings *s, const char *reason, const char *ind)
{
    const char *sep = "";
    jb_puts(b, "{");
    if (s->mask & QL_QS_PRECISION)
        jb_printf(b, "%s\n%s\"precision\": \"%s\"", sep, ind, ql_prec_name(s->precision)),
            sep = ",";
    if (s->mask & QL_QS_ACT_ALGO)
        jb_printf(b, "%s\n%s\"act_algo\": ", sep, ind), jb_str(b, s->act_algo), sep = ",";
    if (s->mask & QL_QS_WEIGHT_ALGO)
        jb_printf(b, "%s\n%s\"weight_algo\": ", sep, ind), jb_str(b, s->weight_algo), sep = ",";
    if (s->mask & QL_QS_WEIGHT_BITS)
        jb_printf(b, "%s\n%s\"weight_bits\": %d", sep, ind, s->weight_bits), sep = ",";
    if (s->mask & QL_QS_PER_CHANNEL)
        jb_printf(b, "%s\n%s\"per_channel\": %s", sep, ind, s->per_channel ? "true" : "false"),
            sep = ",";
    if (reason)
        jb_printf(b, "%s\n%s\"reason\": ", sep, ind), jb_str(b, reason), sep = ",";
    if (*sep)
        jb_printf(b, "\n%.*s", (int)strlen(ind) - 2, ind);
    jb_puts(b, "}");
}

static void jb_tensor(jbuf *b, const ql_qtensor_cfg *t)
{
    const ql_encoding *e = &t->enc;
    const char *ind = "      ";
    jb_printf(b, "{\n%s\"bits\": %d,\n%s\"signed\": %s,\n%s\"symmetric\": %s,\n%s\"axis\": %d,\n",
              ind, e->spec.bits, ind, e->spec.is_signed ? "true" : "false", ind,
              e->spec.symmetric ? "true" : "false", ind, e->spec.axis < 0 ? -1 : e->spec.axis);
    jb_printf(b, "%s\"scale\": ", ind);
    jb_floats(b, e->scale, e->n);
    jb_printf(b, ",\n%s\"zero_point\": [", ind);
    for (int64_t c = 0; c < e->n; c++)
        jb_printf(b, "%s%d", c ? ", " : "", (int)e->zero_point[c]);
    jb_printf(b, "],\n%s\"min\": ", ind);
    jb_floats(b, e->lo, e->n);
    jb_printf(b, ",\n%s\"max\": ", ind);
    jb_floats(b, e->hi, e->n);
    if (t->n_q > 0) {
        jb_printf(b, ",\n%s\"q\": ", ind);
        jb_base64_i16(b, t->q, t->n_q);
    }
    jb_puts(b, "\n    }");
}

char *ql_qconfig_to_json(const ql_qconfig *c, ql_error *err)
{
    char where[600], key[512], buf[160];
    const char *why;
    if (c->version != QL_QCONFIG_VERSION) {
        ql_fail(err, QL_ERR_ARG, "qlens_config: cannot write version %d", c->version);
        return NULL;
    }
    ql_qsettings d = c->defaults;
    d.mask = QL_QS_ALL;
    if ((why = ql_qcfg_check_settings(&d, key, sizeof key))) {
        ql_fail(err, QL_ERR_ARG, "defaults.%s: %s", key, why);
        return NULL;
    }
    for (int i = 0; i < c->n_layers; i++)
        if ((why = ql_qcfg_check_settings(&c->layers[i].s, key, sizeof key))) {
            ql_qcfg_path_key(where, sizeof where, "layers", c->layers[i].name);
            ql_fail(err, QL_ERR_ARG, "%s.%s: %s", where, key, why);
            return NULL;
        }
    for (int i = 0; i < c->n_tensors; i++)
        if ((why = ql_qcfg_check_tensor(&c->tensors[i], key, sizeof key, buf, sizeof buf))) {
            ql_qcfg_path_key(where, sizeof where, "tensors", c->tensors[i].name);
            ql_fail(err, QL_ERR_ARG, "%s.%s: %s", where, key, why);
            return NULL;
        }

    jbuf b = {0};
    jb_printf(&b, "{\n  \"qlens_config\": %d,\n  \"model\": {\n", c->version);
    if (c->model_file)
        jb_puts(&b, "    \"file\": "), jb_str(&b, c->model_file), jb_puts(&b, ",\n");
    jb_printf(&b, "    \"fingerprint\": \"%016" PRIx64 "\"\n  },\n  \"defaults\": ",
              c->fingerprint);
    jb_settings(&b, &d, NULL, "    ");
    jb_puts(&b, ",\n  \"layers\": {");
    for (int i = 0; i < c->n_layers; i++) {
        jb_puts(&b, i ? ",\n    " : "\n    ");
        jb_str(&b, c->layers[i].name);
        jb_puts(&b, ": ");
        jb_settings(&b, &c->layers[i].s, c->layers[i].reason, "      ");
    }
    jb_puts(&b, c->n_layers ? "\n  },\n" : "},\n");
    jb_printf(&b, "  \"calibration\": {\n    \"samples\": %" PRId64 "\n  },\n  \"tensors\": {",
              c->calib_samples);
    for (int i = 0; i < c->n_tensors; i++) {
        jb_puts(&b, i ? ",\n    " : "\n    ");
        jb_str(&b, c->tensors[i].name);
        jb_puts(&b, ": ");
        jb_tensor(&b, &c->tensors[i]);
    }
    jb_puts(&b, c->n_tensors ? "\n  }\n}\n" : "}\n}\n");
    if (b.oom) {
        free(b.p);
        ql_fail(err, QL_ERR_NOMEM, "out of memory writing the quant config");
        return NULL;
    }
    return b.p;
}


ql_status ql_qconfig_save(const ql_qconfig *c, const char *path, ql_error *err)
{
    char *json = ql_qconfig_to_json(c, err);
    if (!json)
        return ql_fail_prefix(err, QL_ERR_ARG, "%s", path);
    ql_status st = ql_write_file_atomic(path, json, strlen(json), err);
    free(json);
    return st;
}

