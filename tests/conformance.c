/* ONNX backend conformance: runs every case of the ONNX backend test data
 * (Debian's libonnx-testdata) that qlens claims, and compares the outputs
 * with the stored ones using the ONNX backend runner's tolerances
 * (|got - want| <= 1e-7 + 1e-3 |want|; exact for integers and bools; NaN
 * equals NaN). A case is claimed when the op table has every node's op with
 * shape and float functions for the model's opset, and every graph input,
 * output, initializer and constant tensor has a qlens dtype (one in the
 * table's in_dtypes of each op that reads it as input 0). A claimed case
 * must pass: a load error, a refusal or a crash is a failure. Each case runs
 * in a child process (so one crashing kernel cannot hide the rest), with 1
 * and with 2 threads, whose outputs must be bit-identical.
 *
 * usage: conformance DATA_DIR [--verbose] [--filter SUBSTR] [--list-claimed] [--no-fork]
 * The last line printed is "N passed, M failed, K skipped"; exit status 1
 * when a case failed, 2 on bad usage, 77 when DATA_DIR holds no cases. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/dataset.h"
#include "engine/exec.h"
#include "engine/onnx.h"
#include "engine/op.h"
#include "onnx.pb-c.h"

#define MAX_IO 64        /* inputs or outputs per case */
#define CASE_TIMEOUT 60  /* seconds a case may run before it counts as hung */
#define RTOL 1e-3
#define ATOL 1e-7

typedef struct options {
    const char *data, *filter;
    int verbose, list, fork;
} options;

/* ---------------------------------------------------------------------------
 * Skip reasons, counted
 * ------------------------------------------------------------------------- */
typedef struct reason {
    char text[112];
    int count;
} reason;

static reason reasons[512];
static int n_reasons;

static void count_reason(const char *text)
{
    for (int i = 0; i < n_reasons; i++)
        if (!strcmp(reasons[i].text, text)) {
            reasons[i].count++;
            return;
        }
    if (n_reasons < (int)(sizeof reasons / sizeof reasons[0])) {
        snprintf(reasons[n_reasons].text, sizeof reasons[n_reasons].text, "%s", text);
        reasons[n_reasons++].count = 1;
    }
}

static int cmp_reason(const void *a, const void *b)
{
    const reason *x = a, *y = b;
    if (x->count != y->count)
        return y->count - x->count;
    return strcmp(x->text, y->text);
}

static void print_reasons(void)
{
    qsort(reasons, (size_t)n_reasons, sizeof reasons[0], cmp_reason);
    printf("skipped, by reason:\n");
    for (int i = 0; i < n_reasons; i++)
        printf("  %4d  %s\n", reasons[i].count, reasons[i].text);
}

/* ---------------------------------------------------------------------------
 * Claiming: a look at the raw protobuf, before qlens loads anything
 * ------------------------------------------------------------------------- */
static const char *onnx_type_name(int t)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&onnx__tensor_proto__data_type__descriptor, t);
    return v ? v->name : "?";
}

/* True when a graph input/output has a tensor type of a qlens dtype. */
static int claims_type(const Onnx__TypeProto *tp, ql_dtype *dt, char *why, size_t n)
{
    static const struct { int c; const char *name; } kinds[] = {
        {ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE, "sequence"},
        {ONNX__TYPE_PROTO__VALUE_MAP_TYPE, "map"},
        {ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE, "optional"},
        {ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE, "sparse tensor"},
    };
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type) {
        const char *kind = "untyped";
        for (size_t i = 0; tp && i < sizeof kinds / sizeof kinds[0]; i++)
            if ((int)tp->value_case == kinds[i].c)
                kind = kinds[i].name;
        snprintf(why, n, "unsupported type %s", kind);
        return 0;
    }
    if (!ql_dtype_from_onnx(tp->tensor_type->elem_type, dt)) {
        snprintf(why, n, "unsupported dtype %s", onnx_type_name(tp->tensor_type->elem_type));
        return 0;
    }
    return 1;
}

static int claims_tensor(const Onnx__TensorProto *tp, char *why, size_t n)
{
    ql_dtype dt;
    if (!ql_dtype_from_onnx(tp->data_type, &dt)) {
        snprintf(why, n, "unsupported dtype %s", onnx_type_name(tp->data_type));
        return 0;
    }
    return 1;
}

static int64_t default_opset(const Onnx__ModelProto *mp)
{
    int64_t opset = 0;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const char *d = mp->opset_import[i]->domain;
        if (!d || !d[0] || !strcmp(d, "ai.onnx"))
            opset = mp->opset_import[i]->version;
    }
    return opset;
}

/* The dtype of a graph input or initializer called `name`; false if none. */
static int known_dtype(const Onnx__GraphProto *gp, const char *name, ql_dtype *dt)
{
    for (size_t i = 0; i < gp->n_initializer; i++)
        if (gp->initializer[i]->name && !strcmp(gp->initializer[i]->name, name))
            return ql_dtype_from_onnx(gp->initializer[i]->data_type, dt);
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__TypeProto *tp = gp->input[i]->type;
        if (gp->input[i]->name && !strcmp(gp->input[i]->name, name) && tp &&
            tp->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE && tp->tensor_type)
            return ql_dtype_from_onnx(tp->tensor_type->elem_type, dt);
    }
    return 0;
}

/* Decides whether qlens claims a model; fills why when it does not. */
static int claims(const Onnx__ModelProto *mp, char *why, size_t n)
{
    const Onnx__GraphProto *gp = mp->graph;
    int64_t opset = default_opset(mp);
    if (!gp) {
        snprintf(why, n, "no graph");
        return 0;
    }
    /* ops first: the most telling reason */
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *np = gp->node[i];
        const char *type = np->op_type ? np->op_type : "";
        const char *dom = np->domain ? np->domain : "";
        int op = ql_op_find(type, dom);
        const ql_op_def *def = op >= 0 ? ql_op_get(op) : NULL;
        if (!def || !def->infer || !def->run_f32) {
            snprintf(why, n, "unsupported op %s%s%s", dom, dom[0] ? "." : "", type);
            return 0;
        }
        if (opset < def->since_version) {
            snprintf(why, n, "unsupported op %s before opset %d", type, def->since_version);
            return 0;
        }
    }
    for (size_t i = 0; i < gp->n_node; i++)
        for (size_t a = 0; a < gp->node[i]->n_attribute; a++) {
            const Onnx__AttributeProto *ap = gp->node[i]->attribute[a];
            if (ap->t && !claims_tensor(ap->t, why, n))
                return 0;
        }
    for (size_t i = 0; i < gp->n_initializer; i++)
        if (!claims_tensor(gp->initializer[i], why, n))
            return 0;
    if (gp->n_sparse_initializer) {
        snprintf(why, n, "unsupported sparse initializer");
        return 0;
    }
    for (size_t i = 0; i < gp->n_input + gp->n_output; i++) {
        const Onnx__ValueInfoProto *vi =
            i < gp->n_input ? gp->input[i] : gp->output[i - gp->n_input];
        ql_dtype dt;
        if (!claims_type(vi->type, &dt, why, n))
            return 0;
    }
    /* the op table lists the dtypes each op takes on its first input */
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *np = gp->node[i];
        ql_dtype dt;
        if (np->n_input < 1 || !np->input[0] || !np->input[0][0] ||
            !known_dtype(gp, np->input[0], &dt))
            continue;
        const ql_op_def *def = ql_op_get(ql_op_find(np->op_type, np->domain ? np->domain : ""));
        unsigned mask = def->in_dtypes ? def->in_dtypes : QL_DT_BIT(QL_F32);
        if (!(mask & QL_DT_BIT(dt))) {
            snprintf(why, n, "unsupported op %s on %s", np->op_type, ql_dtype_info(dt)->name);
            return 0;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------------------
 * Test data: input_N.pb / output_N.pb
 * ------------------------------------------------------------------------- */
typedef struct tensor_set {
    int n;
    ql_tensor *t[MAX_IO];
    char *name[MAX_IO];
} tensor_set;

static void tensor_set_clear(tensor_set *ts)
{
    for (int i = 0; i < ts->n; i++) {
        ql_tensor_free(ts->t[i]);
        free(ts->name[i]);
    }
    ts->n = 0;
}

/* Drops a leading "dir/" from engine messages: the case label says it. */
static const char *strip_dir(const char *msg, const char *dir)
{
    size_t len = strlen(dir);
    return !strncmp(msg, dir, len) && msg[len] == '/' ? msg + len + 1 : msg;
}

/* Loads set/PREFIX_0.pb, PREFIX_1.pb, ... until one is missing. */
static int load_tensors(const char *set, const char *prefix, tensor_set *ts, char *msg, size_t n)
{
    for (int i = 0;; i++) {
        char path[4200];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s_%d.pb", set, prefix, i);
        if (stat(path, &sb) != 0)
            return 1;
        if (i == MAX_IO) {
            snprintf(msg, n, "more than %d %s files", MAX_IO, prefix);
            return 0;
        }
        void *buf = NULL;
        size_t len = 0;
        ql_error err = {{0}};
        ql_status st = ql_read_file(path, false, &buf, &len, &err);
        if (st == QL_OK)
            st = ql_onnx_tensor_parse(buf, len, path, &ts->t[i], &ts->name[i], &err);
        free(buf);
        if (st != QL_OK) {
            snprintf(msg, n, "%s", err.msg);
            return 0;
        }
        ts->n = i + 1;
    }
}

/* Pairs graph values ids[0..k) with files: by tensor name when every value
 * has a file of that name, else by position. idx[j] = file of ids[j]. */
static int match_tensors(const ql_graph *g, const int *ids, int k, const tensor_set *ts,
                         const char *what, int *idx, char *msg, size_t n)
{
    int by_name = 1;
    for (int j = 0; j < k && by_name; j++) {
        idx[j] = -1;
        for (int f = 0; f < ts->n; f++)
            if (ts->name[f] && !strcmp(ts->name[f], g->values[ids[j]].name))
                idx[j] = f;
        by_name = idx[j] >= 0;
    }
    if (by_name && k == ts->n)
        return 1;
    if (k != ts->n) {
        snprintf(msg, n, "%d %s files for %d graph %ss", ts->n, what, k, what);
        return 0;
    }
    for (int j = 0; j < k; j++)
        idx[j] = j;
    return 1;
}

/* ---------------------------------------------------------------------------
 * Running and comparing
 * ------------------------------------------------------------------------- */
static int compare(const ql_tensor *got, const ql_tensor *want, char *msg, size_t n)
{
    char a[128], b[128];
    if (got->dtype != want->dtype) {
        snprintf(msg, n, "dtype %s, expected %s", ql_dtype_info(got->dtype)->name,
                 ql_dtype_info(want->dtype)->name);
        return 0;
    }
    if (!ql_shape_equal(got->ndim, got->dims, want->ndim, want->dims)) {
        snprintf(msg, n, "shape %s, expected %s", ql_shape_str(got->ndim, got->dims, a, sizeof a),
                 ql_shape_str(want->ndim, want->dims, b, sizeof b));
        return 0;
    }
    int64_t cnt = ql_tensor_numel(got);
    for (int64_t i = 0; i < cnt; i++) {
        if (got->dtype == QL_F32) {
            double g = ((const float *)got->data)[i], w = ((const float *)want->data)[i];
            if ((isnan(g) && isnan(w)) || g == w) /* g == w: equal infinities too */
                continue;
            if (!(fabs(g - w) <= ATOL + RTOL * fabs(w))) {
                snprintf(msg, n, "element %lld: got %.9g expected %.9g", (long long)i, g, w);
                return 0;
            }
        } else if (ql_tensor_get_i64(got, i) != ql_tensor_get_i64(want, i)) {
            snprintf(msg, n, "element %lld: got %lld expected %lld", (long long)i,
                     (long long)ql_tensor_get_i64(got, i), (long long)ql_tensor_get_i64(want, i));
            return 0;
        }
    }
    return 1;
}

static int run_graph(ql_graph *g, const ql_tensor *const *ins, int threads, ql_tensor **outs,
                     const char *dir, char *msg, size_t n)
{
    ql_error err = {{0}};
    ql_exec *x = NULL;
    ql_exec_opts o = {.n_threads = threads};
    int ok = ql_exec_new(g, &o, &x, &err) == QL_OK && ql_exec_run(x, ins, outs, &err) == QL_OK;
    if (!ok)
        snprintf(msg, n, "run (%d thread%s): %s", threads, threads > 1 ? "s" : "",
                 strip_dir(err.msg, dir));
    ql_exec_free(x);
    return ok;
}

/* Runs one test_data_set folder; 1 when every output matches. */
static int run_set(ql_model *m, const char *dir, const char *set, int s, char *msg, size_t n)
{
    ql_graph *g = m->graph;
    tensor_set in = {0}, want = {0};
    const ql_tensor *feeds[MAX_IO];
    ql_tensor *o1[MAX_IO] = {0}, *o2[MAX_IO] = {0};
    int in_idx[MAX_IO], out_idx[MAX_IO];
    char why[1200];
    int ok = 0;

    if (g->n_inputs > MAX_IO || g->n_outputs > MAX_IO) {
        snprintf(msg, n, "more than %d graph inputs or outputs", MAX_IO);
        return 0;
    }
    if (!load_tensors(set, "input", &in, why, sizeof why) ||
        !load_tensors(set, "output", &want, why, sizeof why) ||
        !match_tensors(g, g->inputs, g->n_inputs, &in, "input", in_idx, why, sizeof why) ||
        !match_tensors(g, g->outputs, g->n_outputs, &want, "output", out_idx, why, sizeof why)) {
        snprintf(msg, n, "set %d: %.1100s", s, strip_dir(why, dir));
        goto cleanup;
    }
    for (int i = 0; i < g->n_inputs; i++)
        feeds[i] = in.t[in_idx[i]];
    if (!run_graph(g, feeds, 1, o1, dir, why, sizeof why) ||
        !run_graph(g, feeds, 2, o2, dir, why, sizeof why)) {
        snprintf(msg, n, "set %d: %.1100s", s, why);
        goto cleanup;
    }
    for (int j = 0; j < g->n_outputs; j++) {
        if (!o1[j] || !o2[j]) {
            snprintf(msg, n, "set %d output %d: not produced", s, j);
            goto cleanup;
        }
        if (!compare(o1[j], want.t[out_idx[j]], why, sizeof why)) {
            snprintf(msg, n, "set %d output %d (%.100s): %.1000s", s, j,
                     g->values[g->outputs[j]].name, why);
            goto cleanup;
        }
        if (!compare(o2[j], want.t[out_idx[j]], why, sizeof why) ||
            memcmp(o1[j]->data, o2[j]->data, ql_tensor_nbytes(o1[j])) != 0) {
            snprintf(msg, n, "set %d output %d: 1 and 2 threads differ", s, j);
            goto cleanup;
        }
    }
    ok = 1;
cleanup:
    for (int j = 0; j < g->n_outputs; j++) {
        ql_tensor_free(o1[j]);
        ql_tensor_free(o2[j]);
    }
    tensor_set_clear(&in);
    tensor_set_clear(&want);
    return ok;
}

/* Loads a claimed case with the full pipeline and runs all its data sets;
 * 1 pass, 0 fail (msg says why). */
static int run_case(const char *dir, char *msg, size_t n)
{
    char path[4200];
    ql_error err = {{0}};
    ql_model *m = NULL;
    int ok = 1, sets = 0;
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    ql_status st = ql_model_load(path, &m, &err);
    if (st != QL_OK) {
        snprintf(msg, n, "%s: %s", st == QL_ERR_UNSUPPORTED ? "refused" : "load",
                 strip_dir(err.msg, dir));
        return 0;
    }
    for (int s = 0; ok; s++) {
        char set[4200];
        struct stat sb;
        snprintf(set, sizeof set, "%s/test_data_set_%d", dir, s);
        if (stat(set, &sb) != 0)
            break;
        sets++;
        ok = run_set(m, dir, set, s, msg, n);
    }
    if (ok && sets == 0) {
        snprintf(msg, n, "no test_data_set_0 folder");
        ok = 0;
    }
    ql_model_free(m);
    return ok;
}

/* run_case in a child process, so that a crash or a hang in one kernel
 * becomes one failure instead of ending the run. */
static int run_case_isolated(const char *dir, char *msg, size_t n)
{
    int fd[2];
    if (pipe(fd) != 0)
        return run_case(dir, msg, n);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return run_case(dir, msg, n);
    }
    if (pid == 0) {
        close(fd[0]);
        alarm(CASE_TIMEOUT);
        msg[0] = run_case(dir, msg + 1, n - 1) ? 'P' : 'F';
        size_t len = strlen(msg) + 1, off = 0;
        while (off < len) {
            ssize_t w = write(fd[1], msg + off, len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        _exit(0);
    }
    close(fd[1]);
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd[0], msg + got, n - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == n - 1)
            break;
    }
    msg[got] = '\0';
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == SIGALRM)
            snprintf(msg, n, "timed out after %d s", CASE_TIMEOUT);
        else
            snprintf(msg, n, "crashed: %s", strsignal(sig));
        return 0;
    }
    if (got == 0 || (msg[0] != 'P' && msg[0] != 'F')) {
        snprintf(msg, n, "the case's process exited with status %d before reporting "
                         "(a sanitizer report on stderr?)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return 0;
    }
    int pass = msg[0] == 'P';
    memmove(msg, msg + 1, strlen(msg + 1) + 1);
    return pass;
}

/* ---------------------------------------------------------------------------
 * Driver
 * ------------------------------------------------------------------------- */
typedef struct tally {
    int passed, failed, skipped, claimed;
} tally;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_one(const options *opt, const char *dir, const char *label, tally *t)
{
    char path[4300], why[160], msg[1200];
    void *buf = NULL;
    size_t len = 0;
    ql_error err;
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    if (ql_read_file(path, false, &buf, &len, &err) != QL_OK) {
        t->skipped++;
        count_reason("no readable model.onnx");
        return;
    }
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    int claimed = mp && claims(mp, why, sizeof why);
    if (!mp)
        snprintf(why, sizeof why, "model.onnx is not a readable ModelProto");
    if (mp)
        onnx__model_proto__free_unpacked(mp, NULL);
    if (!claimed) {
        t->skipped++;
        count_reason(why);
        if (opt->verbose)
            printf("SKIP %s (%s)\n", label, why);
        return;
    }
    t->claimed++;
    if (opt->list) {
        printf("%s\n", label);
        return;
    }
    int pass = opt->fork ? run_case_isolated(dir, msg, sizeof msg) : run_case(dir, msg, sizeof msg);
    if (pass) {
        t->passed++;
        if (opt->verbose)
            printf("PASS %s\n", label);
    } else {
        t->failed++;
        printf("FAIL %s: %s\n", label, msg);
    }
}

/* Runs the cases of one group folder (node, simple, ...) in name order;
 * returns how many case folders it held. */
static int run_group(const options *opt, const char *group, tally *t)
{
    char gdir[4096];
    snprintf(gdir, sizeof gdir, "%s/%s", opt->data, group);
    DIR *d = opendir(gdir);
    if (!d)
        return 0;
    char **names = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 256;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn)
                break;
            names = nn;
            cap = nc;
        }
        if ((names[cnt] = strdup(e->d_name)))
            cnt++;
    }
    closedir(d);
    if (cnt)
        qsort(names, cnt, sizeof *names, cmp_str);
    for (size_t k = 0; k < cnt; k++) {
        char dir[4200], label[600];
        snprintf(dir, sizeof dir, "%s/%s", gdir, names[k]);
        snprintf(label, sizeof label, "%s/%s", group, names[k]);
        if (!opt->filter || strstr(label, opt->filter))
            run_one(opt, dir, label, t);
        free(names[k]);
    }
    free(names);
    return (int)cnt;
}

static int usage(void)
{
    fprintf(stderr, "usage: conformance DATA_DIR [--verbose] [--filter SUBSTR] [--list-claimed] "
                    "[--no-fork]\n");
    return 2;
}

int main(int argc, char **argv)
{
    options opt = {.fork = 1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--verbose"))
            opt.verbose = 1;
        else if (!strcmp(argv[i], "--list-claimed"))
            opt.list = 1;
        else if (!strcmp(argv[i], "--no-fork"))
            opt.fork = 0;
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc)
            opt.filter = argv[++i];
        else if (argv[i][0] == '-' || opt.data)
            return usage();
        else
            opt.data = argv[i];
    }
    if (!opt.data)
        return usage();
    static const char *const groups[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};
    tally t = {0};
    int cases = 0;
    for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++)
        cases += run_group(&opt, groups[gi], &t);
    if (cases == 0) {
        fprintf(stderr, "conformance: no test cases under %s/{node,simple,...}\n", opt.data);
        return 77;
    }
    print_reasons();
    if (opt.list) {
        printf("%d claimed, %d skipped\n", t.claimed, t.skipped);
        return 0;
    }
    printf("%d passed, %d failed, %d skipped\n", t.passed, t.failed, t.skipped);
    return t.failed ? 1 : 0;
}
