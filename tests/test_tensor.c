/* Unit tests: tensors, dtype traits, shape helpers, status messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "engine/status.h"
#include "engine/tensor.h"

static void test_new_is_zeroed_and_aligned(void **state)
{
    (void)state;
    int64_t dims[] = {2, 3, 5};
    ql_tensor *t = ql_tensor_new(QL_F32, 3, dims);
    assert_non_null(t);
    assert_true(t->owns);
    assert_int_equal(ql_tensor_numel(t), 30);
    assert_int_equal(ql_tensor_nbytes(t), 120);
    assert_int_equal((uintptr_t)t->data % 64, 0);
    for (int i = 0; i < 30; i++)
        assert_true(((float *)t->data)[i] == 0.0f);
    ql_tensor_free(t);
}

static void test_scalar_and_empty(void **state)
{
    (void)state;
    ql_tensor *s = ql_tensor_new(QL_I64, 0, NULL);
    assert_int_equal(ql_tensor_numel(s), 1);
    ql_tensor_free(s);
    int64_t dims[] = {4, 0};
    ql_tensor *e = ql_tensor_new(QL_F32, 2, dims);
    assert_non_null(e);
    assert_int_equal(ql_tensor_numel(e), 0);
    ql_tensor_free(e);
}

static void test_clone_and_wrap(void **state)
{
    (void)state;
    float data[6] = {1, 2, 3, 4, 5, 6};
    int64_t dims[] = {2, 3};
    ql_tensor *w = ql_tensor_wrap(QL_F32, 2, dims, data);
    assert_false(w->owns);
    ql_tensor *c = ql_tensor_clone(w);
    assert_true(c->owns);
    assert_ptr_not_equal(c->data, data);
    assert_memory_equal(c->data, data, sizeof data);
    ql_tensor_free(w); /* must not free the stack array */
    ql_tensor_free(c);
}

static void test_alloc_refuses_unknown_dims(void **state)
{
    (void)state;
    ql_tensor t = {.dtype = QL_F32, .ndim = 2, .dims = {-1, 3}};
    assert_int_equal(ql_tensor_alloc(&t), QL_ERR_SHAPE);
    assert_null(t.data);
}

static void test_dtype_traits(void **state)
{
    (void)state;
    assert_string_equal(ql_dtype_info(QL_F32)->name, "f32");
    assert_int_equal(ql_dtype_info(QL_I16)->size, 2);
    assert_int_equal(ql_dtype_info(QL_I64)->size, 8);
    ql_dtype d;
    assert_true(ql_dtype_from_onnx(1, &d));
    assert_int_equal(d, QL_F32);
    assert_true(ql_dtype_from_onnx(7, &d));
    assert_int_equal(d, QL_I64);
    assert_false(ql_dtype_from_onnx(11, &d)); /* double */
    assert_false(ql_dtype_from_onnx(8, &d));  /* string */
}

static void test_shape_str(void **state)
{
    (void)state;
    char buf[64];
    int64_t dims[] = {-1, 3, 224, 224};
    assert_string_equal(ql_shape_str(4, dims, buf, sizeof buf), "[?x3x224x224]");
    assert_string_equal(ql_shape_str(0, dims, buf, sizeof buf), "[]");
    assert_string_equal(ql_shape_str(-1, dims, buf, sizeof buf), "[?]");
    char small[6];
    ql_shape_str(4, dims, small, sizeof small); /* truncates safely */
    assert_int_equal(strlen(small), 5);
    assert_true(ql_shape_equal(2, dims, 2, dims));
    assert_false(ql_shape_equal(2, dims, 3, dims));
}

static void test_get_helpers(void **state)
{
    (void)state;
    int32_t v[] = {-7, 9};
    int64_t dims[] = {2};
    ql_tensor t = {.dtype = QL_I32, .ndim = 1, .dims = {2}, .data = v};
    (void)dims;
    assert_int_equal(ql_tensor_get_i64(&t, 0), -7);
    assert_true(ql_tensor_get_f64(&t, 1) == 9.0);
}

static void test_status(void **state)
{
    (void)state;
    ql_error err;
    assert_int_equal(ql_fail(&err, QL_ERR_IO, "%s: %d", "a.onnx", 3), QL_ERR_IO);
    assert_string_equal(err.msg, "a.onnx: 3");
    ql_fail_prefix(&err, QL_ERR_IO, "node '%s'", "c1");
    assert_string_equal(err.msg, "node 'c1': a.onnx: 3");
    assert_string_equal(ql_status_str(QL_OK), "ok");
    assert_string_equal(ql_status_str((ql_status)999), "unknown status");
    assert_int_equal(ql_fail(NULL, QL_ERR_ARG, "x"), QL_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_is_zeroed_and_aligned),
        cmocka_unit_test(test_scalar_and_empty),
        cmocka_unit_test(test_clone_and_wrap),
        cmocka_unit_test(test_alloc_refuses_unknown_dims),
        cmocka_unit_test(test_dtype_traits),
        cmocka_unit_test(test_shape_str),
        cmocka_unit_test(test_get_helpers),
        cmocka_unit_test(test_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
