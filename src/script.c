/* The command language's lexer and quoter, and the file runner. The lexer
 * is deliberately shell-like (quotes, backslashes, comments) but never
 * splits an expanded variable into words, so a path with blanks in a
 * --var stays one argument. */
#include "script.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

/* ---------------------------------------------------------------------------
 * Variables
 * ------------------------------------------------------------------------- */

static bool name_char(int c, bool first)
{
    return c == '_' || isalpha(c) || (!first && isdigit(c));
}

static bool valid_name(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!name_char((unsigned char)s[i], i == 0))
            return false;
    return true;
}

ql_status script_vars_set(script_vars *v, const char *name, const char *value, ql_error *err)
{
    if (!valid_name(name, strlen(name)))
        return ql_fail(err, QL_ERR_ARG,
                       "'%s' is not a variable name (letters, digits and '_', not starting "
                       "with a digit)",
                       name);
    for (int i = 0; i < v->n; i++)
        if (!strcmp(v->names[i], name)) {
            char *nv = strdup(value);
            if (!nv)
                return ql_fail(err, QL_ERR_NOMEM, "out of memory");
            free(v->values[i]);
            v->values[i] = nv;
            return QL_OK;
        }
    char **nn = realloc(v->names, (size_t)(v->n + 1) * sizeof *nn);
    if (nn)
        v->names = nn;
    char **nv = realloc(v->values, (size_t)(v->n + 1) * sizeof *nv);
    if (nv)
        v->values = nv;
    char *a = strdup(name), *b = strdup(value);
    if (!nn || !nv || !a || !b) {
        free(a);
        free(b);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    v->names[v->n] = a;
    v->values[v->n] = b;
    v->n++;
    return QL_OK;
}

ql_status script_vars_set_arg(script_vars *v, const char *arg, ql_error *err)
{
    const char *eq = strchr(arg, '=');
    if (!eq)
        return ql_fail(err, QL_ERR_ARG, "'%s' is not NAME=VALUE", arg);
    char name[128];
    size_t n = (size_t)(eq - arg);
    if (n >= sizeof name || !valid_name(arg, n))
        return ql_fail(err, QL_ERR_ARG,
                       "'%.*s' is not a variable name (letters, digits and '_', not starting "
                       "with a digit)",
                       (int)(n < 100 ? n : 100), arg);
    memcpy(name, arg, n);
    name[n] = '\0';
    return script_vars_set(v, name, eq + 1, err);
}

const char *script_vars_get(const script_vars *v, const char *name)
{
    for (int i = 0; v && i < v->n; i++)
        if (!strcmp(v->names[i], name))
            return v->values[i];
    return NULL;
}

void script_vars_clear(script_vars *v)
{
    for (int i = 0; i < v->n; i++) {
        free(v->names[i]);
        free(v->values[i]);
    }
    free(v->names);
    free(v->values);
    memset(v, 0, sizeof *v);
}

/* ---------------------------------------------------------------------------
 * Splitting
 * ------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static bool sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

static bool sb_put(sbuf *b, char c) { return sb_putn(b, &c, 1); }

/* Expands the ${...} at s (s[0] == '$') into b; *used gets its length. */
static ql_status expand_var(const char *s, const script_vars *vars, sbuf *b, size_t *used,
                            ql_error *err)
{
    if (s[1] != '{')
        return ql_fail(err, QL_ERR_ARG,
                       "'$' must start a variable reference ${NAME} (write \\$ for a dollar)");
    const char *close = strchr(s + 2, '}');
    if (!close)
        return ql_fail(err, QL_ERR_ARG, "unterminated variable reference '%.40s'", s);
    const char *name = s + 2, *dflt = NULL;
    size_t nlen = (size_t)(close - name);
    const char *colon = memchr(name, ':', nlen);
    if (colon && colon[1] == '-') {
        dflt = colon + 2;
        nlen = (size_t)(colon - name);
    }
    if (!valid_name(name, nlen))
        return ql_fail(err, QL_ERR_ARG, "'%.*s' is not a variable name",
                       (int)(close - name < 100 ? close - name : 100), name);
    char key[128];
    if (nlen >= sizeof key)
        return ql_fail(err, QL_ERR_ARG, "variable name too long");
    memcpy(key, name, nlen);
    key[nlen] = '\0';
    const char *val = script_vars_get(vars, key);
    bool ok;
    if (val)
        ok = sb_putn(b, val, strlen(val));
    else if (dflt)
        ok = sb_putn(b, dflt, (size_t)(close - dflt));
    else
        return ql_fail(err, QL_ERR_ARG, "undefined variable '%s' (set it with --var %s=VALUE)",
                       key, key);
    if (!ok)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    *used = (size_t)(close - s) + 1;
    return QL_OK;
}

void script_argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

static bool push_word(char ***argv, int *argc, int *cap, sbuf *w)
{
    if (*argc + 2 > *cap) {
        int nc = *cap ? *cap * 2 : 8;
        char **na = realloc(*argv, (size_t)nc * sizeof *na);
        if (!na)
            return false;
        *argv = na;
        *cap = nc;
    }
    if (!w->p && !sb_putn(w, "", 0))
        return false;
    (*argv)[(*argc)++] = w->p;
    (*argv)[*argc] = NULL;
    memset(w, 0, sizeof *w);
    return true;
}

ql_status script_split(const char *line, const script_vars *vars, int *argc, char ***argv,
                       ql_error *err)
{
    ql_status st = QL_OK;
    char **av = NULL;
    int ac = 0, cap = 0;
    sbuf w = {0};
    const char *p = line;
    *argc = 0;
    *argv = NULL;
    if (!push_word(&av, &ac, &cap, &w)) /* room for the terminating NULL */
        goto oom;
    free(av[0]);
    ac = 0;
    av[0] = NULL;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (!*p || *p == '#')
            break;
        bool in_word = true;
        while (in_word && *p) {
            char c = *p;
            if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                in_word = false;
            } else if (c == '\'') {
                const char *e = strchr(p + 1, '\'');
                if (!e) {
                    st = ql_fail(err, QL_ERR_ARG, "unterminated ' quote");
                    goto fail;
                }
                if (!sb_putn(&w, p + 1, (size_t)(e - p - 1)))
                    goto oom;
                p = e + 1;
            } else if (c == '"') {
                p++;
                for (;;) {
                    if (!*p) {
                        st = ql_fail(err, QL_ERR_ARG, "unterminated \" quote");
                        goto fail;
                    }
                    if (*p == '"') {
                        p++;
                        break;
                    }
                    if (*p == '\\' && (p[1] == '"' || p[1] == '\\' || p[1] == '$')) {
                        if (!sb_put(&w, p[1]))
                            goto oom;
                        p += 2;
                    } else if (*p == '$') {
                        size_t used;
                        if ((st = expand_var(p, vars, &w, &used, err)) != QL_OK)
                            goto fail;
                        p += used;
                    } else {
                        if (!sb_put(&w, *p))
                            goto oom;
                        p++;
                    }
                }
                if (!w.p && !sb_putn(&w, "", 0)) /* "" is an empty word */
                    goto oom;
            } else if (c == '\\') {
                if (!p[1] || p[1] == '\n' || p[1] == '\r') {
                    st = ql_fail(err, QL_ERR_ARG, "a backslash ends the line");
                    goto fail;
                }
                if (!sb_put(&w, p[1]))
                    goto oom;
                p += 2;
            } else if (c == '$') {
                size_t used;
                if ((st = expand_var(p, vars, &w, &used, err)) != QL_OK)
                    goto fail;
                if (!w.p && !sb_putn(&w, "", 0)) /* an empty variable is an empty word */
                    goto oom;
                p += used;
            } else {
                if (!sb_put(&w, c))
                    goto oom;
                p++;
            }
        }
        if (!push_word(&av, &ac, &cap, &w))
            goto oom;
    }
    *argc = ac;
    *argv = av;
    return QL_OK;
oom:
    st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
fail:
    free(w.p);
    script_argv_free(av);
    return st;
}

/* ---------------------------------------------------------------------------
 * Canonical quoting
 * ------------------------------------------------------------------------- */

static bool safe_char(int c)
{
    return isalnum(c) || strchr("_./:=,+-@%^~[]", c) != NULL;
}

size_t script_quote(const char *w, char *buf, size_t n)
{
    bool bare = *w != '\0' && *w != '~', squote = strchr(w, '\'') != NULL;
    size_t k = 0;
#define PUT(ch)                 \
    do {                        \
        if (k + 1 < n)          \
            buf[k] = (char)(ch); \
        k++;                    \
    } while (0)
    for (const char *p = w; *p && bare; p++)
        bare = safe_char((unsigned char)*p);
    if (bare) {
        for (const char *p = w; *p; p++)
            PUT(*p);
    } else if (!squote) {
        PUT('\'');
        for (const char *p = w; *p; p++)
            PUT(*p);
        PUT('\'');
    } else {
        PUT('"');
        for (const char *p = w; *p; p++) {
            if (*p == '"' || *p == '\\' || *p == '$')
                PUT('\\');
            PUT(*p);
        }
        PUT('"');
    }
#undef PUT
    if (n)
        buf[k < n ? k : n - 1] = '\0';
    return k;
}

char *script_join(int argc, char *const *argv)
{
    size_t len = 1;
    for (int i = 0; i < argc; i++)
        len += script_quote(argv[i], NULL, 0) + 1;
    char *s = malloc(len), *p = s;
    if (!s)
        return NULL;
    *p = '\0';
    for (int i = 0; i < argc; i++) {
        if (i)
            *p++ = ' ';
        p += script_quote(argv[i], p, len - (size_t)(p - s));
    }
    return s;
}

/* ---------------------------------------------------------------------------
 * Running a file
 * ------------------------------------------------------------------------- */

ql_status script_run_file(struct session *s, const char *path, ql_error *err)
{
    bool is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "r");
    if (!f)
        return ql_fail(err, QL_ERR_IO, "%s: %s", path, strerror(errno));
    ql_status st = QL_OK;
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    if (!script_vars_get(&s->vars, "SCRIPT_DIR")) {
        const char *slash = is_stdin ? NULL : strrchr(path, '/');
        char dir[4096];
        if (!slash)
            snprintf(dir, sizeof dir, ".");
        else if (slash == path)
            snprintf(dir, sizeof dir, "/");
        else
            snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
        if ((st = script_vars_set(&s->vars, "SCRIPT_DIR", dir, err)) != QL_OK)
            goto cleanup;
    }
    ssize_t len;
    while ((len = getline(&line, &cap, f)) != -1) {
        lineno++;
        /* the lexer stops at a NUL: the rest of the line would vanish */
        const char *nul = memchr(line, '\0', (size_t)len);
        if (nul) {
            st = ql_fail(err, QL_ERR_FORMAT, "%s:%ld: a NUL byte at column %ld (not a text file?)",
                         path, lineno, (long)(nul - line) + 1);
            goto cleanup;
        }
        if ((st = session_exec_at(s, line, path, lineno, err)) != QL_OK)
            goto cleanup;
    }
    if (ferror(f))
        st = ql_fail(err, QL_ERR_IO, "%s: read error: %s", path, strerror(errno));
cleanup:
    free(line);
    if (!is_stdin)
        fclose(f);
    return st;
}
