/* Helpers shared by the subcommands: loading a model with its data and
 * labels (with the checks every command needs), phase progress bars, and
 * Ctrl-C turned into the engine's cancel flag. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

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

ql_status cli_load_data(const ql_model *m, const char *data, const char *labels_path,
                        int64_t limit, ql_dataset **d, int64_t **labels, int64_t *n_labels,
                        ql_error *err)
{
    ql_status st;
    *d = NULL;
    if (labels)
        *labels = NULL;
    if (m->graph->n_inputs != 1)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%s: a model with one input is needed (it has %d)",
                       m->path, m->graph->n_inputs);
    if ((st = ql_dataset_load(data, limit, d, err)) != QL_OK)
        return st;
    if ((st = ql_dataset_conform(*d, &m->graph->values[m->graph->inputs[0]], err)) != QL_OK)
        goto fail;
    if (!labels_path)
        return QL_OK;
    if ((st = ql_labels_load(labels_path, limit, labels, n_labels, err)) != QL_OK)
        goto fail;
    if (*n_labels != (*d)->n) {
        st = ql_fail(err, QL_ERR_DATA, "%s has %lld labels but %s has %lld samples", labels_path,
                     (long long)*n_labels, data, (long long)(*d)->n);
        goto fail;
    }
    for (int64_t i = 0; i < *n_labels; i++)
        if ((*labels)[i] < 0) {
            st = ql_fail(err, QL_ERR_DATA, "%s: label %lld is negative", labels_path,
                         (long long)i);
            goto fail;
        }
    return QL_OK;
fail:
    ql_dataset_free(*d);
    *d = NULL;
    if (labels) {
        free(*labels);
        *labels = NULL;
    }
    return st;
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
