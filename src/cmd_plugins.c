/* `qlens plugins`: every calibration plugin found along the search path,
 * with kinds, parameters and file, and every refused module with the reason,
 * so that a user can see why their algorithm is not offered. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "engine/plugin.h"

static void plugins_usage(FILE *f)
{
    fprintf(f, "Usage: qlens plugins [--json] [--path]\n\n"
               "Lists the calibration plugins found in $QLENS_PLUGIN_PATH, the build tree\n"
               "and %s: name, kinds (activation, weight), summary,\n"
               "parameters with defaults and ranges, and file. Modules that were refused\n"
               "(wrong ABI version, not a plugin, bad schema, shadowed) are listed with\n"
               "the reason.\n\n"
               "  --json     print one JSON object instead of text\n"
               "  --path     print the folders searched, in order, one per line\n"
               "  -h, --help show this help\n",
            QL_PLUGIN_DIR);
}

/* Numbers as algorithm specs write them. */
static const char *num(double v, char *buf, size_t n)
{
    ql_algo_num(v, buf, n);
    return buf;
}

static const char *kinds_str(unsigned kinds)
{
    if ((kinds & QLP_KIND_ACTIVATION) && (kinds & QLP_KIND_WEIGHT))
        return "activation, weight";
    return kinds & QLP_KIND_WEIGHT ? "weight" : "activation";
}

static const char *type_str(qlp_param_type t) { return t == QLP_PARAM_INT ? "int" : "float"; }

static void print_text(const ql_plugins *ps)
{
    int usable = 0;
    for (int i = 0; i < ps->n; i++) {
        const ql_plugin_info *it = &ps->items[i];
        const qlp_plugin *p = it->p;
        char d[32], lo[32], hi[32];
        if (!p)
            continue;
        usable++;
        printf("%s%s (%s): %s\n", usable > 1 ? "\n" : "", p->name, kinds_str(p->kinds),
               p->summary ? p->summary : "");
        for (int j = 0; j < p->n_params; j++) {
            const qlp_param_def *q = &p->params[j];
            printf("  %-10s %-5s default %-8s range [%s, %s]%s%s\n", q->key, type_str(q->type),
                   num(q->dflt, d, sizeof d), num(q->min, lo, sizeof lo),
                   num(q->max, hi, sizeof hi), q->help ? "  " : "", q->help ? q->help : "");
        }
        printf("  file: %s\n", it->path);
    }
    if (usable == 0)
        printf("no plugins found (folders searched: 'qlens plugins --path')\n");
    if (usable < ps->n) {
        printf("\nrefused:\n");
        for (int i = usable; i < ps->n; i++)
            printf("  %s: %s\n", ps->items[i].path, ps->items[i].refused);
    }
}

static cJSON *plugin_json(const ql_plugin_info *it)
{
    const qlp_plugin *p = it->p;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", p->name);
    cJSON *kinds = cJSON_AddArrayToObject(o, "kinds");
    if (p->kinds & QLP_KIND_ACTIVATION)
        cJSON_AddItemToArray(kinds, cJSON_CreateString("activation"));
    if (p->kinds & QLP_KIND_WEIGHT)
        cJSON_AddItemToArray(kinds, cJSON_CreateString("weight"));
    cJSON_AddStringToObject(o, "summary", p->summary ? p->summary : "");
    cJSON *params = cJSON_AddArrayToObject(o, "params");
    for (int j = 0; j < p->n_params; j++) {
        const qlp_param_def *q = &p->params[j];
        cJSON *po = cJSON_CreateObject();
        cJSON_AddStringToObject(po, "key", q->key);
        cJSON_AddStringToObject(po, "type", type_str(q->type));
        cJSON_AddNumberToObject(po, "default", q->dflt);
        cJSON_AddNumberToObject(po, "min", q->min);
        cJSON_AddNumberToObject(po, "max", q->max);
        cJSON_AddStringToObject(po, "help", q->help ? q->help : "");
        cJSON_AddItemToArray(params, po);
    }
    cJSON_AddStringToObject(o, "path", it->path);
    return o;
}

static int print_json(const ql_plugins *ps, int path_only)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *dirs = cJSON_AddArrayToObject(root, "search_path");
    for (int i = 0; i < ps->n_dirs; i++)
        cJSON_AddItemToArray(dirs, cJSON_CreateString(ps->dirs[i]));
    if (!path_only) {
        cJSON *ok = cJSON_AddArrayToObject(root, "plugins");
        cJSON *refused = cJSON_AddArrayToObject(root, "refused");
        for (int i = 0; i < ps->n; i++) {
            const ql_plugin_info *it = &ps->items[i];
            if (it->p) {
                cJSON_AddItemToArray(ok, plugin_json(it));
            } else {
                cJSON *r = cJSON_CreateObject();
                cJSON_AddStringToObject(r, "path", it->path);
                cJSON_AddStringToObject(r, "reason", it->refused);
                cJSON_AddItemToArray(refused, r);
            }
        }
    }
    return cli_json_print(root) == 0 ? 0 : 1;
}

int cmd_plugins(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"path", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int json = 0, path_only = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'p': path_only = 1; break;
        case 'h': plugins_usage(stdout); return 0;
        default: plugins_usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        cli_error("plugins", "takes no arguments, got '%s' (see 'qlens plugins --help')",
                  argv[optind]);
        return 2;
    }
    ql_error err = {{0}};
    ql_plugins *ps = NULL;
    if (ql_plugins_scan(&ps, &err) != QL_OK) {
        cli_error("plugins", "%s", err.msg);
        return 1;
    }
    int rc = 0;
    if (json)
        rc = print_json(ps, path_only);
    else if (path_only)
        for (int i = 0; i < ps->n_dirs; i++)
            printf("%s\n", ps->dirs[i]);
    else
        print_text(ps);
    ql_plugins_free(ps);
    return rc;
}
