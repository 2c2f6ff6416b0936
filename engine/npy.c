/* Files: whole-file reads (gunzipping when the data is gzip) and the .npy
 * format (read 1.0-3.0, write 1.0), so datasets and tools share one reader. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "dataset.h"
#include "outfile.h"

/* .npy and IDX data are copied as stored, little-endian; a big-endian host
 * would need byte swaps everywhere, so refuse to build rather than misread. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "qlens reads little-endian .npy data directly and needs a little-endian host"
#endif

/* Anything larger is surely a mistake (and keeps size arithmetic far from
 * overflow on 64-bit size_t). */
#define QL_MAX_FILE (UINT64_C(1) << 36) /* 64 GiB */
/* zlib counts in uInt: feed and drain it in slices no larger than this. */
#define ZSLICE ((size_t)1 << 30)
/* numpy itself refuses headers above 10000 bytes unless told otherwise. */
#define NPY_MAX_HEADER ((size_t)1 << 20)

/* ---------------------------------------------------------------------------
 * Whole-file reads
 * ------------------------------------------------------------------------- */

/* Inflates a gzip stream (concatenated members allowed, as gzip(1) does). */
static ql_status gunzip(const char *path, const unsigned char *src, size_t len, void **out,
                        size_t *out_len, ql_error *err)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return ql_fail(err, QL_ERR_NOMEM, "%s: cannot start gunzip", path);
    ql_status st = QL_OK;
    /* The gzip trailer holds the uncompressed size mod 2^32: a good first guess. */
    size_t cap = 4096;
    if (len >= 18) {
        const unsigned char *t = src + len - 4;
        size_t isize = (size_t)t[0] | (size_t)t[1] << 8 | (size_t)t[2] << 16 | (size_t)t[3] << 24;
        /* deflate expands at most ~1032:1; do not trust a corrupt trailer further */
        if (isize > len * 1032)
            isize = len * 1032;
        if (isize + 1 > cap)
            cap = isize + 1;
    }
    size_t used = 0, fed = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory for %zu bytes", path, cap);
        goto cleanup;
    }
    for (;;) {
        if (zs.avail_in == 0 && fed < len) {
            size_t n = len - fed < ZSLICE ? len - fed : ZSLICE;
            zs.next_in = (unsigned char *)src + fed;
            zs.avail_in = (uInt)n;
            fed += n;
        }
        if (used == cap) {
            if (cap >= QL_MAX_FILE) {
                st = ql_fail(err, QL_ERR_FORMAT, "%s: decompressed data larger than %llu bytes",
                             path, (unsigned long long)QL_MAX_FILE);
                goto cleanup;
            }
            size_t ncap = cap * 2;
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory for %zu bytes", path, ncap);
                goto cleanup;
            }
            buf = nb;
            cap = ncap;
        }
        size_t room = cap - used < ZSLICE ? cap - used : ZSLICE;
        zs.next_out = buf + used;
        zs.avail_out = (uInt)room;
        int r = inflate(&zs, Z_NO_FLUSH);
        used += room - zs.avail_out;
        size_t left = zs.avail_in + (len - fed);
        if (r == Z_STREAM_END) {
            /* Another member follows only if the gzip magic does. */
            if (left >= 2 && zs.next_in[0] == 0x1f && zs.next_in[1] == 0x8b) {
                inflateReset(&zs);
                continue;
            }
            break;
        }
        if (r == Z_MEM_ERROR) {
            st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory while decompressing", path);
            goto cleanup;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
            st = ql_fail(err, QL_ERR_FORMAT, "%s: corrupt gzip data (%s)", path,
                         zs.msg ? zs.msg : "inflate failed");
            goto cleanup;
        }
        /* All input consumed, room left for output, and no end of stream:
         * the file stops in the middle of the compressed data. */
        if (left == 0 && zs.avail_out > 0) {
            st = ql_fail(err, QL_ERR_FORMAT,
                         "%s: truncated gzip data (the compressed stream ends after %zu "
                         "decompressed bytes)",
                         path, used);
            goto cleanup;
        }
    }
cleanup:
    inflateEnd(&zs);
    if (st != QL_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    *out_len = used;
    return QL_OK;
}

ql_status ql_read_file(const char *path, bool gz, void **buf, size_t *len, ql_error *err)
{
    ql_status st = QL_OK;
    unsigned char *data = NULL;
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return ql_fail(err, QL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = ql_fail(err, QL_ERR_IO, "%s: not a regular file", path);
        goto cleanup;
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > QL_MAX_FILE) {
        st = ql_fail(err, QL_ERR_IO, "%s: file too large (%lld bytes)", path,
                     (long long)sb.st_size);
        goto cleanup;
    }
    size_t n = (size_t)sb.st_size;
    data = malloc(n ? n : 1);
    if (!data) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory for %zu bytes", path, n);
        goto cleanup;
    }
    size_t got = fread(data, 1, n, f);
    if (got != n) {
        st = ql_fail(err, QL_ERR_IO, "%s: read error after %zu of %zu bytes%s%s", path, got, n,
                     ferror(f) ? ": " : " (file shrank?)", ferror(f) ? strerror(errno) : "");
        goto cleanup;
    }
    if (gz && n >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        void *out = NULL;
        size_t out_len = 0;
        if ((st = gunzip(path, data, n, &out, &out_len, err)) != QL_OK)
            goto cleanup;
        free(data);
        data = out;
        n = out_len;
    }
    *buf = data;
    *len = n;
    data = NULL;
cleanup:
    free(data);
    fclose(f);
    return st;
}

/* ---------------------------------------------------------------------------
 * .npy reading: the header is a Python dict literal, e.g.
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 * ------------------------------------------------------------------------- */

typedef struct npy_header {
    char descr[32];
    int fortran; /* -1 until seen */
    int ndim;    /* -1 until seen */
    int64_t dims[QL_MAX_DIMS];
} npy_header;

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* A quoted Python string without escapes; NULL when malformed or too long. */
static const char *parse_str(const char *p, char *out, size_t n)
{
    char q = *p;
    if (q != '\'' && q != '"')
        return NULL;
    const char *e = strchr(p + 1, q);
    if (!e || (size_t)(e - p - 1) >= n)
        return NULL;
    memcpy(out, p + 1, (size_t)(e - p - 1));
    out[e - p - 1] = '\0';
    return e + 1;
}

/* A tuple of non-negative ints: "()", "(3,)", "(2, 3)"; Python 2 wrote "3L". */
static ql_status parse_shape(const char *name, const char **pp, npy_header *h, ql_error *err)
{
    const char *p = *pp;
    if (*p != '(')
        return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: 'shape' is not a tuple",
                       name);
    p = skip_ws(p + 1);
    h->ndim = 0;
    while (*p != ')') {
        if (*p < '0' || *p > '9')
            return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: bad 'shape' entry",
                           name);
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (errno == ERANGE)
            return ql_fail(err, QL_ERR_FORMAT, "%s: .npy dimension out of range", name);
        if (h->ndim == QL_MAX_DIMS)
            return ql_fail(err, QL_ERR_UNSUPPORTED,
                           "%s: the array has more than %d dimensions", name, QL_MAX_DIMS);
        h->dims[h->ndim++] = v;
        p = end;
        if (*p == 'L' || *p == 'l')
            p++;
        p = skip_ws(p);
        if (*p == ',')
            p = skip_ws(p + 1);
        else if (*p != ')')
            return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: bad 'shape' tuple",
                           name);
    }
    *pp = p + 1;
    return QL_OK;
}

static ql_status parse_header(const char *name, const char *hdr, npy_header *h, ql_error *err)
{
    ql_status st;
    const char *p = skip_ws(hdr);
    h->descr[0] = '\0';
    h->fortran = h->ndim = -1;
    if (*p++ != '{')
        return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: not a dict", name);
    for (;;) {
        p = skip_ws(p);
        if (*p == '}')
            break;
        char key[32];
        if (!(p = parse_str(p, key, sizeof key)))
            return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: bad key", name);
        p = skip_ws(p);
        if (*p++ != ':')
            return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: ':' expected after '%s'",
                           name, key);
        p = skip_ws(p);
        if (!strcmp(key, "descr")) {
            if (*p == '[')
                return ql_fail(err, QL_ERR_UNSUPPORTED,
                               "%s: structured arrays (record dtypes) are not supported", name);
            if (!(p = parse_str(p, h->descr, sizeof h->descr)))
                return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: bad 'descr'", name);
        } else if (!strcmp(key, "fortran_order")) {
            if (!strncmp(p, "True", 4)) {
                h->fortran = 1;
                p += 4;
            } else if (!strncmp(p, "False", 5)) {
                h->fortran = 0;
                p += 5;
            } else {
                return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: bad 'fortran_order'",
                               name);
            }
        } else if (!strcmp(key, "shape")) {
            if ((st = parse_shape(name, &p, h, err)) != QL_OK)
                return st;
        } else {
            return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: unexpected key '%s'",
                           name, key);
        }
        p = skip_ws(p);
        if (*p == ',')
            p++;
        else if (*p != '}')
            return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy header: ',' expected", name);
    }
    if (!h->descr[0] || h->fortran < 0 || h->ndim < 0)
        return ql_fail(err, QL_ERR_FORMAT,
                       "%s: malformed .npy header: 'descr', 'fortran_order' and 'shape' are "
                       "required",
                       name);
    return QL_OK;
}

/* Maps a numpy type string to a dtype; *f64 says the data must be narrowed. */
static ql_status map_descr(const char *name, const char *d, ql_dtype *dt, int *f64, ql_error *err)
{
    static const struct {
        const char *kind; /* descr without the byte-order character */
        ql_dtype dt;
    } map[] = {{"f4", QL_F32}, {"f8", QL_F32}, {"u1", QL_U8},  {"i1", QL_I8},
               {"i2", QL_I16}, {"i4", QL_I32}, {"i8", QL_I64}, {"b1", QL_BOOL}};
    char order = d[0];
    const char *kind = d + 1;
    if (order != '<' && order != '>' && order != '|' && order != '=')
        return ql_fail(err, QL_ERR_FORMAT, "%s: malformed .npy dtype '%s'", name, d);
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
        if (strcmp(kind, map[k].kind) != 0)
            continue;
        /* Byte order matters only for multi-byte types; '=' is native, and
         * the host is little-endian (checked at build time). */
        if (order == '>' && ql_dtype_info(map[k].dt)->size > 1)
            return ql_fail(err, QL_ERR_UNSUPPORTED,
                           "%s: big-endian data ('%s') is not supported; save it little-endian "
                           "(arr.astype(arr.dtype.newbyteorder('<')))",
                           name, d);
        *dt = map[k].dt;
        *f64 = !strcmp(kind, "f8");
        return QL_OK;
    }
    return ql_fail(err, QL_ERR_UNSUPPORTED,
                   "%s: array dtype '%s' is not supported (float32, float64, int8, int16, int32, "
                   "int64, uint8 or bool)",
                   name, d);
}

ql_status ql_npy_load_buffer(const void *vbuf, size_t len, const char *name, ql_tensor **out,
                             ql_error *err)
{
    const unsigned char *buf = vbuf;
    ql_status st = QL_OK;
    char *hdr = NULL;
    ql_tensor *t = NULL;
    *out = NULL;
    if (len < 6 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return ql_fail(err, QL_ERR_FORMAT, "%s: not a .npy file (no \\x93NUMPY magic)", name);
    if (len < 10)
        return ql_fail(err, QL_ERR_FORMAT, "%s: truncated .npy header", name);
    int major = buf[6], minor = buf[7];
    size_t hlen, off;
    if (major == 1) {
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
        off = 10;
    } else if (major == 2 || major == 3) { /* 3.0 only changes the header text to UTF-8 */
        if (len < 12)
            return ql_fail(err, QL_ERR_FORMAT, "%s: truncated .npy header", name);
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 |
               (size_t)buf[11] << 24;
        off = 12;
    } else {
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%s: unsupported .npy format version %d.%d", name,
                       major, minor);
    }
    if (hlen > NPY_MAX_HEADER)
        return ql_fail(err, QL_ERR_FORMAT, "%s: .npy header of %zu bytes is implausibly large",
                       name, hlen);
    if (hlen > len - off)
        return ql_fail(err, QL_ERR_FORMAT,
                       "%s: truncated .npy header (%zu bytes announced, %zu present)", name, hlen,
                       len - off);
    if (!(hdr = malloc(hlen + 1)))
        return ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", name);
    memcpy(hdr, buf + off, hlen);
    hdr[hlen] = '\0';
    off += hlen;

    npy_header h;
    ql_dtype dt = QL_F32;
    int f64 = 0;
    if ((st = parse_header(name, hdr, &h, err)) != QL_OK ||
        (st = map_descr(name, h.descr, &dt, &f64, err)) != QL_OK)
        goto cleanup;
    if (h.fortran) {
        st = ql_fail(err, QL_ERR_UNSUPPORTED,
                     "%s: Fortran-ordered arrays are not supported (save with "
                     "np.ascontiguousarray)",
                     name);
        goto cleanup;
    }
    size_t es = f64 ? 8 : ql_dtype_info(dt)->size;
    /* Element count with overflow checks: the header is untrusted. */
    uint64_t numel = 1;
    int zero = 0;
    for (int i = 0; i < h.ndim; i++) {
        uint64_t d = (uint64_t)h.dims[i];
        if (d == 0)
            zero = 1;
        else if (!zero && numel > QL_MAX_FILE / d)
            numel = QL_MAX_FILE + 1; /* saturate: surely larger than the file */
        else if (!zero)
            numel *= d;
    }
    if (zero)
        numel = 0;
    char shp[160];
    ql_shape_str(h.ndim, h.dims, shp, sizeof shp);
    if (numel > QL_MAX_FILE || numel * es != len - off) {
        if (numel > QL_MAX_FILE)
            st = ql_fail(err, QL_ERR_FORMAT,
                         "%s: size mismatch: shape %s '%s' is implausibly large for %zu data bytes",
                         name, shp, h.descr, len - off);
        else
            st = ql_fail(err, QL_ERR_FORMAT,
                         "%s: size mismatch: shape %s '%s' needs %llu data bytes but the file "
                         "has %zu (%s)",
                         name, shp, h.descr, (unsigned long long)(numel * es), len - off,
                         numel * es > len - off ? "truncated?" : "trailing bytes");
        goto cleanup;
    }
    if (!(t = ql_tensor_wrap(dt, h.ndim, h.dims, NULL)) || ql_tensor_alloc(t) != QL_OK) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory for %s '%s'", name, shp, h.descr);
        goto cleanup;
    }
    if (f64) {
        const unsigned char *src = buf + off;
        float *dst = t->data;
        for (uint64_t i = 0; i < numel; i++) {
            double v;
            memcpy(&v, src + i * 8, 8);
            dst[i] = (float)v;
        }
    } else if (numel) {
        memcpy(t->data, buf + off, (size_t)(numel * es));
    }
    *out = t;
    t = NULL;
cleanup:
    free(hdr);
    ql_tensor_free(t);
    return st;
}

ql_status ql_npy_load(const char *path, ql_tensor **out, ql_error *err)
{
    void *buf;
    size_t len;
    *out = NULL;
    ql_status st = ql_read_file(path, false, &buf, &len, err);
    if (st != QL_OK)
        return st;
    st = ql_npy_load_buffer(buf, len, path, out, err);
    free(buf);
    return st;
}


ql_status ql_npy_save(const char *path, const ql_tensor *t, ql_error *err)
{
    static const char *const descr[QL_DTYPE_COUNT] = {
        [QL_F32] = "<f4", [QL_U8] = "|u1",  [QL_I8] = "|i1",  [QL_I16] = "<i2",
        [QL_I32] = "<i4", [QL_I64] = "<i8", [QL_BOOL] = "|b1"};
    ql_status st = QL_OK;
    if ((unsigned)t->dtype >= QL_DTYPE_COUNT || !descr[t->dtype] || t->ndim < 0 ||
        t->ndim > QL_MAX_DIMS)
        return ql_fail(err, QL_ERR_ARG, "%s: cannot save a tensor of this type or rank", path);
    for (int i = 0; i < t->ndim; i++)
        if (t->dims[i] < 0)
            return ql_fail(err, QL_ERR_ARG, "%s: cannot save a tensor with unknown dimensions",
                           path);
    /* numpy writes (3,) for 1-d and (2, 3) for 2-d; the header is padded
     * with spaces and a newline so the data starts 64-byte aligned. */
    char shape[QL_MAX_DIMS * 24 + 4], hdr[sizeof shape + 192];
    size_t sl = 0;
    shape[0] = '\0';
    for (int i = 0; i < t->ndim; i++)
        sl += (size_t)snprintf(shape + sl, sizeof shape - sl, "%s%lld", i ? ", " : "",
                               (long long)t->dims[i]);
    if (t->ndim == 1)
        snprintf(shape + sl, sizeof shape - sl, ",");
    int hl = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                      descr[t->dtype], shape);
    size_t pad = (64 - (10 + (size_t)hl + 1) % 64) % 64;
    size_t hlen = (size_t)hl + pad + 1;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                             (unsigned char)(hlen >> 8)};
    memset(hdr + hl, ' ', pad);
    hdr[hlen - 1] = '\n';

    ql_outfile o;
    size_t nb = ql_tensor_nbytes(t);
    if ((st = ql_outfile_open(&o, path, err)) != QL_OK)
        return st;
    if (fwrite(pre, 1, sizeof pre, o.f) != sizeof pre || fwrite(hdr, 1, hlen, o.f) != hlen ||
        (nb && fwrite(t->data, 1, nb, o.f) != nb)) {
        st = ql_fail(err, QL_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        ql_outfile_abort(&o);
        return st;
    }
    return ql_outfile_commit(&o, err);
}
