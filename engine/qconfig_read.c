/* Reading the quant config: a strict cJSON walk that refuses unknown keys,
 * wrong types and bad values, naming the JSON path of each problem
 * ("cfg.json: layers."conv 1".precision: ..."), then the same validation
 * the writer applies (qconfig_priv.h). */
#include "qconfig.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qconfig_priv.h"


typedef struct rd {
    const char *src;
    ql_error *err;
} rd;

__attribute__((format(printf, 3, 4))) static ql_status bad(rd *r, const char *path,
                                                           const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (*path)
        return ql_fail(r->err, QL_ERR_FORMAT, "%s: %s: %s", r->src, path, msg);
    return ql_fail(r->err, QL_ERR_FORMAT, "%s: %s", r->src, msg);
}

static const char *jtype(const cJSON *j)
{
    if (cJSON_IsObject(j))
        return "an object";
    if (cJSON_IsArray(j))
        return "an array";
    if (cJSON_IsString(j))
        return "a string";
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsBool(j))
        return "a boolean";
    return "null";
}

/* Refuses keys outside `keys` and repeated keys; sets bit i of *seen for
 * keys[i] present. */
static ql_status check_keys(rd *r, const cJSON *obj, const char *path, const char *const *keys,
                            int nkeys, unsigned *seen)
{
    char p[600], list[256] = "";
    *seen = 0;
    if (!cJSON_IsObject(obj))
        return bad(r, path, "expected an object, got %s", jtype(obj));
    for (const cJSON *k = obj->child; k; k = k->next) {
        int i = 0;
        while (i < nkeys && strcmp(k->string, keys[i]))
            i++;
        ql_qcfg_path_key(p, sizeof p, path, k->string);
        if (i == nkeys) {
            for (int j = 0; j < nkeys; j++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? ", " : "",
                         keys[j]);
            return bad(r, p, "unknown key (expected %s)", list);
        }
        if (*seen & (1u << i))
            return bad(r, p, "duplicate key");
        *seen |= 1u << i;
    }
    return QL_OK;
}

static ql_status get_int(rd *r, const cJSON *j, const char *path, int64_t lo, int64_t hi,
                         int64_t *out)
{
    if (!cJSON_IsNumber(j))
        return bad(r, path, "expected an integer, got %s", jtype(j));
    double v = j->valuedouble;
    if (v != floor(v) || v < (double)lo || v > (double)hi)
        return bad(r, path, "expected an integer from %lld to %lld, got %.17g", (long long)lo,
                   (long long)hi, v);
    *out = (int64_t)v;
    return QL_OK;
}

static ql_status get_bool(rd *r, const cJSON *j, const char *path, bool *out)
{
    if (!cJSON_IsBool(j))
        return bad(r, path, "expected true or false, got %s", jtype(j));
    *out = cJSON_IsTrue(j);
    return QL_OK;
}

static ql_status get_str(rd *r, const cJSON *j, const char *path, const char **out)
{
    if (!cJSON_IsString(j))
        return bad(r, path, "expected a string, got %s", jtype(j));
    *out = j->valuestring;
    return QL_OK;
}

/* A non-empty array of numbers as float32 (want >= 0: exactly that many). */
static ql_status get_floats(rd *r, const cJSON *j, const char *path, int64_t want, float **out,
                            int64_t *n)
{
    char p[620];
    if (!cJSON_IsArray(j))
        return bad(r, path, "expected an array of numbers, got %s", jtype(j));
    int64_t len = cJSON_GetArraySize(j);
    if (want >= 0 && len != want)
        return bad(r, path, "expected %lld values (as many as scale), got %lld",
                   (long long)want, (long long)len);
    if (len == 0)
        return bad(r, path, "expected at least one value");
    if (!(*out = malloc((size_t)len * sizeof **out)))
        return ql_fail(r->err, QL_ERR_NOMEM, "%s: out of memory", r->src);
    int64_t i = 0;
    for (const cJSON *e = j->child; e; e = e->next, i++) {
        snprintf(p, sizeof p, "%s[%lld]", path, (long long)i);
        if (!cJSON_IsNumber(e))
            return bad(r, p, "expected a number, got %s", jtype(e));
        (*out)[i] = (float)e->valuedouble;
        if (!isfinite((*out)[i]))
            return bad(r, p, "%g is outside the float32 range", e->valuedouble);
    }
    *n = len;
    return QL_OK;
}

static int b64_val(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

/* Strict standard base64 with padding into little-endian int16 values. */
static ql_status get_q(rd *r, const cJSON *j, const char *path, int32_t **q, int64_t *nq)
{
    const char *s = NULL;
    ql_status st = get_str(r, j, path, &s);
    if (st != QL_OK)
        return st;
    size_t len = strlen(s);
    if (len == 0)
        return bad(r, path, "empty (omit \"q\" when there are no values)");
    if (len % 4)
        return bad(r, path, "invalid base64: length %zu is not a multiple of 4", len);
    size_t pad = s[len - 1] == '=' ? (s[len - 2] == '=' ? 2 : 1) : 0;
    size_t nbytes = len / 4 * 3 - pad;
    uint8_t *bytes = malloc(nbytes + 3);
    if (!bytes)
        return ql_fail(r->err, QL_ERR_NOMEM, "%s: out of memory", r->src);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t acc = 0;
        for (size_t k = 0; k < 4; k++) {
            int v = b64_val(s[i + k]);
            if (v < 0 && !(s[i + k] == '=' && i + k >= len - pad)) {
                free(bytes);
                return bad(r, path, "invalid base64 at character %zu", i + k + 1);
            }
            acc = acc << 6 | (uint32_t)(v < 0 ? 0 : v);
        }
        bytes[o] = (uint8_t)(acc >> 16);
        bytes[o + 1] = (uint8_t)(acc >> 8);
        bytes[o + 2] = (uint8_t)acc;
        o += 3;
    }
    /* Canonical only: the bits the padding hides must be zero. */
    if ((pad == 1 && bytes[nbytes]) || (pad == 2 && (bytes[nbytes] || bytes[nbytes + 1]))) {
        free(bytes);
        return bad(r, path, "invalid base64: non-zero bits before the padding");
    }
    if (nbytes % 2) {
        free(bytes);
        return bad(r, path, "odd number of bytes (%zu): q holds int16 values", nbytes);
    }
    *nq = (int64_t)(nbytes / 2);
    *q = malloc((size_t)(*nq ? *nq : 1) * sizeof **q);
    if (*q)
        for (int64_t i = 0; i < *nq; i++)
            (*q)[i] = (int16_t)(uint16_t)(bytes[2 * i] | bytes[2 * i + 1] << 8);
    free(bytes);
    return *q ? QL_OK : ql_fail(r->err, QL_ERR_NOMEM, "%s: out of memory", r->src);
}

static const char *const settings_keys[] = {"precision", "act_algo", "weight_algo",
                                            "weight_bits", "per_channel", "reason"};

static ql_status get_algo(rd *r, const cJSON *j, const char *path, char *out)
{
    const char *s = NULL, *why;
    ql_status st = get_str(r, j, path, &s);
    if (st != QL_OK)
        return st;
    if ((why = ql_qcfg_check_algo(s)))
        return bad(r, path, "%s", why);
    strcpy(out, s);
    return QL_OK;
}

/* Fills the fields present in obj (and s->mask); *reason only for layers. */
static ql_status read_settings(rd *r, const cJSON *obj, const char *path, ql_qsettings *s,
                               char **reason)
{
    char p[700];
    unsigned seen;
    ql_status st = check_keys(r, obj, path, settings_keys, reason ? 6 : 5, &seen);
    for (const cJSON *k = obj->child; st == QL_OK && k; k = k->next) {
        ql_qcfg_path_key(p, sizeof p, path, k->string);
        const char *str = NULL;
        int64_t v;
        if (!strcmp(k->string, "precision")) {
            if ((st = get_str(r, k, p, &str)) == QL_OK && !ql_prec_parse(str, &s->precision))
                st = bad(r, p, "expected one of int8, int16, float, got \"%s\"", str);
        } else if (!strcmp(k->string, "act_algo")) {
            st = get_algo(r, k, p, s->act_algo);
        } else if (!strcmp(k->string, "weight_algo")) {
            st = get_algo(r, k, p, s->weight_algo);
        } else if (!strcmp(k->string, "weight_bits")) {
            if ((st = get_int(r, k, p, 2, 16, &v)) == QL_OK)
                s->weight_bits = (int)v;
        } else if (!strcmp(k->string, "per_channel")) {
            st = get_bool(r, k, p, &s->per_channel);
        } else if ((st = get_str(r, k, p, &str)) == QL_OK && !(*reason = strdup(str))) {
            st = ql_fail(r->err, QL_ERR_NOMEM, "%s: out of memory", r->src);
        }
    }
    s->mask |= seen & QL_QS_ALL; /* settings_keys[i] is mask bit i */
    return st;
}

static const char *const tensor_keys[] = {"bits",       "signed", "symmetric", "axis", "scale",
                                          "zero_point", "min",    "max",       "q"};

static ql_status read_tensor(rd *r, const cJSON *obj, const char *path, ql_qtensor_cfg *t)
{
    char p[700], where[64], buf[160];
    unsigned seen;
    ql_status st = check_keys(r, obj, path, tensor_keys, 9, &seen);
    if (st != QL_OK)
        return st;
    for (int i = 0; i < 6; i++)
        if (!(seen & (1u << i)))
            return bad(r, path, "missing key \"%s\"", tensor_keys[i]);
    const cJSON *j[9];
    for (int i = 0; i < 9; i++)
        j[i] = cJSON_GetObjectItemCaseSensitive(obj, tensor_keys[i]);
    ql_encoding *e = &t->enc;
    int64_t v, n = 0, n2;
#define AT(i) (ql_qcfg_path_key(p, sizeof p, path, tensor_keys[i]), p)
    if ((st = get_int(r, j[0], AT(0), 2, 32, &v)))
        return st;
    e->spec.bits = (int)v;
    if ((st = get_bool(r, j[1], AT(1), &e->spec.is_signed)) ||
        (st = get_bool(r, j[2], AT(2), &e->spec.symmetric)) ||
        (st = get_int(r, j[3], AT(3), -1, QL_MAX_DIMS - 1, &v)))
        return st;
    e->spec.axis = (int)v;
    if ((st = get_floats(r, j[4], AT(4), -1, &e->scale, &n)))
        return st;
    e->n = n;
    AT(5);
    if (!cJSON_IsArray(j[5]))
        return bad(r, p, "expected an array of integers, got %s", jtype(j[5]));
    if (cJSON_GetArraySize(j[5]) != n)
        return bad(r, p, "expected %lld values (as many as scale), got %d", (long long)n,
                   cJSON_GetArraySize(j[5]));
    if (!(e->zero_point = malloc((size_t)n * sizeof *e->zero_point)) ||
        !(e->lo = malloc((size_t)n * sizeof *e->lo)) ||
        !(e->hi = malloc((size_t)n * sizeof *e->hi)))
        return ql_fail(r->err, QL_ERR_NOMEM, "%s: out of memory", r->src);
    int64_t c = 0;
    for (const cJSON *z = j[5]->child; z; z = z->next, c++) {
        snprintf(p, sizeof p, "%s.zero_point[%lld]", path, (long long)c);
        if ((st = get_int(r, z, p, INT32_MIN, INT32_MAX, &v)))
            return st;
        e->zero_point[c] = (int32_t)v;
    }
    int64_t qmin, qmax;
    ql_qspec_range(&e->spec, &qmin, &qmax);
    for (int k = 6; k < 8; k++) {
        float **dst = k == 6 ? &e->lo : &e->hi, *vals = NULL;
        if (!j[k]) { /* absent: the range the grid covers */
            for (c = 0; c < n; c++)
                (*dst)[c] = e->scale[c] * (float)((k == 6 ? qmin : qmax) - e->zero_point[c]);
            continue;
        }
        st = get_floats(r, j[k], AT(k), n, &vals, &n2);
        if (st == QL_OK)
            memcpy(*dst, vals, (size_t)n * sizeof *vals);
        free(vals);
        if (st != QL_OK)
            return st;
    }
    if (j[8] && (st = get_q(r, j[8], AT(8), &t->q, &t->n_q)))
        return st;
#undef AT
    const char *why = ql_qcfg_check_tensor(t, where, sizeof where, buf, sizeof buf);
    if (why) {
        snprintf(p, sizeof p, "%s.%s", path, where);
        return bad(r, p, "%s", why);
    }
    return QL_OK;
}

static bool has_layer(const ql_qconfig *c, const char *name)
{
    for (int i = 0; i < c->n_layers; i++)
        if (!strcmp(c->layers[i].name, name))
            return true;
    return false;
}

/* Reads the named entries of "layers" or "tensors", refusing duplicates. */
static ql_status read_entries(rd *r, ql_qconfig *c, const cJSON *obj, bool layers)
{
    const char *top = layers ? "layers" : "tensors";
    char p[600];
    if (!cJSON_IsObject(obj))
        return bad(r, top, "expected an object, got %s", jtype(obj));
    for (const cJSON *k = obj->child; k; k = k->next) {
        ql_qcfg_path_key(p, sizeof p, top, k->string);
        if (!*k->string)
            return bad(r, p, "empty name");
        if (layers ? has_layer(c, k->string) : ql_qconfig_find_tensor(c, k->string) != NULL)
            return bad(r, p, "duplicate name");
        ql_status st;
        if (layers) {
            ql_qlayer_cfg *l = ql_qconfig_layer(c, k->string);
            if (!l)
                return ql_fail(r->err, QL_ERR_NOMEM, "%s: out of memory", r->src);
            l->s = ql_qcfg_default_settings();
            l->s.mask = 0;
            st = read_settings(r, k, p, &l->s, &l->reason);
        } else {
            ql_qtensor_cfg *t = ql_qconfig_tensor(c, k->string);
            if (!t)
                return ql_fail(r->err, QL_ERR_NOMEM, "%s: out of memory", r->src);
            st = read_tensor(r, k, p, t);
        }
        if (st != QL_OK)
            return st;
    }
    return QL_OK;
}

static ql_status read_model(rd *r, ql_qconfig *c, const cJSON *obj)
{
    static const char *const keys[] = {"file", "fingerprint"};
    unsigned seen;
    const char *s = NULL;
    ql_status st = check_keys(r, obj, "model", keys, 2, &seen);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, "file");
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(obj, "fingerprint");
    if (st == QL_OK && f && (st = get_str(r, f, "model.file", &s)) == QL_OK &&
        !(c->model_file = strdup(s)))
        st = ql_fail(r->err, QL_ERR_NOMEM, "%s: out of memory", r->src);
    if (st == QL_OK && fp && (st = get_str(r, fp, "model.fingerprint", &s)) == QL_OK) {
        size_t n = strspn(s, "0123456789abcdefABCDEF");
        if (n != 16 || s[n])
            return bad(r, "model.fingerprint", "expected 16 hexadecimal digits, got \"%s\"", s);
        c->fingerprint = strtoull(s, NULL, 16);
    }
    return st;
}

static ql_status parse_error(rd *r, const char *text, const char *at)
{
    int line = 1, col = 1;
    for (const char *p = text; p < at && *p; p++) {
        if (*p == '\n')
            line++, col = 1;
        else
            col++;
    }
    const char *rest = at + strspn(at, " \t\r\n");
    if (!*rest)
        return ql_fail(r->err, QL_ERR_FORMAT, "%s:%d:%d: invalid JSON: unexpected end of input",
                       r->src, line, col);
    int n = (int)strcspn(rest, "\r\n");
    return ql_fail(r->err, QL_ERR_FORMAT, "%s:%d:%d: invalid JSON near '%.*s'", r->src, line,
                   col, n > 20 ? 20 : n, rest);
}

ql_status ql_qconfig_from_json(const char *text, const char *source, ql_qconfig **out,
                               ql_error *err)
{
    static const char *const keys[] = {"qlens_config", "model",       "defaults",
                                       "layers",       "calibration", "tensors"};
    rd r = {source ? source : "(config)", err};
    const char *end = NULL;
    ql_qconfig *c = NULL;
    ql_status st;
    unsigned seen;
    int64_t v;
    *out = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root)
        return parse_error(&r, text, end ? end : text);
    if (!cJSON_IsObject(root)) {
        st = bad(&r, "", "expected a JSON object at the top level, got %s", jtype(root));
        goto cleanup;
    }
    /* The version first: a newer file may have keys this reader lacks. */
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "qlens_config");
    if (!ver) {
        st = bad(&r, "", "missing key \"qlens_config\" (not a qlens quant config?)");
        goto cleanup;
    }
    if ((st = get_int(&r, ver, "qlens_config", INT32_MIN, INT32_MAX, &v)))
        goto cleanup;
    if (v != QL_QCONFIG_VERSION) {
        st = bad(&r, "qlens_config", "unsupported version %lld (this qlens reads version %d)",
                 (long long)v, QL_QCONFIG_VERSION);
        goto cleanup;
    }
    if ((st = check_keys(&r, root, "", keys, 6, &seen)))
        goto cleanup;
    if (!(c = ql_qconfig_new())) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", r.src);
        goto cleanup;
    }
    const cJSON *j;
    if ((j = cJSON_GetObjectItemCaseSensitive(root, "model")) && (st = read_model(&r, c, j)))
        goto cleanup;
    if ((j = cJSON_GetObjectItemCaseSensitive(root, "defaults")) &&
        (st = read_settings(&r, j, "defaults", &c->defaults, NULL)))
        goto cleanup;
    if ((j = cJSON_GetObjectItemCaseSensitive(root, "layers")) &&
        (st = read_entries(&r, c, j, true)))
        goto cleanup;
    if ((j = cJSON_GetObjectItemCaseSensitive(root, "calibration"))) {
        static const char *const ckeys[] = {"samples"};
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "samples");
        if ((st = check_keys(&r, j, "calibration", ckeys, 1, &seen)) ||
            (s && (st = get_int(&r, s, "calibration.samples", 0, (int64_t)1 << 53,
                                &c->calib_samples))))
            goto cleanup;
    }
    if ((j = cJSON_GetObjectItemCaseSensitive(root, "tensors")) &&
        (st = read_entries(&r, c, j, false)))
        goto cleanup;
    *out = c;
    c = NULL;
cleanup:
    ql_qconfig_free(c);
    cJSON_Delete(root);
    return st;
}

ql_status ql_qconfig_load(const char *path, ql_qconfig **out, ql_error *err)
{
    ql_status st = QL_OK;
    char *text = NULL;
    size_t n = 0, cap = 0;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return ql_fail(err, QL_ERR_IO, "%s: %s", path, strerror(errno));
    for (;;) {
        if (n + 1 >= cap) {
            char *p = realloc(text, cap = cap ? 2 * cap : 65536);
            if (!p) {
                st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
                goto cleanup;
            }
            text = p;
        }
        size_t got = fread(text + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        st = ql_fail(err, QL_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        goto cleanup;
    }
    text[n] = '\0';
    if (strlen(text) != n) {
        st = ql_fail(err, QL_ERR_FORMAT, "%s: contains a NUL byte (not a JSON text)", path);
        goto cleanup;
    }
    st = ql_qconfig_from_json(text, path, out, err);
cleanup:
    fclose(f);
    free(text);
    return st;
}

/* ---------------------------------------------------------------------------
 * An encoding against the tensor it names (the model's facts come from
 * ql_qconfig_check): the same words whatever asks.
 * ------------------------------------------------------------------------- */

const char *ql_qcfg_check_role(const ql_qtensor_cfg *t, const ql_qcfg_role *r, char *where,
                               size_t wn, char *buf, size_t bn)
{
    const ql_encoding *e = &t->enc;
    const char *field, *why = ql_encoding_check_shape(e, r->ndim, r->dims, &field, buf, bn);
    if (why) {
        snprintf(where, wn, "%s", field);
        return why;
    }
    if (t->n_q > 0) {
        snprintf(where, wn, "q");
        if (r->kind != QL_QCFG_WEIGHT)
            return "integer values are stored only for weights";
        int64_t numel = 1;
        for (int i = 0; i < r->ndim; i++)
            numel *= r->dims[i];
        if (r->ndim >= 0 && t->n_q != numel) {
            snprintf(buf, bn, "%lld values for a weight of %lld elements", (long long)t->n_q,
                     (long long)numel);
            return buf;
        }
    }
    if (!r->bits)
        return NULL;
    snprintf(where, wn, "bits");
    if (e->spec.bits != r->bits) {
        if (r->kind == QL_QCFG_ACT)
            snprintf(buf, bn, "the encoding has %d bits but the settings call for %d "
                     "(recalibrate)", e->spec.bits, r->bits);
        else if (r->kind == QL_QCFG_WEIGHT)
            snprintf(buf, bn, "the encoding has %d bits but layer '%s' has weight_bits %d "
                     "(recalibrate)", e->spec.bits, r->layer, r->bits);
        else
            snprintf(buf, bn, "the encoding has %d bits but the bias of quantized layer '%s' "
                     "is %d-bit (recalibrate)", e->spec.bits, r->layer, r->bits);
        return buf;
    }
    snprintf(where, wn, "axis");
    if (r->kind == QL_QCFG_WEIGHT && e->spec.axis != r->axis) {
        snprintf(buf, bn, "the encoding's axis is %d but layer '%s' has per_channel %s, "
                 "which calls for %d (recalibrate)", e->spec.axis, r->layer,
                 r->per_channel ? "true" : "false", r->axis);
        return buf;
    }
    return NULL;
}
