/* Streaming statistics of activation tensors for calibration: per tensor the
 * observed min and max and a histogram of QL_HIST_BINS equal-width bins over
 * a range symmetric about zero, [-R, R). When a value beyond R arrives, R
 * doubles and adjacent bins merge pairwise, so counts stay exact and memory
 * stays fixed whatever the number of samples. At least half of the range is
 * always populated, so |x| is resolved into >= QL_HIST_BINS/4 bins. */
#ifndef QL_CALIB_STATS_H
#define QL_CALIB_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

#define QL_HIST_BINS 8192

typedef struct ql_hist {
    double min, max;   /* observed extremes; min > max while count == 0 */
    uint64_t count;    /* values observed (NaN excluded) */
    uint64_t nan;      /* NaN values seen (reported, never binned) */
    uint64_t ninf, pinf; /* -Inf/+Inf values seen, also counted in the edge bins
                          * (kept apart so that re-binning leaves them there) */
    uint64_t at_range; /* finite values equal to +R, in the top bin with the values
                        * just below; they move inward when R grows */
    double range;      /* R: bins cover [-R, R); 0 until a non-zero value arrives */
    uint64_t *counts;  /* owned, QL_HIST_BINS entries */
    uint32_t *pend;    /* owned, NULL unless deferred (ql_hist_defer): counts not
                        * yet in `counts` */
    int pend_lo, pend_hi;
    int64_t pend_n;
} ql_hist;

ql_status ql_hist_init(ql_hist *h, ql_error *err);
void ql_hist_clear(ql_hist *h);
/* Empties an initialised h, keeping its memory, with R preset to range (0
 * or a power of two): a part of a tensor binned apart and merged back into
 * a histogram of that range then seldom needs re-binning. */
void ql_hist_reset(ql_hist *h, double range);
/* Adds n values. Infinite values are counted in min/max and saturate into
 * the outermost bins. Deterministic: the result depends only on the order of
 * calls, never on threads. */
void ql_hist_add(ql_hist *h, const float *x, int64_t n);
/* For tests: bin 4 lanes at a time even where AVX2 would do 8 (the
 * portable path; same counts). Not for use while other threads add. */
void ql_hist_set_portable(bool on);
/* Merges src into dst (both kept exact by re-binning the narrower one);
 * settles both first. */
ql_status ql_hist_merge(ql_hist *dst, ql_hist *src, ql_error *err);
/* Deferred counting for a histogram fed many small calls (a statistics
 * pass a few samples at a time): ql_hist_add then counts into u32 counters
 * of the histogram's own, kept from call to call, instead of flushing a
 * per-call set into `counts` at every call. ql_hist_settle moves them into
 * `counts` and ends the deferral; until then `counts` is incomplete
 * (min, max, count and range are always up to date). */
ql_status ql_hist_defer(ql_hist *h, ql_error *err);
void ql_hist_settle(ql_hist *h);
/* Bin index of a value (for tests and algorithms): floor(x / width) +
 * QL_HIST_BINS/2, clamped to the edge bins. Zero of either sign is in bin
 * QL_HIST_BINS/2 whatever R is, so all-zero data (range 0) has every count
 * there; negative values start at bin QL_HIST_BINS/2 - 1. */
int ql_hist_bin(const ql_hist *h, double x);

/* Statistics of a set of named tensors. */
typedef struct ql_calib_stats {
    int n;
    char **names;      /* owned */
    ql_hist *hists;    /* owned */
    int64_t samples;   /* calibration samples that produced them */
    uint64_t model_fingerprint;
} ql_calib_stats;

ql_calib_stats *ql_calib_stats_new(void);
void ql_calib_stats_free(ql_calib_stats *s);
/* Adds a tensor name (copied); returns its index, or -1 on OOM. */
int ql_calib_stats_add(ql_calib_stats *s, const char *name);
int ql_calib_stats_find(const ql_calib_stats *s, const char *name);

/* Binary file (magic "QLSTATS1", little-endian), written atomically. */
ql_status ql_calib_stats_save(const ql_calib_stats *s, const char *path, ql_error *err);
ql_status ql_calib_stats_load(const char *path, ql_calib_stats **out, ql_error *err);

#endif
