/* Streaming calibration statistics: exact re-binning histograms and their
 * binary file. Bin edges are k * R / 4096 with R a power of two, so a value's
 * bin is floor(x * 2^e) + 4096 with an exact product, and doubling R maps
 * every old bin into exactly one new bin. */
#include "calib_stats.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outfile.h"

#define HALF (QL_HIST_BINS / 2)
#define LOG2_HALF 12 /* 2^12 = HALF */

/* ---------------------------------------------------------------------------
 * Histogram
 * ------------------------------------------------------------------------- */

ql_status ql_hist_init(ql_hist *h, ql_error *err)
{
    memset(h, 0, sizeof *h);
    h->min = INFINITY;
    h->max = -INFINITY;
    h->counts = calloc(QL_HIST_BINS, sizeof *h->counts);
    if (!h->counts)
        return ql_fail(err, QL_ERR_NOMEM, "histogram: out of memory");
    return QL_OK;
}

void ql_hist_clear(ql_hist *h)
{
    free(h->counts);
    memset(h, 0, sizeof *h);
}

/* 1 / bin width (0 while R is 0, which puts zeros in the centre bin). */
static double hist_inv_width(double range)
{
    return range > 0 ? HALF / range : 0.0;
}

/* floor(v) + HALF clamped to the bins; v = x / width is exact (power-of-two
 * scaling of a float in double), and the truncate-then-fix floor avoids
 * the rounding that v + HALF could do for tiny negative v. */
static inline int hist_index(double v)
{
    int i = (int)v;
    i -= v < (double)i;
    i += HALF;
    return i < 0 ? 0 : i >= QL_HIST_BINS ? QL_HIST_BINS - 1 : i;
}

int ql_hist_bin(const ql_hist *h, double x)
{
    if (isinf(x))
        return x < 0 ? 0 : QL_HIST_BINS - 1;
    double v = x * hist_inv_width(h->range);
    if (v >= HALF)
        return QL_HIST_BINS - 1;
    if (v < -HALF)
        return 0;
    return hist_index(v);
}

/* Re-bins counts (in place) from range R to R * 2^k: old bin j goes to
 * floor((j - HALF) / 2^k) + HALF. Infinite values stay in the edge bins;
 * values equal to the old R (in the top bin) go to the bin of R. */
static void hist_rebin(uint64_t *counts, uint64_t ninf, uint64_t pinf, uint64_t at_range, int k)
{
    if (k <= 0)
        return;
    if (k > LOG2_HALF + 1)
        k = LOG2_HALF + 1; /* beyond that everything is in the two centre bins */
    counts[0] -= ninf;
    counts[QL_HIST_BINS - 1] -= pinf + at_range;
    uint64_t *tmp = counts; /* new index <= old index above the centre, >= below */
    for (int j = HALF; j < QL_HIST_BINS; j++) {
        int nj = ((j - HALF) >> k) + HALF;
        uint64_t c = tmp[j];
        tmp[j] = 0;
        tmp[nj] += c;
    }
    for (int j = HALF - 1; j >= 0; j--) {
        int d = HALF - j; /* j - HALF = -d, floor(-d / 2^k) = -ceil(d / 2^k) */
        int nj = HALF - ((d + (1 << k) - 1) >> k);
        uint64_t c = tmp[j];
        tmp[j] = 0;
        tmp[nj] += c;
    }
    counts[0] += ninf;
    counts[QL_HIST_BINS - 1] += pinf;
    counts[(HALF >> k) + HALF] += at_range;
}

/* Smallest power of two >= a (a > 0, finite). */
static double pow2_ceil(double a)
{
    int e;
    double m = frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    return m == 0.5 ? ldexp(1.0, e - 1) : ldexp(1.0, e);
}

/* Makes R cover a (finite, > R). */
static void hist_grow(ql_hist *h, double a)
{
    if (h->range == 0) {
        h->range = pow2_ceil(a); /* only zeros and infinities so far: nothing moves */
        return;
    }
    int k = 0;
    double r = h->range;
    while (r < a) {
        r *= 2;
        k++;
    }
    hist_rebin(h->counts, h->ninf, h->pinf, h->at_range, k);
    h->at_range = 0;
    h->range = r;
}

/* The general path: any values, NaN and infinities included, range grown
 * as values arrive. */
static void hist_add_general(ql_hist *h, const float *x, int64_t n)
{
    uint64_t *counts = h->counts;
    float mn = (float)h->min, mx = (float)h->max;
    float rf = (float)h->range; /* +Inf only if R = 2^128: no finite float exceeds it */
    double inv = hist_inv_width(h->range);
    uint64_t nan = 0, top = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (v != v) {
            nan++;
            continue;
        }
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        float a = fabsf(v);
        if (a > rf) {
            if (isinf(v)) {
                if (v < 0) {
                    h->ninf++;
                    counts[0]++;
                } else {
                    h->pinf++;
                    counts[QL_HIST_BINS - 1]++;
                }
                continue;
            }
            h->at_range += top;
            top = 0;
            hist_grow(h, a);
            rf = (float)h->range;
            inv = hist_inv_width(h->range);
        }
        counts[hist_index(v * inv)]++;
        top += v == rf && rf > 0; /* R itself is in the top bin, for now (R = 0: zeros are centred) */
    }
    h->min = mn;
    h->max = mx;
    h->count += (uint64_t)n - nan;
    h->nan += nan;
    h->at_range += top;
}

#define SUBS 4
#define CHUNK (1 << 30) /* keeps the 32-bit sub-counters from overflowing */

/* Extremes of x and whether it holds a NaN or an infinity, 4 lanes at a
 * time in SSE-sized vectors that every x86-64 has (a scalar min/max loop
 * does not vectorise because of NaN ordering). v - v is 0 for finite v and
 * NaN for NaN or +-Inf, so one sum tells whether any value is odd. */
static void extremes(const float *x, int64_t n, float *mn_out, float *mx_out, int *odd_out)
{
    typedef float v4 __attribute__((vector_size(16)));
    typedef int32_t v4i __attribute__((vector_size(16)));
    typedef float v4u __attribute__((vector_size(16), aligned(4), may_alias));
    v4 mn = {INFINITY, INFINITY, INFINITY, INFINITY}, mx = -mn, zero = {0, 0, 0, 0};
    v4 mn2 = mn, mx2 = mx, acc = zero;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v4 a = *(const v4u *)(x + i), b = *(const v4u *)(x + i + 4);
        v4i la = a < mn, ga = a > mx, lb = b < mn2, gb = b > mx2;
        mn = (v4)(((v4i)a & la) | ((v4i)mn & ~la));
        mx = (v4)(((v4i)a & ga) | ((v4i)mx & ~ga));
        mn2 = (v4)(((v4i)b & lb) | ((v4i)mn2 & ~lb));
        mx2 = (v4)(((v4i)b & gb) | ((v4i)mx2 & ~gb));
        acc += (a - a) + (b - b);
    }
    float m0 = INFINITY, m1 = -INFINITY, sum = 0;
    for (int k = 0; k < 4; k++) {
        m0 = mn[k] < m0 ? mn[k] : m0;
        m0 = mn2[k] < m0 ? mn2[k] : m0;
        m1 = mx[k] > m1 ? mx[k] : m1;
        m1 = mx2[k] > m1 ? mx2[k] : m1;
        sum += acc[k];
    }
    for (; i < n; i++) {
        float v = x[i];
        m0 = v < m0 ? v : m0;
        m1 = v > m1 ? v : m1;
        sum += v - v;
    }
    *mn_out = m0;
    *mx_out = m1;
    *odd_out = sum != sum;
}

/* floor(v) + HALF for |v| <= HALF, in float (v = x * 2^k is exact). */
static inline int bin_of(float v)
{
    int i = (int)v;
    i -= v < (float)i;
    i += HALF;
    return i >= QL_HIST_BINS ? QL_HIST_BINS - 1 : i;
}

/* The common case, all values finite: one vectorised pass for the
 * extremes, the range grown once, then binning into SUBS interleaved
 * counters, so runs of equal values (the zeros after a ReLU) do not
 * serialise on one memory location. Same counts as the general path. */
void ql_hist_add(ql_hist *h, const float *x, int64_t n)
{
    float mn, mx;
    int odd;
    extremes(x, n, &mn, &mx, &odd);
    double a = fmax(fabs((double)mn), fabs((double)mx));
    if (odd || n < 4096 || (a > 0 && hist_inv_width(a > h->range ? 2 * a : h->range) > 0x1p100)) {
        hist_add_general(h, x, n); /* rare: odd values, few values, tiny ranges */
        return;
    }
    uint32_t *sub = calloc((size_t)SUBS * QL_HIST_BINS, sizeof *sub);
    if (!sub) {
        hist_add_general(h, x, n);
        return;
    }
    if (a > h->range)
        hist_grow(h, a); /* moves the values at the old edge (at_range) too */
    float rf = (float)h->range, inv = (float)hist_inv_width(h->range);
    for (int64_t base = 0; base < n; base += CHUNK) {
        int64_t end = n - base < CHUNK ? n : base + CHUNK;
        int64_t i = base;
        typedef float v4 __attribute__((vector_size(16)));
        typedef int32_t v4i __attribute__((vector_size(16)));
        typedef float v4u __attribute__((vector_size(16), aligned(4), may_alias));
        const v4 vinv = {inv, inv, inv, inv};
        const v4i half = {HALF, HALF, HALF, HALF}, last = half + half - 1;
        for (; i + SUBS <= end; i += SUBS) {
            /* bin_of on 4 lanes: truncate, step down where that rounded up */
            v4 t = *(const v4u *)(x + i) * vinv;
            v4i b = __builtin_convertvector(t, v4i);
            b += (v4i)(__builtin_convertvector(b, v4) > t) + half; /* true is -1 */
            v4i over = b > last;
            b = (over & last) | (~over & b);
            for (int k = 0; k < SUBS; k++)
                sub[k * QL_HIST_BINS + b[k]]++;
        }
        for (; i < end; i++)
            sub[bin_of(x[i] * inv)]++;
        for (int j = 0; j < QL_HIST_BINS; j++) {
            uint64_t c = 0;
            for (int k = 0; k < SUBS; k++) {
                c += sub[k * QL_HIST_BINS + j];
                sub[k * QL_HIST_BINS + j] = 0;
            }
            h->counts[j] += c;
        }
    }
    free(sub);
    if (mx == rf && rf > 0) /* values at R itself sit in the top bin, for now */
        for (int64_t i = 0; i < n; i++)
            h->at_range += x[i] == rf;
    if (mn < h->min)
        h->min = mn;
    if (mx > h->max)
        h->max = mx;
    h->count += (uint64_t)n;
}

ql_status ql_hist_merge(ql_hist *dst, const ql_hist *src, ql_error *err)
{
    const uint64_t *sc = src->counts;
    uint64_t *tmp = NULL;
    if (src->range > dst->range) {
        if (dst->range == 0)
            dst->range = src->range;
        else
            hist_grow(dst, src->range);
    } else if (src->range < dst->range && src->range > 0) {
        tmp = malloc(QL_HIST_BINS * sizeof *tmp);
        if (!tmp)
            return ql_fail(err, QL_ERR_NOMEM, "histogram merge: out of memory");
        memcpy(tmp, src->counts, QL_HIST_BINS * sizeof *tmp);
        int k = 0;
        for (double r = src->range; r < dst->range; r *= 2)
            k++;
        hist_rebin(tmp, src->ninf, src->pinf, src->at_range, k);
        sc = tmp;
    }
    for (int j = 0; j < QL_HIST_BINS; j++)
        dst->counts[j] += sc[j];
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->nan += src->nan;
    dst->ninf += src->ninf;
    dst->pinf += src->pinf;
    if (src->range == dst->range)
        dst->at_range += src->at_range; /* else re-binned inward above */
    free(tmp);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Sets of named tensors
 * ------------------------------------------------------------------------- */

ql_calib_stats *ql_calib_stats_new(void)
{
    return calloc(1, sizeof(ql_calib_stats));
}

void ql_calib_stats_free(ql_calib_stats *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++) {
        free(s->names[i]);
        ql_hist_clear(&s->hists[i]);
    }
    free(s->names);
    free(s->hists);
    free(s);
}

int ql_calib_stats_find(const ql_calib_stats *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0)
            return i;
    return -1;
}

int ql_calib_stats_add(ql_calib_stats *s, const char *name)
{
    int i = ql_calib_stats_find(s, name); /* names are keys: never twice */
    if (i >= 0)
        return i;
    char **names = realloc(s->names, (size_t)(s->n + 1) * sizeof *names);
    if (!names)
        return -1;
    s->names = names;
    ql_hist *hists = realloc(s->hists, (size_t)(s->n + 1) * sizeof *hists);
    if (!hists)
        return -1;
    s->hists = hists;
    char *copy = strdup(name);
    if (!copy)
        return -1;
    if (ql_hist_init(&s->hists[s->n], NULL) != QL_OK) {
        free(copy);
        return -1;
    }
    s->names[s->n] = copy;
    return s->n++;
}

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
