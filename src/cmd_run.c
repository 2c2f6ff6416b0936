/* `qlens run`: runs a script of session commands headless (qlens-script(5)).
 * Output of show/eval/echo goes to stdout; progress to stderr when it is a
 * terminal; the first failing line stops the run with "FILE:LINE: reason". */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "command.h"
#include "script.h"
#include "session.h"

static void run_usage(FILE *f)
{
    fprintf(f,
            "Usage: qlens run SCRIPT.qls [--var NAME=VALUE]... [--threads T] [--timings]\n"
            "       qlens run --list-commands\n\n"
            "Runs the commands in SCRIPT (\"-\" for standard input) on a new session and\n"
            "stops at the first failing line. The language and every command are in\n"
            "qlens-script(5).\n\n"
            "  -D, --var NAME=VALUE  define ${NAME} for the script (repeatable)\n"
            "  -t, --threads T       worker threads (default: number of cores; results\n"
            "                        do not depend on it)\n"
            "      --timings         also print wall times (output is then not reproducible)\n"
            "      --list-commands   list the commands with their arguments and exit\n"
            "  -h, --help            show this help\n");
}

static void run_log(void *user, const char *msg)
{
    (void)user;
    fprintf(stderr, "qlens run: %s\n", msg);
}

int cmd_run(int argc, char **argv)
{
    enum { OPT_LIST = 256, OPT_TIMINGS };
    static const struct option opts[] = {
        {"var", required_argument, NULL, 'D'},
        {"threads", required_argument, NULL, 't'},
        {"timings", no_argument, NULL, OPT_TIMINGS},
        {"list-commands", no_argument, NULL, OPT_LIST},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    ql_error err = {{0}};
    script_vars vars = {0};
    long threads = 0;
    int c, rc = 2, list = 0, timings = 0;
    session *s = NULL;
    cli_phases phases;
    memset(&phases, 0, sizeof phases);
    optind = 1;
    while ((c = getopt_long(argc, argv, "D:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'D':
            if (script_vars_set_arg(&vars, optarg, &err) != QL_OK) {
                cli_error("run", "option --var: %s", err.msg);
                goto done;
            }
            break;
        case 't':
            if (cli_parse_int("run", "--threads", optarg, 1, 1024, &threads))
                goto done;
            break;
        case OPT_TIMINGS: timings = 1; break;
        case OPT_LIST: list = 1; break;
        case 'h':
            run_usage(stdout);
            rc = 0;
            goto done;
        default: run_usage(stderr); goto done;
        }
    }
    if (list) {
        command_help(stdout, 0, NULL);
        rc = 0;
        goto done;
    }
    if (optind != argc - 1) {
        cli_error("run", "expects exactly one SCRIPT (see 'qlens run --help')");
        goto done;
    }
    cli_catch_interrupt();
    session_opts so = {.out = stdout, .n_threads = (int)threads, .log = run_log,
                       .cancel = &cli_cancel_flag, .timings = timings};
    if (isatty(STDERR_FILENO)) {
        so.progress = cli_phase_progress;
        so.progress_user = &phases;
    }
    rc = 1;
    if (session_new(&so, &s, &err) != QL_OK)
        goto fail;
    for (int i = 0; i < vars.n; i++)
        if (session_set_var(s, vars.names[i], vars.values[i], &err) != QL_OK)
            goto fail;
    ql_status st = script_run_file(s, argv[optind], &err);
    cli_phases_finish(&phases);
    fflush(stdout);
    if (st != QL_OK)
        goto fail;
    rc = 0;
    goto done;
fail:
    cli_phases_finish(&phases);
    fflush(stdout);
    fprintf(stderr, "%s\n", err.msg); /* "FILE:LINE: reason", as compilers do */
done:
    session_free(s);
    script_vars_clear(&vars);
    return rc;
}
