/* Unit tests: the quant config document. Editing and overlays, the exact
 * JSON text written, byte-identical save -> load -> save, every class of
 * load error with its exact message, atomic saving, and the check of a
 * config's encodings against a model (the shipped example). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/onnx.h"
#include "engine/qconfig.h"
#include "engine/qnet.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/qlens-qconfig-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 22);
    size_t n = fread(buf, 1, (1 << 22) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_temps(void)
{
    int n = 0;
    DIR *d = opendir(tmpdir);
    for (struct dirent *e; d && (e = readdir(d));)
        n += strstr(e->d_name, ".tmp") != NULL;
    if (d)
        closedir(d);
    return n;
}

static void add_tensor(ql_qconfig *c, const char *name, ql_qspec spec, int64_t n,
                       const double *lo, const double *hi)
{
    ql_qtensor_cfg *t = ql_qconfig_tensor(c, name);
    assert_non_null(t);
    assert_int_equal(ql_encoding_init(&t->enc, &spec, n, NULL), QL_OK);
    for (int64_t i = 0; i < n; i++)
        ql_encoding_set_range(&t->enc, i, lo[i], hi[i]);
}

static ql_qconfig *sample_config(void)
{
    ql_qconfig *c = ql_qconfig_new();
    c->model_file = strdup("fmnist_resnet.onnx");
    c->fingerprint = 0x0123456789abcdefULL;
    c->calib_samples = 256;
    strcpy(c->defaults.act_algo, "percentile:p=99.99");
    ql_qlayer_cfg *l = ql_qconfig_layer(c, "conv 1");
    l->s.mask = QL_QS_PRECISION | QL_QS_PER_CHANNEL;
    l->s.precision = QL_PREC_INT16;
    l->s.per_channel = false;
    l->reason = strdup("autoprec: SQNR 12.5 dB < 20 dB\n\"quoted\" \xc3\xa9");
    l = ql_qconfig_layer(c, "/layer1/Conv");
    l->s.mask = QL_QS_ACT_ALGO | QL_QS_WEIGHT_ALGO | QL_QS_WEIGHT_BITS;
    strcpy(l->s.act_algo, "mse");
    strcpy(l->s.weight_algo, "adaround:iters=200");
    l->s.weight_bits = 4;
    ql_qconfig_layer(c, "empty"); /* an override with no fields survives */

    double lo1[] = {-1.0}, hi1[] = {3.0};
    add_tensor(c, "input", (ql_qspec){8, true, false, -1}, 1, lo1, hi1);
    double lo3[] = {-0.1, -1e-30, -3e38}, hi3[] = {0.7, 2e-45, 1.0};
    add_tensor(c, "conv1.weight", (ql_qspec){8, true, true, 0}, 3, lo3, hi3);
    ql_qtensor_cfg *w = ql_qconfig_tensor(c, "conv1.weight");
    const int32_t q[] = {-127, 127, 0, -1, 1, 100, 5, -5, 64};
    w->n_q = 9;
    w->q = malloc(sizeof q);
    memcpy(w->q, q, sizeof q);
    double lob[] = {-1e6, -2.0}, hib[] = {1e6, 2.0};
    add_tensor(c, "conv1.bias", (ql_qspec){32, true, true, 0}, 2, lob, hib);
    double lou[] = {0.5}, hiu[] = {6.0};
    add_tensor(c, "relu \"out\"", (ql_qspec){16, false, false, -1}, 1, lou, hiu);
    /* q of 1 and 2 values: base64 with two and one padding characters */
    double l1[] = {-1.0}, h1[] = {1.0};
    add_tensor(c, "q1", (ql_qspec){4, true, true, -1}, 1, l1, h1);
    w = ql_qconfig_tensor(c, "q1");
    w->n_q = 1;
    w->q = malloc(sizeof *w->q);
    w->q[0] = -7;
    add_tensor(c, "q2", (ql_qspec){16, true, false, -1}, 1, l1, h1);
    w = ql_qconfig_tensor(c, "q2");
    w->n_q = 2;
    w->q = malloc(2 * sizeof *w->q);
    w->q[0] = -32768;
    w->q[1] = 32767;
    return c;
}

static void test_new_defaults_and_overlay(void **state)
{
    (void)state;
    ql_qconfig *c = ql_qconfig_new();
    assert_int_equal(c->version, 1);
    assert_int_equal(c->defaults.mask, QL_QS_ALL);
    assert_int_equal(c->defaults.precision, QL_PREC_INT8);
    assert_string_equal(c->defaults.act_algo, "kl");
    assert_string_equal(c->defaults.weight_algo, "minmax");
    assert_int_equal(c->defaults.weight_bits, 8);
    assert_true(c->defaults.per_channel);
    assert_int_equal(c->n_layers + c->n_tensors, 0);

    ql_qlayer_cfg *l = ql_qconfig_layer(c, "fc");
    l->s.mask = QL_QS_PRECISION | QL_QS_WEIGHT_BITS;
    l->s.precision = QL_PREC_FLOAT;
    l->s.weight_bits = 6;
    assert_ptr_equal(ql_qconfig_layer(c, "fc"), l);
    ql_qsettings s = ql_qconfig_layer_settings(c, "fc");
    assert_int_equal(s.mask, QL_QS_ALL);
    assert_int_equal(s.precision, QL_PREC_FLOAT);
    assert_int_equal(s.weight_bits, 6);
    assert_string_equal(s.act_algo, "kl");
    assert_true(s.per_channel);
    s = ql_qconfig_layer_settings(c, "other");
    assert_int_equal(s.precision, QL_PREC_INT8);
    ql_qconfig_reset_layer(c, "fc", QL_QS_PRECISION);
    s = ql_qconfig_layer_settings(c, "fc");
    assert_int_equal(s.precision, QL_PREC_INT8);
    assert_int_equal(s.weight_bits, 6);
    assert_int_equal(c->n_layers, 1);
    ql_qconfig_reset_layer(c, "fc", QL_QS_WEIGHT_BITS); /* last field: entry goes */
    assert_int_equal(c->n_layers, 0);
    for (int i = 0; i < 100; i++) { /* growth past several powers of two */
        char name[16];
        snprintf(name, sizeof name, "l%d", i);
        ql_qconfig_layer(c, name)->s.mask = QL_QS_PRECISION;
    }
    ql_qconfig_reset_layer(c, "l50", QL_QS_ALL);
    assert_int_equal(c->n_layers, 99);
    assert_string_equal(c->layers[50].name, "l51");
    ql_qconfig_free(c);

    ql_prec p;
    assert_true(ql_prec_parse("int16", &p));
    assert_int_equal(p, QL_PREC_INT16);
    assert_false(ql_prec_parse("int4", &p));
    assert_string_equal(ql_prec_name(QL_PREC_FLOAT), "float");
    assert_int_equal(ql_prec_bits(QL_PREC_INT8), 8);
    assert_int_equal(ql_prec_bits(QL_PREC_FLOAT), 0);
}

/* The exact text: key order, indentation, shortest round-trip floats. */
static void test_exact_text(void **state)
{
    (void)state;
    ql_qconfig *c = ql_qconfig_new();
    c->fingerprint = 0xabcULL;
    ql_qlayer_cfg *l = ql_qconfig_layer(c, "a.b");
    l->s.mask = QL_QS_PRECISION;
    l->s.precision = QL_PREC_FLOAT;
    double lo[] = {-1.0}, hi[] = {3.0};
    add_tensor(c, "x", (ql_qspec){8, true, false, -1}, 1, lo, hi);
    ql_qconfig_tensor(c, "x")->enc.scale[0] = 0.1f;
    char *json = ql_qconfig_to_json(c, NULL);
    const char *want = "{\n"
                       "  \"qlens_config\": 1,\n"
                       "  \"model\": {\n"
                       "    \"fingerprint\": \"0000000000000abc\"\n"
                       "  },\n"
                       "  \"defaults\": {\n"
                       "    \"precision\": \"int8\",\n"
                       "    \"act_algo\": \"kl\",\n"
                       "    \"weight_algo\": \"minmax\",\n"
                       "    \"weight_bits\": 8,\n"
                       "    \"per_channel\": true\n"
                       "  },\n"
                       "  \"layers\": {\n"
                       "    \"a.b\": {\n"
                       "      \"precision\": \"float\"\n"
                       "    }\n"
                       "  },\n"
                       "  \"calibration\": {\n"
                       "    \"samples\": 0\n"
                       "  },\n"
                       "  \"tensors\": {\n"
                       "    \"x\": {\n"
                       "      \"bits\": 8,\n"
                       "      \"signed\": true,\n"
                       "      \"symmetric\": false,\n"
                       "      \"axis\": -1,\n"
                       "      \"scale\": [0.1],\n"
                       "      \"zero_point\": [-64],\n"
                       "      \"min\": [-1],\n"
                       "      \"max\": [3]\n"
                       "    }\n"
                       "  }\n"
                       "}\n";
    assert_string_equal(json, want);
    free(json);
    ql_qconfig_free(c);
    c = ql_qconfig_new();
    json = ql_qconfig_to_json(c, NULL);
    assert_non_null(strstr(json, "  \"layers\": {},\n"));
    assert_non_null(strstr(json, "  \"tensors\": {}\n}\n"));
    free(json);
    ql_qconfig_free(c);
}

static void assert_same_config(const ql_qconfig *a, const ql_qconfig *b)
{
    assert_int_equal(a->version, b->version);
    assert_string_equal(a->model_file, b->model_file);
    assert_true(a->fingerprint == b->fingerprint);
    assert_int_equal(a->calib_samples, b->calib_samples);
    assert_memory_equal(&a->defaults, &b->defaults, sizeof a->defaults);
    assert_int_equal(a->n_layers, b->n_layers);
    for (int i = 0; i < a->n_layers; i++) {
        assert_string_equal(a->layers[i].name, b->layers[i].name);
        assert_int_equal(a->layers[i].s.mask, b->layers[i].s.mask);
        ql_qsettings sa = ql_qconfig_layer_settings(a, a->layers[i].name);
        ql_qsettings sb = ql_qconfig_layer_settings(b, b->layers[i].name);
        assert_memory_equal(&sa, &sb, sizeof sa);
        assert_true((!a->layers[i].reason && !b->layers[i].reason) ||
                    !strcmp(a->layers[i].reason, b->layers[i].reason));
    }
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (int i = 0; i < a->n_tensors; i++) {
        assert_string_equal(a->tensors[i].name, b->tensors[i].name);
        assert_true(ql_encoding_equal(&a->tensors[i].enc, &b->tensors[i].enc));
        assert_int_equal(a->tensors[i].n_q, b->tensors[i].n_q);
        if (a->tensors[i].n_q)
            assert_memory_equal(a->tensors[i].q, b->tensors[i].q,
                                (size_t)a->tensors[i].n_q * sizeof *a->tensors[i].q);
    }
}

static void test_round_trip_byte_identical(void **state)
{
    (void)state;
    char p1[128], p2[128];
    snprintf(p1, sizeof p1, "%s/a.json", tmpdir);
    snprintf(p2, sizeof p2, "%s/b.json", tmpdir);
    ql_error err;
    ql_qconfig *c = sample_config(), *d = NULL;
    /* Awkward floats: every one must come back as the same bits. */
    ql_encoding *e = &ql_qconfig_tensor(c, "conv1.weight")->enc;
    e->lo[0] = -0.0f;
    e->hi[1] = 1e-45f; /* smallest denormal */
    e->scale[2] = FLT_MAX;
    e->hi[2] = FLT_MAX;
    e->lo[2] = -FLT_MAX;
    assert_int_equal(ql_qconfig_save(c, p1, &err), QL_OK);
    assert_int_equal(ql_qconfig_load(p1, &d, &err), QL_OK);
    assert_same_config(c, d);
    assert_int_equal(ql_qconfig_save(d, p2, &err), QL_OK);
    char *a = slurp(p1), *b = slurp(p2);
    assert_string_equal(a, b);
    assert_true(a[strlen(a) - 1] == '\n');
    assert_non_null(strstr(a, "\"q\": \"gf9/AAAA//8BAGQABQD7/0AA\""));
    assert_non_null(strstr(a, "\"q\": \"+f8=\""));
    assert_non_null(strstr(a, "\"q\": \"AID/fw==\""));
    assert_int_equal(count_temps(), 0);
    struct stat st;
    assert_int_equal(stat(p1, &st), 0);
    assert_true((st.st_mode & 0444) == 0444 || (st.st_mode & 0400)); /* not left 0600 by luck */
    free(a);
    free(b);
    ql_qconfig *k = ql_qconfig_clone(d);
    assert_same_config(d, k);
    ql_qconfig_free(k);
    ql_qconfig_free(d);

    /* Random floats, many of them: all round-trip through the text. */
    ql_qconfig_clear_tensors(c);
    ql_qtensor_cfg *t = ql_qconfig_tensor(c, "rand");
    ql_qspec s = {8, true, false, 1};
    assert_int_equal(ql_encoding_init(&t->enc, &s, 5000, NULL), QL_OK);
    uint32_t x = 12345;
    for (int i = 0; i < 5000; i++) {
        float f;
        do {
            x = x * 1664525u + 1013904223u;
            memcpy(&f, &x, sizeof f);
            f = fabsf(f);
        } while (!isfinite(f) || f == 0.0f);
        t->enc.scale[i] = f;
        t->enc.lo[i] = -f;
        t->enc.hi[i] = f * 0.5f;
        t->enc.zero_point[i] = (int32_t)(x % 256) - 128;
    }
    char *j1 = ql_qconfig_to_json(c, &err);
    assert_non_null(j1);
    assert_int_equal(ql_qconfig_from_json(j1, "rand.json", &d, &err), QL_OK);
    assert_true(ql_encoding_equal(&c->tensors[0].enc, &d->tensors[0].enc));
    char *j2 = ql_qconfig_to_json(d, &err);
    assert_string_equal(j1, j2);
    free(j1);
    free(j2);
    ql_qconfig_free(d);
    ql_qconfig_free(c);
}

/* A hand-written file: everything but the version is optional. */
static void test_minimal_document(void **state)
{
    (void)state;
    ql_qconfig *c = NULL;
    ql_error err;
    const char *text = "{\"qlens_config\": 1, \"layers\": {\"fc\": {\"precision\": \"int16\"}},"
                       " \"defaults\": {\"weight_bits\": 6}}";
    assert_int_equal(ql_qconfig_from_json(text, "m.json", &c, &err), QL_OK);
    assert_int_equal(c->defaults.weight_bits, 6);
    assert_string_equal(c->defaults.act_algo, "kl");
    assert_int_equal(c->defaults.mask, QL_QS_ALL);
    assert_null(c->model_file);
    ql_qsettings s = ql_qconfig_layer_settings(c, "fc");
    assert_int_equal(s.precision, QL_PREC_INT16);
    assert_int_equal(s.weight_bits, 6);
    assert_int_equal(c->layers[0].s.mask, QL_QS_PRECISION);
    ql_qconfig_free(c);
}

#define T_HEAD "{\"qlens_config\": 1, "
#define T_TENSOR(body) T_HEAD "\"tensors\": {\"x\": {" body "}}}"
#define T_SPEC "\"bits\": 8, \"signed\": true, \"symmetric\": true, \"axis\": -1, "

static void expect_error(const char *text, const char *msg)
{
    ql_qconfig *c = (ql_qconfig *)1;
    ql_error err = {{0}};
    ql_status st = ql_qconfig_from_json(text, "t.json", &c, &err);
    if (st != QL_ERR_FORMAT || strcmp(err.msg, msg))
        fail_msg("for %s\n  got  [%s] (%d)\n  want [%s]", text, err.msg, (int)st, msg);
    assert_null(c);
}

static void test_load_errors(void **state)
{
    (void)state;
    expect_error(T_HEAD "\"layers\": {\"conv 1\": {\"precison\": \"int8\"}}}",
                 "t.json: layers.\"conv 1\".precison: unknown key (expected precision, "
                 "act_algo, weight_algo, weight_bits, per_channel, reason)");
    expect_error(T_HEAD "\"defaults\": {\"reason\": \"x\"}}",
                 "t.json: defaults.reason: unknown key (expected precision, act_algo, "
                 "weight_algo, weight_bits, per_channel)");
    expect_error(T_HEAD "\"extra\": 1}",
                 "t.json: extra: unknown key (expected qlens_config, model, defaults, layers, "
                 "calibration, tensors)");
    expect_error(T_HEAD "\"defaults\": {\"weight_bits\": \"8\"}}",
                 "t.json: defaults.weight_bits: expected an integer, got a string");
    expect_error(T_HEAD "\"defaults\": {\"weight_bits\": 17}}",
                 "t.json: defaults.weight_bits: expected an integer from 2 to 16, got 17");
    expect_error(T_HEAD "\"defaults\": {\"per_channel\": 1}}",
                 "t.json: defaults.per_channel: expected true or false, got a number");
    expect_error(T_HEAD "\"layers\": {\"conv1\": {\"precision\": \"int4\"}}}",
                 "t.json: layers.conv1.precision: expected one of int8, int16, float, got "
                 "\"int4\"");
    expect_error(T_HEAD "\"layers\": {\"a\\\"b\": {\"act_algo\": \"\"}}}",
                 "t.json: layers.\"a\\\"b\".act_algo: must not be empty");
    expect_error(T_HEAD "\"layers\": {\"a\": {}, \"a\": {}}}",
                 "t.json: layers.a: duplicate name");
    expect_error(T_HEAD "\"layers\": {\"a\": {\"reason\": \"x\", \"reason\": \"y\"}}}",
                 "t.json: layers.a.reason: duplicate key");
    expect_error(T_HEAD "\"layers\": []}", "t.json: layers: expected an object, got an array");
    expect_error("{\"qlens_config\": 2, \"whatever\": true}",
                 "t.json: qlens_config: unsupported version 2 (this qlens reads version 1)");
    expect_error("{\"qlens_config\": \"1\"}",
                 "t.json: qlens_config: expected an integer, got a string");
    expect_error("{\"layers\": {}}",
                 "t.json: missing key \"qlens_config\" (not a qlens quant config?)");
    expect_error("[1, 2]", "t.json: expected a JSON object at the top level, got an array");
    expect_error(T_HEAD "\"model\": {\"fingerprint\": \"12345\"}}",
                 "t.json: model.fingerprint: expected 16 hexadecimal digits, got \"12345\"");
    expect_error(T_HEAD "\"calibration\": {\"samples\": -1}}",
                 "t.json: calibration.samples: expected an integer from 0 to 9007199254740992, "
                 "got -1");
    /* tensors */
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1, 0.2], \"zero_point\": [0]"),
                 "t.json: tensors.x.zero_point: expected 2 values (as many as scale), got 1");
    expect_error(T_TENSOR("\"bits\": 8, \"signed\": true, \"symmetric\": true, \"axis\": 0, "
                          "\"scale\": [0.1, 0.2], \"zero_point\": [0, 0], \"min\": [-1]"),
                 "t.json: tensors.x.min: expected 2 values (as many as scale), got 1");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1, 0.2], \"zero_point\": [0, 0]"),
                 "t.json: tensors.x.scale: a per-tensor encoding (axis -1) has exactly one "
                 "value");
    expect_error(T_TENSOR("\"bits\": 8, \"signed\": true, \"symmetric\": true, \"axis\": 0, "
                          "\"scale\": [0.1, 0.1, 0.1, -0.5], \"zero_point\": [0, 0, 0, 0]"),
                 "t.json: tensors.x.scale[3]: must be positive and finite");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [1e39], \"zero_point\": [0]"),
                 "t.json: tensors.x.scale[0]: 1e+39 is outside the float32 range");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [\"0.1\"], \"zero_point\": [0]"),
                 "t.json: tensors.x.scale[0]: expected a number, got a string");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1], \"zero_point\": [3]"),
                 "t.json: tensors.x.zero_point[0]: must be 0 for a symmetric signed encoding");
    expect_error(T_TENSOR("\"bits\": 8, \"signed\": true, \"symmetric\": false, \"axis\": -1, "
                          "\"scale\": [0.1], \"zero_point\": [128]"),
                 "t.json: tensors.x.zero_point[0]: outside the integer range [-128, 127]");
    expect_error(T_TENSOR("\"bits\": 17, \"signed\": true, \"symmetric\": true, \"axis\": -1, "
                          "\"scale\": [0.1], \"zero_point\": [0]"),
                 "t.json: tensors.x.bits: bits must be from 2 to 16, or 32");
    expect_error(T_TENSOR("\"bits\": 8, \"signed\": true, \"symmetric\": true, \"axis\": -1, "
                          "\"zero_point\": [0]"),
                 "t.json: tensors.x: missing key \"scale\"");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1], \"zero_point\": [0], \"q\": \"AB*A\""),
                 "t.json: tensors.x.q: invalid base64 at character 3");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1], \"zero_point\": [0], \"q\": \"AAA\""),
                 "t.json: tensors.x.q: invalid base64: length 3 is not a multiple of 4");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1], \"zero_point\": [0], \"q\": \"AB==\""),
                 "t.json: tensors.x.q: invalid base64: non-zero bits before the padding");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1], \"zero_point\": [0], \"q\": \"AA==\""),
                 "t.json: tensors.x.q: odd number of bytes (1): q holds int16 values");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1], \"zero_point\": [0], \"q\": \"gAA=\""),
                 "t.json: tensors.x.q[0]: 128 is outside the integer range [-127, 127]");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1], \"zero_point\": [0], \"q\": \"\""),
                 "t.json: tensors.x.q: empty (omit \"q\" when there are no values)");
    expect_error(T_TENSOR("\"bits\": 8, \"signed\": true, \"symmetric\": true, \"axis\": 0, "
                          "\"scale\": [0.1, 0.2], \"zero_point\": [0, 0], \"q\": \"AAAAAAAA\""),
                 "t.json: tensors.x.q: 3 values are not a multiple of the 2 channels");
    expect_error(T_TENSOR("\"bits\": 32, \"signed\": true, \"symmetric\": true, \"axis\": -1, "
                          "\"scale\": [0.1], \"zero_point\": [0], \"q\": \"AAAAAA==\""),
                 "t.json: tensors.x.q: integer values are stored only for encodings of at most "
                 "16 bits");
    expect_error(T_TENSOR(T_SPEC "\"scale\": [0.1], \"zero_point\": [0], \"min\": [2], "
                          "\"max\": [1]"),
                 "t.json: tensors.x.max[0]: min is greater than max");
    /* syntax */
    expect_error("{\n  \"qlens_config\": 1,\n  \"layers\": {",
                 "t.json:3:14: invalid JSON: unexpected end of input");
    expect_error("{\n  \"qlens_config\": 1,\n  \"layers\": {\"a\": tru}\n}\n",
                 "t.json:3:19: invalid JSON near 'tru}'");
    expect_error("{\"qlens_config\": 1} {}", "t.json:1:21: invalid JSON near '{}'");
    expect_error("", "t.json:1:1: invalid JSON: unexpected end of input");
}

static void test_load_missing_file(void **state)
{
    (void)state;
    ql_qconfig *c = NULL;
    ql_error err;
    char p[128];
    snprintf(p, sizeof p, "%s/none.json", tmpdir);
    assert_int_equal(ql_qconfig_load(p, &c, &err), QL_ERR_IO);
    assert_non_null(strstr(err.msg, "none.json: No such file"));
    assert_null(c);
}

/* A config that does not validate is refused before any file is touched. */
static void test_save_refuses_invalid(void **state)
{
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/keep.json", tmpdir);
    ql_error err;
    ql_qconfig *c = sample_config();
    assert_int_equal(ql_qconfig_save(c, p, &err), QL_OK);
    char *before = slurp(p);
    ql_qconfig_tensor(c, "conv1.weight")->enc.scale[1] = 0.0f;
    ql_qconfig_tensor(c, "input")->enc.scale[0] = 2.0f; /* a change that must not land */
    assert_int_equal(ql_qconfig_save(c, p, &err), QL_ERR_ARG);
    char want[256];
    snprintf(want, sizeof want, "%s: tensors.\"conv1.weight\".scale[1]: must be positive and finite",
             p);
    assert_string_equal(err.msg, want);
    char *after = slurp(p);
    assert_string_equal(before, after);
    assert_int_equal(count_temps(), 0);
    ql_qconfig_tensor(c, "conv1.weight")->enc.scale[1] = 0.5f;
    strcpy(ql_qconfig_layer(c, "x")->s.act_algo, "");
    ql_qconfig_layer(c, "x")->s.mask = QL_QS_ACT_ALGO;
    assert_int_equal(ql_qconfig_save(c, p, &err), QL_ERR_ARG);
    snprintf(want, sizeof want, "%s: layers.x.act_algo: must not be empty", p);
    assert_string_equal(err.msg, want);
    free(before);
    free(after);
    ql_qconfig_free(c);
}

/* A write that fails half-way (the file size limit stands in for a full
 * disk) leaves the existing file as it was and no temporary behind. */
static void test_failed_write_leaves_file(void **state)
{
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/big.json", tmpdir);
    ql_error err;
    ql_qconfig *c = sample_config();
    assert_int_equal(ql_qconfig_save(c, p, &err), QL_OK);
    char *before = slurp(p);
    ql_qtensor_cfg *t = ql_qconfig_tensor(c, "huge");
    ql_qspec s = {8, true, true, 0};
    assert_int_equal(ql_encoding_init(&t->enc, &s, 20000, NULL), QL_OK);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 8192;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    ql_status st = ql_qconfig_save(c, p, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    assert_int_equal(st, QL_ERR_IO);
    assert_non_null(strstr(err.msg, "write failed"));
    char *after = slurp(p);
    assert_string_equal(before, after);
    assert_int_equal(count_temps(), 0);

    /* The target is a directory: rename fails, the temporary goes. */
    snprintf(p, sizeof p, "%s/dir.json", tmpdir);
    assert_int_equal(mkdir(p, 0755), 0);
    ql_qconfig_clear_tensors(c);
    assert_int_equal(ql_qconfig_save(c, p, &err), QL_ERR_IO);
    assert_non_null(strstr(err.msg, "cannot rename"));
    assert_int_equal(count_temps(), 0);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    free(before);
    free(after);
    ql_qconfig_free(c);
}

/* ---------------------------------------------------------------------------
 * Checking encodings against a model
 * ------------------------------------------------------------------------- */

static void add_encoding(ql_qconfig *c, const char *name, int bits, int axis, int64_t n)
{
    double lo[64], hi[64];
    assert_true(n <= 64);
    for (int64_t i = 0; i < n; i++)
        lo[i] = -1.0, hi[i] = 1.0;
    ql_qspec spec = {.bits = bits, .is_signed = true, .symmetric = true, .axis = axis};
    add_tensor(c, name, spec, n, lo, hi);
}

/* Every encoding c's settings call for, as calibration lays them out (the
 * values do not matter here), except the tensor named skip. */
static void encode_all(ql_qconfig *c, const ql_qnet *q, const char *skip)
{
    const ql_graph *g = q->g;
    int *bits = calloc((size_t)g->n_values, sizeof *bits);
    assert_non_null(bits);
    ql_qnet_act_bits(q, c, bits);
    for (int v = 0; v < g->n_values; v++)
        if (bits[v] && strcmp(g->values[v].name, skip))
            add_encoding(c, g->values[v].name, bits[v], -1, 1);
    free(bits);
    for (int i = 0; i < q->n_layers; i++) {
        const ql_qlayer *L = &q->layers[i];
        ql_qsettings s = ql_qconfig_layer_settings(c, L->name);
        if (L->weight_value < 0 || s.precision == QL_PREC_FLOAT)
            continue;
        const ql_tensor *w = g->values[L->weight_value].constant;
        int axis = s.per_channel ? L->weight_axis : -1;
        int64_t ch = axis >= 0 ? w->dims[axis] : 1;
        if (strcmp(g->values[L->weight_value].name, skip))
            add_encoding(c, g->values[L->weight_value].name, s.weight_bits, axis, ch);
        if (L->bias_value >= 0 && strcmp(g->values[L->bias_value].name, skip))
            add_encoding(c, g->values[L->bias_value].name, 32, ch > 1 ? 0 : -1, ch);
    }
}

typedef struct model_fixture {
    ql_model *m;
    ql_qnet *q;
} model_fixture;

static void check_fails_with(const model_fixture *f, const ql_qconfig *c, const char *msg)
{
    ql_error err = {{0}};
    ql_status st = ql_qconfig_check(c, f->m, f->q, "cfg.json", &err);
    if (!msg && st != QL_OK)
        fail_msg("expected the config to pass, got [%s]", err.msg);
    if (msg && (st != QL_ERR_ARG || strcmp(err.msg, msg)))
        fail_msg("got  [%s] (%d)\n  want [%s]", st == QL_OK ? "" : err.msg, (int)st, msg);
}

/* A fresh config with settings `prec` for /fc/Gemm (or none) and the
 * encodings they call for, but `skip`'s. */
static ql_qconfig *fc_config(const model_fixture *f, int prec, const char *skip)
{
    ql_qconfig *c = ql_qconfig_new();
    c->fingerprint = f->m->fingerprint;
    if (prec >= 0) {
        ql_qlayer_cfg *l = ql_qconfig_layer(c, "/fc/Gemm");
        l->s.mask |= QL_QS_PRECISION;
        l->s.precision = (ql_prec)prec;
    }
    encode_all(c, f->q, skip);
    return c;
}

static ql_qtensor_cfg *find(ql_qconfig *c, const char *name)
{
    ql_qtensor_cfg *t = (ql_qtensor_cfg *)ql_qconfig_find_tensor(c, name);
    assert_non_null(t);
    return t;
}

static void test_check_encodings(void **state)
{
    (void)state;
    model_fixture f = {0};
    ql_error err = {{0}};
    char path[1024];
    const char *src = getenv("QLENS_SRCDIR");
    snprintf(path, sizeof path, "%s/examples/fmnist/fmnist_resnet.onnx", src ? src : "..");
    if (ql_model_load(path, &f.m, &err) != QL_OK || ql_qnet_build(f.m->graph, &f.q, &err) != QL_OK)
        fail_msg("%s", err.msg);
    int fc = ql_qnet_find_layer(f.q, "/fc/Gemm");
    assert_true(fc >= 0);
    const ql_graph *g = f.m->graph;
    /* the names are the ONNX file's: assert them so the messages below hold */
    assert_string_equal(g->values[f.q->layers[fc].weight_value].name, "fc.weight");
    assert_string_equal(g->values[f.q->layers[fc].bias_value].name, "fc.bias");

    /* what calibration writes passes, and so do settings without encodings */
    ql_qconfig *c = fc_config(&f, -1, "");
    check_fails_with(&f, c, NULL);
    ql_qconfig_free(c);
    c = ql_qconfig_new();
    ql_qconfig_layer(c, "/fc/Gemm")->s.mask |= QL_QS_WEIGHT_BITS;
    check_fails_with(&f, c, NULL);
    ql_qconfig_free(c);

    /* bits that do not match the settings: weight, bias, activation */
    c = fc_config(&f, -1, "");
    find(c, "fc.weight")->enc.spec.bits = 4;
    check_fails_with(&f, c, "cfg.json: tensors.\"fc.weight\".bits: the encoding has 4 bits but layer "
                        "'/fc/Gemm' has weight_bits 8 (recalibrate)");
    ql_qconfig_free(c);
    c = fc_config(&f, -1, "");
    find(c, "fc.bias")->enc.spec.bits = 16;
    check_fails_with(&f, c, "cfg.json: tensors.\"fc.bias\".bits: the encoding has 16 bits but the "
                        "bias of quantized layer '/fc/Gemm' is 32-bit (recalibrate)");
    ql_qconfig_free(c);
    c = fc_config(&f, -1, "");
    c->defaults.precision = QL_PREC_INT16;
    check_fails_with(&f, c, "cfg.json: tensors.input.bits: the encoding has 8 bits but the settings "
                        "call for 16 (recalibrate)");
    ql_qconfig_free(c);

    /* a weight's axis against per_channel, and against the tensor's shape */
    c = fc_config(&f, -1, "");
    ql_qlayer_cfg *l = ql_qconfig_layer(c, "/fc/Gemm");
    l->s.mask |= QL_QS_PER_CHANNEL;
    l->s.per_channel = false;
    check_fails_with(&f, c, "cfg.json: tensors.\"fc.weight\".axis: the encoding's axis is 0 but layer "
                        "'/fc/Gemm' has per_channel false, which calls for -1 (recalibrate)");
    ql_qconfig_free(c);
    c = fc_config(&f, -1, "");
    find(c, "fc.weight")->enc.spec.axis = 3;
    check_fails_with(&f, c, "cfg.json: tensors.\"fc.weight\".axis: no axis 3 in a tensor of rank 2 "
                        "(axes 0 to 1)");
    ql_qconfig_free(c);
    c = fc_config(&f, -1, "fc.weight");
    add_encoding(c, "fc.weight", 8, 0, 5);
    check_fails_with(&f, c, "cfg.json: tensors.\"fc.weight\".scale: expected 10 values (one per "
                        "channel along axis 0), got 5");
    ql_qconfig_free(c);

    /* stored integers: as many as the weight has elements, and only for weights */
    c = fc_config(&f, -1, "");
    ql_qtensor_cfg *t = find(c, "fc.weight");
    t->n_q = 10;
    t->q = calloc(10, sizeof *t->q);
    check_fails_with(&f, c, "cfg.json: tensors.\"fc.weight\".q: 10 values for a weight of 640 "
                        "elements");
    ql_qconfig_free(c);
    c = fc_config(&f, -1, "");
    t = find(c, "input");
    t->n_q = 1;
    t->q = calloc(1, sizeof *t->q);
    check_fails_with(&f, c, "cfg.json: tensors.input.q: integer values are stored only for weights");
    ql_qconfig_free(c);

    /* with encodings, every tensor the settings quantize needs one */
    c = fc_config(&f, -1, "fc.weight");
    check_fails_with(&f, c, "cfg.json: tensors.\"fc.weight\": no encoding, but the settings quantize "
                        "this tensor (recalibrate)");
    ql_qconfig_free(c);
    c = fc_config(&f, -1, "/layer1/Relu_1_output_0");
    check_fails_with(&f, c, "cfg.json: tensors.\"/layer1/Relu_1_output_0\": no encoding, but the "
                        "settings quantize this tensor (recalibrate)");
    ql_qconfig_free(c);
    /* a float layer needs none for its weights, and a stale one is not looked at */
    c = fc_config(&f, QL_PREC_FLOAT, "fc.weight");
    check_fails_with(&f, c, NULL);
    add_encoding(c, "fc.weight", 4, 0, 10);
    check_fails_with(&f, c, NULL);
    ql_qconfig_free(c);

    ql_qnet_free(f.q);
    ql_model_free(f.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_defaults_and_overlay),
        cmocka_unit_test(test_exact_text),
        cmocka_unit_test(test_round_trip_byte_identical),
        cmocka_unit_test(test_minimal_document),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_save_refuses_invalid),
        cmocka_unit_test(test_failed_write_leaves_file),
        cmocka_unit_test(test_check_encodings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
