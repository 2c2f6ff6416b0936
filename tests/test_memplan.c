/* Unit tests: planned value buffers (engine/memplan.c). A trace becomes a
 * plan whose live buffers never share memory; a planned run of the same
 * kind takes arena memory; a run that differs (another size, or a buffer
 * still live where the trace had released it) gets none from that point
 * and drops the plan; buffers handed out are never arena memory; and an
 * executor keeping buffers gives the same bits run after run, on a model
 * whose runs are planned, as one that allocates afresh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dataset.h"
#include "engine/exec.h"
#include "engine/memplan.h"
#include "engine/onnx.h"
#include "engine/tensor.h"
#include "tests/testutil.h"

/* One traced allocation: the caller's own buffer. */
static void *traced(ql_memplan *p, size_t b)
{
    assert_null(ql_memplan_alloc(p, b));
    void *m = ql_aligned_alloc(b);
    assert_non_null(m);
    ql_memplan_note(p, m);
    return m;
}

static void untrace(ql_memplan *p, void *m)
{
    assert_false(ql_memplan_release(p, m));
    ql_aligned_free(m);
}

static bool disjoint(const void *a, size_t na, const void *b, size_t nb)
{
    const char *x = a, *y = b;
    return x + na <= y || y + nb <= x;
}

/* a chain: A, B (A live), release A, C (B live), release B, D, release C, D */
static void trace_chain(ql_memplan *p)
{
    ql_memplan_begin(p, 42);
    void *a = traced(p, 4096), *b = traced(p, 8192);
    untrace(p, a);
    void *c = traced(p, 4096);
    untrace(p, b);
    void *d = traced(p, 8192);
    untrace(p, c);
    untrace(p, d);
    assert_true(ql_memplan_end(p, true));
}

static void test_plan_and_reuse(void **state)
{
    (void)state;
    ql_memplan *p = ql_memplan_new();
    assert_non_null(p);
    trace_chain(p);
    /* never more than two buffers live, 8 KiB + 8 KiB at most */
    assert_true(ql_memplan_arena_bytes(p) <= 16384);
    for (int run = 0; run < 3; run++) {
        ql_memplan_begin(p, 42);
        char *a = ql_memplan_alloc(p, 4096), *b = ql_memplan_alloc(p, 8192);
        assert_non_null(a);
        assert_non_null(b);
        assert_true(ql_memplan_in_arena(p, a) && ql_memplan_in_arena(p, b));
        assert_true(disjoint(a, 4096, b, 8192));
        memset(a, 1, 4096);
        memset(b, 2, 8192);
        assert_true(ql_memplan_release(p, a));
        char *c = ql_memplan_alloc(p, 4096);
        assert_non_null(c);
        assert_true(disjoint(c, 4096, b, 8192));
        assert_true(ql_memplan_release(p, b));
        char *d = ql_memplan_alloc(p, 8192);
        assert_non_null(d);
        assert_true(disjoint(c, 4096, d, 8192));
        assert_true(ql_memplan_release(p, c));
        assert_true(ql_memplan_release(p, d));
        assert_false(ql_memplan_end(p, true));
    }
    ql_memplan_free(p);
}

static void test_other_run_gets_no_arena(void **state)
{
    (void)state;
    ql_memplan *p = ql_memplan_new();
    trace_chain(p);
    /* the same signature, but A is still live when C comes: C must not get
     * memory A may hold, so from there on the caller allocates */
    ql_memplan_begin(p, 42);
    char *a = ql_memplan_alloc(p, 4096), *b = ql_memplan_alloc(p, 8192);
    assert_non_null(a);
    assert_non_null(b);
    char *c = ql_memplan_alloc(p, 4096);
    bool c_arena = c != NULL;
    if (c)
        assert_true(disjoint(c, 4096, a, 4096) && disjoint(c, 4096, b, 8192));
    /* whatever the layout, from a refused allocation on nothing comes from
     * the arena; a refusal drops the plan */
    void *own = NULL;
    if (!c_arena) {
        own = ql_aligned_alloc(4096);
        ql_memplan_note(p, own);
        assert_null(ql_memplan_alloc(p, 8192));
    }
    assert_true(ql_memplan_release(p, a));
    assert_true(ql_memplan_release(p, b));
    if (c_arena)
        assert_true(ql_memplan_release(p, c));
    else
        untrace(p, own);
    ql_memplan_end(p, true);
    /* another size at the first allocation: refused, plan dropped, and the
     * next run of that signature is traced again */
    ql_memplan_begin(p, 42);
    assert_null(ql_memplan_alloc(p, 512));
    ql_memplan_end(p, true);
    ql_memplan_begin(p, 42);
    void *x = traced(p, 512);
    untrace(p, x);
    assert_true(ql_memplan_end(p, true));
    ql_memplan_begin(p, 42);
    void *y = ql_memplan_alloc(p, 512);
    assert_non_null(y);
    assert_true(ql_memplan_release(p, y));
    ql_memplan_end(p, true);
    ql_memplan_free(p);
}

static void test_taken_stays_apart(void **state)
{
    (void)state;
    ql_memplan *p = ql_memplan_new();
    /* trace: A, B; B handed to the caller; A released */
    ql_memplan_begin(p, 7);
    void *a = traced(p, 1024), *b = traced(p, 1024);
    ql_memplan_taken(p, b);
    untrace(p, a);
    assert_true(ql_memplan_end(p, true));
    ql_aligned_free(b);
    /* planned: A from the arena, B the caller's own again */
    ql_memplan_begin(p, 7);
    void *a2 = ql_memplan_alloc(p, 1024);
    assert_non_null(a2);
    assert_null(ql_memplan_alloc(p, 1024));
    assert_true(ql_memplan_release(p, a2));
    ql_memplan_end(p, true);
    /* a failed trace makes no plan */
    ql_memplan_begin(p, 8);
    void *c = traced(p, 256);
    untrace(p, c);
    assert_false(ql_memplan_end(p, false));
    ql_memplan_begin(p, 8);
    assert_null(ql_memplan_alloc(p, 256));
    ql_memplan_end(p, true);
    ql_memplan_free(p);
}

/* The example model: an executor keeping buffers (its runs planned after
 * the first) gives the same bits, run after run and batch size after batch
 * size, as a fresh executor that keeps nothing. */
static void test_executor_same_bits(void **state)
{
    (void)state;
    ql_model *m = NULL;
    ql_dataset *d = NULL;
    ql_error err = {{0}};
    assert_true(tu_load_example(&m, &d, 8));
    ql_exec_opts keep = {.n_threads = 1, .reuse_buffers = true}, plain = {.n_threads = 1};
    ql_exec *xk = NULL, *xp = NULL;
    assert_int_equal(ql_exec_new(m->graph, &keep, &xk, &err), QL_OK);
    assert_int_equal(ql_exec_new(m->graph, &plain, &xp, &err), QL_OK);
    static const int64_t sizes[] = {3, 3, 3, 1, 3, 8, 1, 8};
    for (size_t r = 0; r < sizeof sizes / sizeof *sizes; r++) {
        ql_tensor in = ql_dataset_batch(d, 0, sizes[r]);
        const ql_tensor *f = &in;
        ql_tensor *yk[4] = {0}, *yp[4] = {0};
        assert_int_equal(ql_exec_run(xk, &f, yk, &err), QL_OK);
        assert_int_equal(ql_exec_run(xp, &f, yp, &err), QL_OK);
        assert_int_equal(ql_tensor_nbytes(yk[0]), ql_tensor_nbytes(yp[0]));
        assert_memory_equal(yk[0]->data, yp[0]->data, ql_tensor_nbytes(yp[0]));
        ql_tensor_free(yk[0]);
        ql_tensor_free(yp[0]);
    }
    ql_exec_free(xk);
    ql_exec_free(xp);
    ql_dataset_free(d);
    ql_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_and_reuse),
        cmocka_unit_test(test_other_run_gets_no_arena),
        cmocka_unit_test(test_taken_stays_apart),
        cmocka_unit_test(test_executor_same_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
