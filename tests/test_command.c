/* Every session command on the shipped Fashion-MNIST example: outputs,
 * exact error messages (unknown command, bad argument, missing file, wrong
 * layer name) with line numbers, undo/redo back to the original config byte
 * for byte, cancelled commands leaving the session unchanged, a journal
 * replayed headless giving identical files and metrics, and the manual's
 * command list held to the command table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "src/command.h"
#include "src/script.h"
#include "src/session.h"

typedef struct tctx {
    session *s;
    FILE *out;
    char dir[64];
} tctx;

static const char *srcdir(void)
{
    const char *d = getenv("QLENS_SRCDIR");
    return d ? d : ".";
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

static session *new_session(tctx *t, int threads, session_opts *extra)
{
    session_opts o = {.out = t->out, .n_threads = threads};
    if (extra) {
        o = *extra;
        o.out = t->out;
        o.n_threads = threads;
    }
    session *s = NULL;
    ql_error err = {{0}};
    if (session_new(&o, &s, &err) != QL_OK)
        fail_msg("session_new: %s", err.msg);
    char ex[1024];
    snprintf(ex, sizeof ex, "%s/examples/fmnist", srcdir());
    assert_int_equal(session_set_var(s, "EX", ex, &err), QL_OK);
    assert_int_equal(session_set_var(s, "OUT", t->dir, &err), QL_OK);
    return s;
}

/* Runs a line that must succeed; returns what it printed (malloc'd). */
static char *run(tctx *t, const char *line)
{
    ql_error err = {{0}};
    fflush(t->out);
    long at = ftell(t->out);
    if (session_exec(t->s, line, &err) != QL_OK)
        fail_msg("'%s' failed: %s", line, err.msg);
    fflush(t->out);
    long end = ftell(t->out);
    char *buf = calloc(1, (size_t)(end - at) + 1);
    fseek(t->out, at, SEEK_SET);
    size_t got = fread(buf, 1, (size_t)(end - at), t->out);
    buf[got] = '\0';
    fseek(t->out, 0, SEEK_END);
    return buf;
}

static void run_quiet(tctx *t, const char *line) { free(run(t, line)); }

/* Runs a line that must fail with exactly msg (or, if prefix, starting with it). */
static void run_fail(tctx *t, const char *line, const char *msg, bool prefix)
{
    ql_error err = {{0}};
    if (session_exec(t->s, line, &err) == QL_OK)
        fail_msg("'%s' succeeded, expected: %s", line, msg);
    if (prefix ? strncmp(err.msg, msg, strlen(msg)) != 0 : strcmp(err.msg, msg) != 0)
        fail_msg("'%s':\n  got      %s\n  expected %s%s", line, err.msg, msg,
                 prefix ? "..." : "");
}

static char *config_json(const session *s)
{
    ql_error err = {{0}};
    char *j = ql_qconfig_to_json(s->cur.cfg, &err);
    if (!j)
        fail_msg("to_json: %s", err.msg);
    return j;
}

static void base_setup(tctx *t)
{
    run_quiet(t, "load ${EX}/fmnist_resnet.onnx");
    run_quiet(t, "data calib ${EX}/calib.npy limit 64");
    run_quiet(t, "data eval ${EX}/eval.npy labels ${EX}/eval_labels.npy limit 100");
    run_quiet(t, "calibrate algo percentile");
}

static int setup(void **state)
{
    tctx *t = calloc(1, sizeof *t);
    strcpy(t->dir, "/tmp/qlens-test-command-XXXXXX");
    if (!mkdtemp(t->dir))
        return -1;
    t->out = tmpfile();
    t->s = new_session(t, 2, NULL);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tctx *t = *state;
    session_free(t->s);
    fclose(t->out);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    if (system(cmd) != 0)
        return -1;
    free(t);
    return 0;
}

/* ---------------------------------------------------------------------------
 * The table and the manual
 * ------------------------------------------------------------------------- */

/* Removes troff font escapes and turns \- into -. */
static void untroff(const char *in, char *out, size_t n)
{
    size_t k = 0;
    for (const char *p = in; *p && k + 1 < n; p++) {
        if (p[0] == '\\' && p[1] == 'f' && p[2]) {
            p += 2;
            continue;
        }
        if (p[0] == '\\' && p[1] == '-') {
            out[k++] = '-';
            p++;
            continue;
        }
        if (*p != '\n')
            out[k++] = *p;
    }
    out[k] = '\0';
}

static void test_table_and_manual(void **state)
{
    (void)state;
    /* names are unique and the look-up finds each row by its own words */
    for (int i = 0; i < command_count; i++) {
        const command_def *c = &command_table[i];
        char *line = strdup(c->name);
        char *argv[8];
        int argc = 0;
        for (char *w = strtok(line, " "); w; w = strtok(NULL, " "))
            argv[argc++] = w;
        int nw;
        assert_ptr_equal(command_lookup(argc, argv, &nw), c);
        assert_int_equal(nw, argc);
        free(line);
        for (int j = i + 1; j < command_count; j++)
            assert_string_not_equal(c->name, command_table[j].name);
    }
    /* the manual's COMMANDS section: a .TP tag per command, in table order */
    char path[1024];
    snprintf(path, sizeof path, "%s/man/qlens-script.5", srcdir());
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024], prev[1024] = "", text[1024];
    bool in_commands = false;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, ".SH", 3)) {
            in_commands = strstr(line, "COMMANDS") != NULL;
        } else if (in_commands && !strcmp(prev, ".TP\n") && line[0] != '.') {
            untroff(line, text, sizeof text);
            if (n >= command_count)
                fail_msg("the manual lists more commands than the table: %s", text);
            char want[512];
            const command_def *c = &command_table[n];
            snprintf(want, sizeof want, "%s%s%s", c->name, c->synopsis[0] ? " " : "",
                     c->synopsis);
            if (strcmp(text, want) != 0)
                fail_msg("manual entry %d is '%s', the table has '%s'", n + 1, text, want);
            n++;
        }
        snprintf(prev, sizeof prev, "%s", line);
    }
    fclose(f);
    assert_int_equal(n, command_count);
}

static void test_help(void **state)
{
    tctx *t = *state;
    char *all = run(t, "help");
    for (int i = 0; i < command_count; i++) {
        char want[512];
        snprintf(want, sizeof want, "%s%s%s\n", command_table[i].name,
                 command_table[i].synopsis[0] ? " " : "", command_table[i].synopsis);
        assert_non_null(strstr(all, want));
    }
    char *show = run(t, "help show");
    int rows = 0;
    for (const char *p = show; (p = strstr(p, "\nshow ")); p++)
        rows++;
    assert_int_equal(rows + (strncmp(show, "show ", 5) == 0), 7);
    char *one = run(t, "help show layer");
    assert_true(strncmp(one, "show layer NAME\n", 16) == 0);
    assert_null(strstr(one, "show layers"));
    run_fail(t, "help show nothing", "help: no command named 'show nothing' (see 'help')", false);
    assert_int_equal(t->s->j.n, 0); /* help is not journaled */
    free(all);
    free(show);
    free(one);
}

/* ---------------------------------------------------------------------------
 * Errors leave the session as it was
 * ------------------------------------------------------------------------- */

static void test_errors_with_model(void **state)
{
    tctx *t = *state;
    ql_error err = {{0}};
    base_setup(t);
    char *before = config_json(t->s);
    int journal_n = t->s->j.n, undo_n = t->s->n_undo;
    const ses_data *calib = t->s->cur.calib;
    static const struct {
        const char *line, *msg;
        bool prefix;
    } cases[] = {
        {"set layer nope precision int16", "set: no layer named 'nope' (see 'show layers')", false},
        {"reset layer nope", "reset: no layer named 'nope' (see 'show layers')", false},
        {"show layer nope", "show layer: no layer named 'nope' (see 'show layers')", false},
        {"show stats nope", "show stats: no layer or tensor named 'nope'", false},
        {"set layer /stem/stem.0/Conv precision int4",
         "set: precision: 'int4' is not int8, int16 or float", false},
        {"set layer /stem/stem.0/Conv act-algo nosuch", "set: act-algo: ", true},
        {"set layer /stem/stem.0/Conv weight-algo percentile", "set: weight-algo: ", true},
        {"load ${EX}/missing.onnx", "load: ", true},
        {"data calib ${EX}/missing.npy", "data calib: ", true},
        {"data eval ${EX}/eval.npy labels", "data eval: 'labels' needs a value", false},
        {"data eval ${EX}/eval.npy limit 0",
         "data eval: limit: '0' is not an integer in [1, 1099511627776]", false},
        {"data eval ${EX}/eval.npy labels ${EX}/eval_labels.npy limit 10 frames 3",
         "data eval: unknown option 'frames' (expected labels, limit)", false},
        {"calibrate algo nosuch", "calibrate: algo: ", true},
        {"calibrate act-bits 12", "calibrate: act-bits: '12' is not 8 or 16", false},
        {"calibrate weight-bits 1", "calibrate: weight-bits: '1' is not an integer in [2, 16]", false},
        {"calibrate per-tensor per-channel",
         "calibrate: per-tensor and per-channel exclude each other", false},
        {"sensitivity mode sideways",
         "sensitivity: mode: 'sideways' is not single, all-but, weights or activations", false},
        {"sensitivity metric speed", "sensitivity: metric: 'speed' is not cosine, mse, "
                                     "sqnr_db, max_abs, top1_agree, top1 or local_sqnr_db", false},
        {"autoprec cosine>=0.9 march nash-z",
         "autoprec: march: unknown march 'nash-z' (expected nash-b-lite, nash-b, nash-b-plus, "
         "nash-e, nash-m, nash-h or nash-p)", false},
        {"autoprec cosine>=0.9 prefer double", "autoprec: prefer: 'double' is not int16 or float", false},
        {"curve prefer double", "curve: prefer: 'double' is not int16 or float", false},
        {"curve steps 0", "curve: steps: '0' is not an integer in [1, 1048576]", false},
        {"autoprec speed>=3", "autoprec: ", true},
        {"load config ${EX}/missing.json", "load config: ", true},
        {"eval now", "eval: expects [float]", false},
        {"save config ${OUT}/no/such/dir/c.json", "save config: ", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_fail(t, cases[i].line, cases[i].msg, cases[i].prefix);
    /* a failed data load names the file */
    assert_int_equal(session_exec(t->s, "data calib ${EX}/missing.npy", &err), QL_ERR_IO);
    assert_non_null(strstr(err.msg, "missing.npy"));
    /* a config for another model is refused with its path */
    char path[600];
    snprintf(path, sizeof path, "%s/other.json", t->dir);
    FILE *f = fopen(path, "w");
    fputs("{\"qlens_config\": 1, \"model\": {\"file\": \"x.onnx\", "
          "\"fingerprint\": \"0123456789abcdef\"}}\n",
          f);
    fclose(f);
    run_fail(t, "load config ${OUT}/other.json", "load config: ", true);
    char *after = config_json(t->s);
    assert_string_equal(before, after);
    assert_int_equal(t->s->j.n, journal_n);
    assert_int_equal(t->s->n_undo, undo_n);
    assert_ptr_equal(t->s->cur.calib, calib);

    /* in a script: the file and line */
    snprintf(path, sizeof path, "%s/bad.qls", t->dir);
    f = fopen(path, "w");
    fputs("# set up\nshow config\nset layer /layer9/Conv precision int16\necho never\n", f);
    fclose(f);
    assert_int_equal(script_run_file(t->s, path, &err), QL_ERR_ARG);
    char want[1200];
    snprintf(want, sizeof want, "%s:3: set: no layer named '/layer9/Conv' (see 'show layers')",
             path);
    assert_string_equal(err.msg, want);
    free(before);
    free(after);
}

/* ---------------------------------------------------------------------------
 * Every command's effect and output
 * ------------------------------------------------------------------------- */

static void test_commands(void **state)
{
    tctx *t = *state;
    char *o;
    o = run(t, "load ${EX}/fmnist_resnet.onnx");
    assert_non_null(strstr(o, ": 26 nodes, 17 layers (10 weighted)\n"));
    free(o);
    o = run(t, "data calib ${EX}/calib.npy limit 64");
    assert_string_equal(o, "calib: 64 samples\n");
    free(o);
    o = run(t, "data eval ${EX}/eval.npy labels ${EX}/eval_labels.npy limit 100");
    assert_string_equal(o, "eval: 100 samples with labels\n");
    free(o);
    run_fail(t, "eval", "eval: the config has no encodings (run 'calibrate' first)", false);
    o = run(t, "calibrate algo percentile:p=99.900 weight-bits 8 per-channel");
    assert_string_equal(o, "calibrate: 64 samples, 37 encodings (act percentile:p=99.9 int8, "
                           "weights minmax 8-bit per-channel)\n");
    free(o);
    /* the journal holds the canonical algorithm */
    assert_string_equal(t->s->j.lines[t->s->j.n - 1],
                        "calibrate algo percentile:p=99.9 weight-bits 8 per-channel");
    const ses_stats *stats = t->s->cur.stats;
    run_quiet(t, "calibrate algo mse"); /* same data: statistics are reused */
    assert_ptr_equal(t->s->cur.stats, stats);
    run_quiet(t, "calibrate algo percentile");

    o = run(t, "show layers");
    assert_true(strncmp(o, "  #  layer", 10) == 0);
    assert_non_null(strstr(o, "/layer3/short/short.0/Conv"));
    free(o);
    run_quiet(t, "set layer /stem/stem.0/Conv precision int16");
    o = run(t, "show layers");
    assert_non_null(strstr(o, "/stem/stem.0/Conv           Conv               int16*"));
    free(o);
    o = run(t, "show layer /stem/stem.0/Conv");
    assert_non_null(strstr(o, "precision:    int16*\n"));
    assert_non_null(strstr(o, "output:       /stem/stem.2/Relu_output_0: 16-bit"));
    free(o);
    o = run(t, "show stats");
    assert_non_null(strstr(o, "statistics of "));
    assert_non_null(strstr(o, " tensors over 64 samples\n"));
    free(o);
    o = run(t, "show stats /stem/stem.0/Conv");
    assert_non_null(strstr(o, "tensor:       /stem/stem.2/Relu_output_0\n"));
    assert_non_null(strstr(o, "clip ranges at 16 bits (default parameters):\n"));
    assert_non_null(strstr(o, "  percentile   [0, "));
    free(o);
    o = run(t, "show config");
    assert_string_equal(o, "defaults:     precision int8, act-algo percentile, weight-algo "
                           "minmax, weight-bits 8, per-channel true\n"
                           "layer /stem/stem.0/Conv: precision int16\n"
                           "encodings:    37 tensors, from 64 calibration samples\n");
    free(o);

    char *ev = run(t, "eval");
    assert_true(strncmp(ev, "samples:      100\ntop-1 float:  ", 32) == 0);
    assert_non_null(strstr(ev, "cosine:       0.99"));
    o = run(t, "show eval");
    assert_string_equal(o, ev);
    free(o);
    run_quiet(t, "set layer /layer1/c1/Conv act-algo mse");
    o = run(t, "show eval");
    assert_non_null(strstr(o, "note: the config has changed since (run 'eval' again)\n"));
    free(o);
    free(ev);

    o = run(t, "sensitivity limit 10 metric sqnr_db");
    assert_true(strncmp(o, "sensitivity: mode single, 10 samples, worst first by sqnr_db\n",
                        61) == 0);
    const char *worst = script_vars_get(&t->s->vars, "SENS_WORST");
    assert_non_null(worst);
    assert_string_equal(worst, t->s->cur.sens->t->rows[0].name);
    char *shown = run(t, "show sensitivity");
    assert_string_equal(shown, o);
    free(shown);
    free(o);
    run_quiet(t, "export csv ${OUT}/sens.csv");
    run_quiet(t, "export csv layers ${OUT}/layers.csv");
    char path[600];
    snprintf(path, sizeof path, "%s/sens.csv", t->dir);
    char *csv = read_file(path);
    static const char sens_header[] = "layer,op,precision,cosine,mse,sqnr_db,max_abs,"
                                      "top1_agree,top1,local_sqnr_db,weight_share,done\n";
    assert_true(strncmp(csv, sens_header, strlen(sens_header)) == 0);
    free(csv);
    snprintf(path, sizeof path, "%s/layers.csv", t->dir);
    csv = read_file(path);
    int lines = 0;
    for (const char *p = csv; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 1 + 17);
    assert_non_null(strstr(csv, "\n\"/stem/stem.0/Conv\",\"Conv\",int16,\"percentile\","
                                "\"minmax\",8,true,\"precision\",112896,16,"));
    assert_non_null(strstr(csv, "\n\"/layer1/c1/Conv\",\"Conv\",int8,\"mse\",\"minmax\",8,"
                                "true,\"act_algo\","));
    free(csv);

    /* reset one field of one layer, then the whole override */
    run_quiet(t, "set layer /layer1/c1/Conv weight-bits 6");
    run_quiet(t, "reset layer /layer1/c1/Conv act-algo");
    ql_qsettings set = ql_qconfig_layer_settings(t->s->cur.cfg, "/layer1/c1/Conv");
    assert_string_equal(set.act_algo, "percentile");
    assert_int_equal(set.weight_bits, 6);
    run_quiet(t, "reset layer /layer1/c1/Conv");
    set = ql_qconfig_layer_settings(t->s->cur.cfg, "/layer1/c1/Conv");
    assert_int_equal(set.weight_bits, 8);

    /* save and load a config: the same bytes */
    char *json = config_json(t->s);
    run_quiet(t, "save config ${OUT}/c.json");
    run_quiet(t, "set precision int16");
    run_quiet(t, "load config ${OUT}/c.json");
    char *json2 = config_json(t->s);
    assert_string_equal(json, json2);
    free(json);
    free(json2);

    o = run(t, "echo a   'b  c' ${OUT:-x}");
    char want[200];
    snprintf(want, sizeof want, "a b  c %s\n", t->dir);
    assert_string_equal(o, want);
    free(o);

    /* autoprec: every raised layer becomes an override with a reason (on
     * few samples: a demanding target raises many layers) */
    run_quiet(t, "data eval ${EX}/eval.npy limit 30");
    o = run(t, "autoprec cosine>=0.99999 prefer float");
    assert_true(strncmp(o, "autoprec: target cosine>=0.99999; before: cosine 0.99", 52) == 0);
    int steps = 0;
    for (const char *p = o; (p = strstr(p, "\nstep ")); p++)
        steps++;
    assert_non_null(strstr(o, "autoprec: target met after "));
    int reasons = 0;
    for (int i = 0; i < t->s->cur.cfg->n_layers; i++)
        reasons += t->s->cur.cfg->layers[i].reason != NULL;
    assert_int_equal(reasons, steps);
    assert_true(steps >= 1);
    printf("  autoprec raised %d layer(s):\n%s", steps, o);
    free(o);
}

/* ---------------------------------------------------------------------------
 * Undo and redo
 * ------------------------------------------------------------------------- */

static void test_undo_redo(void **state)
{
    tctx *t = *state;
    base_setup(t);
    run_quiet(t, "eval");
    static const char *const changes[] = {
        "set layer /stem/stem.0/Conv precision int16",
        "set layer /layer1/c1/Conv act-algo mse",
        "set weight-bits 6",
        "set layer /layer2/c2/Conv per-channel false",
        "set layer /fc/Gemm precision float",
        "data eval ${EX}/eval.npy limit 50",
        "set act-algo minmax",
        "eval",
        "reset layer /stem/stem.0/Conv",
        "calibrate algo mse weight-bits 7",
    };
    enum { N = sizeof changes / sizeof changes[0] };
    char *json[N + 1];
    const ses_data *eval_data[N + 1];
    ql_metrics metrics[N + 1];
    json[0] = config_json(t->s);
    eval_data[0] = t->s->cur.eval;
    metrics[0] = t->s->cur.last_eval.m;
    int journal0 = t->s->j.n;
    for (int i = 0; i < N; i++) {
        run_quiet(t, changes[i]);
        run_quiet(t, "show config"); /* journaled, changes nothing */
        json[i + 1] = config_json(t->s);
        eval_data[i + 1] = t->s->cur.eval;
        metrics[i + 1] = t->s->cur.last_eval.m;
        if (i > 0 && i != 5 && i != 7)
            assert_string_not_equal(json[i + 1], json[i]);
    }
    for (int i = N; i > 0; i--) {
        run_quiet(t, "undo");
        char *j = config_json(t->s);
        assert_string_equal(j, json[i - 1]);
        free(j);
        assert_ptr_equal(t->s->cur.eval, eval_data[i - 1]);
        assert_memory_equal(&t->s->cur.last_eval.m, &metrics[i - 1], sizeof(ql_metrics));
    }
    assert_int_equal(t->s->j.n, journal0);
    /* and on through eval, calibrate, data and load: back to a new session */
    assert_int_equal(t->s->n_undo, 5);
    for (int i = 0; i < 5; i++)
        run_quiet(t, "undo");
    run_fail(t, "undo", "undo: nothing to undo", false);
    assert_null(t->s->cur.model);
    assert_null(t->s->cur.calib);
    assert_null(t->s->cur.stats);
    assert_false(t->s->cur.last_eval.valid);
    assert_int_equal(t->s->j.n, 0);
    ql_qconfig *fresh = ql_qconfig_new();
    ql_error err = {{0}};
    char *fresh_json = ql_qconfig_to_json(fresh, &err), *j0 = config_json(t->s);
    assert_string_equal(j0, fresh_json);
    free(j0);
    free(fresh_json);
    ql_qconfig_free(fresh);
    for (int i = 0; i < 5; i++)
        run_quiet(t, "redo");
    j0 = config_json(t->s);
    assert_string_equal(j0, json[0]);
    free(j0);
    assert_int_equal(t->s->j.n, journal0);
    for (int i = 1; i <= N; i++) {
        run_quiet(t, "redo");
        char *j = config_json(t->s);
        assert_string_equal(j, json[i]);
        free(j);
    }
    assert_int_equal(t->s->j.n, journal0 + 2 * N);
    run_fail(t, "redo", "redo: nothing to redo", false);
    /* the journal after undo, a new change and save is what leads here */
    run_quiet(t, "undo");
    run_quiet(t, "undo");
    run_quiet(t, "set layer /layer3/c2/Conv precision int16");
    run_fail(t, "redo", "redo: nothing to redo", false);
    assert_string_equal(t->s->j.lines[t->s->j.n - 1],
                        "set layer /layer3/c2/Conv precision int16");
    assert_string_equal(t->s->j.lines[t->s->j.n - 3], "eval");
    assert_string_equal(t->s->j.lines[t->s->j.n - 5], "set act-algo minmax");
    for (int i = 0; i <= N; i++)
        free(json[i]);
}

/* ---------------------------------------------------------------------------
 * Cancel
 * ------------------------------------------------------------------------- */

typedef struct cancel_ctx {
    volatile int flag;
    int calls, after;
    char phases[256];
} cancel_ctx;

static bool cancel_progress(void *user, const char *phase, int64_t done, int64_t total)
{
    cancel_ctx *c = user;
    (void)done;
    (void)total;
    if (!strstr(c->phases, phase) && strlen(c->phases) + strlen(phase) + 2 < sizeof c->phases) {
        strcat(c->phases, phase);
        strcat(c->phases, " ");
    }
    if (++c->calls >= c->after)
        c->flag = 1;
    return true;
}

static void check_cancelled(tctx *t, cancel_ctx *c, const char *line)
{
    char *before = config_json(t->s);
    int journal_n = t->s->j.n, undo_n = t->s->n_undo;
    session_state cur = t->s->cur;
    c->flag = 0;
    c->calls = 0;
    c->after = 1;
    ql_error err = {{0}};
    ql_status st = session_exec(t->s, line, &err);
    if (st != QL_ERR_CANCELLED)
        fail_msg("'%s': status %d (%s), expected cancelled", line, st, err.msg);
    char *after = config_json(t->s);
    assert_string_equal(after, before);
    /* the same objects and results as before */
    assert_ptr_equal(t->s->cur.model, cur.model);
    assert_ptr_equal(t->s->cur.calib, cur.calib);
    assert_ptr_equal(t->s->cur.eval, cur.eval);
    assert_ptr_equal(t->s->cur.stats, cur.stats);
    assert_ptr_equal(t->s->cur.sens, cur.sens);
    assert_int_equal(t->s->cur.cfg_gen, cur.cfg_gen);
    assert_memory_equal(&t->s->cur.last_eval, &cur.last_eval, sizeof cur.last_eval);
    assert_int_equal(t->s->j.n, journal_n);
    assert_int_equal(t->s->n_undo, undo_n);
    c->flag = 0;
    c->after = 1 << 30;
    free(before);
    free(after);
}

static void test_cancel(void **state)
{
    tctx *t = *state;
    cancel_ctx c = {.after = 1 << 30};
    session_opts o = {.progress = cancel_progress, .progress_user = &c, .cancel = &c.flag};
    session_free(t->s);
    t->s = new_session(t, 2, &o);
    base_setup(t);
    run_quiet(t, "set layer /stem/stem.0/Conv precision int16");
    run_quiet(t, "eval");
    run_quiet(t, "sensitivity limit 10");
    check_cancelled(t, &c, "eval");
    check_cancelled(t, &c, "sensitivity limit 20");
    check_cancelled(t, &c, "curve steps 4");
    /* keep-partial: the steps measured before the cancel become the curve */
    c.flag = 0;
    c.calls = 0;
    c.after = 3; /* progress before steps 1, 2 and 3: cancelled during step 3 */
    run_quiet(t, "curve steps 4 keep-partial");
    assert_non_null(t->s->cur.curve);
    assert_true(t->s->cur.curve->c->partial);
    assert_int_equal(t->s->cur.curve->c->n_total, 4);
    assert_true(t->s->cur.curve->c->n < 4);
    c.flag = 0;
    c.after = 1 << 30;
    check_cancelled(t, &c, "calibrate algo mse weight-bits 6"); /* statistics kept */
    run_quiet(t, "data calib ${EX}/calib.npy limit 96"); /* new data: statistics dropped */
    check_cancelled(t, &c, "calibrate algo mse");
    assert_null(t->s->cur.stats);
    printf("  progress phases seen: %s\n", c.phases);
    assert_non_null(strstr(c.phases, "statistics"));
    assert_non_null(strstr(c.phases, "eval"));
    assert_non_null(strstr(c.phases, "sensitivity"));
    assert_non_null(strstr(c.phases, "curve"));
    run_quiet(t, "calibrate algo mse");
    assert_non_null(t->s->cur.stats);
}

/* ---------------------------------------------------------------------------
 * Speed of re-encoding
 * ------------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void test_set_is_fast(void **state)
{
    tctx *t = *state;
    run_quiet(t, "load ${EX}/fmnist_resnet.onnx");
    run_quiet(t, "data calib ${EX}/calib.npy limit 64");
    run_quiet(t, "calibrate"); /* kl: the slowest activation algorithm */
    static const char *const algos[] = {"mse", "percentile", "minmax", "kl"};
    double worst = 0, total = 0;
    for (int i = 0; i < 8; i++) {
        char line[128];
        snprintf(line, sizeof line, "set layer /layer2/c1/Conv act-algo %s", algos[i % 4]);
        double t0 = now();
        run_quiet(t, line);
        double dt = now() - t0;
        total += dt;
        worst = dt > worst ? dt : worst;
    }
    printf("  set layer act-algo: mean %.2f ms, worst %.2f ms (17 activation sites)\n",
           total / 8 * 1e3, worst * 1e3);
    /* a loose bound (sanitizer builds are slow); the point is no data pass,
     * which alone takes far longer than this */
    assert_true(worst < 1.0);
}

/* ---------------------------------------------------------------------------
 * Replay
 * ------------------------------------------------------------------------- */

static void test_replay(void **state)
{
    tctx *t = *state;
    base_setup(t);
    run_quiet(t, "set layer /stem/stem.0/Conv act-algo 'percentile:p=99.9'");
    run_quiet(t, "set layer /layer1/c2/Conv weight-bits 6");
    run_quiet(t, "set layer /layer2/c1/Conv precision float");
    run_quiet(t, "undo");
    run_quiet(t, "set layer /layer2/c1/Conv precision int16");
    run_quiet(t, "eval");
    run_quiet(t, "sensitivity limit 20 mode all-but");
    run_quiet(t, "curve prefer int16 steps 3");
    run_quiet(t, "set layer ${SENS_WORST} precision int16");
    run_quiet(t, "eval");
    run_quiet(t, "save config ${OUT}/r.json");
    run_quiet(t, "export csv ${OUT}/r.csv");
    run_quiet(t, "export csv layers ${OUT}/rl.csv");
    run_quiet(t, "export csv curve ${OUT}/rc.csv");
    run_quiet(t, "save script ${OUT}/r.qls");
    ql_metrics m0 = t->s->cur.last_eval.m;
    char *cfg0 = config_json(t->s);
    char p_json[600], p_csv[600], p_lcsv[600], p_qls[600], p_ccsv[600];
    snprintf(p_json, sizeof p_json, "%s/r.json", t->dir);
    snprintf(p_csv, sizeof p_csv, "%s/r.csv", t->dir);
    snprintf(p_lcsv, sizeof p_lcsv, "%s/rl.csv", t->dir);
    snprintf(p_qls, sizeof p_qls, "%s/r.qls", t->dir);
    snprintf(p_ccsv, sizeof p_ccsv, "%s/rc.csv", t->dir);
    char *json0 = read_file(p_json), *csv0 = read_file(p_csv), *lcsv0 = read_file(p_lcsv);
    char *ccsv0 = read_file(p_ccsv);
    char *script = read_file(p_qls);
    /* the curve: the config, then three steps */
    int curve_lines = 0;
    for (const char *p = ccsv0; *p; p++)
        curve_lines += *p == '\n';
    assert_int_equal(curve_lines, 1 + 1 + 3);
    assert_true(strncmp(ccsv0, "step,layer,op,from,to,cosine,", 29) == 0);
    assert_non_null(strstr(script, "\nset layer /stem/stem.0/Conv act-algo percentile:p=99.9\n"));
    assert_null(strstr(script, "precision float")); /* undone */
    assert_null(strstr(script, "${"));               /* expanded */
    printf("  saved script:\n%s", script);

    /* run it headless twice (1 and 2 threads) */
    for (int k = 0; k < 2; k++) {
        unlink(p_json);
        unlink(p_csv);
        unlink(p_lcsv);
        unlink(p_ccsv);
        session *s = new_session(t, k + 1, NULL);
        ql_error err = {{0}};
        if (script_run_file(s, p_qls, &err) != QL_OK)
            fail_msg("replay: %s", err.msg);
        char *json = read_file(p_json), *csv = read_file(p_csv), *lcsv = read_file(p_lcsv);
        assert_non_null(json);
        assert_string_equal(json, json0);
        assert_string_equal(csv, csv0);
        assert_string_equal(lcsv, lcsv0);
        char *ccsv = read_file(p_ccsv);
        assert_non_null(ccsv);
        assert_string_equal(ccsv, ccsv0);
        free(ccsv);
        char *cfg = config_json(s);
        assert_string_equal(cfg, cfg0);
        const ql_metrics *m = &s->cur.last_eval.m;
        assert_true(s->cur.last_eval.valid);
        assert_int_equal(m->n, m0.n);
        assert_int_equal(m->agree, m0.agree);
        assert_int_equal(m->correct_q, m0.correct_q);
        assert_int_equal(m->correct_ref, m0.correct_ref);
        assert_true(m->cos_sum == m0.cos_sum && m->sig == m0.sig && m->noise == m0.noise &&
                    m->max_abs == m0.max_abs);
        /* its own journal is the same script */
        assert_int_equal(s->j.n, t->s->j.n);
        for (int i = 0; i < s->j.n; i++)
            assert_string_equal(s->j.lines[i], t->s->j.lines[i]);
        free(json);
        free(csv);
        free(lcsv);
        free(cfg);
        session_free(s);
    }
    free(json0);
    free(csv0);
    free(lcsv0);
    free(ccsv0);
    free(script);
    free(cfg0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_table_and_manual, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_with_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undo_redo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_is_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
