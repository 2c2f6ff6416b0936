/* The command table, look-up, help, argument helpers, and the handlers of
 * the small commands (configs, scripts, undo/redo, echo, help). The
 * handlers that tune the config are in tune.c, evaluation and analysis in
 * analysis.c, and the show commands in report.c. */
#include "command.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define COMMAND_ROW_(n, syn, fl, fn, h) {n, syn, fl, fn, h},
const command_def command_table[] = {COMMAND_LIST(COMMAND_ROW_)};
#undef COMMAND_ROW_
const int command_count = (int)(sizeof command_table / sizeof command_table[0]);

/* ---------------------------------------------------------------------------
 * Look-up and help
 * ------------------------------------------------------------------------- */

/* Number of words of name matched by argv's first words, or 0 unless all. */
static int match_words(const char *name, int argc, char *const *argv)
{
    int k = 0;
    const char *p = name;
    while (*p) {
        size_t len = strcspn(p, " ");
        if (k >= argc || strlen(argv[k]) != len || strncmp(argv[k], p, len) != 0)
            return 0;
        k++;
        p += len;
        while (*p == ' ')
            p++;
    }
    return k;
}

const command_def *command_lookup(int argc, char *const *argv, int *n_words)
{
    const command_def *best = NULL;
    int best_n = 0;
    for (int i = 0; i < command_count; i++) {
        int k = match_words(command_table[i].name, argc, argv);
        if (k > best_n) {
            best = &command_table[i];
            best_n = k;
        }
    }
    *n_words = best_n;
    return best;
}

ql_status command_unknown(int argc, char *const *argv, ql_error *err)
{
    char subs[512] = "";
    size_t n = 0;
    size_t w0 = strlen(argv[0]);
    (void)argc;
    for (int i = 0; i < command_count; i++) {
        const char *name = command_table[i].name;
        if (strncmp(name, argv[0], w0) == 0 && name[w0] == ' ' && n < sizeof subs)
            n += (size_t)snprintf(subs + n, sizeof subs - n, "%s%s", n ? ", " : "", name + w0 + 1);
    }
    if (n)
        return ql_fail(err, QL_ERR_ARG, "%s: expects one of: %s", argv[0], subs);
    return ql_fail(err, QL_ERR_ARG, "unknown command '%s' (see 'help')", argv[0]);
}

/* Writes text indented, broken at blanks before width columns. */
static void print_wrapped(FILE *f, const char *text, int indent, int width)
{
    const char *p = text;
    while (*p) {
        int room = width - indent, n = (int)strlen(p);
        if (n > room) {
            n = room;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0) /* one long word */
                n = (int)strcspn(p, " ");
        }
        fprintf(f, "%*s%.*s\n", indent, "", n, p);
        p += n;
        while (*p == ' ')
            p++;
    }
}

int command_help(FILE *f, int argc, char *const *argv)
{
    int shown = 0;
    for (int i = 0; i < command_count; i++) {
        const command_def *c = &command_table[i];
        /* "help show" lists every show command; "help show layer" just one */
        int k = 0;
        const char *p = c->name;
        while (k < argc) {
            size_t len = strcspn(p, " ");
            if (strlen(argv[k]) != len || strncmp(argv[k], p, len) != 0)
                break;
            k++;
            p += len;
            while (*p == ' ')
                p++;
            if (!*p)
                break;
        }
        if (k < argc)
            continue;
        fprintf(f, "%s%s%s\n", c->name, c->synopsis[0] ? " " : "", c->synopsis);
        print_wrapped(f, c->help, 4, 78);
        shown++;
    }
    return shown;
}

/* ---------------------------------------------------------------------------
 * Argument helpers
 * ------------------------------------------------------------------------- */

ql_status command_usage(const char *name, ql_error *err)
{
    for (int i = 0; i < command_count; i++)
        if (!strcmp(command_table[i].name, name)) {
            if (!command_table[i].synopsis[0])
                return ql_fail(err, QL_ERR_ARG, "takes no arguments");
            return ql_fail(err, QL_ERR_ARG, "expects %s", command_table[i].synopsis);
        }
    return ql_fail(err, QL_ERR_INTERNAL, "no command '%s'", name);
}

ql_status command_parse_opts(int argc, char *const *argv, command_opt *opts, int n, ql_error *err)
{
    for (int j = 0; j < n; j++)
        opts[j].at = -1;
    for (int i = 0; i < argc; i++) {
        int j = 0;
        while (j < n && strcmp(argv[i], opts[j].key) != 0)
            j++;
        if (j == n) {
            char keys[256] = "";
            size_t len = 0;
            for (int k = 0; k < n && len < sizeof keys; k++)
                len += (size_t)snprintf(keys + len, sizeof keys - len, "%s%s", k ? ", " : "",
                                        opts[k].key);
            return ql_fail(err, QL_ERR_ARG, "unknown option '%s' (expected %s)", argv[i], keys);
        }
        if (opts[j].at >= 0)
            return ql_fail(err, QL_ERR_ARG, "'%s' given twice", opts[j].key);
        if (opts[j].flag) {
            opts[j].at = i;
            continue;
        }
        if (i + 1 >= argc)
            return ql_fail(err, QL_ERR_ARG, "'%s' needs a value", opts[j].key);
        opts[j].at = ++i;
    }
    return QL_OK;
}

ql_status command_parse_int(const char *what, const char *s, long min, long max, long *out,
                        ql_error *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return ql_fail(err, QL_ERR_ARG, "%s: '%s' is not an integer in [%ld, %ld]", what, s, min,
                       max);
    *out = v;
    return QL_OK;
}

ql_status command_replace_arg(char **argv, int i, const char *text, ql_error *err)
{
    char *t = strdup(text);
    if (!t)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    free(argv[i]);
    argv[i] = t;
    return QL_OK;
}

ql_status command_need_model(const session *s, ql_error *err)
{
    if (!s->cur.model)
        return ql_fail(err, QL_ERR_ARG, "no model loaded (use 'load MODEL')");
    return QL_OK;
}

ql_status command_need_encodings(const session *s, ql_error *err)
{
    ql_status st = command_need_model(s, err);
    if (st == QL_OK && s->cur.cfg->n_tensors == 0)
        st = ql_fail(err, QL_ERR_ARG, "the config has no encodings (run 'calibrate' first)");
    return st;
}

ql_status command_need_eval_data(const session *s, ql_error *err)
{
    ql_status st = command_need_model(s, err);
    if (st == QL_OK && !s->cur.eval)
        st = ql_fail(err, QL_ERR_ARG, "no evaluation data (use 'data eval PATH')");
    return st;
}

ql_status command_find_layer(const session *s, const char *name, int *layer, ql_error *err)
{
    ql_status st = command_need_model(s, err);
    if (st != QL_OK)
        return st;
    *layer = ql_qnet_find_layer(s->cur.model->q, name);
    if (*layer < 0)
        return ql_fail(err, QL_ERR_ARG, "no layer named '%s' (see 'show layers')", name);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Small commands
 * ------------------------------------------------------------------------- */

ql_status sc_load_config(session *s, int argc, char **argv, ql_error *err)
{
    if (argc != 1)
        return command_usage("load config", err);
    ql_status st = command_need_model(s, err);
    if (st != QL_OK)
        return st;
    ql_qconfig *c = NULL;
    const ses_model *x = s->cur.model;
    if ((st = ql_qconfig_load(argv[0], &c, err)) != QL_OK ||
        (st = ql_qconfig_check(c, x->m, x->q, argv[0], err)) != QL_OK)
        goto fail;
    /* every algorithm must name a usable plugin before the config is taken */
    const qlp_kind kinds[2] = {QLP_KIND_ACTIVATION, QLP_KIND_WEIGHT};
    for (int i = -1; i < c->n_layers; i++) {
        const ql_qsettings *q = i < 0 ? &c->defaults : &c->layers[i].s;
        const char *specs[2] = {q->mask & QL_QS_ACT_ALGO ? q->act_algo : NULL,
                                q->mask & QL_QS_WEIGHT_ALGO ? q->weight_algo : NULL};
        for (int k = 0; k < 2; k++) {
            ql_algo a;
            if (specs[k] &&
                (st = ql_algo_parse(s->plugins, specs[k], kinds[k], &a, err)) != QL_OK) {
                if (i < 0)
                    ql_fail_prefix(err, st, "%s: defaults.%s", argv[0],
                                   k ? "weight_algo" : "act_algo");
                else
                    ql_fail_prefix(err, st, "%s: layers.\"%s\".%s", argv[0], c->layers[i].name,
                                   k ? "weight_algo" : "act_algo");
                goto fail;
            }
        }
    }
    ql_qconfig_free(s->cur.cfg);
    s->cur.cfg = c;
    s->cur.cfg_gen++;
    return QL_OK;
fail:
    ql_qconfig_free(c);
    return st;
}

ql_status sc_save_config(session *s, int argc, char **argv, ql_error *err)
{
    if (argc != 1)
        return command_usage("save config", err);
    return ql_qconfig_save(s->cur.cfg, argv[0], err);
}

ql_status sc_load_stats(session *s, int argc, char **argv, ql_error *err)
{
    if (argc != 1)
        return command_usage("load stats", err);
    ql_status st = command_need_model(s, err);
    if (st != QL_OK)
        return st;
    ql_calib_stats *cs = NULL;
    if ((st = ql_calib_stats_load(argv[0], &cs, err)) != QL_OK)
        return st;
    if (cs->model_fingerprint != s->cur.model->m->fingerprint) {
        ql_calib_stats_free(cs);
        return ql_fail(err, QL_ERR_ARG, "%s: the statistics were collected on another model",
                       argv[0]);
    }
    /* they stand for the current calibration data, until new data comes */
    ses_stats *x = ses_stats_new(cs, s->cur.calib);
    if (!x)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ses_set(&s->cur.stats, x);
    return QL_OK;
}

ql_status sc_save_stats(session *s, int argc, char **argv, ql_error *err)
{
    if (argc != 1)
        return command_usage("save stats", err);
    if (!s->cur.stats)
        return ql_fail(err, QL_ERR_ARG, "no calibration statistics (run 'calibrate' first)");
    return ql_calib_stats_save(s->cur.stats->s, argv[0], err);
}

ql_status sc_save_script(session *s, int argc, char **argv, ql_error *err)
{
    if (argc != 1)
        return command_usage("save script", err);
    return journal_save(&s->j, argv[0], err);
}

ql_status sc_undo(session *s, int argc, char **argv, ql_error *err)
{
    (void)argv;
    if (argc != 0)
        return command_usage("undo", err);
    return session_undo(s, err);
}

ql_status sc_redo(session *s, int argc, char **argv, ql_error *err)
{
    (void)argv;
    if (argc != 0)
        return command_usage("redo", err);
    return session_redo(s, err);
}

ql_status sc_echo(session *s, int argc, char **argv, ql_error *err)
{
    (void)err;
    FILE *f = session_out(s);
    for (int i = 0; i < argc; i++)
        fprintf(f, "%s%s", i ? " " : "", argv[i]);
    fputc('\n', f);
    return QL_OK;
}

ql_status sc_help(session *s, int argc, char **argv, ql_error *err)
{
    if (command_help(session_out(s), argc, argv) > 0)
        return QL_OK;
    char *words = script_join(argc, argv);
    ql_fail(err, QL_ERR_ARG, "no command named '%s' (see 'help')", words ? words : argv[0]);
    free(words);
    return QL_ERR_ARG;
}
