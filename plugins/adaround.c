/* adaround: AdaRound weight rounding (Nagel et al. 2020, "Up or Down?
 * Adaptive Rounding for Post-Training Quantization"). Per layer it learns,
 * for each weight, whether to round down or up by minimising the output
 * reconstruction error on cached layer inputs plus a regulariser that
 * pushes every soft rounding variable to 0 or 1. Ranges are per-channel
 * min/max, as in minmax.
 *
 * Per channel c (scale s, zero point z, grid [qmin, qmax]):
 *   W~ = s * clamp(floor(w/s) + h(V), qmin - z, qmax - z),
 *   h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1),
 *   loss = 1/B sum_{c,b} (f(W~ x_b + bias) - f(W x_b + bias))^2
 *          + reg * sum (1 - |2 h(V) - 1|^beta)           (after the warm-up)
 * with f the layer's clamp, beta cosine-annealed from beta_start to
 * beta_end, and Adam on V (PyTorch's update rule; lr 1e-3 as in the paper
 * and AIMET). Defaults follow AIMET. The loss is separable per output
 * channel once the batch is drawn, so channels are cut into fixed blocks
 * (independent of the thread count) that threads take in any order: the
 * result is bit-identical for any number of threads. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qlens-plugin.h"

#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
void openblas_set_num_threads(int n);
#endif

enum { P_ITERS, P_BATCH, P_REG, P_BETA0, P_BETA1, P_WARMUP, P_LR, P_COUNT };

/* Defaults follow AIMET except the batch, which counts im2col columns: 256
 * keeps a step of a 64x576 layer (the largest in examples/fmnist) near
 * 1.6 ms of CPU with input gathering, mostly sgemm (QLENS_ADAROUND_BENCH in
 * tests/test_adaround.c measures it). */
static const qlp_param_def ar_params[P_COUNT] = {
    {"iterations", QLP_PARAM_INT, 10000, 1, 1e7, "optimisation steps per layer"},
    {"batch", QLP_PARAM_INT, 256, 16, 65536, "input columns drawn per step"},
    {"reg", QLP_PARAM_FLOAT, 0.01, 0, 1e6, "weight of the rounding regulariser (lambda)"},
    {"beta_start", QLP_PARAM_FLOAT, 20, 1, 1000, "regulariser exponent after the warm-up"},
    {"beta_end", QLP_PARAM_FLOAT, 2, 1, 1000, "regulariser exponent at the end"},
    {"warmup", QLP_PARAM_FLOAT, 0.2, 0, 1, "fraction of steps without the regulariser"},
    {"lr", QLP_PARAM_FLOAT, 1e-3, 1e-6, 10, "Adam learning rate"},
};

#define AR_ZETA 1.1f
#define AR_GAMMA (-0.1f)
#define AR_BLOCK 16     /* channels per work unit; fixed so results ignore threads */
#define AR_GEMM_MIN 4   /* channels per group from which a block uses sgemm */
#define AR_REPORT 100   /* iterations between progress reports */

/* ---------------------------------------------------------------------------
 * Vectorisable exp and log (Cephes single-precision polynomials, about
 * 1 ulp on the ranges used): libm calls would dominate the per-weight work
 * and do not vectorise without -ffast-math.
 * ------------------------------------------------------------------------- */

static inline __attribute__((always_inline)) float ar_exp(float x)
{
    x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);
    float t = x * 1.44269504088896341f;
    float fn = (t + 12582912.0f) - 12582912.0f; /* nearest integer, branch-free */
    int32_t n = (int32_t)fn;
    float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    int32_t bits = (n + 127) << 23;
    float p;
    memcpy(&p, &bits, sizeof p);
    return y * p;
}

/* Natural log of a normal positive float. */
static inline __attribute__((always_inline)) float ar_log(float a)
{
    int32_t bits;
    memcpy(&bits, &a, sizeof bits);
    float e = (float)((bits >> 23) - 126);
    int32_t mb = (bits & 0x007fffff) | 0x3f000000; /* mantissa in [0.5, 1) */
    float m;
    memcpy(&m, &mb, sizeof m);
    int small = m < 0.707106781186547524f;
    e = small ? e - 1.0f : e;
    float x = small ? m + m - 1.0f : m - 1.0f;
    float z = x * x;
    float y = 7.0376836292e-2f;
    y = y * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return x + y + 0.693359375f * e;
}

static inline __attribute__((always_inline)) float ar_sigmoid(float v)
{
    return 1.0f / (1.0f + ar_exp(-v));
}

/* h(V) before the clamp to [0, 1]. */
static inline float ar_hraw(float v) { return ar_sigmoid(v) * (AR_ZETA - AR_GAMMA) + AR_GAMMA; }

/* ---------------------------------------------------------------------------
 * State
 * ------------------------------------------------------------------------- */

typedef struct ar_block {
    int64_t c0, c1; /* channels [c0, c1), all in one group unless !gemm */
    int gemm;
} ar_block;

typedef struct ar_scratch {
    float *y;   /* [2 * AR_BLOCK * B] outputs: float rows then soft rows */
    float *g;   /* [AR_BLOCK * B] d loss / d pre-activation */
    float *gw;  /* [AR_BLOCK * k] d loss / d W~ */
    float *dw;  /* [AR_BLOCK * k] d W~ / d V */
    float *rg;  /* [AR_BLOCK * k] d regulariser / d V */
    float *sig; /* [AR_BLOCK * k] sigmoid(V) */
} ar_scratch;

typedef struct ar_ctx {
    const qlp_layer *L;
    const float *scale;
    int64_t C, k, cpg, B, iters, warm;
    float reg, beta0, beta1, lr;
    float *fl;             /* [C*k] floor(w/s), kept within one step of the grid */
    float *qlo, *qhi;      /* [C] grid without zero point: qmin - z, qmax - z */
    float *V, *m, *v;      /* [C*k] rounding variables and Adam moments */
    float *stack;          /* [2*C*k] per gemm block: W rows, then W~ rows */
    float *X[2];           /* [groups * k * B] batch double buffer */
    int64_t *idx;          /* [B] column indices */
    int full;              /* every column fits in one batch: fetched once */
    uint64_t rng;
    ar_block *blocks;
    int nblocks, nthreads;
    ar_scratch *scr;       /* per thread */
    atomic_int next[2];    /* block tickets, by iteration parity */
    pthread_mutex_t mu;    /* barrier and start gate */
    pthread_cond_t cv;
    int arrived, go, gen_stop;
    unsigned gen;
    int stop;              /* 0, QLP_ERROR or QLP_CANCELLED; written by thread 0 */
    const qlp_host *host;
    char *err;
    size_t errlen;
} ar_ctx;

typedef struct ar_worker {
    ar_ctx *x;
    int tid;
} ar_worker;

static uint64_t ar_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Fills X[buf] with a new batch (thread 0 only: get_columns need not be
 * thread-safe). Indices are uniform, with replacement. */
static int ar_fetch(ar_ctx *x, int buf)
{
    const qlp_layer *L = x->L;
    if (x->full) {
        for (int64_t b = 0; b < x->B; b++)
            x->idx[b] = b;
    } else {
        for (int64_t b = 0; b < x->B; b++)
            x->idx[b] =
                (int64_t)(((unsigned __int128)ar_rand(&x->rng) * (uint64_t)L->columns) >> 64);
    }
    if (L->get_columns(L->user, x->idx, x->B, x->X[buf]) != 0) {
        snprintf(x->err, x->errlen, "adaround: layer '%s': reading cached inputs failed",
                 L->name ? L->name : "?");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * One block of channels, one iteration
 * ------------------------------------------------------------------------- */

/* The per-weight work also gets an AVX2 build, picked at load time. Without
 * FMA (not in the clone's target) both builds round identically, so the
 * result does not depend on the machine either. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
#define AR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define AR_CLONES
#endif

/* Soft weights W~ of channels [c0, c1) into wt, with dW~/dV and the
 * regulariser's gradient (when reg_on). */
AR_CLONES
static void ar_soft(const ar_ctx *x, const ar_scratch *s, int64_t c0, int64_t c1, float *wt,
                    int reg_on, float beta)
{
    const int64_t k = x->k, n = (c1 - c0) * k;
    const float *V = x->V + c0 * k, *fl = x->fl + c0 * k;
    float *sig = s->sig, *dw = s->dw, *rg = s->rg;
    for (int64_t i = 0; i < n; i++)
        sig[i] = ar_sigmoid(V[i]);
    for (int64_t c = c0; c < c1; c++) {
        const float sc = x->scale[c], lo = x->qlo[c], hi = x->qhi[c];
        const int64_t o = (c - c0) * k;
        for (int64_t j = o; j < o + k; j++) {
            float hr = sig[j] * (AR_ZETA - AR_GAMMA) + AR_GAMMA;
            float h = hr < 0.0f ? 0.0f : (hr > 1.0f ? 1.0f : hr);
            float u = fl[j] + h;
            float q = u < lo ? lo : (u > hi ? hi : u);
            wt[j] = sc * q;
            float dh = (hr > 0.0f && hr < 1.0f) ? sig[j] * (1.0f - sig[j]) * (AR_ZETA - AR_GAMMA)
                                                : 0.0f;
            dw[j] = (u >= lo && u <= hi) ? sc * dh : 0.0f;
            sig[j] = h; /* reused below */
            rg[j] = dh;
        }
    }
    if (!reg_on) {
        for (int64_t i = 0; i < n; i++)
            rg[i] = 0.0f;
        return;
    }
    /* d/dh reg * (1 - |2h-1|^beta) = -2 reg beta |2h-1|^(beta-1) sign(2h-1) */
    const float bm1 = beta - 1.0f, coef = -2.0f * x->reg * beta;
    for (int64_t i = 0; i < n; i++) {
        float t = 2.0f * sig[i] - 1.0f;
        float a = t < 0.0f ? -t : t;
        float p = a > 1e-30f ? ar_exp(bm1 * ar_log(a > 1e-30f ? a : 1.0f)) : 0.0f;
        rg[i] *= coef * (t < 0.0f ? -p : p);
    }
}

/* g = d loss / d pre-activation of the soft outputs for rows [0, r). */
AR_CLONES
static void ar_outgrad(const ar_ctx *x, int64_t c0, int64_t r, const float *yf, const float *yq,
                       float *g)
{
    const float lo = x->L->act_lo, hi = x->L->act_hi, two_b = 2.0f / (float)x->B;
    const int64_t B = x->B;
    for (int64_t i = 0; i < r; i++) {
        const float bias = x->L->bias ? x->L->bias[c0 + i] : 0.0f;
        for (int64_t b = i * B; b < (i + 1) * B; b++) {
            float pf = yf[b] + bias, pq = yq[b] + bias;
            float f = pf < lo ? lo : (pf > hi ? hi : pf);
            float q = pq < lo ? lo : (pq > hi ? hi : pq);
            g[b] = (pq > lo && pq < hi) ? two_b * (q - f) : 0.0f;
        }
    }
}

/* Adam step on n variables (PyTorch's formulation); restrict parameters,
 * not locals, are what lets GCC vectorise this. */
AR_CLONES
static void ar_adam_rows(float *restrict V, float *restrict m, float *restrict v,
                         const float *restrict gw, const float *restrict dw,
                         const float *restrict rg, int64_t n, float step, float rbc2)
{
    const float b1 = 0.9f, b2 = 0.999f;
    for (int64_t i = 0; i < n; i++) {
        float g = gw[i] * dw[i] + rg[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        V[i] -= step * m[i] / (sqrtf(v[i]) * rbc2 + 1e-8f);
    }
}

/* Adam step t (from 1) for channels [c0, c1). */
static void ar_adam(ar_ctx *x, int64_t c0, int64_t c1, const ar_scratch *s, int64_t t)
{
    const int64_t o = c0 * x->k;
    const float step = (float)(x->lr / (1.0 - pow(0.9, (double)t)));
    const float rbc2 = (float)(1.0 / sqrt(1.0 - pow(0.999, (double)t)));
    ar_adam_rows(x->V + o, x->m + o, x->v + o, s->gw, s->dw, s->rg, (c1 - c0) * x->k, step, rbc2);
}

/* sum_b a[b] * x[b] in a fixed order that the compiler can vectorise. */
AR_CLONES
static float ar_dot(const float *a, const float *b, int64_t n)
{
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[i + l] * b[i + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void ar_block_step(ar_ctx *x, const ar_block *bl, const ar_scratch *s, int64_t it,
                          const float *X)
{
    const int64_t k = x->k, B = x->B, r = bl->c1 - bl->c0;
    int reg_on = it >= x->warm && x->reg > 0.0f;
    float beta = x->beta1;
    if (reg_on && x->iters > x->warm) {
        double rel = (double)(it - x->warm) / (double)(x->iters - x->warm);
        beta = (float)(x->beta1 + 0.5 * (x->beta0 - x->beta1) * (1.0 + cos(rel * M_PI)));
    }
    if (bl->gemm) {
        float *S = x->stack + 2 * bl->c0 * k;
        const float *Xg = X + (bl->c0 / x->cpg) * k * B;
        ar_soft(x, s, bl->c0, bl->c1, S + r * k, reg_on, beta);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(2 * r), (int)B, (int)k,
                    1.0f, S, (int)k, Xg, (int)B, 0.0f, s->y, (int)B);
        ar_outgrad(x, bl->c0, r, s->y, s->y + r * B, s->g);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)k, (int)B, 1.0f, s->g,
                    (int)B, Xg, (int)B, 0.0f, s->gw, (int)k);
    } else {
        float *wt = s->gw; /* W~ until the gradient overwrites it row by row */
        ar_soft(x, s, bl->c0, bl->c1, wt, reg_on, beta);
        for (int64_t i = 0; i < r; i++) {
            const int64_t c = bl->c0 + i;
            const float *w = x->L->w + c * k, *Xg = X + (c / x->cpg) * k * B;
            float *yf = s->y, *yq = s->y + B;
            for (int64_t b = 0; b < B; b++)
                yf[b] = yq[b] = 0.0f;
            for (int64_t j = 0; j < k; j++) {
                const float wf = w[j], wq = wt[i * k + j], *xr = Xg + j * B;
                for (int64_t b = 0; b < B; b++) {
                    yf[b] += wf * xr[b];
                    yq[b] += wq * xr[b];
                }
            }
            ar_outgrad(x, c, 1, yf, yq, s->g);
            for (int64_t j = 0; j < k; j++)
                s->gw[i * k + j] = ar_dot(s->g, Xg + j * B, B);
        }
    }
    ar_adam(x, bl->c0, bl->c1, s, it + 1);
}

/* Waits until all x->nthreads threads arrive and returns x->stop as it was
 * when the last one arrived: read later, thread 0 may already have set it
 * in the next iteration. The mutex also publishes the next batch. */
static int ar_barrier(ar_ctx *x)
{
    pthread_mutex_lock(&x->mu);
    unsigned gen = x->gen;
    if (++x->arrived == x->nthreads) {
        x->arrived = 0;
        x->gen_stop = x->stop;
        x->gen++;
        pthread_cond_broadcast(&x->cv);
    } else {
        while (gen == x->gen)
            pthread_cond_wait(&x->cv, &x->mu);
    }
    int stop = x->gen_stop;
    pthread_mutex_unlock(&x->mu);
    return stop;
}

/* The iteration loop, run by every thread; thread 0 also draws the next
 * batch (overlapping the others' work), reports progress and decides to
 * stop. One barrier per iteration. */
static void ar_run(ar_ctx *x, int tid)
{
    for (int64_t it = 0; it < x->iters; it++) {
        const int cur = x->full ? 0 : (int)(it & 1);
        if (tid == 0 && !x->full && it + 1 < x->iters && ar_fetch(x, cur ^ 1) != 0)
            x->stop = QLP_ERROR;
        int t;
        while ((t = atomic_fetch_add(&x->next[it & 1], 1)) < x->nblocks)
            ar_block_step(x, &x->blocks[t], &x->scr[tid], it, x->X[cur]);
        if (tid == 0) {
            atomic_store(&x->next[(it + 1) & 1], 0);
            const qlp_host *h = x->host;
            if (!x->stop && h && h->progress && ((it + 1) % AR_REPORT == 0 || it + 1 == x->iters) &&
                h->progress(h->user, it + 1, x->iters) != 0)
                x->stop = QLP_CANCELLED;
        }
        if ((x->nthreads > 1 ? ar_barrier(x) : x->stop) != 0)
            break;
    }
}

static void *ar_thread(void *arg)
{
    ar_worker *w = arg;
    pthread_mutex_lock(&w->x->mu); /* start once the thread count is final */
    while (!w->x->go)
        pthread_cond_wait(&w->x->cv, &w->x->mu);
    pthread_mutex_unlock(&w->x->mu);
    ar_run(w->x, w->tid);
    return NULL;
}

/* ---------------------------------------------------------------------------
 * Set-up, threads, final rounding
 * ------------------------------------------------------------------------- */

static double ar_param(const qlp_params *p, int i)
{
    return p && i < p->n ? p->v[i] : ar_params[i].dflt;
}

static int ar_blocks(ar_ctx *x)
{
    const int64_t C = x->C, cpg = x->cpg;
    int64_t n = 0;
    int gemm = cpg >= AR_GEMM_MIN;
    /* gemm blocks stay inside a group; loop blocks hold whole groups */
    int64_t step = gemm ? AR_BLOCK : (AR_BLOCK / cpg > 0 ? AR_BLOCK / cpg : 1) * cpg;
    for (int pass = 0; pass < 2; pass++) {
        n = 0;
        for (int64_t c = 0; c < C;) {
            int64_t end = c + step;
            if (gemm) {
                int64_t gend = (c / cpg + 1) * cpg;
                end = end < gend ? end : gend;
            }
            end = end < C ? end : C;
            if (pass)
                x->blocks[n] = (ar_block){c, end, gemm};
            n++;
            c = end;
        }
        if (!pass && !(x->blocks = malloc((size_t)n * sizeof *x->blocks)))
            return -1;
    }
    x->nblocks = (int)n;
    return 0;
}

static qlp_result ar_fail(char *err, size_t errlen, const qlp_layer *L, const char *what)
{
    snprintf(err, errlen, "adaround: layer '%s': %s", L && L->name ? L->name : "?", what);
    return QLP_ERROR;
}

static qlp_result ar_weight_round(const qlp_params *p, const qlp_layer *L, const qlp_format *fmt,
                                  const float *scale, const int32_t *zero_point, int32_t *q,
                                  const qlp_host *host, char *err, size_t errlen)
{
    if (L->channels <= 0 || L->k <= 0 || L->groups <= 0 || L->channels % L->groups)
        return ar_fail(err, errlen, L, "channels must be a positive multiple of groups");
    if (L->columns <= 0 || !L->get_columns)
        return ar_fail(err, errlen, L, "no cached input columns");
    for (int64_t c = 0; c < L->channels; c++)
        if (!(scale[c] > 0.0f) || !isfinite(scale[c]))
            return ar_fail(err, errlen, L, "scales must be positive and finite");
    for (int64_t i = 0; i < L->channels * L->k; i++)
        if (!isfinite(L->w[i]))
            return ar_fail(err, errlen, L, "weights must be finite");

    qlp_result res = QLP_ERROR;
    ar_ctx x = {.L = L, .scale = scale, .C = L->channels, .k = L->k, .host = host,
                .err = err, .errlen = errlen, .rng = L->seed,
                .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    x.cpg = x.C / L->groups;
    x.iters = (int64_t)ar_param(p, P_ITERS);
    int64_t batch = (int64_t)ar_param(p, P_BATCH);
    x.full = L->columns <= batch;
    x.B = x.full ? L->columns : batch;
    x.reg = (float)ar_param(p, P_REG);
    x.beta0 = (float)ar_param(p, P_BETA0);
    x.beta1 = (float)ar_param(p, P_BETA1);
    x.warm = (int64_t)ceil(ar_param(p, P_WARMUP) * (double)x.iters);
    x.lr = (float)ar_param(p, P_LR);
    const int64_t C = x.C, k = x.k, n = C * k, G = L->groups;
    const size_t fs = sizeof(float);
    int nthr = host && host->n_threads > 1 ? host->n_threads : 1;
    ar_worker *workers = NULL;
    pthread_t *tids = NULL;
    int started = 0;

    x.fl = malloc((size_t)n * fs);
    x.V = malloc((size_t)n * fs);
    x.m = calloc((size_t)n, fs);
    x.v = calloc((size_t)n, fs);
    x.stack = malloc((size_t)(2 * n) * fs);
    x.qlo = malloc((size_t)C * fs);
    x.qhi = malloc((size_t)C * fs);
    x.idx = malloc((size_t)x.B * sizeof *x.idx);
    x.X[0] = malloc((size_t)(G * k * x.B) * fs);
    x.X[1] = x.full ? NULL : malloc((size_t)(G * k * x.B) * fs);
    if (!x.fl || !x.V || !x.m || !x.v || !x.stack || !x.qlo || !x.qhi || !x.idx || !x.X[0] ||
        (!x.full && !x.X[1]) || ar_blocks(&x) != 0)
        goto oom;
    nthr = nthr < x.nblocks ? nthr : x.nblocks;
    if (!(x.scr = calloc((size_t)nthr, sizeof *x.scr)))
        goto oom;
    for (int t = 0; t < nthr; t++) {
        ar_scratch *s = &x.scr[t];
        s->y = malloc((size_t)(2 * AR_BLOCK * x.B) * fs);
        s->g = malloc((size_t)(AR_BLOCK * x.B) * fs);
        s->gw = malloc((size_t)(AR_BLOCK * k) * fs);
        s->dw = malloc((size_t)(AR_BLOCK * k) * fs);
        s->rg = malloc((size_t)(AR_BLOCK * k) * fs);
        s->sig = malloc((size_t)(AR_BLOCK * k) * fs);
        if (!s->y || !s->g || !s->gw || !s->dw || !s->rg || !s->sig)
            goto oom;
    }

    /* integer grid without the zero point; V so that h(V) = frac(w/s) */
    for (int64_t c = 0; c < C; c++) {
        const int32_t zp = zero_point ? zero_point[c] : 0;
        const double lo = (double)fmt->qmin - zp, hi = (double)fmt->qmax - zp;
        x.qlo[c] = (float)lo;
        x.qhi[c] = (float)hi;
        for (int64_t j = 0; j < k; j++) {
            const int64_t i = c * k + j;
            double t = (double)L->w[i] / (double)scale[c], f = floor(t);
            double pr = (t - f - AR_GAMMA) / (AR_ZETA - AR_GAMMA);
            x.V[i] = (float)log(pr / (1.0 - pr));
            x.fl[i] = (float)(f < lo - 1 ? lo - 1 : (f > hi + 1 ? hi + 1 : f));
        }
    }
    for (int b = 0; b < x.nblocks; b++)
        if (x.blocks[b].gemm) {
            const int64_t c0 = x.blocks[b].c0, r = x.blocks[b].c1 - c0;
            memcpy(x.stack + 2 * c0 * k, L->w + c0 * k, (size_t)(r * k) * fs);
        }

#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1); /* we split the work ourselves */
#endif
    if (ar_fetch(&x, 0) != 0)
        goto cleanup;
    atomic_init(&x.next[0], 0);
    atomic_init(&x.next[1], 0);
    workers = calloc((size_t)nthr, sizeof *workers);
    tids = calloc((size_t)nthr, sizeof *tids);
    if (!workers || !tids)
        goto oom;
    /* fewer threads than asked is fine: the result does not depend on it */
    for (; started + 1 < nthr; started++) {
        workers[started + 1] = (ar_worker){&x, started + 1};
        if (pthread_create(&tids[started + 1], NULL, ar_thread, &workers[started + 1]) != 0)
            break;
    }
    pthread_mutex_lock(&x.mu);
    x.nthreads = started + 1;
    x.go = 1;
    pthread_cond_broadcast(&x.cv);
    pthread_mutex_unlock(&x.mu);
    ar_run(&x, 0);
    for (int t = 1; t < x.nthreads; t++)
        pthread_join(tids[t], NULL);
    if (x.stop) {
        res = (qlp_result)x.stop;
        if (res == QLP_CANCELLED)
            snprintf(err, errlen, "adaround: layer '%s': cancelled", L->name ? L->name : "?");
        goto cleanup;
    }

    for (int64_t c = 0; c < C; c++) {
        const int32_t zp = zero_point ? zero_point[c] : 0;
        for (int64_t j = 0; j < k; j++) {
            const int64_t i = c * k + j;
            int64_t v = (int64_t)x.fl[i] + (ar_hraw(x.V[i]) >= 0.5f) + zp;
            q[i] = (int32_t)(v < fmt->qmin ? fmt->qmin : (v > fmt->qmax ? fmt->qmax : v));
        }
    }
    res = QLP_OK;
    goto cleanup;
oom:
    ar_fail(err, errlen, L, "out of memory");
cleanup:
    for (int t = 0; x.scr && t < nthr; t++) {
        free(x.scr[t].y);
        free(x.scr[t].g);
        free(x.scr[t].gw);
        free(x.scr[t].dw);
        free(x.scr[t].rg);
        free(x.scr[t].sig);
    }
    free(x.scr);
    free(workers);
    free(tids);
    free(x.blocks);
    free(x.fl);
    free(x.V);
    free(x.m);
    free(x.v);
    free(x.stack);
    free(x.qlo);
    free(x.qhi);
    free(x.idx);
    free(x.X[0]);
    free(x.X[1]);
    return res;
}

static qlp_result ar_weight_range(const qlp_params *p, const float *w, int64_t channels,
                                  int64_t k, const qlp_format *fmt, double *lo, double *hi,
                                  char *err, size_t errlen)
{
    for (int64_t c = 0; c < channels; c++) {
        double a = INFINITY, b = -INFINITY;
        for (int64_t j = 0; j < k; j++) {
            double v = w[c * k + j];
            a = v < a ? v : a;
            b = v > b ? v : b;
        }
        lo[c] = k > 0 ? a : 0.0;
        hi[c] = k > 0 ? b : 0.0;
    }
    return QLP_OK;
}

static const qlp_plugin ar_plugin = {
    .abi_version = QLP_ABI_VERSION,
    .name = "adaround",
    .summary = "per-channel min/max ranges; rounding learnt per weight (AdaRound)",
    .kinds = QLP_KIND_WEIGHT,
    .n_params = P_COUNT,
    .params = ar_params,
    .weight_range = ar_weight_range,
    .weight_round = ar_weight_round,
};

const qlp_plugin *QLENS_PLUGIN_ENTRY(void);
const qlp_plugin *QLENS_PLUGIN_ENTRY(void) { return &ar_plugin; }
