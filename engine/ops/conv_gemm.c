/* Conv's GEMM path: weights packed for the micro-kernel (kernels.h), B
 * packed per k-block into 16-column tiles, read from phase planes or
 * gathered im2col columns (see conv.c for when each is used). Tasks are
 * (image, group, column block, row range); any split gives the same bits,
 * since every output is a sum over k in order. */
#include <stdlib.h>
#include <string.h>

#include "conv_priv.h"
#include "../pool.h"

#define CONV_MC 96   /* rows per cache block of packed weights (L2) */
#define CONV_NC 128  /* columns per task block */
#define QL_PLANES_BYTES ((int64_t)8 << 20) /* larger phase planes are built per block */
#define CONV_PLANES_L2 ((int64_t)256 << 10) /* larger batch plane sets are built per image */

/* ---------------------------------------------------------------------------
 * GEMM driver
 * ------------------------------------------------------------------------- */
enum { MODE_PHASE, MODE_IM2COL };

typedef struct conv_job {
    conv_geom g;
    ql_ukr_fn ukr;
    ql_act act;
    const float *x, *bias;
    const float *add;     /* fused residual add (same shape as y), or NULL */
    float *y;
    int imgplanes;        /* phase mode: each thread builds the planes of one image at a time */
    int fast;             /* AVX2+FMA build of the block code */
    ql_ukr_fn ukr8;       /* for a last tile of at most 8 columns */
    const float *apack;
    int64_t apack_stride; /* floats per group */
    int mode;
    int stream;           /* output far larger than the caches: non-temporal stores */
    int direct_x;         /* phase mode reading the input itself (1x1, stride 1, no pads) */
    int use_planes;       /* 1-D/2-D: B comes from phase planes (im2col compacts them) */
    int local;            /* phase mode: each block builds the plane rows it reads */
    int64_t lrows;        /* local planes: rows per plane */
    ql_phase ph;
    const float *planes;  /* plane sets [N][C][chan_stride] (or x itself) */
    int64_t chan_stride, img_stride;
    int64_t *koff;        /* K offsets of the taps within a group's plane sets */
    int64_t ncols;        /* columns per unit: phase: per image; im2col: N*OHW */
    int64_t nc, n_jc, msplit, mrange, kc, ldb;
    float *scratch;
    int64_t per_thread, bbuf_floats, bpack_floats, cbuf_floats, kloc_floats, seg_floats;
} conv_job;

/* A run of im2col columns inside one output row: where it goes in the
 * block and where its window origin is. Built once per block so the
 * gathers over k do no divisions. */
typedef struct im2col_seg {
    int64_t off, len;   /* column offset in the block, length */
    int64_t base;       /* planes: offset of the first output's taps; else image offset in x */
    int64_t d0, h0, w0; /* no planes: window origin o*s - pad per axis */
} im2col_seg;

QL_INLINE int64_t im2col_segs(const conv_job *j, int64_t n0, int64_t n1, im2col_seg *seg)
{
    const conv_geom *g = &j->g;
    int64_t OHW = g->out_sz, OHOW = g->out[1] * g->out[2], OW = g->out[2], ns = 0;
    for (int64_t q = n0; q < n1; ns++) {
        int64_t img = q / OHW, p = q % OHW;
        int64_t od = p / OHOW, oh = p / OW % g->out[1], ow = p % OW;
        int64_t len = OW - ow < n1 - q ? OW - ow : n1 - q;
        seg[ns] = (im2col_seg){.off = q - n0, .len = len};
        if (j->use_planes) {
            seg[ns].base = img * j->img_stride + oh * j->ph.wq + ow;
        } else {
            seg[ns].base = img * g->C * g->in_sz;
            seg[ns].d0 = od * g->s[0] - g->pb[0];
            seg[ns].h0 = oh * g->s[1] - g->pb[1];
            seg[ns].w0 = ow * g->s[2] - g->pb[2];
        }
        q += len;
    }
    return ns;
}

/* Rows [pc, pc+kc) of the im2col matrix from the phase planes of group
 * grp: every segment is a contiguous run there, copied eight at a time
 * (a copy may run past its segment; the next one, or the padding, is
 * written after it). */
QL_INLINE void im2col_planes(const conv_job *j, int64_t grp, int64_t pc, int64_t kc,
                          const im2col_seg *seg, int64_t nseg, float *dst)
{
    const float *pg = j->planes + grp * j->g.cg * j->chan_stride;
    for (int64_t kk = 0; kk < kc; kk++) {
        const float *src = pg + j->koff[pc + kk];
        float *drow = dst + kk * j->ldb;
        for (int64_t i = 0; i < nseg; i++) {
            const float *sp = src + seg[i].base;
            float *o = drow + seg[i].off;
            for (int64_t t = 0; t < seg[i].len; t += 8)
                QL_ST8(o + t, QL_LD8(sp + t));
        }
    }
}

/* Rows [pc, pc+kc) of the im2col matrix of group grp gathered from x with
 * bounds checks (3-D convolutions). */
QL_INLINE void im2col_gather(const conv_job *j, int64_t grp, int64_t pc, int64_t kc,
                          const im2col_seg *seg, int64_t nseg, float *dst)
{
    const conv_geom *g = &j->g;
    int64_t IW = g->in[2], IHW = g->in[1] * g->in[2], sw = g->s[2];
    for (int64_t kk = 0; kk < kc; kk++) {
        int64_t k = pc + kk, c = k / g->kvol, r = k % g->kvol;
        int64_t ka = r / (g->k[1] * g->k[2]), kb = r / g->k[2] % g->k[1], ke = r % g->k[2];
        int64_t dd = ka * g->d[0], dh = kb * g->d[1], dw = ke * g->d[2];
        const float *xc = j->x + (grp * g->cg + c) * g->in_sz;
        float *drow = dst + kk * j->ldb;
        for (int64_t i = 0; i < nseg; i++) {
            const im2col_seg *sg = &seg[i];
            float *o = drow + sg->off;
            int64_t len = sg->len, id = sg->d0 + dd, ih = sg->h0 + dh, iw0 = sg->w0 + dw;
            if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1]) {
                memset(o, 0, (size_t)len * sizeof *o);
                continue;
            }
            const float *row = xc + sg->base + id * IHW + ih * IW;
            for (int64_t t = 0; t < len; t++) {
                int64_t iw = iw0 + t * sw;
                o[t] = iw >= 0 && iw < IW ? row[iw] : 0.0f;
            }
        }
    }
}

/* Stores a finished run of outputs at y + yoff: copied, or with the fused
 * residual add (then the clamp) applied on the way. */
QL_INLINE void store_run(const conv_job *j, int64_t yoff, const float *src, int64_t len)
{
    float *dst = j->y + yoff;
    if (!j->add) {
        copy_floats(dst, src, len);
        return;
    }
    const float *ad = j->add + yoff;
    int64_t i = 0;
    ql_v8 lo = QL_V8(j->act.lo), hi = QL_V8(j->act.hi);
    for (; i + 8 <= len; i += 8) {
        ql_v8 v = QL_LD8(src + i) + QL_LD8(ad + i);
        QL_ST8(dst + i, j->act.on ? QL_V8_CLAMP(v, lo, hi) : v);
    }
    for (; i < len; i++) {
        float v = src[i] + ad[i];
        if (j->act.on) {
            v = v < j->act.lo ? j->act.lo : v; /* NaN passes through */
            v = v > j->act.hi ? j->act.hi : v;
        }
        dst[i] = v;
    }
}

/* Copies rows of a column block computed in cbuf (row stride nc) to y,
 * dropping the columns that are not outputs. */
QL_INLINE void copy_out(const conv_job *j, const float *cbuf, int64_t img, int64_t mrow0, int64_t rows,
                     int64_t n0, int64_t n1)
{
    const conv_geom *g = &j->g;
    int64_t OHW = g->out_sz, OW = g->out[2];
    for (int64_t r = 0; r < rows; r++) {
        const float *crow = cbuf + r * j->nc;
        if (j->mode == MODE_PHASE) {
            int64_t yrow = (img * g->M + mrow0 + r) * OHW;
            int64_t wq = j->ph.wq;
            for (int64_t q = n0; q < n1;) {
                int64_t oh = q / wq, ow = q % wq;
                if (ow >= OW) {
                    q = (oh + 1) * wq;
                    continue;
                }
                int64_t len = OW - ow < n1 - q ? OW - ow : n1 - q;
                store_run(j, yrow + oh * OW + ow, crow + (q - n0), len);
                q += len;
            }
        } else {
            for (int64_t q = n0; q < n1;) {
                int64_t im = q / OHW, p = q % OHW, len = OHW - p < n1 - q ? OHW - p : n1 - q;
                store_run(j, (im * g->M + mrow0 + r) * OHW + p, crow + (q - n0), len);
                q += len;
            }
        }
    }
}
/* Packs columns [0, width) of B rows src + koff[kk] (kk < kc) into tiles
 * of 16 columns, k-major (dst[jr][kk][16]), zero-filling past width, so
 * the micro-kernel reads aligned, contiguous B. A last tile of at most 8
 * columns is packed 8 wide, for the narrow kernel. */
QL_INLINE void pack_b(float *restrict dst, const float *src, const int64_t *koff, int64_t kc,
                   int64_t width, int64_t ahead)
{
    int64_t full = width / QL_NR, rem = width % QL_NR, tstride = kc * QL_NR;
    for (int64_t kk = 0; kk < kc; kk++) {
        const float *s = src + koff[kk];
        float *d = dst + kk * QL_NR;
        /* B rows are many separate streams, too many for the hardware
         * prefetcher: ask for the next block's part of this row */
        for (int64_t l = 0; l < ahead; l += 16)
            __builtin_prefetch(s + width + l);
        for (int64_t jr = 0; jr < full; jr++) {
            QL_ST8(d + jr * tstride, QL_LD8(s + jr * QL_NR));
            QL_ST8(d + jr * tstride + 8, QL_LD8(s + jr * QL_NR + 8));
        }
        if (rem) {
            int64_t tw = rem <= 8 ? 8 : QL_NR;
            float *dt = dst + full * tstride + kk * tw;
            const float *st = s + full * QL_NR;
            for (int64_t i = 0; i < rem; i++)
                dt[i] = st[i];
            for (int64_t i = rem; i < tw; i++)
                dt[i] = 0.0f;
        }
    }
}

/* One task's block: built for AVX2 and portably (below), like the kernels,
 * so that the packing and copies move 32 bytes at a time. */
QL_INLINE void conv_block_body(const conv_job *j, int64_t t, int tid)
{
    const conv_geom *g = &j->g;
    float *bbuf = j->scratch + (int64_t)tid * j->per_thread;
    float *bpack = bbuf + j->bbuf_floats;
    float *cbuf = bpack + j->bpack_floats;
    int64_t *kloc = (int64_t *)(cbuf + j->cbuf_floats);
    im2col_seg *seg = (im2col_seg *)(cbuf + j->cbuf_floats + j->kloc_floats);
    float *lp = cbuf + j->cbuf_floats + j->kloc_floats + j->seg_floats;
    int64_t s = t % j->msplit, u = t / j->msplit;
    int64_t jc = u % j->n_jc;
    u /= j->n_jc;
    int64_t grp = u % g->G, img = u / g->G;
    int64_t m0 = s * j->mrange, m1 = m0 + j->mrange < g->mg ? m0 + j->mrange : g->mg;
    int64_t n0 = jc * j->nc, n1 = n0 + j->nc < j->ncols ? n0 + j->nc : j->ncols;
    int64_t width = n1 - n0, ntiles = (width + QL_NR - 1) / QL_NR, OHW = g->out_sz;
    if (m0 >= m1)
        return;

    /* where the tiles go: straight into y when the block's columns are
     * contiguous there, else into cbuf and copied out at the end */
    int direct;
    float *cbase;
    if (j->mode == MODE_PHASE) {
        direct = j->ph.wq == g->out[2];
        cbase = j->y + (img * g->M + grp * g->mg + m0) * OHW + n0;
    } else {
        int64_t i0 = n0 / OHW;
        direct = (n1 - 1) / OHW == i0;
        cbase = j->y + (i0 * g->M + grp * g->mg + m0) * OHW + (n0 - i0 * OHW);
    }
    int64_t ldc = OHW;
    if (!direct)
        cbase = cbuf, ldc = j->nc;

    const float *abase = j->apack + grp * j->apack_stride;
    const float *bias = j->bias ? j->bias + grp * g->mg + m0 : NULL;
    const float *bsrc = bbuf;
    const int64_t *koff = kloc;
    int64_t nseg = 0;
    if (j->mode == MODE_PHASE && j->local) {
        /* the plane rows this block reads, built here so they are still in
         * cache when packed (no pass over the whole batch first) */
        int64_t wq = j->ph.wq, r0 = n0 / wq;
        const float *xg = j->x + (img * g->C + grp * g->cg) * g->in_sz;
        for (int64_t c = 0; c < g->cg; c++)
            ql_phase_rows(&j->ph, xg + c * g->in_sz, 0.0f, lp + c * j->chan_stride, r0, j->lrows);
        bsrc = lp + (n0 - r0 * wq);
    } else if (j->mode == MODE_PHASE) {
        bsrc = (j->imgplanes ? lp : j->planes + img * j->img_stride) +
               grp * g->cg * j->chan_stride + n0;
    } else {
        for (int64_t kk = 0; kk < j->kc; kk++)
            kloc[kk] = kk * j->ldb;
        nseg = im2col_segs(j, n0, n1, seg);
    }

    /* the fused add goes into the kernel when it stores straight into y,
     * else into copy_out (and the clamp with it: it comes after the add) */
    const float *addbase = j->add && direct ? j->add + (cbase - j->y) : NULL;
    int fin = (j->act.on && (direct || !j->add) ? QL_UKR_CLAMP : 0) | (addbase ? QL_UKR_ADD : 0);
    for (int64_t pc = 0; pc < g->K; pc += j->kc) {
        int64_t kc = g->K - pc < j->kc ? g->K - pc : j->kc;
        int flags = (pc ? QL_UKR_ACCUM : 0) | (pc + kc == g->K ? fin : 0);
        if (pc + kc == g->K && direct && j->stream)
            flags |= QL_UKR_STREAM;
        if (j->mode == MODE_IM2COL) {
            if (j->use_planes)
                im2col_planes(j, grp, pc, kc, seg, nseg, bbuf);
            else
                im2col_gather(j, grp, pc, kc, seg, nseg, bbuf);
        } else {
            koff = j->koff + pc;
        }
        pack_b(bpack, bsrc, koff, kc, width, j->direct_x && n1 < j->ncols ? j->nc : 0);
        for (int64_t ic = m0; ic < m1; ic += CONV_MC) {
            int64_t ie = ic + CONV_MC < m1 ? ic + CONV_MC : m1;
            for (int64_t jr = 0; jr < ntiles; jr++) {
                int64_t left = width - jr * QL_NR;
                int narrow = left <= 8; /* last tile: the 8-wide kernel */
                int nr = direct && left < QL_NR ? (int)left : narrow ? 8 : QL_NR;
                const float *b = bpack + jr * kc * QL_NR;
                for (int64_t ir = ic; ir < ie; ir += QL_MR) {
                    int mr = m1 - ir < QL_MR ? (int)(m1 - ir) : QL_MR;
                    int64_t co = (ir - m0) * ldc + jr * QL_NR;
                    ql_ukr_partial(narrow ? j->ukr8 : j->ukr, narrow ? 8 : QL_NR, kc,
                                   ql_pack_a_at(abase, g->mg, g->K, pc, ir), b, cbase + co,
                                   ldc, mr, nr, bias ? bias + (ir - m0) : NULL,
                                   addbase ? addbase + co : NULL, flags, j->act.lo, j->act.hi);
                }
            }
        }
    }
    if (!direct)
        copy_out(j, cbuf, img, grp * g->mg + m0, m1 - m0, n0, n1);
    else if (j->stream)
        ql_stream_fence();
}

QL_TARGET_FAST static void conv_block_fast(const conv_job *j, int64_t t, int tid)
{
    conv_block_body(j, t, tid);
}

static void conv_block_port(const conv_job *j, int64_t t, int tid)
{
    conv_block_body(j, t, tid);
}

static void conv_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const conv_job *j = arg;
    int64_t cur = -1; /* the image whose planes this thread holds */
    for (int64_t t = begin; t < end; t++) {
        int64_t img = t / (j->msplit * j->n_jc * j->g.G);
        if (j->imgplanes && img != cur) {
            float *lp = j->scratch + (int64_t)tid * j->per_thread + j->bbuf_floats +
                        j->bpack_floats + j->cbuf_floats + j->kloc_floats + j->seg_floats;
            int64_t C = j->g.C;
            for (int64_t c = 0; c < C; c++)
                ql_phase_build(&j->ph, j->x + (img * C + c) * j->g.in_sz, 0.0f,
                               lp + c * j->chan_stride);
            memset(lp + C * j->chan_stride, 0, 64 * sizeof *lp);
            cur = img;
        }
        (j->fast ? conv_block_fast : conv_block_port)(j, t, tid);
    }
}

static void build_planes(void *arg, int64_t begin, int64_t end, int tid)
{
    const conv_job *j = arg;
    (void)tid;
    for (int64_t u = begin; u < end; u++) {
        int64_t img = u / j->g.C, c = u % j->g.C;
        ql_phase_build(&j->ph, j->x + u * j->g.in_sz, 0.0f,
                       (float *)j->planes + img * j->img_stride + c * j->chan_stride);
    }
}


/* Multiply-add columns computed for n output columns: whole 16-column
 * tiles and a last tile of 8 or 16. */
static double tile_cols(int64_t n)
{
    int64_t rem = n % QL_NR;
    return (double)(n / QL_NR * QL_NR + (rem == 0 ? 0 : rem <= 8 ? 8 : QL_NR));
}

/* Picks how B is read for geometry g and plans the phase planes into ph.
 * Costs count multiply-adds including tile padding: phase mode computes
 * the columns past OW too; im2col pays a copy of B, which weighs more when
 * few rows share it. */
static int conv_choose(const conv_geom *g, ql_phase *ph)
{
    int64_t OH = g->out[1], OW = g->out[2];
    int use_planes = g->nsp <= 2;
    int direct_x = use_planes && g->kvol == 1 && g->s[1] == 1 && g->s[2] == 1 && g->pb[1] == 0 &&
                   g->pb[2] == 0 && g->in[1] == OH && g->in[2] == OW;
    if (direct_x)
        ql_phase_plan(ph, g->in[1], g->in[2], 1, 1, 0, 0, OH, OW, 1, 1);
    else
        ql_phase_plan(ph, g->in[1], g->in[2], g->s[1], g->s[2], g->pb[1], g->pb[2], OH, OW,
                      (g->k[1] - 1) * g->d[1] + 1, (g->k[2] - 1) * g->d[2] + 1);
    double cost_phase = (double)g->N * tile_cols((OH - 1) * ph->wq + OW);
    double cost_im2col = tile_cols(g->N * g->out_sz) * (1.0 + 6.0 / (double)g->mg);
    int mode = use_planes && cost_phase <= cost_im2col ? MODE_PHASE : MODE_IM2COL;
    return mode;
}

/* Plans mode, block sizes and the row split of a run. */
static void conv_plan(conv_job *j, const conv_geom *g, int threads)
{
    int64_t OH = g->out[1], OW = g->out[2], mg = g->mg;
    j->mode = conv_choose(g, &j->ph);
    j->use_planes = g->nsp <= 2;
    j->direct_x = j->mode == MODE_PHASE && g->kvol == 1 && g->s[1] == 1 && g->s[2] == 1 &&
                  g->pb[1] == 0 && g->pb[2] == 0 && g->in[1] == OH && g->in[2] == OW;

    j->kc = ql_kblock(g->K);
    j->ncols = j->mode == MODE_PHASE ? (OH - 1) * j->ph.wq + OW : g->N * g->out_sz;
    /* column blocks of at most CONV_NC, as even as multiples of 8 allow */
    j->n_jc = (j->ncols + CONV_NC - 1) / CONV_NC;
    j->nc = ((j->ncols + j->n_jc - 1) / j->n_jc + 7) / 8 * 8;
    j->n_jc = (j->ncols + j->nc - 1) / j->nc;
    /* planes for the whole batch when they stay in cache, else each block
     * builds the rows it reads (a few rows twice, but hot when packed) */
    j->local = j->mode == MODE_PHASE && !j->direct_x &&
               g->N * g->C * j->ph.size * (int64_t)sizeof(float) > QL_PLANES_BYTES;
    j->chan_stride = j->direct_x ? g->in_sz : j->ph.size;
    /* planes of a big batch would leave the cache before they are read: each
     * thread builds those of the image it is working on (tasks are image-major) */
    j->imgplanes = j->mode == MODE_PHASE && !j->direct_x && !j->local && g->N > 1 &&
                   g->N * g->C * j->ph.size * (int64_t)sizeof(float) > CONV_PLANES_L2;
    if (j->local) {
        /* rows a block of nc columns can reach, taps included, plus one for
         * the dropped columns' reads past the row end */
        int64_t eh = (g->k[1] - 1) * g->d[1] + 1;
        j->lrows = (j->nc + j->ph.wq - 2) / j->ph.wq + 2 + (eh - 1) / g->s[1];
        j->chan_stride = g->s[1] * g->s[2] * j->lrows * j->ph.wq;
    }
    j->img_stride = g->C * j->chan_stride;
    /* split rows too when there are few column blocks to share out: at
     * least two tasks per thread, a multiple of the thread count */
    int64_t units = (j->mode == MODE_PHASE ? g->N : 1) * g->G * j->n_jc;
    int64_t panels = (mg + QL_MR - 1) / QL_MR;
    j->msplit = 1;
    if (threads > 1 && units < 4 * threads)
        while (j->msplit < panels &&
               (units * j->msplit < 2 * threads || (units * j->msplit) % threads != 0))
            j->msplit++;
    j->mrange = (panels + j->msplit - 1) / j->msplit * QL_MR;
    j->msplit = (mg + j->mrange - 1) / j->mrange;
    j->ldb = j->nc + 16; /* not a power of two: B rows must not alias in L1 */

    /* per thread: [bbuf][bpack][cbuf][kloc][segments]; bbuf (im2col rows)
     * has 8 floats of slack for the eight-wide copies */
    j->bbuf_floats = j->mode != MODE_PHASE ? (int64_t)align16(j->kc * j->ldb + 8) : 0;
    j->bpack_floats = (int64_t)align16(j->kc * j->nc);
    j->cbuf_floats = (int64_t)align16(j->mrange * j->nc);
    j->kloc_floats = (int64_t)align16(2 * j->kc);
    j->seg_floats = (int64_t)align16(j->nc * (int64_t)(sizeof(im2col_seg) / sizeof(float)));
    int64_t lp_floats = j->local       ? (int64_t)align16(g->cg * j->chan_stride + j->ph.wq + 64)
                        : j->imgplanes ? (int64_t)align16(g->C * j->chan_stride + 64)
                                       : 0;
    j->per_thread = j->bbuf_floats + j->bpack_floats + j->cbuf_floats + j->kloc_floats +
                    j->seg_floats + lp_floats;
}

ql_status ql_conv_gemm(const conv_geom *g, const float *apack, const float *x, const float *wt,
                       const float *bias, const float *add, float *y, const ql_act *act,
                       ql_exec_ctx *ctx, ql_error *err)
{
    conv_job j = {.g = *g, .ukr = ql_ukr_select(), .ukr8 = ql_ukr8_select(), .act = *act,
                  .x = x, .bias = bias, .add = add, .y = y, .fast = ql_cpu_fast()};
    int threads = ql_ctx_threads(ctx);
    int packed = apack != NULL;
    j.apack_stride = ql_pack_a_floats(g->mg, g->K);
    conv_plan(&j, g, threads);
    /* outputs far larger than the caches are stored non-temporally: their
     * lines would be read only to be overwritten, then evicted anyway */
    j.stream = g->N * g->M * g->out_sz * (int64_t)sizeof(float) > QL_STREAM_BYTES &&
               g->out_sz % 4 == 0;

    /* scratch: [packed A][phase planes][koff], then the per-thread parts */
    int build = j.use_planes && !j.direct_x && !j.local && !j.imgplanes;
    size_t a_floats = packed ? 0 : align16(j.apack_stride * g->G);
    size_t p_floats = build ? align16(g->N * j.img_stride + j.ph.size + 64) : 0;
    size_t k_floats = j.use_planes ? align16(2 * g->K) : 0;
    size_t total = a_floats + p_floats + k_floats + (size_t)j.per_thread * (size_t)threads;
    float *sc = ql_ctx_scratch(ctx, total * sizeof(float));
    if (!sc)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory for convolution scratch (%zu bytes)",
                       total * sizeof(float));
    if (packed) {
        j.apack = apack;
    } else {
        for (int64_t grp = 0; grp < g->G; grp++)
            ql_pack_a(wt + grp * g->mg * g->K, g->K, g->mg, g->K, sc + grp * j.apack_stride);
        j.apack = sc;
    }
    j.scratch = sc + a_floats + p_floats + k_floats;
    if (j.use_planes) {
        j.koff = (int64_t *)(sc + a_floats + p_floats);
        ql_phase lay = j.ph; /* local planes have lrows rows */
        if (j.local)
            lay.hq = j.lrows;
        for (int64_t r = 0; r < g->kvol; r++) /* tap offsets, then per channel */
            j.koff[r] = ql_phase_off(&lay, r / g->k[2] * g->d[1], r % g->k[2] * g->d[2]);
        for (int64_t c = 1; c < g->cg; c++)
            for (int64_t r = 0; r < g->kvol; r++)
                j.koff[c * g->kvol + r] = c * j.chan_stride + j.koff[r];
        if (j.direct_x) {
            j.planes = x;
        } else if (build) {
            float *pl = sc + a_floats;
            memset(pl + g->N * j.img_stride, 0, (size_t)(j.ph.size + 64) * sizeof *pl);
            j.planes = pl;
            ql_parallel_for(ctx, g->N * g->C, 1, build_planes, &j);
        }
    }
    int64_t units = (j.mode == MODE_PHASE ? g->N : 1) * g->G * j.n_jc;
    ql_parallel_for(ctx, units * j.msplit, 1, conv_tasks, &j);
    return QL_OK;
}
