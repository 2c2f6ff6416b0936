/* The command language without a model: splitting lines (quotes, escapes,
 * comments, variables) with exact error messages, canonical quoting that
 * splits back to the same words, the journal and atomic files, and running
 * script files with "FILE:LINE: reason" errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "src/command.h"
#include "src/journal.h"
#include "engine/outfile.h"
#include "src/script.h"
#include "src/session.h"

/* Splits line and checks the words (NULL-terminated list). */
static void check_split(const char *line, const script_vars *v, ...)
{
    int argc;
    char **argv;
    ql_error err = {{0}};
    if (script_split(line, v, &argc, &argv, &err) != QL_OK)
        fail_msg("split(%s): %s", line, err.msg);
    va_list ap;
    va_start(ap, v);
    int i = 0;
    for (const char *w; (w = va_arg(ap, const char *)); i++) {
        if (i >= argc)
            fail_msg("split(%s): %d words, expected more ('%s')", line, argc, w);
        if (strcmp(argv[i], w) != 0)
            fail_msg("split(%s): word %d is [%s], expected [%s]", line, i, argv[i], w);
    }
    va_end(ap);
    assert_int_equal(argc, i);
    assert_null(argv[argc]);
    script_argv_free(argv);
}

static void check_split_error(const char *line, const script_vars *v, const char *msg)
{
    int argc;
    char **argv;
    ql_error err = {{0}};
    if (script_split(line, v, &argc, &argv, &err) == QL_OK)
        fail_msg("split(%s) succeeded, expected: %s", line, msg);
    assert_string_equal(err.msg, msg);
}

static void test_split_words(void **state)
{
    (void)state;
    check_split("", NULL, NULL);
    check_split("   \t  ", NULL, NULL);
    check_split("# a comment", NULL, NULL);
    check_split("  load model.onnx  # trailing comment", NULL, "load", "model.onnx", NULL);
    check_split("set layer a#b precision int8", NULL, "set", "layer", "a#b", "precision", "int8",
                NULL);
    check_split("echo 'two words' \"and three here\"", NULL, "echo", "two words",
                "and three here", NULL);
    check_split("echo '' \"\"", NULL, "echo", "", "", NULL);
    check_split("echo 'it'\\''s'", NULL, "echo", "it's", NULL);
    check_split("echo a\\ b c\\#d \\'", NULL, "echo", "a b", "c#d", "'", NULL);
    check_split("echo \"q\\\"x\\\\y\\$z\\n\"", NULL, "echo", "q\"x\\y$z\\n", NULL);
    check_split("echo '$X \\ \"'", NULL, "echo", "$X \\ \"", NULL);
    check_split("echo x\r\n", NULL, "echo", "x", NULL);
}

static void test_split_variables(void **state)
{
    (void)state;
    script_vars v = {0};
    ql_error err = {{0}};
    assert_int_equal(script_vars_set(&v, "DIR", "/data/my models", &err), QL_OK);
    assert_int_equal(script_vars_set_arg(&v, "N=100", &err), QL_OK);
    assert_int_equal(script_vars_set_arg(&v, "EMPTY=", &err), QL_OK);
    assert_int_equal(script_vars_set_arg(&v, "N=200", &err), QL_OK); /* replaces */
    assert_string_equal(script_vars_get(&v, "N"), "200");
    /* a value with blanks stays one word */
    check_split("load ${DIR}/m.onnx", &v, "load", "/data/my models/m.onnx", NULL);
    check_split("limit ${N}0 \"${N}\" '${N}'", &v, "limit", "2000", "200", "${N}", NULL);
    check_split("x ${EMPTY} y", &v, "x", "", "y", NULL);
    check_split("out ${OUT:-/tmp/q} ${N:-9}", &v, "out", "/tmp/q", "200", NULL);
    check_split("echo \\${N}", &v, "echo", "${N}", NULL);
    check_split_error("load ${MISSING}/m.onnx", &v,
                      "undefined variable 'MISSING' (set it with --var MISSING=VALUE)");
    check_split_error("echo $N", &v,
                      "'$' must start a variable reference ${NAME} (write \\$ for a dollar)");
    check_split_error("echo ${N", &v, "unterminated variable reference '${N'");
    check_split_error("echo ${1X}", &v, "'1X' is not a variable name");
    check_split_error("echo ${}", &v, "'' is not a variable name");
    check_split_error("echo ${N}", NULL,
                      "undefined variable 'N' (set it with --var N=VALUE)");
    assert_int_equal(script_vars_set_arg(&v, "noequals", &err), QL_ERR_ARG);
    assert_string_equal(err.msg, "'noequals' is not NAME=VALUE");
    assert_int_equal(script_vars_set_arg(&v, "9X=1", &err), QL_ERR_ARG);
    assert_string_equal(err.msg, "'9X' is not a variable name (letters, digits and '_', not "
                                 "starting with a digit)");
    assert_int_equal(script_vars_set(&v, "a-b", "1", &err), QL_ERR_ARG);
    script_vars_clear(&v);
}

static void test_split_errors(void **state)
{
    (void)state;
    check_split_error("echo 'open", NULL, "unterminated ' quote");
    check_split_error("echo \"open", NULL, "unterminated \" quote");
    check_split_error("echo \"a\" 'b' \"c", NULL, "unterminated \" quote");
    check_split_error("echo end\\", NULL, "a backslash ends the line");
}

/* Canonical quoting: bare when safe, and always splits back to the word. */
static void test_quote_roundtrip(void **state)
{
    (void)state;
    static const char *const words[] = {
        "plain",    "/a/b-c_d.onnx", "percentile:p=99.9", "cosine>=0.999", "",
        "two words", "it's",        "say \"hi\"",         "$HOME",         "${X}",
        "back\\slash", "#hash",     "tab\there",          "mixed 'q' \"d\" $v \\", "é ü",
    };
    static const char *const bare[] = {"plain", "/a/b-c_d.onnx", "percentile:p=99.9"};
    char buf[256];
    for (size_t i = 0; i < sizeof bare / sizeof bare[0]; i++) {
        script_quote(bare[i], buf, sizeof buf);
        assert_string_equal(buf, bare[i]);
    }
    script_quote("two words", buf, sizeof buf);
    assert_string_equal(buf, "'two words'");
    script_quote("it's $x", buf, sizeof buf);
    assert_string_equal(buf, "\"it's \\$x\"");
    script_quote("", buf, sizeof buf);
    assert_string_equal(buf, "''");
    /* truncation reports the full length, like snprintf */
    assert_int_equal(script_quote("two words", buf, 4), 11);
    assert_string_equal(buf, "'tw");

    int n = (int)(sizeof words / sizeof words[0]);
    char *line = script_join(n, (char *const *)words);
    assert_non_null(line);
    int argc;
    char **argv;
    ql_error err = {{0}};
    assert_int_equal(script_split(line, NULL, &argc, &argv, &err), QL_OK);
    assert_int_equal(argc, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(argv[i], words[i]);
    script_argv_free(argv);
    free(line);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_journal_and_outfile(void **state)
{
    (void)state;
    char dir[] = "/tmp/qlens-test-script-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[512];
    snprintf(path, sizeof path, "%s/j.qls", dir);
    journal j = {0};
    ql_error err = {{0}};
    for (int i = 0; i < 5; i++) {
        char line[32];
        snprintf(line, sizeof line, "echo %d", i);
        assert_int_equal(journal_append(&j, line, &err), QL_OK);
    }
    char **cut;
    int n_cut;
    journal_cut(&j, 3, &cut, &n_cut);
    assert_int_equal(j.n, 3);
    assert_int_equal(n_cut, 2);
    assert_string_equal(cut[0], "echo 3");
    assert_int_equal(journal_paste(&j, cut, n_cut, &err), QL_OK);
    journal_cut(&j, 9, &cut, &n_cut); /* nothing to cut */
    assert_null(cut);
    assert_int_equal(n_cut, 0);
    assert_int_equal(journal_save(&j, path, &err), QL_OK);
    char *text = read_all(path);
    assert_string_equal(text, "# qlens script (qlens-script(5)), saved from a session's journal\n"
                              "echo 0\necho 1\necho 2\necho 3\necho 4\n");
    free(text);
    journal_clear(&j);

    /* an aborted file leaves the old one and no temporary behind */
    ql_outfile o;
    assert_int_equal(ql_outfile_open(&o, path, &err), QL_OK);
    fputs("half", o.f);
    ql_outfile_abort(&o);
    assert_int_equal(count_entries(dir), 1);
    text = read_all(path);
    assert_true(strncmp(text, "# qlens script", 14) == 0);
    free(text);
    /* a folder that does not exist */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.csv", dir);
    assert_int_equal(ql_outfile_open(&o, bad, &err), QL_ERR_IO);
    assert_true(strncmp(err.msg, bad, strlen(bad)) == 0);
    unlink(path);
    rmdir(dir);
}

/* Running files and lines on a session with no model. */
static void test_run_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/qlens-test-script-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[512], out_path[512];
    snprintf(path, sizeof path, "%s/t.qls", dir);
    snprintf(out_path, sizeof out_path, "%s/out.txt", dir);
    FILE *f = fopen(path, "w");
    fputs("# comment\n\necho hello \"${WHO}\"   # trailing\necho dir=${SCRIPT_DIR}\n"
          "echo 'a  b'\nfrobnicate now\necho never\n",
          f);
    fclose(f);
    FILE *out = fopen(out_path, "w+");
    session *s = NULL;
    ql_error err = {{0}};
    session_opts o = {.out = out};
    assert_int_equal(session_new(&o, &s, &err), QL_OK);
    assert_int_equal(session_set_var(s, "WHO", "big world", &err), QL_OK);
    assert_int_equal(script_run_file(s, path, &err), QL_ERR_ARG);
    char expect[1200];
    snprintf(expect, sizeof expect, "%s:6: unknown command 'frobnicate' (see 'help')", path);
    assert_string_equal(err.msg, expect);
    fflush(out);
    char *text = read_all(out_path);
    snprintf(expect, sizeof expect, "hello big world\ndir=%s\na  b\n", dir);
    assert_string_equal(text, expect);
    free(text);
    /* the journal has the expanded lines in canonical form */
    assert_int_equal(s->j.n, 3);
    assert_string_equal(s->j.lines[0], "echo hello 'big world'");
    assert_string_equal(s->j.lines[2], "echo 'a  b'");
    session_free(s);
    fclose(out);

    /* a missing file */
    o.out = out = tmpfile();
    assert_int_equal(session_new(&o, &s, &err), QL_OK);
    snprintf(expect, sizeof expect, "%s/none.qls", dir);
    assert_int_equal(script_run_file(s, expect, &err), QL_ERR_IO);
    assert_true(strstr(err.msg, "none.qls: No such file or directory") != NULL);
    /* lines from a front end, numbered from 1 */
    const char *lines[] = {"echo one", "  ", "echo 'two", "echo three"};
    assert_int_equal(session_run_lines(s, lines, 4, "<prompt>", &err), QL_ERR_ARG);
    assert_string_equal(err.msg, "<prompt>:3: unterminated ' quote");
    session_free(s);
    fclose(out);
    unlink(out_path);
    unlink(path);
    rmdir(dir);
}

/* Commands that need no model: exact messages. */
static void exec_ok(session *s, const char *line)
{
    ql_error err = {{0}};
    if (session_exec(s, line, &err) != QL_OK)
        fail_msg("'%s' failed: %s", line, err.msg);
}

static void test_commands_without_model(void **state)
{
    (void)state;
    FILE *out = tmpfile();
    session *s = NULL;
    ql_error err = {{0}};
    session_opts o = {.out = out};
    assert_int_equal(session_new(&o, &s, &err), QL_OK);
    static const struct {
        const char *line, *msg;
    } cases[] = {
        {"frobnicate", "unknown command 'frobnicate' (see 'help')"},
        {"show", "show: expects one of: layers, layer, stats, config, eval, sensitivity, curve"},
        {"data", "data: expects one of: calib, eval"},
        {"export csv", "export csv: expects FILE"},
        {"export csv layers", "export csv layers: expects FILE"},
        {"load", "load: expects MODEL"},
        {"load a b", "load: expects MODEL"},
        {"undo", "undo: nothing to undo"},
        {"redo", "redo: nothing to redo"},
        {"undo now", "undo: takes no arguments"},
        {"show layers", "show layers: no model loaded (use 'load MODEL')"},
        {"data calib x.npy", "data calib: no model loaded (use 'load MODEL')"},
        {"calibrate", "calibrate: no model loaded (use 'load MODEL')"},
        {"eval", "eval: no model loaded (use 'load MODEL')"},
        {"set layer conv1 precision int8", "set: no model loaded (use 'load MODEL')"},
        {"set precision int9", "set: precision: 'int9' is not int8, int16 or float"},
        {"set precision", "set: expects [layer NAME] FIELD VALUE"},
        {"set colour blue", "set: unknown field 'colour' (expected precision, act-algo, "
                            "weight-algo, weight-bits, per-channel)"},
        {"set weight-bits 17", "set: weight-bits: '17' is not an integer in [2, 16]"},
        {"set weight-bits 8x", "set: weight-bits: '8x' is not an integer in [2, 16]"},
        {"set per-channel yes", "set: per-channel: 'yes' is not true or false"},
        {"reset layer", "reset: expects [layer NAME] [FIELD]"},
        {"reset colour", "reset: unknown field 'colour' (expected precision, act-algo, "
                         "weight-algo, weight-bits, per-channel)"},
        {"show eval", "show eval: no eval results (run 'eval' first)"},
        {"show sensitivity", "show sensitivity: no sensitivity table (run 'sensitivity' first)"},
        {"export csv s.csv", "export csv: no sensitivity table (run 'sensitivity' first)"},
        {"show curve", "show curve: no cumulative curve (run 'curve' first)"},
        {"export csv curve c.csv", "export csv curve: no cumulative curve (run 'curve' first)"},
        {"curve", "curve: no model loaded (use 'load MODEL')"},
        {"help frob", "help: no command named 'frob' (see 'help')"},
        {"autoprec", "autoprec: expects TARGET [prefer int16|float] [march M]"},
        {"sensitivity mode", "sensitivity: 'mode' needs a value"},
        {"sensitivity limit 5 limit 6", "sensitivity: 'limit' given twice"},
        {"sensitivity depth 3", "sensitivity: unknown option 'depth' (expected mode, metric, "
                                "limit, layer, cache-mb, brute-force, keep-partial)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&err, 0, sizeof err);
        if (session_exec(s, cases[i].line, &err) == QL_OK)
            fail_msg("'%s' succeeded", cases[i].line);
        if (strcmp(err.msg, cases[i].msg) != 0)
            fail_msg("'%s':\n  got      %s\n  expected %s", cases[i].line, err.msg,
                     cases[i].msg);
    }
    /* nothing failing reached the journal or the undo stack */
    assert_int_equal(s->j.n, 0);
    assert_int_equal(s->n_undo, 0);
    /* settings before a model: allowed, undoable, journaled */
    exec_ok(s, "set precision int16");
    exec_ok(s, "set act-algo percentile:p=99.90");
    assert_int_equal(s->cur.cfg->defaults.precision, QL_PREC_INT16);
    assert_string_equal(s->cur.cfg->defaults.act_algo, "percentile:p=99.9");
    assert_string_equal(s->j.lines[1], "set act-algo percentile:p=99.9");
    assert_int_equal(session_exec(s, "set act-algo nosuch", &err), QL_ERR_ARG);
    assert_true(strncmp(err.msg, "set: act-algo: ", 15) == 0);
    assert_string_equal(s->cur.cfg->defaults.act_algo, "percentile:p=99.9");
    exec_ok(s, "undo");
    exec_ok(s, "undo");
    assert_int_equal(s->cur.cfg->defaults.precision, QL_PREC_INT8);
    assert_string_equal(s->cur.cfg->defaults.act_algo, "kl");
    assert_int_equal(s->j.n, 0);
    exec_ok(s, "redo");
    assert_int_equal(s->cur.cfg->defaults.precision, QL_PREC_INT16);
    assert_int_equal(s->j.n, 1);
    exec_ok(s, "reset");
    assert_int_equal(s->cur.cfg->defaults.precision, QL_PREC_INT8);
    assert_int_equal(session_exec(s, "redo", &err), QL_ERR_ARG); /* a change forgets redo */
    assert_string_equal(err.msg, "redo: nothing to redo");
    session_free(s);
    fclose(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_words),
        cmocka_unit_test(test_split_variables),
        cmocka_unit_test(test_split_errors),
        cmocka_unit_test(test_quote_roundtrip),
        cmocka_unit_test(test_journal_and_outfile),
        cmocka_unit_test(test_run_file),
        cmocka_unit_test(test_commands_without_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
