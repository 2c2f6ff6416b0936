/* Helpers shared by the subcommands: the session a subcommand runs its
 * command lines on, phase progress bars, and Ctrl-C turned into the
 * session's cancel flag. */
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "command.h"
#include "script.h"

volatile int cli_cancel_flag;

static void on_sigint(int sig)
{
    (void)sig;
    if (cli_cancel_flag) /* a second Ctrl-C: leave at once */
        _exit(130);
    cli_cancel_flag = 1;
}

void cli_catch_interrupt(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

bool cli_phase_progress(void *user, const char *phase, int64_t done, int64_t total)
{
    cli_phases *p = user;
    if (!p->label[0] || strcmp(p->label, phase) != 0) {
        if (p->label[0])
            progress_finish(&p->bar);
        snprintf(p->label, sizeof p->label, "%s", phase);
        progress_start(&p->bar, p->label, total);
    }
    p->bar.total = total > 0 ? total : 1;
    progress_update(&p->bar, done);
    return !cli_cancel_flag;
}

void cli_phases_finish(cli_phases *p)
{
    if (p->label[0])
        progress_finish(&p->bar);
    p->label[0] = '\0';
}

void cli_log(void *user, const char *msg)
{
    const char *cmd = user;
    fprintf(stderr, "qlens %s: %s\n", cmd, msg);
}

/* ---------------------------------------------------------------------------
 * Sessions of subcommands
 * ------------------------------------------------------------------------- */

int cli_session_open(cli_session *c, const char *cmd, long threads, long batch, bool timings)
{
    ql_error err = {{0}};
    memset(c, 0, sizeof *c);
    c->cmd = cmd;
    /* results the wrapper prints itself come from the session state; the
     * commands' own reports of the other lines go here */
    if (!(c->quiet = fopen("/dev/null", "w"))) {
        cli_error(cmd, "/dev/null: cannot open");
        return 1;
    }
    cli_catch_interrupt();
    session_opts so = {.out = c->quiet, .n_threads = (int)threads, .batch = batch,
                       .progress = cli_phase_progress, .progress_user = &c->phases,
                       .log = cli_log, .log_user = (void *)cmd, .cancel = &cli_cancel_flag,
                       .timings = timings};
    if (session_new(&so, &c->s, &err) != QL_OK) {
        cli_error(cmd, "%s", err.msg);
        return 1;
    }
    return 0;
}

void cli_session_close(cli_session *c)
{
    cli_phases_finish(&c->phases);
    session_free(c->s);
    c->s = NULL;
    if (c->quiet)
        fclose(c->quiet);
    c->quiet = NULL;
}

void cli_words(cli_line *l, ...)
{
    va_list ap;
    va_start(ap, l);
    for (const char *w; (w = va_arg(ap, const char *));) {
        /* lines are built from a fixed number of options: more is a bug */
        if (l->n >= (int)(sizeof l->w / sizeof l->w[0]))
            abort();
        l->w[l->n++] = w;
    }
    va_end(ap);
}

void cli_opt(cli_line *l, const char *key, const char *val)
{
    if (val)
        cli_words(l, key, val, (const char *)NULL);
}

ql_status cli_exec(cli_session *c, const cli_line *l, bool show)
{
    ql_error err = {{0}};
    ql_status st;
    char *line = script_join(l->n, (char *const *)l->w);
    if (!line) {
        st = ql_fail(&err, QL_ERR_NOMEM, "out of memory");
    } else {
        session_set_out(c->s, show ? stdout : c->quiet);
        st = session_exec(c->s, line, &err);
        session_set_out(c->s, c->quiet);
        free(line);
    }
    if (show)
        fflush(stdout);
    if (st == QL_OK)
        return QL_OK;
    cli_phases_finish(&c->phases);
    /* "NAME: reason" -> "reason": the user wrote options, not commands */
    int nw = 0;
    const command_def *def = command_lookup(l->n, (char *const *)l->w, &nw);
    const char *msg = err.msg;
    size_t len = def ? strlen(def->name) : 0;
    if (def && !strncmp(msg, def->name, len) && msg[len] == ':' && msg[len + 1] == ' ')
        msg += len + 2;
    cli_error(c->cmd, "%s", msg);
    return st;
}

int cli_fail_rc(ql_status st)
{
    return st == QL_ERR_CANCELLED || cli_cancel_flag ? 130 : 1;
}

int cli_check_algo(const cli_session *c, const char *opt, const char *spec, qlp_kind kind)
{
    ql_error err = {{0}};
    ql_algo a;
    if (ql_algo_parse(c->s->plugins, spec, kind, &a, &err) == QL_OK)
        return 0;
    cli_error(c->cmd, "option %s: %s", opt, err.msg);
    return -1;
}

ql_status cli_load(cli_session *c, const char *model)
{
    cli_line l = {0};
    char buf[4096];
    int nw = 0;
    cli_words(&l, "load", model, (const char *)NULL);
    /* a model file named like a load subcommand ("config") needs a path */
    if (command_lookup(l.n, (char *const *)l.w, &nw) && nw > 1 && !strchr(model, '/')) {
        snprintf(buf, sizeof buf, "./%s", model);
        l.w[1] = buf;
    }
    return cli_exec(c, &l, false);
}

int cli_run_opt(const char *cmd, int c, const char *arg, cli_run_opts *o)
{
    switch (c) {
    case 'n':
        o->limit_s = arg;
        return cli_parse_int(cmd, "--limit", arg, 1, 1L << 40, &o->limit) ? -1 : 1;
    case 'b':
        return cli_parse_int(cmd, "--batch", arg, 1, 1 << 20, &o->batch) ? -1 : 1;
    case 't':
        return cli_parse_int(cmd, "--threads", arg, 1, 1024, &o->threads) ? -1 : 1;
    default:
        return 0;
    }
}

int cli_json_print(cJSON *o)
{
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    if (!s)
        return -1;
    printf("%s\n", s);
    free(s);
    return 0;
}

void cli_json_number(cJSON *o, const char *key, double v, int have)
{
    if (have && isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}
