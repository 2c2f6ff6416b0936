/* `qlens autoprec`: the session lines `load`, `load config`, `data eval`,
 * `load stats` (or statistics collected on the data), `autoprec` and
 * `save config`; every raise tried and the layers kept are printed from the
 * session's result. Exit status 2 for bad options (an impossible target
 * too), 3 when the target is not met. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"

static void autoprec_usage(FILE *f)
{
    fprintf(f,
            "Usage: qlens autoprec MODEL.onnx --data D --config C --target METRIC>=VALUE\n"
            "                      -o NEW.json [--labels L] [--prefer int16|float]\n"
            "                      [--march M] [--stats S] [--limit N] [--threads T]\n"
            "                      [--batch B]\n\n"
            "Ranks the layers by what raising each alone does to the model (all-but\n"
            "sensitivity), raises them one at a time, keeping a raise only when it\n"
            "improves the metric, until the target holds; then lowers again the raises\n"
            "the target does not need. Targets: cosine, sqnr_db, top1_agree, top1\n"
            "(fractions) with >=; mse, max_abs and top1_drop (percentage points, needs\n"
            "--labels) with <=.\n\n"
            "  -d, --data D        samples (.npy folder, batched .npy, IDX)\n"
            "  -c, --config C      quant config from 'qlens calibrate'\n"
            "  -T, --target T      e.g. cosine>=0.999 or top1_drop<=0.2\n"
            "  -o, --output FILE   the new config\n"
            "  -l, --labels L      labels (top1 and top1_drop targets)\n"
            "      --prefer P      raise int8 layers to int16 (default) or float\n"
            "      --march M       weigh gains by cost on M (nash-b-lite, nash-b,\n"
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
            if (!ql_autoprec_march(optarg)) {
                cli_error("autoprec", "option --march: unknown march '%s' (expected " QL_MARCH_NAMES
                          ")", optarg);
                return 2;
            }
            march = optarg;
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
        cli_error("autoprec", "option --%s", err.msg); /* "target ...: why" */
        return 2;
    }
    if ((!strcmp(target.metric, "top1") || !strcmp(target.metric, "top1_drop")) && !labels_path) {
        cli_error("autoprec", "target %s needs --labels", target.metric);
        return 2;
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
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (lines[i]->n && (st = cli_exec(&cs, lines[i], false)) != QL_OK)
            goto fail;
        /* settings alone are a valid config but nothing to start from: say
         * which file, as for the config's other problems */
        if (lines[i] == &cl && cs.s->cur.cfg->n_tensors == 0) {
            cli_error("autoprec", "%s: tensors: the config has no encodings (make them with "
                                  "'qlens calibrate')", config);
            goto done;
        }
    }
    cli_phases_finish(&cs.phases);

    const ses_autoprec *a = cs.s->cur.autoprec;
    report_autoprec_detail(stdout, cs.s->cur.model->q, &a->target, &a->r, true);
    fflush(stdout);
    if (!a->r.met && a->r.int16_exhausted)
        fprintf(stderr,
                "qlens autoprec: int16 raises stopped helping at %s %.6g (they raise activation "
                "bits only; the rest of the error is in the weights' bits)\n",
                a->target.metric, a->r.int16_best);
    int n_layers = 0;
    for (int i = 0; i < a->r.n_steps; i++) {
        bool first = true;
        for (int j = 0; j < i; j++)
            first &= a->r.steps[j].layer != a->r.steps[i].layer;
        n_layers += first;
    }
    fprintf(stderr, "qlens autoprec: target %s %s with %d layer%s raised -> %s\n", target_s,
            a->r.met ? "met" : "NOT met", n_layers, n_layers == 1 ? "" : "s", out);
    rc = a->r.met ? 0 : 3;
    goto done;
fail:
    rc = cli_fail_rc(st);
done:
    cli_session_close(&cs);
    return rc;
}
