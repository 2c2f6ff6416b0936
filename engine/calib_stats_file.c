/* The statistics file (QLSTATS1): a set of histograms saved atomically and
 * loaded with every field checked, so that a truncated or corrupt file is
 * refused with a reason instead of giving wrong encodings. */
#include "calib_stats.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outfile.h"

/* ---------------------------------------------------------------------------
 * File format, version 1, all little-endian:
 *   "QLSTATS1" u32 version u32 bins u32 n u32 0 i64 samples u64 fingerprint
 *   n times: u32 name_len, name bytes (no NUL), f64 min max range,
 *            u64 count nan ninf pinf at_range, u32 first last (populated bins
 *            [first, last), first == last when empty), u64 counts[last-first]
 *   u64 FNV-1a of every byte before it
 * ------------------------------------------------------------------------- */

#define STATS_MAGIC "QLSTATS1"
#define STATS_VERSION 1u
#define NAME_MAX_LEN 4096u

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + n)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_u64(buf *b, uint64_t v)
{
    unsigned char c[8];
    for (int i = 0; i < 8; i++)
        c[i] = (unsigned char)(v >> (8 * i));
    put(b, c, 8);
}

static void put_u32(buf *b, uint32_t v)
{
    unsigned char c[4];
    for (int i = 0; i < 4; i++)
        c[i] = (unsigned char)(v >> (8 * i));
    put(b, c, 4);
}

static void put_f64(buf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    put_u64(b, u);
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

ql_status ql_calib_stats_save(const ql_calib_stats *s, const char *path, ql_error *err)
{
    ql_status st = QL_OK;
    buf b = {0};

    put(&b, STATS_MAGIC, 8);
    put_u32(&b, STATS_VERSION);
    put_u32(&b, QL_HIST_BINS);
    put_u32(&b, (uint32_t)s->n);
    put_u32(&b, 0);
    put_u64(&b, (uint64_t)s->samples);
    put_u64(&b, s->model_fingerprint);
    for (int i = 0; i < s->n; i++) {
        const ql_hist *h = &s->hists[i];
        size_t len = strlen(s->names[i]);
        if (len > NAME_MAX_LEN) {
            st = ql_fail(err, QL_ERR_ARG, "%s: tensor name longer than %u bytes", path,
                         NAME_MAX_LEN);
            goto cleanup;
        }
        put_u32(&b, (uint32_t)len);
        put(&b, s->names[i], len);
        put_f64(&b, h->min);
        put_f64(&b, h->max);
        put_f64(&b, h->range);
        put_u64(&b, h->count);
        put_u64(&b, h->nan);
        put_u64(&b, h->ninf);
        put_u64(&b, h->pinf);
        put_u64(&b, h->at_range);
        uint32_t first = 0, last = QL_HIST_BINS;
        while (first < last && h->counts[first] == 0)
            first++;
        while (last > first && h->counts[last - 1] == 0)
            last--;
        put_u32(&b, first);
        put_u32(&b, last);
        for (uint32_t j = first; j < last; j++)
            put_u64(&b, h->counts[j]);
    }
    put_u64(&b, b.oom ? 0 : fnv1a(b.p, b.n));
    if (b.oom) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }

    st = ql_write_file_atomic(path, b.p, b.n, err);

cleanup:
    free(b.p);
    return st;
}

/* A bounds-checked reader over the file's bytes. */
typedef struct rd {
    const unsigned char *p;
    size_t n, at;
    int short_read;
} rd;

static const unsigned char *get(rd *r, size_t n)
{
    if (r->short_read || r->n - r->at < n) {
        r->short_read = 1;
        return NULL;
    }
    const unsigned char *q = r->p + r->at;
    r->at += n;
    return q;
}

static uint64_t get_u64(rd *r)
{
    const unsigned char *c = get(r, 8);
    uint64_t v = 0;
    for (int i = 0; c && i < 8; i++)
        v |= (uint64_t)c[i] << (8 * i);
    return v;
}

static uint32_t get_u32(rd *r)
{
    const unsigned char *c = get(r, 4);
    uint32_t v = 0;
    for (int i = 0; c && i < 4; i++)
        v |= (uint32_t)c[i] << (8 * i);
    return v;
}

static double get_f64(rd *r)
{
    uint64_t u = get_u64(r);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

static int is_pow2(double r)
{
    int e;
    return isfinite(r) && r > 0 && frexp(r, &e) == 0.5;
}

static ql_status read_file(const char *path, unsigned char **out, size_t *n, ql_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ql_fail(err, QL_ERR_IO, "%s: %s", path, strerror(errno));
    ql_status st = QL_OK;
    size_t cap = 1 << 16, len = 0;
    unsigned char *p = malloc(cap);
    while (p) {
        len += fread(p + len, 1, cap - len, f);
        if (len < cap)
            break;
        unsigned char *q = realloc(p, cap * 2);
        if (!q) {
            free(p);
            p = NULL;
            break;
        }
        p = q;
        cap *= 2;
    }
    if (!p)
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
    else if (ferror(f))
        st = ql_fail(err, QL_ERR_IO, "%s: read failed", path);
    fclose(f);
    if (st != QL_OK) {
        free(p);
        return st;
    }
    *out = p;
    *n = len;
    return QL_OK;
}

/* Parses one tensor's record into s; returns a message or NULL. */
static const char *load_tensor(rd *r, ql_calib_stats *s, char *name)
{
    uint32_t len = get_u32(r);
    if (r->short_read)
        return "truncated";
    if (len == 0 || len > NAME_MAX_LEN)
        return "bad tensor name length";
    const unsigned char *nm = get(r, len);
    if (!nm)
        return "truncated";
    memcpy(name, nm, len);
    name[len] = '\0';
    if (strlen(name) != len)
        return "tensor name contains a NUL byte";
    if (ql_calib_stats_find(s, name) >= 0)
        return "tensor name appears twice";
    int i = ql_calib_stats_add(s, name);
    if (i < 0)
        return "out of memory";
    ql_hist *h = &s->hists[i];
    h->min = get_f64(r);
    h->max = get_f64(r);
    h->range = get_f64(r);
    h->count = get_u64(r);
    h->nan = get_u64(r);
    h->ninf = get_u64(r);
    h->pinf = get_u64(r);
    h->at_range = get_u64(r);
    uint32_t first = get_u32(r), last = get_u32(r);
    if (r->short_read)
        return "truncated";
    if (first > last || last > QL_HIST_BINS)
        return "bad populated bin range";
    if ((size_t)(last - first) * 8 > r->n - r->at)
        return "truncated";
    uint64_t sum = 0;
    for (uint32_t j = first; j < last; j++) {
        h->counts[j] = get_u64(r);
        if (h->counts[j] > UINT64_MAX - sum)
            return "bin counts overflow";
        sum += h->counts[j];
    }
    if (sum != h->count)
        return "bin counts do not add up to the value count";
    if (h->range != 0 && !is_pow2(h->range))
        return "histogram range is not a power of two";
    if (h->count == 0 ? !(h->min > h->max) : !(h->min <= h->max))
        return "min/max inconsistent with the value count";
    if (h->ninf > h->counts[0] || h->pinf > h->counts[QL_HIST_BINS - 1] ||
        h->at_range > h->counts[QL_HIST_BINS - 1] - h->pinf)
        return "infinite value counts exceed the edge bins";
    if ((h->ninf > 0) != (h->min == -INFINITY) || (h->pinf > 0) != (h->max == INFINITY))
        return "infinite value counts inconsistent with min/max";
    if (h->at_range > 0 && !(h->range > 0 && h->max >= h->range))
        return "count of values at the range edge inconsistent with max";
    double a = fmax(isinf(h->min) ? 0 : fabs(h->min), isinf(h->max) ? 0 : fabs(h->max));
    if (a > h->range || (a > 0 && a <= h->range / 2))
        return "histogram range inconsistent with min/max";
    return NULL;
}

ql_status ql_calib_stats_load(const char *path, ql_calib_stats **out, ql_error *err)
{
    unsigned char *data = NULL;
    size_t n = 0;
    ql_calib_stats *s = NULL;
    char *name = NULL;
    const char *why = NULL;
    *out = NULL;
    ql_status st = read_file(path, &data, &n, err);
    if (st != QL_OK)
        return st;
    rd r = {data, n, 0, 0};
    const unsigned char *magic = get(&r, 8);
    if (!magic || memcmp(magic, STATS_MAGIC, 8) != 0) {
        why = "not a qlens statistics file (bad magic)";
        goto cleanup;
    }
    if (n < 8 + 8) {
        why = "truncated";
        goto cleanup;
    }
    r.at = n - 8;
    if (get_u64(&r) != fnv1a(data, n - 8)) {
        why = "checksum mismatch (truncated or corrupt)";
        goto cleanup;
    }
    r.at = 8;
    r.n = n - 8; /* the records end where the checksum starts */
    uint32_t version = get_u32(&r), bins = get_u32(&r), count = get_u32(&r), zero = get_u32(&r);
    if (r.short_read) {
        why = "truncated";
        goto cleanup;
    }
    if (version != STATS_VERSION) {
        st = ql_fail(err, QL_ERR_UNSUPPORTED, "%s: statistics file version %u (this qlens reads %u)",
                     path, version, STATS_VERSION);
        goto cleanup;
    }
    if (bins != QL_HIST_BINS || zero != 0 || count > (1u << 24)) {
        why = "bad header";
        goto cleanup;
    }
    s = ql_calib_stats_new();
    name = malloc(NAME_MAX_LEN + 1);
    if (!s || !name) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    s->samples = (int64_t)get_u64(&r);
    s->model_fingerprint = get_u64(&r);
    if (s->samples < 0) {
        why = "negative sample count";
        goto cleanup;
    }
    for (uint32_t i = 0; i < count && !why; i++) {
        why = load_tensor(&r, s, name);
        if (why) {
            st = ql_fail(err, QL_ERR_FORMAT, "%s: tensor %u: %s", path, i, why);
            why = NULL;
            goto cleanup;
        }
    }
    if (r.short_read)
        why = "truncated";
    else if (r.at != r.n)
        why = "trailing bytes after the last tensor";

cleanup:
    if (why)
        st = ql_fail(err, QL_ERR_FORMAT, "%s: %s", path, why);
    if (st != QL_OK) {
        ql_calib_stats_free(s);
        s = NULL;
    }
    *out = s;
    free(name);
    free(data);
    return st;
}
