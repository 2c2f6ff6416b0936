/* Sensitivity tables: names of modes and metrics, sorting worst first, the
 * CSV writer (libcsv quoting, atomic), and targets and march names for
 * automatic mixed precision. */
#include "sensitivity.h"

#include <csv.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outfile.h"

#define MODE_NAME_(e, s, h) s,
static const char *const mode_names[] = {QL_SENS_MODE_LIST(MODE_NAME_)};
#undef MODE_NAME_
_Static_assert(sizeof mode_names / sizeof mode_names[0] == QL_SENS_MODE_COUNT, "mode names");

#define METRIC_NAME_(e, s, hi) s,
static const char *const metric_names[] = {QL_SENS_METRIC_LIST(METRIC_NAME_)};
#undef METRIC_NAME_
#define METRIC_HI_(e, s, hi) hi,
static const int metric_hi[] = {QL_SENS_METRIC_LIST(METRIC_HI_)};
#undef METRIC_HI_
_Static_assert(sizeof metric_names / sizeof metric_names[0] == QL_SM_COUNT, "metric names");

const char *ql_sens_mode_name(ql_sens_mode m)
{
    return (unsigned)m < QL_SENS_MODE_COUNT ? mode_names[m] : "?";
}

bool ql_sens_mode_parse(const char *s, ql_sens_mode *out)
{
    for (int i = 0; i < QL_SENS_MODE_COUNT; i++)
        if (strcmp(s, mode_names[i]) == 0) {
            *out = (ql_sens_mode)i;
            return true;
        }
    return false;
}

const char *ql_sens_metric_name(ql_sens_metric m)
{
    return (unsigned)m < QL_SM_COUNT ? metric_names[m] : "?";
}

bool ql_sens_metric_parse(const char *s, ql_sens_metric *out)
{
    for (int i = 0; i < QL_SM_COUNT; i++)
        if (strcmp(s, metric_names[i]) == 0) {
            *out = (ql_sens_metric)i;
            return true;
        }
    return false;
}

void ql_sens_table_free(ql_sens_table *t)
{
    if (!t)
        return;
    free(t->rows);
    free(t);
}

double ql_sens_row_metric(const ql_sens_row *r, ql_sens_metric metric)
{
    switch (metric) {
    case QL_SM_COSINE: return ql_metrics_cosine(&r->m);
    case QL_SM_MSE: return ql_metrics_mse(&r->m);
    case QL_SM_SQNR: return ql_metrics_sqnr_db(&r->m);
    case QL_SM_MAX_ABS: return r->m.max_abs;
    case QL_SM_TOP1_AGREE: return ql_metrics_agree(&r->m);
    case QL_SM_TOP1:
        return r->m.labelled ? (double)r->m.correct_q / (double)r->m.labelled : NAN;
    case QL_SM_LOCAL_SQNR: return r->local_sqnr_db;
    default: return NAN;
    }
}

/* Worst first; rows not done and NaN values last; ties in layer order. */
static int cmp_rows(const ql_sens_row *a, const ql_sens_row *b, ql_sens_metric sort_metric)
{
    if (a->done != b->done)
        return a->done ? -1 : 1;
    double x = ql_sens_row_metric(a, sort_metric), y = ql_sens_row_metric(b, sort_metric);
    if (isnan(x) != isnan(y))
        return isnan(x) ? 1 : -1;
    if (!isnan(x) && x != y) {
        bool worse = metric_hi[sort_metric] ? x > y : x < y;
        return worse ? -1 : 1;
    }
    return (a->layer > b->layer) - (a->layer < b->layer);
}

void ql_sens_table_sort(ql_sens_table *t, ql_sens_metric metric)
{
    /* insertion sort: tables are small, and qsort has no context argument */
    for (int i = 1; i < t->n; i++) {
        ql_sens_row r = t->rows[i];
        int j = i;
        for (; j > 0 && cmp_rows(&r, &t->rows[j - 1], metric) < 0; j--)
            t->rows[j] = t->rows[j - 1];
        t->rows[j] = r;
    }
}

/* ---- CSV --------------------------------------------------------------------- */

static void put_num(FILE *f, double v, bool have)
{
    fputc(',', f);
    if (!have || isnan(v))
        return;
    if (isinf(v))
        fputs(v > 0 ? "inf" : "-inf", f);
    else
        fprintf(f, "%.10g", v);
}

ql_status ql_sens_table_write_csv(const ql_sens_table *t, const char *path, ql_error *err)
{
    ql_outfile o;
    ql_status st = ql_outfile_open(&o, path, err);
    if (st != QL_OK)
        return st;
    FILE *f = o.f;
    fputs("layer,op,precision,cosine,mse,sqnr_db,max_abs,top1_agree,top1,local_sqnr_db,"
          "weight_share,done\n",
          f);
    for (int i = 0; i < t->n + t->n_pending; i++) {
        const ql_sens_row *r = &t->rows[i];
        bool any = r->done && r->m.n > 0;
        csv_fwrite(f, r->name, strlen(r->name));
        fputc(',', f);
        csv_fwrite(f, r->op, strlen(r->op));
        fprintf(f, ",%s", ql_prec_name(r->precision));
        for (int k = 0; k <= QL_SM_TOP1; k++)
            put_num(f, ql_sens_row_metric(r, (ql_sens_metric)k), any);
        put_num(f, r->local_sqnr_db, any);
        put_num(f, r->weight_share, any);
        fprintf(f, ",%d\n", r->done ? 1 : 0);
    }
    return ql_outfile_commit(&o, err);
}

/* The curve's CSV: step 0 is the config as given. */
static void put_metrics(FILE *f, const ql_metrics *m, bool done)
{
    put_num(f, ql_metrics_cosine(m), done);
    put_num(f, ql_metrics_mse(m), done);
    put_num(f, ql_metrics_sqnr_db(m), done);
    put_num(f, m->max_abs, done);
    put_num(f, ql_metrics_agree(m), done);
    put_num(f, m->labelled ? (double)m->correct_q / (double)m->labelled : NAN,
            done && m->labelled > 0);
    fprintf(f, ",%d\n", done ? 1 : 0);
}

ql_status ql_curve_write_csv(const ql_curve *c, const char *path, ql_error *err)
{
    ql_outfile o;
    ql_status st = ql_outfile_open(&o, path, err);
    if (st != QL_OK)
        return st;
    FILE *f = o.f;
    fputs("step,layer,op,from,to,cosine,mse,sqnr_db,max_abs,top1_agree,top1,done\n", f);
    fputs("0,,,,", f); /* the config as given */
    put_metrics(f, &c->base, c->base.n > 0);
    for (int k = 0; k < c->n_total; k++) {
        const ql_curve_step *s = &c->steps[k];
        fprintf(f, "%d,", k + 1);
        csv_fwrite(f, s->name, strlen(s->name));
        fputc(',', f);
        csv_fwrite(f, s->op, strlen(s->op));
        fprintf(f, ",%s,%s", ql_prec_name(s->from), ql_prec_name(s->to));
        put_metrics(f, &s->m, k < c->n);
    }
    return ql_outfile_commit(&o, err);
}

/* ---- targets ------------------------------------------------------------------- */

/* Target metrics: name, whether higher is better, and the best value a
 * model can have (the float model's). */
static const struct {
    const char *name;
    bool higher;
    double best;
} target_metrics[] = {
    {"cosine", true, 1.0},  {"sqnr_db", true, INFINITY}, {"top1_agree", true, 1.0},
    {"top1", true, 1.0},    {"mse", false, 0.0},         {"max_abs", false, 0.0},
    {"top1_drop", false, -100.0},
};

ql_status ql_target_parse(const char *s, ql_target *out, ql_error *err)
{
    const char *ge = strstr(s, ">="), *le = strstr(s, "<=");
    const char *op = ge ? ge : le;
    memset(out, 0, sizeof *out);
    if (!op || (ge && le))
        return ql_fail(err, QL_ERR_ARG, "target '%s': expected METRIC>=VALUE or METRIC<=VALUE", s);
    size_t n = (size_t)(op - s);
    while (n > 0 && s[n - 1] == ' ')
        n--;
    while (n > 0 && *s == ' ') {
        s++;
        n--;
    }
    int k = -1;
    for (int i = 0; i < (int)(sizeof target_metrics / sizeof target_metrics[0]); i++)
        if (strlen(target_metrics[i].name) == n && strncmp(s, target_metrics[i].name, n) == 0)
            k = i;
    if (k < 0)
        return ql_fail(err, QL_ERR_ARG,
                       "target '%.*s': unknown metric (cosine, sqnr_db, top1_agree, top1, mse, "
                       "max_abs, top1_drop)",
                       (int)n, s);
    memcpy(out->metric, s, n);
    out->at_least = op == ge;
    char *end;
    errno = 0;
    out->value = strtod(op + 2, &end);
    while (*end == ' ')
        end++;
    if (op[2] == '\0' || *end || errno || !isfinite(out->value))
        return ql_fail(err, QL_ERR_ARG, "target: '%s' is not a number", op + 2);
    /* raising layers moves the model towards float: the metric can only be
     * asked to come close to the float model's value, from its side */
    bool higher = target_metrics[k].higher;
    double best = target_metrics[k].best;
    if (out->at_least != higher)
        return ql_fail(err, QL_ERR_ARG,
                       "target %s%s%g: %s is %s; write %s%s%g", out->metric,
                       out->at_least ? ">=" : "<=", out->value, out->metric,
                       higher ? "higher when better (the float model has the most)"
                              : "an error, lower when better (the float model has the least)",
                       out->metric, higher ? ">=" : "<=", out->value);
    if (higher ? out->value > best : out->value < best)
        return ql_fail(err, QL_ERR_ARG, "target %s%s%g: no model reaches it (%s is %s %g%s)",
                       out->metric, out->at_least ? ">=" : "<=", out->value, out->metric,
                       higher ? "at most" : "at least", best,
                       !strcmp(out->metric, "top1") || !strcmp(out->metric, "top1_agree")
                           ? ": a fraction, not a percentage"
                           : "");
    return QL_OK;
}

static const char *const marches[] = {"nash-b-lite", "nash-b", "nash-b-plus", "nash-e",
                                      "nash-m",      "nash-h", "nash-p"};

const char *ql_autoprec_march(const char *s)
{
    for (size_t i = 0; i < sizeof marches / sizeof marches[0]; i++)
        if (!strcmp(s, marches[i]))
            return marches[i];
    return NULL;
}

double ql_target_value(const ql_target *t, const ql_metrics *m)
{
    const char *k = t->metric;
    if (!strcmp(k, "cosine"))
        return ql_metrics_cosine(m);
    if (!strcmp(k, "sqnr_db"))
        return ql_metrics_sqnr_db(m);
    if (!strcmp(k, "top1_agree"))
        return ql_metrics_agree(m);
    if (!strcmp(k, "mse"))
        return ql_metrics_mse(m);
    if (!strcmp(k, "max_abs"))
        return m->max_abs;
    if (!m->labelled)
        return NAN;
    if (!strcmp(k, "top1"))
        return (double)m->correct_q / (double)m->labelled;
    if (!strcmp(k, "top1_drop"))
        return 100.0 * (double)(m->correct_ref - m->correct_q) / (double)m->labelled;
    return NAN;
}

bool ql_target_met(const ql_target *t, const ql_metrics *m)
{
    double v = ql_target_value(t, m);
    if (isnan(v))
        return false;
    return t->at_least ? v >= t->value : v <= t->value;
}
