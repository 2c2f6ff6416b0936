/* The journal of executed command lines. */
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#include "engine/outfile.h"

static ql_status reserve(journal *j, int n, ql_error *err)
{
    if (j->n + n <= j->cap)
        return QL_OK;
    int cap = j->cap ? j->cap : 16;
    while (cap < j->n + n)
        cap *= 2;
    char **p = realloc(j->lines, (size_t)cap * sizeof *p);
    if (!p)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    j->lines = p;
    j->cap = cap;
    return QL_OK;
}

ql_status journal_append(journal *j, const char *line, ql_error *err)
{
    char *s = strdup(line);
    if (!s || reserve(j, 1, err) != QL_OK) {
        free(s);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    j->lines[j->n++] = s;
    return QL_OK;
}

void journal_cut(journal *j, int len, char ***out, int *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (len >= j->n)
        return;
    int n = j->n - len;
    char **a = malloc((size_t)n * sizeof *a);
    if (a) {
        memcpy(a, j->lines + len, (size_t)n * sizeof *a);
        *out = a;
        *n_out = n;
    } else {
        for (int i = len; i < j->n; i++) /* no room to keep them: drop them */
            free(j->lines[i]);
    }
    j->n = len;
}

ql_status journal_paste(journal *j, char **lines, int n, ql_error *err)
{
    if (n == 0) {
        free(lines);
        return QL_OK;
    }
    ql_status st = reserve(j, n, err);
    if (st != QL_OK)
        return st;
    memcpy(j->lines + j->n, lines, (size_t)n * sizeof *lines);
    j->n += n;
    free(lines);
    return QL_OK;
}

void journal_clear(journal *j)
{
    for (int i = 0; i < j->n; i++)
        free(j->lines[i]);
    free(j->lines);
    memset(j, 0, sizeof *j);
}

ql_status journal_save(const journal *j, const char *path, ql_error *err)
{
    ql_outfile o;
    ql_status st = ql_outfile_open(&o, path, err);
    if (st != QL_OK)
        return st;
    fprintf(o.f, "# qlens script (qlens-script(5)), saved from a session's journal\n");
    for (int i = 0; i < j->n; i++)
        fprintf(o.f, "%s\n", j->lines[i]);
    return ql_outfile_commit(&o, err);
}
