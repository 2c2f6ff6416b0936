/* Planned memory for an executor's value buffers: traces, plans, and the
 * checks that keep a planned run safe (memplan.h). */
#include "memplan.h"

#include <stdlib.h>
#include <string.h>

#include "tensor.h"

#define PLAN_MAX 8            /* kinds of run remembered per executor */
#define NO_OFF ((size_t)-1)   /* an allocation the caller makes itself */

typedef struct plan {
    uint64_t sig, used; /* signature; last use, for eviction */
    int n;              /* allocations of the run */
    size_t *bytes;      /* per allocation: its size */
    size_t *off;        /* per allocation: its place in the arena, or NO_OFF */
    /* per allocation k, the earlier ones whose memory it shares:
     * conf[cstart[k]] .. conf[cstart[k + 1] - 1] */
    int *cstart, *conf;
    size_t need;        /* arena bytes it needs */
} plan;

typedef struct trace_ev {
    size_t bytes;
    void *ptr;
    int64_t t0, t1; /* clock at allocation and release (-1: not yet) */
    bool taken;     /* handed to the executor's caller */
} trace_ev;

enum { RUN_NONE, RUN_TRACE, RUN_PLAN, RUN_OFF };

struct ql_memplan {
    plan plans[PLAN_MAX];
    int n_plans;
    uint64_t stamp;
    char *arena;
    size_t arena_bytes;
    /* the current run */
    int mode;
    uint64_t sig;
    plan *cur;        /* RUN_PLAN, RUN_OFF: the plan its arena buffers follow */
    bool drop;        /* drop cur at the end */
    int k;            /* allocations so far */
    int64_t clock;    /* allocations and releases so far */
    char *live;       /* per allocation of cur: arena buffer live now */
    int live_cap, n_live;
    trace_ev *ev;     /* RUN_TRACE */
    int n_ev, cap_ev;
    bool trace_bad;   /* out of memory while tracing: no plan from this run */
};

static void plan_clear(plan *pl)
{
    free(pl->bytes);
    free(pl->off);
    free(pl->cstart);
    free(pl->conf);
    memset(pl, 0, sizeof *pl);
}

ql_memplan *ql_memplan_new(void) { return calloc(1, sizeof(ql_memplan)); }

void ql_memplan_free(ql_memplan *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_plans; i++)
        plan_clear(&p->plans[i]);
    ql_aligned_free(p->arena);
    free(p->live);
    free(p->ev);
    free(p);
}

size_t ql_memplan_arena_bytes(const ql_memplan *p) { return p->arena_bytes; }

bool ql_memplan_in_arena(const ql_memplan *p, const void *ptr)
{
    const char *c = ptr;
    return p->arena && c >= p->arena && c < p->arena + p->arena_bytes;
}

void ql_memplan_begin(ql_memplan *p, uint64_t sig)
{
    p->sig = sig;
    p->k = 0;
    p->clock = 0;
    p->drop = false;
    p->cur = NULL;
    p->n_live = 0;
    for (int i = 0; i < p->n_plans; i++)
        if (p->plans[i].sig == sig) {
            p->cur = &p->plans[i];
            break;
        }
    if (p->cur) {
        if (p->live_cap < p->cur->n) {
            char *l = realloc(p->live, (size_t)p->cur->n);
            if (!l) {
                p->cur = NULL;
                p->mode = RUN_NONE;
                return;
            }
            p->live = l;
            p->live_cap = p->cur->n;
        }
        memset(p->live, 0, (size_t)p->cur->n);
        p->cur->used = ++p->stamp;
        p->mode = RUN_PLAN;
        return;
    }
    p->mode = RUN_TRACE;
    p->n_ev = 0;
    p->trace_bad = false;
}

void *ql_memplan_alloc(ql_memplan *p, size_t bytes)
{
    int k = p->k++;
    p->clock++;
    if (p->mode == RUN_PLAN) {
        plan *c = p->cur;
        if (k < c->n && c->bytes[k] == bytes) {
            if (c->off[k] == NO_OFF)
                return NULL;
            bool clear = true;
            for (int i = c->cstart[k]; i < c->cstart[k + 1] && clear; i++)
                clear = !p->live[c->conf[i]];
            if (clear) {
                p->live[k] = 1;
                p->n_live++;
                return p->arena + c->off[k];
            }
        }
        /* not the traced run: the rest goes without the plan */
        p->mode = RUN_OFF;
        p->drop = true;
        return NULL;
    }
    if (p->mode == RUN_TRACE) {
        if (p->n_ev == p->cap_ev) {
            int cap = p->cap_ev ? 2 * p->cap_ev : 64;
            trace_ev *e = realloc(p->ev, (size_t)cap * sizeof *e);
            if (!e) {
                p->trace_bad = true;
                p->mode = RUN_NONE;
                return NULL;
            }
            p->ev = e;
            p->cap_ev = cap;
        }
        p->ev[p->n_ev++] = (trace_ev){.bytes = bytes, .t0 = p->clock, .t1 = -1};
    }
    return NULL;
}

void ql_memplan_note(ql_memplan *p, void *ptr)
{
    if (p->mode == RUN_TRACE && p->n_ev > 0)
        p->ev[p->n_ev - 1].ptr = ptr;
}

/* The traced allocation holding ptr now, or -1. */
static int trace_find(const ql_memplan *p, const void *ptr)
{
    for (int i = p->n_ev - 1; i >= 0; i--)
        if (p->ev[i].ptr == ptr && p->ev[i].t1 < 0)
            return i;
    return -1;
}

bool ql_memplan_release(ql_memplan *p, void *ptr)
{
    p->clock++;
    if (ql_memplan_in_arena(p, ptr)) {
        size_t off = (size_t)((char *)ptr - p->arena);
        const plan *c = p->cur;
        for (int k = 0; c && k < c->n; k++)
            if (p->live[k] && c->off[k] == off) {
                p->live[k] = 0;
                p->n_live--;
                break;
            }
        return true;
    }
    if (p->mode == RUN_TRACE) {
        int i = trace_find(p, ptr);
        if (i >= 0)
            p->ev[i].t1 = p->clock;
    }
    return false;
}

void ql_memplan_taken(ql_memplan *p, void *ptr)
{
    if (ql_memplan_in_arena(p, ptr)) {
        p->drop = true;
        return;
    }
    if (p->mode == RUN_TRACE) {
        int i = trace_find(p, ptr);
        if (i >= 0) {
            p->ev[i].taken = true;
            p->ev[i].t1 = ++p->clock;
        }
    }
}

/* Sorts a[0..n) by key descending (insertion sort: runs have few
 * allocations, and ties keep allocation order). */
static void sort_desc(int *a, int n, const trace_ev *ev)
{
    for (int i = 1; i < n; i++) {
        int v = a[i], j = i;
        for (; j > 0 && ev[a[j - 1]].bytes < ev[v].bytes; j--)
            a[j] = a[j - 1];
        a[j] = v;
    }
}

static size_t round64(size_t b) { return (b + 63) & ~(size_t)63; }

/* The trace as a plan: largest buffers first, each at the lowest offset
 * where it overlaps no placed buffer live at the same time. */
static bool plan_build(const ql_memplan *p, plan *pl)
{
    int n = p->n_ev;
    const trace_ev *ev = p->ev;
    memset(pl, 0, sizeof *pl);
    pl->n = n;
    pl->bytes = malloc((size_t)(n ? n : 1) * sizeof *pl->bytes);
    pl->off = malloc((size_t)(n ? n : 1) * sizeof *pl->off);
    pl->cstart = calloc((size_t)n + 1, sizeof *pl->cstart);
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    int *placed = malloc((size_t)(n ? n : 1) * sizeof *placed);
    int *ov = malloc((size_t)(n ? n : 1) * sizeof *ov);
    bool ok = pl->bytes && pl->off && pl->cstart && order && placed && ov;
    int m = 0, n_placed = 0;
    for (int i = 0; ok && i < n; i++) {
        pl->bytes[i] = ev[i].bytes;
        pl->off[i] = NO_OFF;
        if (!ev[i].taken && ev[i].bytes > 0 && ev[i].ptr)
            order[m++] = i;
    }
    if (ok)
        sort_desc(order, m, ev);
    for (int a = 0; ok && a < m; a++) {
        int i = order[a];
        size_t sz = round64(ev[i].bytes), at = 0;
        /* the placed buffers live with i (ov); candidates: offset 0 and
         * the end of each of them; the lowest where i overlaps none */
        int L = 0;
        for (int b = 0; b < n_placed; b++) {
            int j = placed[b];
            if (!(ev[j].t1 < ev[i].t0 || ev[i].t1 < ev[j].t0))
                ov[L++] = j;
        }
        bool found = false;
        for (int c = -1; c < L; c++) {
            size_t cand = c < 0 ? 0 : pl->off[ov[c]] + round64(ev[ov[c]].bytes);
            if (found && cand >= at)
                continue;
            bool fits = true;
            for (int b = 0; b < L && fits; b++) {
                size_t jo = pl->off[ov[b]], je = jo + round64(ev[ov[b]].bytes);
                fits = cand + sz <= jo || je <= cand;
            }
            if (fits) {
                at = cand;
                found = true;
            }
        }
        pl->off[i] = at;
        placed[n_placed++] = i;
        if (at + sz > pl->need)
            pl->need = at + sz;
    }
    /* conflicts: for each allocation, the earlier ones sharing its memory */
    int total = 0;
    for (int pass = 0; ok && pass < 2; pass++) {
        total = 0;
        for (int k = 0; k < n; k++) {
            pl->cstart[k] = total;
            if (pl->off[k] == NO_OFF)
                continue;
            size_t ko = pl->off[k], ke = ko + round64(pl->bytes[k]);
            for (int j = 0; j < k; j++) {
                if (pl->off[j] == NO_OFF)
                    continue;
                size_t jo = pl->off[j], je = jo + round64(pl->bytes[j]);
                if (jo < ke && ko < je) {
                    if (pass == 1)
                        pl->conf[total] = j;
                    total++;
                }
            }
        }
        pl->cstart[n] = total;
        if (pass == 0 && !(pl->conf = malloc((size_t)(total ? total : 1) * sizeof *pl->conf)))
            ok = false;
    }
    free(order);
    free(placed);
    free(ov);
    if (!ok)
        plan_clear(pl);
    return ok;
}

bool ql_memplan_end(ql_memplan *p, bool ok)
{
    bool made = false;
    if ((p->mode == RUN_PLAN || p->mode == RUN_OFF) && p->drop && p->cur) {
        plan_clear(p->cur);
        *p->cur = p->plans[--p->n_plans];
        memset(&p->plans[p->n_plans], 0, sizeof p->plans[p->n_plans]);
    } else if (p->mode == RUN_TRACE && ok && !p->trace_bad && p->n_live == 0) {
        bool complete = p->n_ev > 0;
        for (int i = 0; i < p->n_ev && complete; i++)
            complete = p->ev[i].t1 >= 0;
        plan pl;
        if (complete && plan_build(p, &pl)) {
            if (pl.need > p->arena_bytes) {
                char *a = ql_aligned_alloc(pl.need);
                if (a) {
                    ql_aligned_free(p->arena);
                    p->arena = a;
                    p->arena_bytes = pl.need;
                }
            }
            if (pl.need <= p->arena_bytes) {
                int slot = p->n_plans;
                if (slot == PLAN_MAX) { /* evict the least recently used */
                    slot = 0;
                    for (int i = 1; i < PLAN_MAX; i++)
                        if (p->plans[i].used < p->plans[slot].used)
                            slot = i;
                    plan_clear(&p->plans[slot]);
                } else {
                    p->n_plans++;
                }
                pl.sig = p->sig;
                pl.used = ++p->stamp;
                p->plans[slot] = pl;
                made = true;
            } else {
                plan_clear(&pl);
            }
        }
    }
    p->mode = RUN_NONE;
    p->cur = NULL;
    p->n_ev = 0;
    return made;
}
