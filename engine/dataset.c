/* Datasets: samples from a folder of .npy files, one batched .npy file or an
 * IDX file; their checks and conversion against a model input; labels. */
#include "dataset.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Element counts above this are surely corrupt headers (and keep byte
 * arithmetic far from overflow). */
#define MAX_ELEMS (INT64_C(1) << 36)

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* A tensor with uninitialised owned data (datasets are filled at once, so
 * zeroing them first would only cost time). */
static ql_tensor *tensor_uninit(ql_dtype dt, int ndim, const int64_t *dims)
{
    ql_tensor *t = ql_tensor_wrap(dt, ndim, dims, NULL);
    if (t && ql_tensor_alloc(t) != QL_OK) {
        ql_tensor_free(t);
        return NULL;
    }
    return t;
}

/* ---------------------------------------------------------------------------
 * IDX: 0 0 <type> <ndim>, ndim big-endian u32 dims, big-endian data
 * ------------------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* IDX element type: its size and the dtype it is stored as (f64 narrows). */
static bool idx_type(int type, ql_dtype *dt, size_t *es)
{
    switch (type) {
    case 0x08: *dt = QL_U8; *es = 1; return true;
    case 0x09: *dt = QL_I8; *es = 1; return true;
    case 0x0B: *dt = QL_I16; *es = 2; return true;
    case 0x0C: *dt = QL_I32; *es = 4; return true;
    case 0x0D: *dt = QL_F32; *es = 4; return true;
    case 0x0E: *dt = QL_F32; *es = 8; return true;
    default: return false;
    }
}

static bool is_idx(const unsigned char *buf, size_t len)
{
    ql_dtype dt;
    size_t es;
    return len >= 4 && buf[0] == 0 && buf[1] == 0 && idx_type(buf[2], &dt, &es) && buf[3] >= 1;
}

static ql_status load_idx(const char *path, const unsigned char *buf, size_t len, ql_tensor **out,
                          ql_error *err)
{
    int type = buf[2], nd = buf[3];
    ql_dtype dt;
    size_t es;
    idx_type(type, &dt, &es);
    if (nd > QL_MAX_DIMS)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%s: IDX file with %d dimensions (at most %d)",
                       path, nd, QL_MAX_DIMS);
    size_t off = 4 + 4 * (size_t)nd;
    if (len < off)
        return ql_fail(err, QL_ERR_FORMAT, "%s: truncated IDX header", path);
    int64_t dims[QL_MAX_DIMS], numel = 1;
    for (int i = 0; i < nd; i++) {
        dims[i] = be32(buf + 4 + 4 * i);
        /* saturate: dims are u32, so the product can exceed int64 */
        numel = dims[i] && numel > MAX_ELEMS / dims[i] ? MAX_ELEMS + 1 : numel * dims[i];
    }
    char shp[160];
    ql_shape_str(nd, dims, shp, sizeof shp);
    if (numel > MAX_ELEMS)
        return ql_fail(err, QL_ERR_FORMAT, "%s: IDX shape %s is implausibly large", path, shp);
    size_t need = (size_t)numel * es;
    if (need != len - off)
        return ql_fail(err, QL_ERR_FORMAT,
                       "%s: size mismatch: IDX shape %s needs %zu data bytes but the file has %zu "
                       "(%s)",
                       path, shp, need, len - off, need > len - off ? "truncated?" : "trailing bytes");
    ql_tensor *t = tensor_uninit(dt, nd, dims);
    if (!t)
        return ql_fail(err, QL_ERR_NOMEM, "%s: out of memory for IDX shape %s", path, shp);
    const unsigned char *p = buf + off;
    for (int64_t i = 0; i < numel; i++, p += es) {
        switch (type) {
        case 0x08: case 0x09: ((uint8_t *)t->data)[i] = p[0]; break;
        case 0x0B: ((int16_t *)t->data)[i] = (int16_t)((uint16_t)(p[0] << 8 | p[1])); break;
        case 0x0C: ((int32_t *)t->data)[i] = (int32_t)be32(p); break;
        case 0x0D: {
            uint32_t u = be32(p);
            memcpy((float *)t->data + i, &u, 4);
            break;
        }
        default: {
            uint64_t u = (uint64_t)be32(p) << 32 | be32(p + 4);
            double v;
            memcpy(&v, &u, 8);
            ((float *)t->data)[i] = (float)v;
        }
        }
    }
    *out = t;
    return QL_OK;
}

/* One file holding a whole array: .npy (by name or magic) or IDX (by magic),
 * either possibly gzipped. */
static ql_status load_array(const char *path, ql_tensor **out, ql_error *err)
{
    void *buf;
    size_t len;
    *out = NULL;
    ql_status st = ql_read_file(path, true, &buf, &len, err);
    if (st != QL_OK)
        return st;
    if (has_suffix(path, ".npy") || (len >= 6 && !memcmp(buf, "\x93NUMPY", 6)))
        st = ql_npy_load_buffer(buf, len, path, out, err);
    else if (is_idx(buf, len))
        st = load_idx(path, buf, len, out, err);
    else
        st = ql_fail(err, QL_ERR_FORMAT,
                     "%s: unknown data format (expected a folder of .npy files, a .npy file or "
                     "an IDX file, optionally gzipped)",
                     path);
    free(buf);
    return st;
}

/* ---------------------------------------------------------------------------
 * A folder of per-sample .npy files, sorted by name
 * ------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static ql_status list_npy(const char *path, char ***names_out, size_t *n_out, ql_error *err)
{
    ql_status st = QL_OK;
    char **names = NULL;
    size_t n = 0, cap = 0;
    DIR *dir = opendir(path);
    if (!dir)
        return ql_fail(err, QL_ERR_IO, "%s: cannot open folder: %s", path, strerror(errno));
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.' || !has_suffix(e->d_name, ".npy"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
                goto cleanup;
            }
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) {
            st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
            goto cleanup;
        }
        n++;
    }
    if (n == 0) {
        st = ql_fail(err, QL_ERR_DATA, "%s: the folder holds no .npy files", path);
        goto cleanup;
    }
    qsort(names, n, sizeof *names, cmp_str);
cleanup:
    closedir(dir);
    if (st != QL_OK) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return st;
    }
    *names_out = names;
    *n_out = n;
    return QL_OK;
}

static ql_status load_folder(const char *path, int64_t limit, ql_tensor **out, ql_error *err)
{
    char **names = NULL, *full = NULL;
    size_t n = 0;
    ql_tensor *all = NULL, *t = NULL;
    ql_status st = list_npy(path, &names, &n, err);
    if (st != QL_OK)
        return st;
    size_t count = limit > 0 && (uint64_t)limit < n ? (size_t)limit : n;
    size_t per = 0, plen = strlen(path), maxname = 0;
    for (size_t i = 0; i < count; i++)
        if (strlen(names[i]) > maxname)
            maxname = strlen(names[i]);
    if (!(full = malloc(plen + maxname + 2))) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    for (size_t i = 0; i < count; i++) {
        sprintf(full, "%s/%s", path, names[i]);
        if ((st = ql_npy_load(full, &t, err)) != QL_OK)
            goto cleanup;
        if (i == 0) {
            if (t->ndim + 1 > QL_MAX_DIMS) {
                st = ql_fail(err, QL_ERR_UNSUPPORTED,
                             "%s: a sample of %d dimensions (at most %d with the sample axis)",
                             full, t->ndim, QL_MAX_DIMS);
                goto cleanup;
            }
            int64_t dims[QL_MAX_DIMS];
            dims[0] = (int64_t)count;
            memcpy(dims + 1, t->dims, (size_t)t->ndim * sizeof *dims);
            if (!(all = tensor_uninit(t->dtype, t->ndim + 1, dims))) {
                st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory for %zu samples", path, count);
                goto cleanup;
            }
            per = ql_tensor_nbytes(t);
        } else if (t->dtype != all->dtype ||
                   !ql_shape_equal(t->ndim, t->dims, all->ndim - 1, all->dims + 1)) {
            char a[160], b[160];
            st = ql_fail(err, QL_ERR_DATA, "%s: sample %s %s differs from %s %s of %s", full,
                         ql_dtype_info(t->dtype)->name, ql_shape_str(t->ndim, t->dims, a, sizeof a),
                         ql_dtype_info(all->dtype)->name,
                         ql_shape_str(all->ndim - 1, all->dims + 1, b, sizeof b), names[0]);
            goto cleanup;
        }
        if (per)
            memcpy((char *)all->data + i * per, t->data, per);
        ql_tensor_free(t);
        t = NULL;
    }
    *out = all;
    all = NULL;
cleanup:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(full);
    ql_tensor_free(t);
    ql_tensor_free(all);
    return st;
}

/* ---------------------------------------------------------------------------
 * Datasets
 * ------------------------------------------------------------------------- */

ql_status ql_dataset_load(const char *path, int64_t limit, ql_dataset **out, ql_error *err)
{
    struct stat sb;
    ql_tensor *t = NULL;
    ql_dataset *d = NULL;
    ql_status st = QL_OK;
    *out = NULL;
    if (stat(path, &sb) != 0)
        return ql_fail(err, QL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    bool folder = S_ISDIR(sb.st_mode);
    if ((st = folder ? load_folder(path, limit, &t, err) : load_array(path, &t, err)) != QL_OK)
        return st;
    if (!folder && t->ndim < 2) {
        char a[160];
        st = ql_fail(err, QL_ERR_DATA,
                     "%s: needs a sample axis: a %d-d array %s is not a batch of samples "
                     "(expected [samples, ...]%s)",
                     path, t->ndim, ql_shape_str(t->ndim, t->dims, a, sizeof a),
                     t->ndim == 1 ? "; is this a labels file?" : "");
        goto cleanup;
    }
    if (t->dims[0] == 0) {
        st = ql_fail(err, QL_ERR_DATA, "%s: holds no samples", path);
        goto cleanup;
    }
    /* Batched files are read whole; keeping the first rows is a header change. */
    if (limit > 0 && t->dims[0] > limit)
        t->dims[0] = limit;
    if (!(d = calloc(1, sizeof *d)) || !(d->source = strdup(path))) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    d->samples = t;
    d->n = t->dims[0];
    t = NULL;
    *out = d;
    d = NULL;
cleanup:
    ql_tensor_free(t);
    ql_dataset_free(d);
    return st;
}

void ql_dataset_free(ql_dataset *d)
{
    if (!d)
        return;
    ql_tensor_free(d->samples);
    free(d->source);
    free(d);
}

static void int_range(ql_dtype dt, int64_t *lo, int64_t *hi)
{
    switch (dt) {
    case QL_U8: *lo = 0; *hi = UINT8_MAX; break;
    case QL_I8: *lo = INT8_MIN; *hi = INT8_MAX; break;
    case QL_I16: *lo = INT16_MIN; *hi = INT16_MAX; break;
    case QL_I32: *lo = INT32_MIN; *hi = INT32_MAX; break;
    case QL_BOOL: *lo = 0; *hi = 1; break;
    default: *lo = INT64_MIN; *hi = INT64_MAX; break;
    }
}

static void set_i64(ql_tensor *t, int64_t i, int64_t v)
{
    switch (t->dtype) {
    case QL_U8: case QL_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
    case QL_I8: ((int8_t *)t->data)[i] = (int8_t)v; break;
    case QL_I16: ((int16_t *)t->data)[i] = (int16_t)v; break;
    case QL_I32: ((int32_t *)t->data)[i] = (int32_t)v; break;
    case QL_I64: ((int64_t *)t->data)[i] = v; break;
    case QL_F32: ((float *)t->data)[i] = (float)v; break;
    default: assert(!"unknown dtype");
    }
}

/* Converts integer/bool samples to the input's dtype by value; integers into
 * a narrower integer input must fit. */
static ql_status convert(ql_dataset *d, const ql_value *in, int64_t per, ql_error *err)
{
    ql_tensor *t = d->samples;
    ql_tensor *c = tensor_uninit(in->dtype, t->ndim, t->dims);
    if (!c)
        return ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", d->source);
    int64_t lo, hi, n = ql_tensor_numel(t);
    int_range(in->dtype, &lo, &hi);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = ql_tensor_get_i64(t, i);
        if (v < lo || v > hi) {
            ql_tensor_free(c);
            return ql_fail(err, QL_ERR_DATA,
                           "%s: sample %lld element %lld: %s value %lld does not fit model input "
                           "'%s' of type %s",
                           d->source, (long long)(i / per), (long long)(i % per),
                           ql_dtype_info(t->dtype)->name, (long long)v, in->name,
                           ql_dtype_info(in->dtype)->name);
        }
        set_i64(c, i, v);
    }
    ql_tensor_free(t);
    d->samples = c;
    return QL_OK;
}

ql_status ql_dataset_conform(ql_dataset *d, const ql_value *in, ql_error *err)
{
    ql_tensor *t = d->samples;
    const char *name = in->name ? in->name : "?";
    char a[160], b[160];
    assert(t->ndim >= 1); /* ql_dataset_load guarantees a sample axis */
    int sn = t->ndim - 1; /* per-sample rank */
    int64_t sd[QL_MAX_DIMS]; /* a copy: conversion replaces the tensor */
    memcpy(sd, t->dims + 1, (size_t)sn * sizeof *sd);
    int64_t per = ql_numel(sn, sd);
    if (in->ndim == 0)
        return ql_fail(err, QL_ERR_SHAPE,
                       "%s: model input '%s' is a scalar and cannot take a batch of samples",
                       d->source, name);
    /* Input dims the data leaves out (leading, must be 1): [28x28] samples
     * feed a [?x1x28x28] input. Unknown input rank: take the data as it is. */
    int skip = in->ndim > 0 ? in->ndim - 1 - sn : 0;
    bool ok = skip >= 0;
    for (int i = 0; ok && in->ndim > 0 && i < skip; i++)
        ok = in->dims[1 + i] == 1;
    for (int i = 0; ok && in->ndim > 0 && i < sn; i++)
        ok = in->dims[1 + skip + i] < 0 || in->dims[1 + skip + i] == sd[i];
    if (!ok)
        return ql_fail(err, QL_ERR_SHAPE, "%s: sample shape %s does not match model input '%s' %s",
                       d->source, ql_shape_str(sn, sd, a, sizeof a), name,
                       ql_shape_str(in->ndim, in->dims, b, sizeof b));
    if (t->dtype == QL_F32 && in->dtype != QL_F32)
        return ql_fail(err, QL_ERR_DATA,
                       "%s: float data cannot feed model input '%s' of type %s (integers "
                       "expected)",
                       d->source, name, ql_dtype_info(in->dtype)->name);
    if (t->dtype == QL_F32) {
        const float *x = t->data;
        int64_t n = ql_tensor_numel(t);
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(x[i]))
                return ql_fail(err, QL_ERR_DATA, "%s: sample %lld has %s at element %lld",
                               d->source, (long long)(i / per),
                               isnan(x[i]) ? "NaN" : x[i] > 0 ? "Inf" : "-Inf",
                               (long long)(i % per));
    } else if (t->dtype != in->dtype) {
        ql_status st = convert(d, in, per, err);
        if (st != QL_OK)
            return st;
        t = d->samples;
    }
    if (skip > 0) {
        int64_t dims[QL_MAX_DIMS];
        dims[0] = d->n;
        for (int i = 0; i < skip; i++)
            dims[1 + i] = 1;
        memcpy(dims + 1 + skip, sd, (size_t)sn * sizeof *dims);
        t->ndim = in->ndim;
        memcpy(t->dims, dims, (size_t)in->ndim * sizeof *dims);
    }
    return QL_OK;
}

ql_tensor ql_dataset_batch(const ql_dataset *d, int64_t first, int64_t count)
{
    assert(first >= 0 && count >= 0 && first + count <= d->n);
    ql_tensor v = *d->samples;
    size_t per = (size_t)ql_numel(v.ndim - 1, v.dims + 1) * ql_dtype_info(v.dtype)->size;
    v.owns = false;
    v.data = (char *)d->samples->data + (size_t)first * per;
    v.dims[0] = count;
    return v;
}

/* ---------------------------------------------------------------------------
 * Labels
 * ------------------------------------------------------------------------- */

ql_status ql_labels_load(const char *path, int64_t limit, int64_t **labels, int64_t *n,
                         ql_error *err)
{
    ql_tensor *t = NULL;
    int64_t *l = NULL;
    char a[160];
    *labels = NULL;
    *n = 0;
    ql_status st = load_array(path, &t, err);
    if (st != QL_OK)
        return st;
    if (t->dtype == QL_F32) {
        st = ql_fail(err, QL_ERR_DATA,
                     "%s: labels must be integer class ids, not floating-point values", path);
        goto cleanup;
    }
    if (!(t->ndim == 1 || (t->ndim == 2 && t->dims[1] == 1))) {
        st = ql_fail(err, QL_ERR_DATA, "%s: labels must have shape [N] or [Nx1], not %s", path,
                     ql_shape_str(t->ndim, t->dims, a, sizeof a));
        goto cleanup;
    }
    int64_t cnt = t->dims[0];
    if (cnt == 0) {
        st = ql_fail(err, QL_ERR_DATA, "%s: holds no labels", path);
        goto cleanup;
    }
    if (limit > 0 && cnt > limit)
        cnt = limit;
    if (!(l = malloc((size_t)cnt * sizeof *l))) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    for (int64_t i = 0; i < cnt; i++) {
        l[i] = ql_tensor_get_i64(t, i);
        if (l[i] < 0) {
            st = ql_fail(err, QL_ERR_DATA, "%s: label of sample %lld is %lld, negative", path,
                         (long long)i, (long long)l[i]);
            goto cleanup;
        }
    }
    *labels = l;
    *n = cnt;
    l = NULL;
cleanup:
    free(l);
    ql_tensor_free(t);
    return st;
}
