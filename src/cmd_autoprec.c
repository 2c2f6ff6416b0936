/* `qlens autoprec`: the session lines `load`, `load config`, `data eval`,
 * `load stats` (or statistics collected on the data), `autoprec` and
 * `save config`; the steps are printed from the session's result. Exit
 * status 3 when the target is not met. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void autoprec_usage(FILE *f)
{
    fprintf(f,
            "Usage: qlens autoprec MODEL.onnx --data D --config C --target METRIC>=VALUE\n"
            "                      -o NEW.json [--labels L] [--prefer int16|float]\n"
            "                      [--march M] [--stats S] [--limit N] [--threads T]\n"
            "                      [--batch B]\n\n"
            "Ranks the layers by how much the model gains when each alone stays float\n"
            "(all-but sensitivity) and raises them one at a time until the target holds.\n"
            "Targets: cosine, sqnr_db, top1_agree, top1 (fractions), mse, max_abs with\n"
            ">= or <=, and top1_drop<=P (percentage points; needs --labels).\n\n"
            "  -d, --data D        samples (.npy folder, batched .npy, IDX)\n"
            "  -c, --config C      quant config from 'qlens calibrate'\n"
            "  -T, --target T      e.g. cosine>=0.999 or top1_drop<=0.2\n"
            "  -o, --output FILE   the new config\n"
            "  -l, --labels L      labels (top1 and top1_drop targets)\n"
            "      --prefer P      raise int8 layers to int16 (default) or float\n"
            "      --march M       rank by gain per cost on M (nash-b-lite, nash-b,\n"
            "                      nash-b-plus, nash-e, nash-m, nash-h, nash-p)\n"
            "      --stats S       statistics from 'qlens calibrate --stats-out'\n"
            "                      (default: collected again from D)\n"
            "  -n, --limit N       use only the first N samples\n"
            "  -t, --threads T     worker threads (default: number of cores)\n"
            "  -b, --batch B       batch size (default 32)\n"
            "  -h, --help          show this help\n\n"
            "The same as the qlens-script(5) lines: load MODEL; load config C;\n"
            "data eval D [labels L] [limit N]; load stats S (or data calib D\n"
            "[limit N]; collect stats); autoprec TARGET ...; save config FILE.\n");
}

int cmd_autoprec(int argc, char **argv)
{
    enum { OPT_PREFER = 256, OPT_MARCH, OPT_STATS };
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},    {"config", required_argument, NULL, 'c'},
        {"target", required_argument, NULL, 'T'},  {"output", required_argument, NULL, 'o'},
        {"labels", required_argument, NULL, 'l'},  {"prefer", required_argument, NULL, OPT_PREFER},
        {"march", required_argument, NULL, OPT_MARCH},
        {"stats", required_argument, NULL, OPT_STATS},
        {"limit", required_argument, NULL, 'n'},   {"threads", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *config = NULL, *target_s = NULL, *out = NULL, *labels_path = NULL;
    const char *march = NULL, *stats_path = NULL, *prefer = NULL;
    int c;
    cli_run_opts ro = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:c:T:o:l:n:t:b:h", opts, NULL)) != -1) {
        int r = cli_run_opt("autoprec", c, optarg, &ro);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        switch (c) {
        case 'd': data = optarg; break;
        case 'c': config = optarg; break;
        case 'T': target_s = optarg; break;
        case 'o': out = optarg; break;
        case 'l': labels_path = optarg; break;
        case OPT_STATS: stats_path = optarg; break;
        case OPT_PREFER:
            if (strcmp(optarg, "int16") && strcmp(optarg, "float")) {
                cli_error("autoprec", "option --prefer: '%s' is not int16 or float", optarg);
                return 2;
            }
            prefer = optarg;
            break;
        case OPT_MARCH:
            march = optarg; /* checked by the command */
            break;
        case 'h': autoprec_usage(stdout); return 0;
        default: autoprec_usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        cli_error("autoprec", "expects exactly one MODEL.onnx (see 'qlens autoprec --help')");
        return 2;
    }
    if (!data || !config || !target_s || !out) {
        cli_error("autoprec", "--data, --config, --target and -o are required");
        return 2;
    }
    /* a target that cannot hold without labels fails before any work */
    ql_error err = {{0}};
    ql_target target;
    if (ql_target_parse(target_s, &target, &err) != QL_OK) {
        cli_error("autoprec", "%s", err.msg);
        return 1;
    }
    if ((!strcmp(target.metric, "top1") || !strcmp(target.metric, "top1_drop")) && !labels_path) {
        cli_error("autoprec", "target %s needs --labels", target.metric);
        return 1;
    }

    cli_session cs;
    ql_status st;
    int rc = 1;
    if (cli_session_open(&cs, "autoprec", ro.threads, ro.batch, false) != 0)
        goto done;
    cli_line cl = {0}, dl = {0}, sl = {0}, sl2 = {0}, al = {0}, ol = {0};
    cli_words(&cl, "load", "config", config, (const char *)NULL);
    cli_words(&dl, "data", "eval", data, (const char *)NULL);
    cli_opt(&dl, "labels", labels_path);
    cli_opt(&dl, "limit", ro.limit_s);
    if (stats_path) {
        cli_words(&sl, "load", "stats", stats_path, (const char *)NULL);
    } else { /* statistics of the same samples */
        cli_words(&sl, "data", "calib", data, (const char *)NULL);
        cli_opt(&sl, "limit", ro.limit_s);
        cli_words(&sl2, "collect", "stats", (const char *)NULL);
    }
    cli_words(&al, "autoprec", target_s, (const char *)NULL);
    cli_opt(&al, "prefer", prefer);
    cli_opt(&al, "march", march);
    cli_words(&ol, "save", "config", out, (const char *)NULL);
    const cli_line *lines[] = {&cl, &dl, &sl, &sl2, &al, &ol};
    if ((st = cli_load(&cs, argv[optind])) != QL_OK)
        goto fail;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        if (lines[i]->n && (st = cli_exec(&cs, lines[i], false)) != QL_OK)
            goto fail;
    cli_phases_finish(&cs.phases);

    const ses_autoprec *a = cs.s->cur.autoprec;
    const ql_qnet *q = cs.s->cur.model->q;
    printf("before: %s %.6g\n", a->target.metric, ql_target_value(&a->target, &a->r.before));
    for (int i = 0; i < a->r.n_steps; i++) {
        const ql_autoprec_step *p = &a->r.steps[i];
        printf("step %d: %-32s %s -> %-5s %s %.6g\n", i + 1, q->layers[p->layer].name,
               ql_prec_name(p->from), ql_prec_name(p->to), a->target.metric,
               ql_target_value(&a->target, &p->after));
    }
    fflush(stdout);
    fprintf(stderr, "qlens autoprec: target %s %s after %d step%s -> %s\n", target_s,
            a->r.met ? "met" : "NOT met", a->r.n_steps, a->r.n_steps == 1 ? "" : "s", out);
    rc = a->r.met ? 0 : 3;
    goto done;
fail:
    rc = cli_fail_rc(st);
done:
    cli_session_close(&cs);
    return rc;
}
