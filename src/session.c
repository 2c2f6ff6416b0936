/* Session state, reference counting, undo/redo snapshots and the one entry
 * point that runs a command line (parse, dispatch, journal, roll back on
 * failure). */
#include "session.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"

/* ---------------------------------------------------------------------------
 * Reference-counted objects
 * ------------------------------------------------------------------------- */

void *ses_retain(void *obj)
{
    if (obj)
        ((ses_rc *)obj)->refs++;
    return obj;
}

void ses_release(void *obj)
{
    ses_rc *rc = obj;
    if (rc && --rc->refs == 0)
        rc->destroy(rc);
}

void ses_set(void *slot, void *obj)
{
    void **p = slot;
    ses_release(*p);
    *p = obj;
}

static void model_destroy(ses_rc *rc)
{
    ses_model *x = (ses_model *)rc;
    ql_qnet_free(x->q);
    ql_model_free(x->m);
    free(x);
}

ses_model *ses_model_new(ql_model *m, ql_qnet *q)
{
    ses_model *x = calloc(1, sizeof *x);
    if (!x) {
        ql_qnet_free(q);
        ql_model_free(m);
        return NULL;
    }
    x->rc = (ses_rc){1, model_destroy};
    x->m = m;
    x->q = q;
    return x;
}

static void data_destroy(ses_rc *rc)
{
    ses_data *x = (ses_data *)rc;
    ql_dataset_free(x->d);
    free(x->labels);
    free(x);
}

ses_data *ses_data_new(ql_dataset *d, int64_t *labels, int64_t n_labels)
{
    ses_data *x = calloc(1, sizeof *x);
    if (!x) {
        ql_dataset_free(d);
        free(labels);
        return NULL;
    }
    x->rc = (ses_rc){1, data_destroy};
    x->d = d;
    x->labels = labels;
    x->n_labels = n_labels;
    return x;
}

static void stats_destroy(ses_rc *rc)
{
    ses_stats *x = (ses_stats *)rc;
    ql_calib_stats_free(x->s);
    ses_release((void *)x->from);
    free(x);
}

ses_stats *ses_stats_new(ql_calib_stats *st, const ses_data *from)
{
    ses_stats *x = calloc(1, sizeof *x);
    if (!x) {
        ql_calib_stats_free(st);
        return NULL;
    }
    x->rc = (ses_rc){1, stats_destroy};
    x->s = st;
    x->from = ses_retain((void *)from); /* held, so that no new data can take its address */
    return x;
}

static void sens_destroy(ses_rc *rc)
{
    ses_sens *x = (ses_sens *)rc;
    ql_sens_table_free(x->t);
    free(x);
}

ses_sens *ses_sens_new(ql_sens_table *t, ql_sens_metric metric)
{
    ses_sens *x = calloc(1, sizeof *x);
    if (!x) {
        ql_sens_table_free(t);
        return NULL;
    }
    x->rc = (ses_rc){1, sens_destroy};
    x->t = t;
    x->metric = metric;
    return x;
}

static void curve_destroy(ses_rc *rc)
{
    ses_curve *x = (ses_curve *)rc;
    ql_curve_free(x->c);
    free(x);
}

ses_curve *ses_curve_new(ql_curve *c, ql_sens_metric ranked_by)
{
    ses_curve *x = calloc(1, sizeof *x);
    if (!x) {
        ql_curve_free(c);
        return NULL;
    }
    x->rc = (ses_rc){1, curve_destroy};
    x->c = c;
    x->ranked_by = ranked_by;
    return x;
}

static void autoprec_destroy(ses_rc *rc)
{
    ses_autoprec *x = (ses_autoprec *)rc;
    ql_autoprec_result_clear(&x->r);
    free(x);
}

ses_autoprec *ses_autoprec_new(const ql_target *target, ql_autoprec_result *r)
{
    ses_autoprec *x = calloc(1, sizeof *x);
    if (!x) {
        ql_autoprec_result_clear(r);
        return NULL;
    }
    x->rc = (ses_rc){1, autoprec_destroy};
    x->target = *target;
    x->r = *r;
    memset(r, 0, sizeof *r);
    return x;
}

/* ---------------------------------------------------------------------------
 * States and snapshots
 * ------------------------------------------------------------------------- */

static void state_clear(session_state *st)
{
    ses_release(st->model);
    ses_release(st->calib);
    ses_release(st->eval);
    ses_release(st->stats);
    ses_release(st->sens);
    ses_release(st->curve);
    ses_release(st->autoprec);
    ql_qconfig_free(st->cfg);
    memset(st, 0, sizeof *st);
}

/* dst = src sharing the heavy objects; the config is cloned because
 * commands edit it in place. */
static ql_status state_copy(session_state *dst, const session_state *src, ql_error *err)
{
    ql_qconfig *cfg = ql_qconfig_clone(src->cfg);
    if (!cfg)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    *dst = *src;
    dst->cfg = cfg;
    ses_retain(dst->model);
    ses_retain(dst->calib);
    ses_retain(dst->eval);
    ses_retain(dst->stats);
    ses_retain(dst->sens);
    ses_retain(dst->curve);
    ses_retain(dst->autoprec);
    return QL_OK;
}

static void step_clear(session_step *p)
{
    state_clear(&p->st);
    for (int i = 0; i < p->n_lines; i++)
        free(p->lines[i]);
    free(p->lines);
    p->lines = NULL;
    p->n_lines = 0;
}

static ql_status push_step(session_step **arr, int *n, int *cap, session_step *p, ql_error *err)
{
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        session_step *na = realloc(*arr, (size_t)nc * sizeof *na);
        if (!na)
            return ql_fail(err, QL_ERR_NOMEM, "out of memory");
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = *p;
    return QL_OK;
}

static void clear_redo(session *s)
{
    for (int i = 0; i < s->n_redo; i++)
        step_clear(&s->redo[i]);
    s->n_redo = 0;
}

ql_status session_undo(session *s, ql_error *err)
{
    if (s->n_undo == 0)
        return ql_fail(err, QL_ERR_ARG, "nothing to undo");
    session_step back = s->undo[s->n_undo - 1], fwd = {0};
    if (state_copy(&fwd.st, &s->cur, err) != QL_OK)
        return QL_ERR_NOMEM;
    if (push_step(&s->redo, &s->n_redo, &s->cap_redo, &fwd, err) != QL_OK) {
        step_clear(&fwd);
        return QL_ERR_NOMEM;
    }
    s->n_undo--;
    journal_cut(&s->j, back.st.journal_len, &s->redo[s->n_redo - 1].lines,
                &s->redo[s->n_redo - 1].n_lines);
    state_clear(&s->cur);
    s->cur = back.st;
    return QL_OK;
}

ql_status session_redo(session *s, ql_error *err)
{
    if (s->n_redo == 0)
        return ql_fail(err, QL_ERR_ARG, "nothing to redo");
    session_step *fwd = &s->redo[s->n_redo - 1], back = {0};
    if (state_copy(&back.st, &s->cur, err) != QL_OK)
        return QL_ERR_NOMEM;
    if (push_step(&s->undo, &s->n_undo, &s->cap_undo, &back, err) != QL_OK) {
        step_clear(&back);
        return QL_ERR_NOMEM;
    }
    /* lines journaled since the undo (show, echo...) stay before the
     * re-applied ones: harmless, they change nothing */
    if (journal_paste(&s->j, fwd->lines, fwd->n_lines, err) != QL_OK) {
        s->n_undo--;
        step_clear(&back);
        return QL_ERR_NOMEM;
    }
    fwd->lines = NULL;
    fwd->n_lines = 0;
    state_clear(&s->cur);
    s->cur = fwd->st;
    s->cur.journal_len = s->j.n;
    s->n_redo--;
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------- */

ql_status session_new(const session_opts *o, session **out, ql_error *err)
{
    session *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s || !(s->cur.cfg = ql_qconfig_new())) {
        free(s);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    if (o)
        s->o = *o;
    ql_status st = ql_plugins_scan(&s->plugins, err);
    if (st != QL_OK) {
        session_free(s);
        return st;
    }
    *out = s;
    return QL_OK;
}

void session_free(session *s)
{
    if (!s)
        return;
    state_clear(&s->cur);
    for (int i = 0; i < s->n_undo; i++)
        step_clear(&s->undo[i]);
    clear_redo(s);
    free(s->undo);
    free(s->redo);
    journal_clear(&s->j);
    script_vars_clear(&s->vars);
    ql_plugins_free(s->plugins);
    free(s);
}

ql_status session_set_var(session *s, const char *name, const char *value, ql_error *err)
{
    return script_vars_set(&s->vars, name, value, err);
}

/* ---------------------------------------------------------------------------
 * Running a command line
 * ------------------------------------------------------------------------- */

ql_status session_exec(session *s, const char *line, ql_error *err)
{
    int argc = 0, nw = 0;
    char **argv = NULL;
    session_step snap = {0};
    ql_status st = script_split(line, &s->vars, &argc, &argv, err);
    if (st != QL_OK || argc == 0)
        goto cleanup;
    const command_def *def = command_lookup(argc, argv, &nw);
    if (!def) {
        st = command_unknown(argc, argv, err);
        goto cleanup;
    }
    bool changes = def->flags & CMDF_CHANGES;
    if (changes && (st = state_copy(&snap.st, &s->cur, err)) != QL_OK)
        goto cleanup;
    st = def->run(s, argc - nw, argv + nw, err);
    if (st == QL_OK && !(def->flags & CMDF_NOJOURNAL)) {
        /* the recorded line is the canonical form of the words the handler
         * ended with (handlers canonicalise algorithm specs in place) */
        char *canon = script_join(argc, argv);
        st = canon ? QL_OK : ql_fail(err, QL_ERR_NOMEM, "out of memory");
        if (st == QL_OK)
            st = journal_append(&s->j, canon, err);
        free(canon);
        if (st == QL_OK)
            s->cur.journal_len = s->j.n;
    }
    if (st != QL_OK) {
        ql_fail_prefix(err, st, "%s", def->name);
        if (changes) {
            state_clear(&s->cur);
            s->cur = snap.st;
            memset(&snap, 0, sizeof snap);
        }
        goto cleanup;
    }
    if (changes) {
        if ((st = push_step(&s->undo, &s->n_undo, &s->cap_undo, &snap, err)) != QL_OK)
            goto cleanup;
        memset(&snap, 0, sizeof snap);
        clear_redo(s);
    }
cleanup:
    step_clear(&snap);
    script_argv_free(argv);
    return st;
}

ql_status session_exec_at(session *s, const char *line, const char *source, long lineno,
                          ql_error *err)
{
    ql_status st = session_exec(s, line, err);
    if (st != QL_OK)
        ql_fail_prefix(err, st, "%s:%ld", source, lineno);
    return st;
}

ql_status session_run_lines(session *s, const char *const *lines, int n, const char *source,
                            ql_error *err)
{
    for (int i = 0; i < n; i++) {
        ql_status st = session_exec_at(s, lines[i], source, i + 1, err);
        if (st != QL_OK)
            return st;
    }
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Helpers for handlers
 * ------------------------------------------------------------------------- */

void session_set_out(session *s, FILE *out)
{
    s->o.out = out;
}

FILE *session_out(const session *s)
{
    return s->o.out ? s->o.out : stdout;
}

bool session_cancelled(const session *s)
{
    return s->o.cancel && *s->o.cancel;
}

bool session_progress(session *s, const char *phase, int64_t done, int64_t total)
{
    if (s->o.progress && !s->o.progress(s->o.progress_user, phase, done, total))
        return false;
    return !session_cancelled(s);
}

static bool calib_progress(void *user, const char *phase, int64_t done, int64_t total)
{
    return session_progress(user, phase, done, total);
}

static void calib_log(void *user, const char *msg)
{
    session *s = user;
    if (s->o.log)
        s->o.log(s->o.log_user, msg);
}

void session_log(session *s, const char *fmt, ...)
{
    if (!s->o.log)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->o.log(s->o.log_user, msg);
}

ql_calib_opts session_calib_opts(session *s)
{
    return (ql_calib_opts){.n_threads = s->o.n_threads, .batch = s->o.batch,
                           .progress = calib_progress,
                           .progress_user = s, .log = calib_log, .log_user = s,
                           .cancel = s->o.cancel};
}
