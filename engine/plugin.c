/* Calibration plugins: finding shared modules along the search path, opening
 * them, refusing (with a reason kept for `qlens plugins`) any module whose
 * ABI, callbacks or schema qlens cannot trust, and algorithm specs. */
#define _GNU_SOURCE /* newlocale, uselocale, strtod_l */
#include "plugin.h"

#include <assert.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef QL_PLUGIN_DIR
#define QL_PLUGIN_DIR "/usr/local/lib/qlens"
#endif

#define NAME_MAX_LEN 63
#define KEY_MAX_LEN 31
#define MAX_PARAMS 16

static_assert(MAX_PARAMS == sizeof ((ql_algo *)0)->v / sizeof(double),
              "ql_algo.v holds the most parameters a plugin may declare");

/* ---------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------- */

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static bool valid_ident(const char *s, size_t maxlen, bool allow_dash)
{
    size_t n = 0;
    if (!s || !*s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              (allow_dash && c == '-')))
            return false;
    }
    return n <= maxlen;
}

/* Fewest significant digits (at most 17) that read back as exactly v, in
 * fixed notation for exponents -4..15 and %e notation beyond (as Python's
 * repr), in the C locale: deterministic, and a parse gives v again. */
void ql_algo_num(double v, char *buf, size_t n)
{
    locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    locale_t old = c ? uselocale(c) : (locale_t)0;
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(buf, n, "%.*e", prec - 1, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    snprintf(buf, n, "%.*e", prec - 1, v);
    const char *e = strchr(buf, 'e');
    int exp = e ? atoi(e + 1) : 0;
    if (isfinite(v) && exp >= -4 && exp < 16)
        snprintf(buf, n, "%.*f", prec - 1 - exp > 0 ? prec - 1 - exp : 0, v);
    if (c) {
        uselocale(old);
        freelocale(c);
    }
}

/* A plain decimal number (no hex, inf, nan or blanks), in the C locale. */
static bool parse_num(const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789+-.eE", s[i]))
            return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!c)
        return false;
    char *end;
    errno = 0;
    double v = strtod_l(buf, &end, c);
    freelocale(c);
    if (end != buf + len || errno == ERANGE || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static const char *kind_name(qlp_kind kind)
{
    return kind == QLP_KIND_WEIGHT ? "weight" : "activation";
}

/* ---------------------------------------------------------------------------
 * Validation: a reason (malloc'd) for refusing p, or NULL when it is sound
 * ------------------------------------------------------------------------- */

static char *check_param(const qlp_param_def *d, int i)
{
    char a[32], b[32], c[32];
    if (!valid_ident(d->key, KEY_MAX_LEN, false))
        return str_printf("parameter %d: invalid key '%s' (want 1 to %d of [a-z0-9_])", i + 1,
                          d->key ? d->key : "(null)", KEY_MAX_LEN);
    if (d->type != QLP_PARAM_FLOAT && d->type != QLP_PARAM_INT)
        return str_printf("parameter '%s': invalid type %d", d->key, (int)d->type);
    if (!isfinite(d->dflt) || !isfinite(d->min) || !isfinite(d->max))
        return str_printf("parameter '%s': default, min and max must be finite", d->key);
    ql_algo_num(d->dflt, a, sizeof a);
    ql_algo_num(d->min, b, sizeof b);
    ql_algo_num(d->max, c, sizeof c);
    if (!(d->min <= d->max))
        return str_printf("parameter '%s': min %s > max %s", d->key, b, c);
    if (!(d->min <= d->dflt && d->dflt <= d->max))
        return str_printf("parameter '%s': default %s not in [%s, %s]", d->key, a, b, c);
    if (d->type == QLP_PARAM_INT &&
        (d->dflt != floor(d->dflt) || d->min != floor(d->min) || d->max != floor(d->max) ||
         fabs(d->min) > 9007199254740992.0 || fabs(d->max) > 9007199254740992.0))
        return str_printf("parameter '%s': integer parameter with non-integer default or range",
                          d->key);
    return NULL;
}

static char *check_plugin(const qlp_plugin *p)
{
    if (p->abi_version != QLP_ABI_VERSION)
        return str_printf("ABI version %d, qlens needs %d", p->abi_version, QLP_ABI_VERSION);
    if (!valid_ident(p->name, NAME_MAX_LEN, true))
        return str_printf("invalid name '%s' (want 1 to %d of [a-z0-9_-])",
                          p->name ? p->name : "(null)", NAME_MAX_LEN);
    if (p->kinds == 0)
        return str_printf("%s declares no kind", p->name);
    if (p->kinds & ~(unsigned)(QLP_KIND_ACTIVATION | QLP_KIND_WEIGHT))
        return str_printf("%s declares unknown kind bits 0x%x", p->name,
                          p->kinds & ~(unsigned)(QLP_KIND_ACTIVATION | QLP_KIND_WEIGHT));
    if ((p->kinds & QLP_KIND_ACTIVATION) && !p->act_range)
        return str_printf("%s is an activation algorithm without act_range", p->name);
    if ((p->kinds & QLP_KIND_WEIGHT) && !p->weight_range)
        return str_printf("%s is a weight algorithm without weight_range", p->name);
    if (p->n_params < 0 || p->n_params > MAX_PARAMS)
        return str_printf("%s declares %d parameters, at most %d are allowed", p->name,
                          p->n_params, MAX_PARAMS);
    if (p->n_params > 0 && !p->params)
        return str_printf("%s declares %d parameters but no schema", p->name, p->n_params);
    for (int i = 0; i < p->n_params; i++) {
        char *why = check_param(&p->params[i], i);
        if (why)
            return why;
        for (int j = 0; j < i; j++)
            if (strcmp(p->params[j].key, p->params[i].key) == 0)
                return str_printf("duplicate parameter key '%s'", p->params[i].key);
    }
    return NULL;
}

/* ---------------------------------------------------------------------------
 * The set of modules
 * ------------------------------------------------------------------------- */

ql_plugins *ql_plugins_new(void) { return calloc(1, sizeof(ql_plugins)); }

void ql_plugins_free(ql_plugins *ps)
{
    if (!ps)
        return;
    for (int i = 0; i < ps->n; i++) {
        if (ps->items[i].handle)
            dlclose(ps->items[i].handle);
        free(ps->items[i].path);
        free(ps->items[i].refused);
    }
    for (int i = 0; i < ps->n_dirs; i++)
        free(ps->dirs[i]);
    free(ps->dirs);
    free(ps->items);
    free(ps);
}

static const ql_plugin_info *find_usable(const ql_plugins *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++)
        if (ps->items[i].p && strcmp(ps->items[i].p->name, name) == 0)
            return &ps->items[i];
    return NULL;
}

/* Usable modules stay ahead of refused ones, each group in search order. */
static ql_status insert_item(ql_plugins *ps, ql_plugin_info it, ql_error *err)
{
    ql_plugin_info *items = realloc(ps->items, (size_t)(ps->n + 1) * sizeof *items);
    if (!items)
        return ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", it.path);
    ps->items = items;
    int at = ps->n;
    if (it.p) {
        at = 0;
        while (at < ps->n && items[at].p)
            at++;
        memmove(&items[at + 1], &items[at], (size_t)(ps->n - at) * sizeof *items);
    }
    items[at] = it;
    ps->n++;
    return QL_OK;
}

/* Opens one module and adds it, usable or refused. *refused_out (borrowed)
 * points at the reason when refused. Fails only on OOM. */
static ql_status load_module(ql_plugins *ps, const char *path, const char **refused_out,
                             ql_error *err)
{
    ql_plugin_info it = {0};
    ql_status st = QL_OK;
    *refused_out = NULL;
    if (!(it.path = strdup(path)))
        return ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
    dlerror();
    it.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!it.handle) {
        const char *e = dlerror();
        size_t pl = strlen(path);
        if (!e)
            e = "unknown error";
        else if (strncmp(e, path, pl) == 0 && strncmp(e + pl, ": ", 2) == 0)
            e += pl + 2; /* dlerror names the file; the listing does already */
        it.refused = str_printf("cannot load: %s", e);
        goto refuse;
    }
    dlerror();
    void *sym = dlsym(it.handle, QLENS_PLUGIN_ENTRY_NAME);
    if (!sym) {
        it.refused = str_printf("no %s symbol (not a qlens plugin)", QLENS_PLUGIN_ENTRY_NAME);
        goto refuse;
    }
    qlp_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* object to function pointer, as POSIX allows */
    const qlp_plugin *p = entry();
    if (!p) {
        it.refused = str_printf("%s returned NULL", QLENS_PLUGIN_ENTRY_NAME);
        goto refuse;
    }
    if ((it.refused = check_plugin(p)) != NULL)
        goto refuse;
    const ql_plugin_info *first = find_usable(ps, p->name);
    if (first) {
        it.refused = str_printf("shadowed by %s", first->path);
        goto refuse;
    }
    it.p = p;
    if ((st = insert_item(ps, it, err)) != QL_OK)
        goto cleanup;
    return QL_OK;

refuse:
    if (!it.refused) {
        st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    if (it.handle)
        dlclose(it.handle);
    it.handle = NULL;
    if ((st = insert_item(ps, it, err)) != QL_OK)
        goto cleanup;
    *refused_out = it.refused;
    return QL_OK;

cleanup:
    if (it.handle)
        dlclose(it.handle);
    free(it.path);
    free(it.refused);
    return st;
}

ql_status ql_plugins_add_file(ql_plugins *ps, const char *path, ql_error *err)
{
    const char *why;
    ql_status st = load_module(ps, path, &why, err);
    if (st == QL_OK && why)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%s: %s", path, why);
    return st;
}

/* ---------------------------------------------------------------------------
 * Scanning the search path
 * ------------------------------------------------------------------------- */

/* Adds dir to ps->dirs unless the same folder is already there. */
static ql_status add_dir(ql_plugins *ps, const char *dir, size_t len, ql_error *err)
{
    char *d = strndup(dir, len);
    if (!d)
        return ql_fail(err, QL_ERR_NOMEM, "plugin search path: out of memory");
    char *real = realpath(d, NULL);
    for (int i = 0; i < ps->n_dirs; i++) {
        char *other = realpath(ps->dirs[i], NULL);
        bool same = strcmp(ps->dirs[i], d) == 0 || (real && other && strcmp(real, other) == 0);
        free(other);
        if (same) {
            free(real);
            free(d);
            return QL_OK;
        }
    }
    free(real);
    char **dirs = realloc(ps->dirs, (size_t)(ps->n_dirs + 1) * sizeof *dirs);
    if (!dirs) {
        free(d);
        return ql_fail(err, QL_ERR_NOMEM, "plugin search path: out of memory");
    }
    ps->dirs = dirs;
    ps->dirs[ps->n_dirs++] = d;
    return QL_OK;
}

/* "<folder of the running program>/plugins/.libs": the build tree, where
 * libtool leaves the modules. A libtool wrapper runs the real program from
 * .libs, so that level is stepped over. Empty when /proc is unavailable. */
static ql_status build_tree_dir(ql_plugins *ps, ql_error *err)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return QL_OK;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return QL_OK;
    *slash = '\0';
    slash = strrchr(exe, '/');
    if (slash && strcmp(slash + 1, ".libs") == 0)
        *slash = '\0';
    char dir[PATH_MAX + 16];
    int len = snprintf(dir, sizeof dir, "%s/plugins/.libs", exe);
    return add_dir(ps, dir, (size_t)len, err);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_module_name(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 3 && strcmp(e->d_name + n - 3, ".so") == 0;
}

static ql_status scan_dir(ql_plugins *ps, const char *dir, ql_error *err)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, is_module_name, by_name);
    ql_status st = QL_OK;
    if (n < 0)
        return QL_OK; /* a folder that does not exist holds no plugins */
    for (int i = 0; i < n && st == QL_OK; i++) {
        char *path = str_printf("%s/%s", dir, names[i]->d_name);
        struct stat sb;
        const char *why;
        if (!path)
            st = ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", dir);
        else if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            st = load_module(ps, path, &why, err);
        free(path);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return st;
}

ql_status ql_plugins_scan(ql_plugins **out, ql_error *err)
{
    ql_status st = QL_OK;
    ql_plugins *ps = ql_plugins_new();
    *out = NULL;
    if (!ps)
        return ql_fail(err, QL_ERR_NOMEM, "plugins: out of memory");
    const char *env = getenv("QLENS_PLUGIN_PATH");
    while (env && *env) {
        size_t len = strcspn(env, ":");
        if (len > 0 && (st = add_dir(ps, env, len, err)) != QL_OK)
            goto cleanup;
        env += len;
        if (*env == ':')
            env++;
    }
    if ((st = build_tree_dir(ps, err)) != QL_OK ||
        (st = add_dir(ps, QL_PLUGIN_DIR, strlen(QL_PLUGIN_DIR), err)) != QL_OK)
        goto cleanup;
    for (int i = 0; i < ps->n_dirs; i++)
        if ((st = scan_dir(ps, ps->dirs[i], err)) != QL_OK)
            goto cleanup;
    *out = ps;
    return QL_OK;

cleanup:
    ql_plugins_free(ps);
    return st;
}

const qlp_plugin *ql_plugins_find(const ql_plugins *ps, const char *name, qlp_kind kind)
{
    const ql_plugin_info *it = ps && name ? find_usable(ps, name) : NULL;
    return it && (it->p->kinds & (unsigned)kind) ? it->p : NULL;
}

/* ---------------------------------------------------------------------------
 * Algorithm specs
 * ------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "a, b, c": names of the usable plugins of `kind`, sorted; "none" if none. */
static void list_names(const ql_plugins *ps, qlp_kind kind, char *buf, size_t n)
{
    const char *names[256];
    int k = 0;
    for (int i = 0; ps && i < ps->n && k < 256; i++)
        if (ps->items[i].p && (ps->items[i].p->kinds & (unsigned)kind))
            names[k++] = ps->items[i].p->name;
    qsort(names, (size_t)k, sizeof names[0], cmp_str);
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < k && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", names[i]);
    if (k == 0)
        snprintf(buf, n, "none");
}

static void list_keys(const qlp_plugin *p, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < p->n_params && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", p->params[i].key);
}

/* One "key=value" of spec, of length len, into a (whose schema is set). */
static ql_status parse_param(ql_algo *a, bool *seen, const char *spec, const char *s, size_t len,
                             ql_error *err)
{
    const qlp_plugin *p = a->p;
    const char *eq = memchr(s, '=', len);
    if (len == 0)
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': empty parameter (stray ',')", spec);
    if (!eq)
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': expected key=value, got '%.*s'", spec,
                       (int)len, s);
    size_t klen = (size_t)(eq - s), vlen = len - klen - 1;
    if (klen == 0)
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': no key in '%.*s'", spec, (int)len, s);
    int idx = -1;
    for (int i = 0; i < p->n_params; i++)
        if (strlen(p->params[i].key) == klen && memcmp(p->params[i].key, s, klen) == 0)
            idx = i;
    if (idx < 0) {
        char keys[512];
        if (p->n_params == 0)
            return ql_fail(err, QL_ERR_ARG, "algorithm '%s': %s takes no parameters", spec,
                           p->name);
        list_keys(p, keys, sizeof keys);
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': %s has no parameter '%.*s' (parameters: %s)",
                       spec, p->name, (int)klen, s, keys);
    }
    const qlp_param_def *d = &p->params[idx];
    if (seen[idx])
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': %s given twice", spec, d->key);
    seen[idx] = true;
    if (vlen == 0)
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': no value for %s", spec, d->key);
    double v;
    if (!parse_num(eq + 1, vlen, &v))
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': %s='%.*s' is not a number", spec, d->key,
                       (int)vlen, eq + 1);
    if (d->type == QLP_PARAM_INT && v != floor(v))
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': %s=%.*s is not an integer", spec, d->key,
                       (int)vlen, eq + 1);
    if (v < d->min || v > d->max) {
        char lo[32], hi[32];
        ql_algo_num(d->min, lo, sizeof lo);
        ql_algo_num(d->max, hi, sizeof hi);
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': %s=%.*s is out of range [%s, %s]", spec,
                       d->key, (int)vlen, eq + 1, lo, hi);
    }
    a->v[idx] = v + 0.0; /* -0 reads as 0: one canonical value */
    return QL_OK;
}

ql_status ql_algo_parse(const ql_plugins *ps, const char *spec, qlp_kind kind, ql_algo *out,
                        ql_error *err)
{
    char name[NAME_MAX_LEN + 2], names[1024];
    ql_algo a = {0};
    if (!spec)
        spec = "";
    size_t nlen = strcspn(spec, ":");
    if (nlen == 0)
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': no name", spec);
    snprintf(name, sizeof name, "%.*s", (int)(nlen > NAME_MAX_LEN ? NAME_MAX_LEN + 1 : nlen), spec);
    a.p = nlen <= NAME_MAX_LEN ? ql_plugins_find(ps, name, kind) : NULL;
    if (!a.p) {
        const ql_plugin_info *other = nlen <= NAME_MAX_LEN && ps ? find_usable(ps, name) : NULL;
        list_names(ps, kind, names, sizeof names);
        if (other)
            return ql_fail(err, QL_ERR_ARG, "algorithm '%s': %s is not a%s %s algorithm (%s "
                           "algorithms: %s)", spec, name, kind == QLP_KIND_ACTIVATION ? "n" : "",
                           kind_name(kind), kind_name(kind), names);
        return ql_fail(err, QL_ERR_ARG, "algorithm '%s': no %s algorithm '%.*s' (available: %s)",
                       spec, kind_name(kind), (int)nlen, spec, names);
    }
    a.n = a.p->n_params;
    for (int i = 0; i < a.n; i++)
        a.v[i] = a.p->params[i].dflt;
    if (spec[nlen] == ':') {
        bool seen[MAX_PARAMS] = {0};
        const char *s = spec + nlen + 1;
        if (!*s)
            return ql_fail(err, QL_ERR_ARG, "algorithm '%s': nothing after ':'", spec);
        for (;;) {
            size_t len = strcspn(s, ",");
            ql_status st = parse_param(&a, seen, spec, s, len, err);
            if (st != QL_OK)
                return st;
            if (!s[len])
                break;
            s += len + 1;
        }
    }
    *out = a;
    return QL_OK;
}

void ql_algo_format(const ql_algo *a, char *buf, size_t n)
{
    if (n == 0)
        return;
    size_t used = (size_t)snprintf(buf, n, "%s", a->p ? a->p->name : "");
    for (int i = 0, k = 0; a->p && i < a->n && used < n; i++) {
        const qlp_param_def *d = &a->p->params[i];
        char num[32];
        if (a->v[i] == d->dflt)
            continue;
        ql_algo_num(a->v[i], num, sizeof num);
        used += (size_t)snprintf(buf + used, n - used, "%c%s=%s", k++ ? ',' : ':', d->key, num);
    }
}
