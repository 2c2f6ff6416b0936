/* Unit tests: whole-file reads with gunzip, .npy read/write (bytes written by
 * hand here, independent of ql_npy_save), IDX files, folders of .npy files,
 * limits, checks against a model input, labels, and every error message. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "engine/dataset.h"
#include "tests/testutil.h"

static char tmpdir[64];

/* ---------------------------------------------------------------------------
 * File writers, independent of the code under test
 * ------------------------------------------------------------------------- */

static const char *tpath(const char *name)
{
    static char buf[8][256];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void write_gz(const char *path, const void *p, size_t n)
{
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, p, (unsigned)n), (int)n);
    assert_int_equal(gzclose(g), Z_OK);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(*n + 1);
    assert_int_equal(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

/* A .npy file of format `major` with the given header dict text, padded as
 * numpy pads it, followed by `n` data bytes. */
static void write_npy_raw(const char *path, int major, const char *dict, const void *data,
                          size_t n)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t hlen = dl + 1 + (64 - (pre + dl + 1) % 64) % 64;
    size_t total = pre + hlen + n;
    unsigned char *b = malloc(total);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        b[8 + i] = (unsigned char)(hlen >> (8 * i));
    memset(b + pre, ' ', hlen);
    memcpy(b + pre, dict, dl);
    b[pre + hlen - 1] = '\n';
    if (n)
        memcpy(b + pre + hlen, data, n);
    write_bytes(path, b, total);
    free(b);
}

static void write_npy_f32(const char *path, const char *shape, const float *x, size_t n)
{
    char dict[256];
    snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }", shape);
    write_npy_raw(path, 1, dict, x, n * sizeof *x);
}

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
}

/* An IDX file; `data` holds numel elements of `es` bytes as host values. */
static void write_idx(const char *path, bool gz, int type, int nd, const uint32_t *dims,
                      const void *data, size_t es)
{
    size_t numel = 1;
    for (int i = 0; i < nd; i++)
        numel *= dims[i];
    size_t n = 4 + 4 * (size_t)nd + numel * es;
    unsigned char *b = malloc(n), *p = b + 4 + 4 * nd;
    b[0] = b[1] = 0;
    b[2] = (unsigned char)type;
    b[3] = (unsigned char)nd;
    for (int i = 0; i < nd; i++)
        put_be(b + 4 + 4 * i, dims[i], 4);
    for (size_t i = 0; i < numel; i++) {
        uint64_t v = 0;
        memcpy(&v, (const char *)data + i * es, es); /* little-endian host */
        put_be(p + i * es, v, (int)es);
    }
    if (gz)
        write_gz(path, b, n);
    else
        write_bytes(path, b, n);
    free(b);
}

static bool contains(const ql_error *e, const char *s)
{
    if (strstr(e->msg, s))
        return true;
    print_error("message \"%s\" lacks \"%s\"\n", e->msg, s);
    return false;
}

#define assert_fails(call, status, text)                                                         \
    do {                                                                                         \
        ql_error e_ = {{0}};                                                                     \
        ql_error *err = &e_;                                                                     \
        assert_int_equal((call), (status));                                                      \
        assert_true(contains(&e_, (text)));                                                      \
    } while (0)

/* ---------------------------------------------------------------------------
 * ql_read_file and gzip
 * ------------------------------------------------------------------------- */

static void test_read_file_gzip(void **state)
{
    (void)state;
    ql_error e;
    unsigned char data[100000];
    tu_rng r = {7};
    for (size_t i = 0; i < sizeof data; i++) /* compressible but not trivial */
        data[i] = (unsigned char)(tu_next(&r) % 7);
    write_gz(tpath("a.gz"), data, sizeof data);
    void *buf;
    size_t len;
    assert_int_equal(ql_read_file(tpath("a.gz"), true, &buf, &len, &e), QL_OK);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(buf, data, sizeof data);
    free(buf);
    /* gunzip=false gives the raw bytes */
    size_t raw_n;
    unsigned char *raw = slurp(tpath("a.gz"), &raw_n);
    assert_int_equal(ql_read_file(tpath("a.gz"), false, &buf, &len, &e), QL_OK);
    assert_int_equal(len, raw_n);
    assert_memory_equal(buf, raw, raw_n);
    free(buf);

    /* two concatenated members, as `cat a.gz b.gz` makes */
    unsigned char *two = malloc(2 * raw_n);
    memcpy(two, raw, raw_n);
    memcpy(two + raw_n, raw, raw_n);
    write_bytes(tpath("two.gz"), two, 2 * raw_n);
    assert_int_equal(ql_read_file(tpath("two.gz"), true, &buf, &len, &e), QL_OK);
    assert_int_equal(len, 2 * sizeof data);
    assert_memory_equal((char *)buf + sizeof data, data, sizeof data);
    free(buf);
    free(two);

    /* truncated in the middle of the compressed stream */
    write_bytes(tpath("cut.gz"), raw, raw_n / 2);
    assert_fails(ql_read_file(tpath("cut.gz"), true, &buf, &len, err), QL_ERR_FORMAT,
                 "cut.gz: truncated gzip data");
    assert_null(buf);
    /* trailer cut off (all data present, CRC/size missing) */
    write_bytes(tpath("notrail.gz"), raw, raw_n - 4);
    assert_fails(ql_read_file(tpath("notrail.gz"), true, &buf, &len, err), QL_ERR_FORMAT,
                 "notrail.gz: truncated gzip data");
    /* corrupt: flipped bytes in the deflate data or a wrong CRC */
    raw[raw_n / 2] ^= 0xff;
    raw[raw_n / 2 + 1] ^= 0x5a;
    write_bytes(tpath("bad.gz"), raw, raw_n);
    assert_fails(ql_read_file(tpath("bad.gz"), true, &buf, &len, err), QL_ERR_FORMAT,
                 "bad.gz: corrupt gzip data");
    raw[raw_n / 2] ^= 0xff;
    raw[raw_n / 2 + 1] ^= 0x5a;
    raw[raw_n - 6] ^= 1; /* CRC32 */
    write_bytes(tpath("crc.gz"), raw, raw_n);
    assert_fails(ql_read_file(tpath("crc.gz"), true, &buf, &len, err), QL_ERR_FORMAT,
                 "crc.gz: corrupt gzip data");
    free(raw);

    assert_fails(ql_read_file(tpath("missing"), true, &buf, &len, err), QL_ERR_IO,
                 "missing: cannot open");
    assert_fails(ql_read_file(tmpdir, true, &buf, &len, err), QL_ERR_IO, "not a regular file");
    write_bytes(tpath("empty"), "", 0);
    assert_int_equal(ql_read_file(tpath("empty"), true, &buf, &len, &e), QL_OK);
    assert_int_equal(len, 0);
    free(buf);
}

/* ---------------------------------------------------------------------------
 * .npy
 * ------------------------------------------------------------------------- */

static void test_npy_dtypes(void **state)
{
    (void)state;
    ql_error e;
    ql_tensor *t;
    /* f32 [2x3], format 1.0 */
    float f[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    write_npy_f32(tpath("f.npy"), "(2, 3)", f, 6);
    assert_int_equal(ql_npy_load(tpath("f.npy"), &t, &e), QL_OK);
    assert_int_equal(t->dtype, QL_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->dims[0], 2);
    assert_int_equal(t->dims[1], 3);
    assert_memory_equal(t->data, f, sizeof f);
    ql_tensor_free(t);

    /* f64 narrowed to f32, format 2.0 */
    double d[3] = {0.1, -1e30, 3.0};
    write_npy_raw(tpath("d.npy"), 2, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                  d, sizeof d);
    assert_int_equal(ql_npy_load(tpath("d.npy"), &t, &e), QL_OK);
    assert_int_equal(t->dtype, QL_F32);
    assert_int_equal(t->ndim, 1);
    for (int i = 0; i < 3; i++)
        assert_true(((float *)t->data)[i] == (float)d[i]);
    ql_tensor_free(t);

    /* integer and bool types; format 3.0, double quotes, odd spacing */
    static const struct {
        const char *descr;
        ql_dtype dt;
        size_t es;
    } cases[] = {{"|u1", QL_U8, 1},  {"|i1", QL_I8, 1},  {"<i2", QL_I16, 2}, {"<i4", QL_I32, 4},
                 {"<i8", QL_I64, 8}, {"|b1", QL_BOOL, 1}, {">u1", QL_U8, 1}, {"=i4", QL_I32, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        unsigned char bytes[4 * 8];
        for (size_t i = 0; i < sizeof bytes; i++)
            bytes[i] = (unsigned char)(i * 37 + c);
        if (cases[c].dt == QL_BOOL)
            for (size_t i = 0; i < sizeof bytes; i++)
                bytes[i] &= 1;
        char dict[128];
        snprintf(dict, sizeof dict,
                 "{\"descr\":\"%s\",\"fortran_order\":False,\"shape\":(2,2),}", cases[c].descr);
        write_npy_raw(tpath("i.npy"), 3, dict, bytes, 4 * cases[c].es);
        assert_int_equal(ql_npy_load(tpath("i.npy"), &t, &e), QL_OK);
        assert_int_equal(t->dtype, cases[c].dt);
        assert_int_equal(ql_tensor_numel(t), 4);
        assert_memory_equal(t->data, bytes, 4 * cases[c].es);
        ql_tensor_free(t);
    }

    /* 0-d, empty and 8-d arrays; Python 2 long suffixes */
    float one = 42;
    write_npy_f32(tpath("s.npy"), "()", &one, 1);
    assert_int_equal(ql_npy_load(tpath("s.npy"), &t, &e), QL_OK);
    assert_int_equal(t->ndim, 0);
    assert_true(((float *)t->data)[0] == 42);
    ql_tensor_free(t);
    write_npy_f32(tpath("e.npy"), "(0, 5)", NULL, 0);
    assert_int_equal(ql_npy_load(tpath("e.npy"), &t, &e), QL_OK);
    assert_int_equal(ql_tensor_numel(t), 0);
    ql_tensor_free(t);
    float eight[2] = {1, 2};
    write_npy_f32(tpath("8.npy"), "(1L, 1L, 1L, 1L, 1L, 1L, 1L, 2L)", eight, 2);
    assert_int_equal(ql_npy_load(tpath("8.npy"), &t, &e), QL_OK);
    assert_int_equal(t->ndim, 8);
    assert_int_equal(t->dims[7], 2);
    ql_tensor_free(t);
}

static void test_npy_errors(void **state)
{
    (void)state;
    ql_tensor *t = NULL;
    float f[6] = {0};
    const char *dict_fmt = "{'descr': '%s', 'fortran_order': False, 'shape': (2, 3), }";
    char dict[128];

    snprintf(dict, sizeof dict, dict_fmt, ">f4");
    write_npy_raw(tpath("be.npy"), 1, dict, f, 24);
    assert_fails(ql_npy_load(tpath("be.npy"), &t, err), QL_ERR_UNSUPPORTED,
                 "be.npy: big-endian data ('>f4') is not supported");
    assert_null(t);
    const char *unsupported[] = {"<u2", "<u4", "<u8", "<f2", "<c8", "<U3", "|O"};
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        char want[64];
        snprintf(dict, sizeof dict, dict_fmt, unsupported[i]);
        write_npy_raw(tpath("u.npy"), 1, dict, f, 24);
        snprintf(want, sizeof want, "u.npy: array dtype '%s' is not supported", unsupported[i]);
        assert_fails(ql_npy_load(tpath("u.npy"), &t, err), QL_ERR_UNSUPPORTED, want);
    }
    write_npy_raw(tpath("fo.npy"), 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                  f, 24);
    assert_fails(ql_npy_load(tpath("fo.npy"), &t, err), QL_ERR_UNSUPPORTED,
                 "fo.npy: Fortran-ordered arrays are not supported");
    write_npy_raw(tpath("rec.npy"), 1,
                  "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", f, 8);
    assert_fails(ql_npy_load(tpath("rec.npy"), &t, err), QL_ERR_UNSUPPORTED,
                 "rec.npy: structured arrays");

    /* data size against the header, both ways */
    write_npy_f32(tpath("trunc.npy"), "(2, 3)", f, 5);
    assert_fails(ql_npy_load(tpath("trunc.npy"), &t, err), QL_ERR_FORMAT,
                 "trunc.npy: size mismatch: shape [2x3] '<f4' needs 24 data bytes but the file "
                 "has 20 (truncated?)");
    write_npy_f32(tpath("long.npy"), "(5,)", f, 6);
    assert_fails(ql_npy_load(tpath("long.npy"), &t, err), QL_ERR_FORMAT,
                 "needs 20 data bytes but the file has 24 (trailing bytes)");
    write_npy_f32(tpath("huge.npy"), "(4294967296, 4294967296, 4294967296)", f, 6);
    assert_fails(ql_npy_load(tpath("huge.npy"), &t, err), QL_ERR_FORMAT, "implausibly large");
    write_npy_f32(tpath("9d.npy"), "(1, 1, 1, 1, 1, 1, 1, 1, 1)", f, 1);
    assert_fails(ql_npy_load(tpath("9d.npy"), &t, err), QL_ERR_UNSUPPORTED,
                 "9d.npy: the array has more than 8 dimensions");

    /* malformed headers */
    const char *bad[] = {"['descr', '<f4']", "{'descr': '<f4', 'shape': (2, 3), }",
                         "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }",
                         "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }",
                         "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }",
                         "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}",
                         "{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3)}",
                         "{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3), }"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_npy_raw(tpath("m.npy"), 1, bad[i], f, 24);
        assert_fails(ql_npy_load(tpath("m.npy"), &t, err), QL_ERR_FORMAT,
                     "m.npy: malformed .npy");
    }
    write_npy_raw(tpath("v4.npy"), 1, "{}", NULL, 0);
    size_t n;
    unsigned char *b = slurp(tpath("v4.npy"), &n);
    b[6] = 4;
    write_bytes(tpath("v4.npy"), b, n);
    assert_fails(ql_npy_load(tpath("v4.npy"), &t, err), QL_ERR_UNSUPPORTED,
                 "v4.npy: unsupported .npy format version 4.0");
    b[6] = 1;
    b[8] = 0xff; /* header longer than the file */
    write_bytes(tpath("hl.npy"), b, n);
    assert_fails(ql_npy_load(tpath("hl.npy"), &t, err), QL_ERR_FORMAT,
                 "hl.npy: truncated .npy header");
    write_bytes(tpath("short.npy"), b, 7);
    assert_fails(ql_npy_load(tpath("short.npy"), &t, err), QL_ERR_FORMAT,
                 "short.npy: truncated .npy header");
    free(b);
    write_bytes(tpath("text.npy"), "hello world", 11);
    assert_fails(ql_npy_load(tpath("text.npy"), &t, err), QL_ERR_FORMAT,
                 "text.npy: not a .npy file");
    assert_fails(ql_npy_load_buffer("\x93NUMPY", 6, "buf", &t, err), QL_ERR_FORMAT,
                 "buf: truncated .npy header");
}

static void test_npy_save_roundtrip(void **state)
{
    (void)state;
    ql_error e;
    tu_rng r = {11};
    for (int dt = 0; dt < QL_DTYPE_COUNT; dt++) {
        static const int64_t shapes[4][4] = {{2, 3, 5}, {7}, {0}, {1, 2, 1, 3}};
        static const int ranks[4] = {3, 1, 0, 4};
        for (int s = 0; s < 4; s++) {
            ql_tensor *a = ql_tensor_new((ql_dtype)dt, ranks[s], shapes[s]), *b = NULL;
            unsigned char *p = a->data;
            for (size_t i = 0; i < ql_tensor_nbytes(a); i++)
                p[i] = (unsigned char)(dt == QL_BOOL ? tu_next(&r) & 1 : tu_next(&r));
            if (dt == QL_F32) /* keep floats finite and non-NaN for memcmp */
                tu_fill(&r, a->data, ql_tensor_numel(a), -100, 100);
            assert_int_equal(ql_npy_save(tpath("rt.npy"), a, &e), QL_OK);
            assert_int_equal(ql_npy_load(tpath("rt.npy"), &b, &e), QL_OK);
            assert_int_equal(b->dtype, dt);
            assert_true(ql_shape_equal(a->ndim, a->dims, b->ndim, b->dims));
            assert_memory_equal(a->data, b->data, ql_tensor_nbytes(a));
            ql_tensor_free(a);
            ql_tensor_free(b);
        }
    }
    /* the bytes are what numpy writes: version 1.0, 64-byte aligned data */
    int64_t dims[2] = {2, 3};
    ql_tensor *a = ql_tensor_new(QL_F32, 2, dims);
    assert_int_equal(ql_npy_save(tpath("np.npy"), a, &e), QL_OK);
    size_t n;
    unsigned char *b = slurp(tpath("np.npy"), &n);
    assert_int_equal(n, 128 + 24);
    assert_memory_equal(b, "\x93NUMPY\x01\x00\x76\x00", 10);
    const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_memory_equal(b + 10, want, strlen(want));
    assert_int_equal(b[127], '\n');
    assert_int_equal(b[126], ' ');
    free(b);
    a->ndim = 1;
    assert_int_equal(ql_npy_save(tpath("np.npy"), a, &e), QL_OK);
    b = slurp(tpath("np.npy"), &n);
    assert_non_null(strstr((char *)b + 10, "'shape': (2,), }"));
    free(b);
    a->ndim = 0;
    assert_int_equal(ql_npy_save(tpath("np.npy"), a, &e), QL_OK);
    b = slurp(tpath("np.npy"), &n);
    assert_non_null(strstr((char *)b + 10, "'shape': (), }"));
    free(b);
    /* the result gets the mode new files get, not mkstemp's 0600 */
    struct stat sb;
    mode_t um = umask(022);
    assert_int_equal(ql_npy_save(tpath("np.npy"), a, &e), QL_OK);
    umask(um);
    assert_int_equal(stat(tpath("np.npy"), &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0644);
    ql_tensor_free(a);
}

static int count_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".tmp") != NULL;
    closedir(d);
    return n;
}

static void test_npy_save_atomic_failure(void **state)
{
    (void)state;
    int64_t dims[1] = {4};
    ql_tensor *a = ql_tensor_new(QL_I32, 1, dims);
    /* folder does not exist: nothing is created */
    assert_fails(ql_npy_save(tpath("nodir/x.npy"), a, err), QL_ERR_IO,
                 "nodir/x.npy: cannot create a temporary file");
    /* the target is a folder: the temporary file is written, the rename
     * fails, and the temporary file must be gone */
    mkdir(tpath("target.npy"), 0755);
    assert_fails(ql_npy_save(tpath("target.npy"), a, err), QL_ERR_IO,
                 "target.npy: cannot rename the temporary file into place");
    assert_int_equal(count_tmp_files(tmpdir), 0);
    /* an existing file is replaced whole */
    write_bytes(tpath("old.npy"), "old contents", 12);
    assert_int_equal(ql_npy_save(tpath("old.npy"), a, NULL), QL_OK);
    ql_tensor *b;
    assert_int_equal(ql_npy_load(tpath("old.npy"), &b, NULL), QL_OK);
    assert_int_equal(b->dims[0], 4);
    ql_tensor_free(b);
    assert_int_equal(count_tmp_files(tmpdir), 0);
    ql_tensor_free(a);
}

/* ---------------------------------------------------------------------------
 * IDX
 * ------------------------------------------------------------------------- */

static void test_idx_types(void **state)
{
    (void)state;
    ql_error e;
    ql_dataset *d;
    uint32_t dims[3] = {3, 2, 2};
    uint8_t u8[12];
    int16_t i16[12];
    int32_t i32[12];
    float f32[12];
    double f64[12];
    for (int i = 0; i < 12; i++) {
        u8[i] = (uint8_t)(i * 21);
        i16[i] = (int16_t)(i * 1000 - 6000);
        i32[i] = i * 100000 - 600000;
        f32[i] = (float)i * 0.25f - 1;
        f64[i] = i * 0.5 - 2;
    }
    static const struct {
        int type;
        ql_dtype dt;
        size_t es;
        bool gz;
    } cases[] = {{0x08, QL_U8, 1, true},   {0x09, QL_I8, 1, false},  {0x0B, QL_I16, 2, true},
                 {0x0C, QL_I32, 4, false}, {0x0D, QL_F32, 4, true}, {0x0E, QL_F32, 8, false}};
    const void *src[] = {u8, u8, i16, i32, f32, f64};
    for (size_t c = 0; c < 6; c++) {
        write_idx(tpath("x.idx"), cases[c].gz, cases[c].type, 3, dims, src[c], cases[c].es);
        assert_int_equal(ql_dataset_load(tpath("x.idx"), 0, &d, &e), QL_OK);
        ql_tensor *t = d->samples;
        assert_int_equal(d->n, 3);
        assert_int_equal(t->dtype, cases[c].dt);
        assert_int_equal(t->ndim, 3);
        assert_int_equal(t->dims[1], 2);
        for (int i = 0; i < 12; i++) {
            double want = c < 2 ? (c == 0 ? u8[i] : (int8_t)u8[i])
                        : c == 2 ? i16[i]
                        : c == 3 ? i32[i]
                        : c == 4 ? f32[i]
                                 : f64[i];
            assert_true(ql_tensor_get_f64(t, i) == want);
        }
        ql_dataset_free(d);
    }
    /* limit keeps the first samples */
    write_idx(tpath("x.idx"), true, 0x08, 3, dims, u8, 1);
    assert_int_equal(ql_dataset_load(tpath("x.idx"), 2, &d, &e), QL_OK);
    assert_int_equal(d->n, 2);
    assert_int_equal(d->samples->dims[0], 2);
    ql_dataset_free(d);

    /* truncated and malformed */
    size_t n;
    write_idx(tpath("t.idx"), false, 0x0D, 3, dims, f32, 4);
    unsigned char *b = slurp(tpath("t.idx"), &n);
    write_bytes(tpath("t.idx"), b, n - 3);
    assert_fails(ql_dataset_load(tpath("t.idx"), 0, &d, err), QL_ERR_FORMAT,
                 "t.idx: size mismatch: IDX shape [3x2x2] needs 48 data bytes but the file has "
                 "45 (truncated?)");
    assert_null(d);
    write_bytes(tpath("h.idx"), b, 10);
    assert_fails(ql_dataset_load(tpath("h.idx"), 0, &d, err), QL_ERR_FORMAT,
                 "h.idx: truncated IDX header");
    b[2] = 0x0A; /* no such IDX type */
    write_bytes(tpath("u.idx"), b, n);
    assert_fails(ql_dataset_load(tpath("u.idx"), 0, &d, err), QL_ERR_FORMAT,
                 "u.idx: unknown data format");
    free(b);
    write_bytes(tpath("junk.bin"), "\x01\x02\x03\x04\x05", 5);
    assert_fails(ql_dataset_load(tpath("junk.bin"), 0, &d, err), QL_ERR_FORMAT,
                 "junk.bin: unknown data format (expected a folder of .npy files, a .npy file or "
                 "an IDX file, optionally gzipped)");
    write_gz(tpath("junk.gz"), "\x01\x02\x03\x04\x05", 5);
    assert_fails(ql_dataset_load(tpath("junk.gz"), 0, &d, err), QL_ERR_FORMAT,
                 "junk.gz: unknown data format");
    uint32_t huge[4] = {65536, 65536, 65536, 65536};
    write_idx(tpath("huge.idx"), false, 0x08, 4, huge, NULL, 0);
    assert_fails(ql_dataset_load(tpath("huge.idx"), 0, &d, err), QL_ERR_FORMAT,
                 "huge.idx: IDX shape [65536x65536x65536x65536] is implausibly large");
    uint32_t one[1] = {3};
    write_idx(tpath("1d.idx"), true, 0x08, 1, one, u8, 1);
    assert_fails(ql_dataset_load(tpath("1d.idx"), 0, &d, err), QL_ERR_DATA,
                 "1d.idx: needs a sample axis");
    assert_fails(ql_dataset_load(tpath("nothing"), 0, &d, err), QL_ERR_IO,
                 "nothing: cannot open");
}

/* ---------------------------------------------------------------------------
 * Batched .npy and folders
 * ------------------------------------------------------------------------- */

static void test_batched_npy(void **state)
{
    (void)state;
    ql_error e;
    ql_dataset *d;
    float x[24];
    for (int i = 0; i < 24; i++)
        x[i] = (float)i;
    write_npy_f32(tpath("b.npy"), "(4, 2, 3)", x, 24);
    assert_int_equal(ql_dataset_load(tpath("b.npy"), 0, &d, &e), QL_OK);
    assert_int_equal(d->n, 4);
    assert_string_equal(d->source, tpath("b.npy"));
    ql_tensor v = ql_dataset_batch(d, 1, 2);
    assert_false(v.owns);
    assert_int_equal(v.ndim, 3);
    assert_int_equal(v.dims[0], 2);
    assert_int_equal(v.dims[2], 3);
    assert_true(((float *)v.data)[0] == 6);
    assert_true(((float *)v.data)[11] == 17);
    ql_dataset_free(d);
    assert_int_equal(ql_dataset_load(tpath("b.npy"), 3, &d, &e), QL_OK);
    assert_int_equal(d->n, 3);
    ql_dataset_free(d);
    assert_int_equal(ql_dataset_load(tpath("b.npy"), 100, &d, &e), QL_OK);
    assert_int_equal(d->n, 4);
    ql_dataset_free(d);

    write_npy_f32(tpath("one.npy"), "(24,)", x, 24);
    assert_fails(ql_dataset_load(tpath("one.npy"), 0, &d, err), QL_ERR_DATA,
                 "one.npy: needs a sample axis");
    write_npy_f32(tpath("zero.npy"), "()", x, 1);
    assert_fails(ql_dataset_load(tpath("zero.npy"), 0, &d, err), QL_ERR_DATA,
                 "zero.npy: needs a sample axis");
    write_npy_f32(tpath("none.npy"), "(0, 3)", x, 0);
    assert_fails(ql_dataset_load(tpath("none.npy"), 0, &d, err), QL_ERR_DATA,
                 "none.npy: holds no samples");
    /* named .npy but something else inside */
    write_idx(tpath("idx.npy"), false, 0x08, 1, (uint32_t[]){1}, "a", 1);
    assert_fails(ql_dataset_load(tpath("idx.npy"), 0, &d, err), QL_ERR_FORMAT,
                 "idx.npy: not a .npy file");
}

static void test_folder(void **state)
{
    (void)state;
    ql_error e;
    ql_dataset *d;
    const char *dir = tpath("folder");
    char p[300];
    mkdir(dir, 0755);
    /* strcmp order: s1 < s10 < s2; other files and hidden ones are ignored */
    const char *names[] = {"s2.npy", "s10.npy", "s1.npy"};
    const float first[] = {2, 10, 1};
    for (int i = 0; i < 3; i++) {
        float x[6] = {first[i], 0, 0, 0, 0, first[i] * 100};
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        write_npy_f32(p, "(2, 3)", x, 6);
    }
    snprintf(p, sizeof p, "%s/readme.txt", dir);
    write_bytes(p, "x", 1);
    snprintf(p, sizeof p, "%s/.hidden.npy", dir);
    write_bytes(p, "x", 1);
    assert_int_equal(ql_dataset_load(dir, 0, &d, &e), QL_OK);
    assert_int_equal(d->n, 3);
    assert_int_equal(d->samples->ndim, 3);
    assert_int_equal(d->samples->dims[1], 2);
    const float *s = d->samples->data;
    assert_true(s[0] == 1 && s[6] == 10 && s[12] == 2 && s[17] == 200);
    ql_dataset_free(d);

    /* s3.npy differs; with limit 3 it is never read */
    float y[4] = {0};
    snprintf(p, sizeof p, "%s/s3.npy", dir);
    write_npy_f32(p, "(4,)", y, 4);
    assert_fails(ql_dataset_load(dir, 0, &d, err), QL_ERR_DATA,
                 "folder/s3.npy: sample f32 [4] differs from f32 [2x3] of s1.npy");
    assert_int_equal(ql_dataset_load(dir, 3, &d, &e), QL_OK);
    assert_int_equal(d->n, 3);
    ql_dataset_free(d);
    /* a differing dtype, and an unreadable file, name the file */
    int8_t i8[6] = {0};
    write_npy_raw(p, 1, "{'descr': '|i1', 'fortran_order': False, 'shape': (2, 3), }", i8, 6);
    assert_fails(ql_dataset_load(dir, 0, &d, err), QL_ERR_DATA,
                 "folder/s3.npy: sample i8 [2x3] differs from f32 [2x3] of s1.npy");
    write_npy_f32(p, "(2, 3)", y, 4);
    assert_fails(ql_dataset_load(dir, 0, &d, err), QL_ERR_FORMAT,
                 "folder/s3.npy: size mismatch");

    /* a folder of scalars gives [n] samples */
    const char *sdir = tpath("scalars");
    mkdir(sdir, 0755);
    for (int i = 0; i < 5; i++) {
        float v = (float)i;
        snprintf(p, sizeof p, "%s/%d.npy", sdir, i);
        write_npy_f32(p, "()", &v, 1);
    }
    assert_int_equal(ql_dataset_load(sdir, 0, &d, &e), QL_OK);
    assert_int_equal(d->samples->ndim, 1);
    assert_int_equal(d->n, 5);
    assert_true(((float *)d->samples->data)[4] == 4);
    ql_dataset_free(d);

    const char *edir = tpath("emptyfolder");
    mkdir(edir, 0755);
    assert_fails(ql_dataset_load(edir, 0, &d, err), QL_ERR_DATA,
                 "emptyfolder: the folder holds no .npy files");
    /* 8-d samples leave no room for the sample axis */
    const char *ddir = tpath("deep");
    mkdir(ddir, 0755);
    snprintf(p, sizeof p, "%s/a.npy", ddir);
    write_npy_f32(p, "(1, 1, 1, 1, 1, 1, 1, 1)", y, 1);
    assert_fails(ql_dataset_load(ddir, 0, &d, err), QL_ERR_UNSUPPORTED,
                 "deep/a.npy: a sample of 8 dimensions");
}

/* ---------------------------------------------------------------------------
 * ql_dataset_conform
 * ------------------------------------------------------------------------- */

static ql_value input_value(const char *name, ql_dtype dt, int ndim, const int64_t *dims)
{
    ql_value v;
    memset(&v, 0, sizeof v);
    v.name = (char *)name;
    v.dtype = dt;
    v.ndim = ndim;
    if (ndim > 0)
        memcpy(v.dims, dims, (size_t)ndim * sizeof *dims);
    v.producer = -1;
    v.is_input = true;
    return v;
}

static ql_dataset *load_ok(const char *path)
{
    ql_dataset *d = NULL;
    ql_error e;
    if (ql_dataset_load(path, 0, &d, &e) != QL_OK)
        fail_msg("%s", e.msg);
    return d;
}

static void test_conform_shapes(void **state)
{
    (void)state;
    ql_error e;
    uint8_t px[5 * 28 * 28];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 7);
    write_idx(tpath("img.idx.gz"), true, 0x08, 3, (uint32_t[]){5, 28, 28}, px, 1);

    /* leading 1 left out by the data, u8 converted to f32 by value */
    ql_value in = input_value("input", QL_F32, 4, (int64_t[]){-1, 1, 28, 28});
    ql_dataset *d = load_ok(tpath("img.idx.gz"));
    assert_int_equal(ql_dataset_conform(d, &in, &e), QL_OK);
    ql_tensor *t = d->samples;
    assert_int_equal(t->dtype, QL_F32);
    assert_true(ql_shape_equal(t->ndim, t->dims, 4, (int64_t[]){5, 1, 28, 28}));
    for (size_t i = 0; i < sizeof px; i++)
        assert_true(((float *)t->data)[i] == (float)px[i]);
    ql_tensor b = ql_dataset_batch(d, 4, 1);
    assert_true(ql_shape_equal(b.ndim, b.dims, 4, (int64_t[]){1, 1, 28, 28}));
    assert_true(((float *)b.data)[0] == (float)px[4 * 784]);
    /* conforming twice is harmless */
    assert_int_equal(ql_dataset_conform(d, &in, &e), QL_OK);
    assert_int_equal(d->samples->ndim, 4);
    ql_dataset_free(d);

    /* two leading 1s, free dims, a fixed batch */
    const int64_t ok_shapes[][5] = {{-1, 1, 1, 28, 28}, {-1, 1, -1, -1}, {8, 1, 28, 28},
                                    {-1, 28, 28},       {-1, 28, -1}};
    const int ok_ranks[] = {5, 4, 4, 3, 3};
    for (int k = 0; k < 5; k++) {
        in = input_value("input", QL_F32, ok_ranks[k], ok_shapes[k]);
        d = load_ok(tpath("img.idx.gz"));
        assert_int_equal(ql_dataset_conform(d, &in, &e), QL_OK);
        assert_int_equal(d->samples->ndim, ok_ranks[k]);
        assert_int_equal(d->samples->dims[0], 5);
        assert_int_equal(d->samples->dims[ok_ranks[k] - 1], 28);
        ql_dataset_free(d);
    }
    /* an unknown rank takes the data as it is */
    in = input_value("input", QL_F32, -1, NULL);
    d = load_ok(tpath("img.idx.gz"));
    assert_int_equal(ql_dataset_conform(d, &in, &e), QL_OK);
    assert_int_equal(d->samples->ndim, 3);
    ql_dataset_free(d);

    /* mismatches: the message names the data, the input and both shapes */
    float x[2 * 3 * 32 * 32] = {0};
    write_npy_f32(tpath("eval.npy"), "(2, 3, 32, 32)", x, 2 * 3 * 32 * 32);
    in = input_value("input", QL_F32, 4, (int64_t[]){-1, 1, 28, 28});
    d = load_ok(tpath("eval.npy"));
    assert_fails(ql_dataset_conform(d, &in, err), QL_ERR_SHAPE,
                 "eval.npy: sample shape [3x32x32] does not match model input 'input' "
                 "[?x1x28x28]");
    ql_dataset_free(d);
    const int64_t bad_shapes[][5] = {{-1, 3, 28, 28}, {-1, 28}, {-1, 1, 28, 27}, {-1, -1, 28, 28}};
    const int bad_ranks[] = {4, 2, 4, 4};
    const char *bad_msgs[] = {"sample shape [28x28] does not match model input 'x' [?x3x28x28]",
                              "sample shape [28x28] does not match model input 'x' [?x28]",
                              "sample shape [28x28] does not match model input 'x' [?x1x28x27]",
                              "sample shape [28x28] does not match model input 'x' [?x?x28x28]"};
    for (int k = 0; k < 4; k++) {
        in = input_value("x", QL_F32, bad_ranks[k], bad_shapes[k]);
        d = load_ok(tpath("img.idx.gz"));
        assert_fails(ql_dataset_conform(d, &in, err), QL_ERR_SHAPE, bad_msgs[k]);
        /* a failed check leaves the data as it was */
        assert_int_equal(d->samples->dtype, QL_U8);
        assert_int_equal(d->samples->ndim, 3);
        ql_dataset_free(d);
    }
    in = input_value("x", QL_F32, 0, NULL);
    d = load_ok(tpath("img.idx.gz"));
    assert_fails(ql_dataset_conform(d, &in, err), QL_ERR_SHAPE,
                 "model input 'x' is a scalar");
    ql_dataset_free(d);
}

static void test_conform_dtypes(void **state)
{
    (void)state;
    ql_error e;
    ql_dataset *d;
    /* f32 data into an integer input */
    float f[6] = {1, 2, 3, 4, 5, 6};
    write_npy_f32(tpath("f.npy"), "(2, 3)", f, 6);
    ql_value in = input_value("ids", QL_I64, 2, (int64_t[]){-1, 3});
    d = load_ok(tpath("f.npy"));
    assert_fails(ql_dataset_conform(d, &in, err), QL_ERR_DATA,
                 "f.npy: float data cannot feed model input 'ids' of type i64");
    ql_dataset_free(d);

    /* integers into a wider or narrower integer input, range-checked */
    int64_t v[6] = {0, 1, -5, 127, 300, 7};
    write_npy_raw(tpath("i.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }",
                  v, sizeof v);
    in = input_value("ids", QL_I32, 2, (int64_t[]){-1, 3});
    d = load_ok(tpath("i.npy"));
    assert_int_equal(ql_dataset_conform(d, &in, &e), QL_OK);
    assert_int_equal(d->samples->dtype, QL_I32);
    assert_int_equal(((int32_t *)d->samples->data)[4], 300);
    assert_int_equal(((int32_t *)d->samples->data)[2], -5);
    ql_dataset_free(d);
    in = input_value("ids", QL_I8, 2, (int64_t[]){-1, 3});
    d = load_ok(tpath("i.npy"));
    assert_fails(ql_dataset_conform(d, &in, err), QL_ERR_DATA,
                 "i.npy: sample 1 element 1: i64 value 300 does not fit model input 'ids' of "
                 "type i8");
    ql_dataset_free(d);

    /* bool and i16 to f32 by value */
    uint8_t bl[4] = {1, 0, 0, 1};
    write_npy_raw(tpath("b.npy"), 1, "{'descr': '|b1', 'fortran_order': False, 'shape': (4, 1), }",
                  bl, 4);
    in = input_value("m", QL_F32, 2, (int64_t[]){-1, 1});
    d = load_ok(tpath("b.npy"));
    assert_int_equal(ql_dataset_conform(d, &in, &e), QL_OK);
    assert_true(((float *)d->samples->data)[3] == 1.0f && ((float *)d->samples->data)[1] == 0);
    ql_dataset_free(d);
    int16_t s16[2] = {-32768, 32767};
    write_npy_raw(tpath("s.npy"), 1, "{'descr': '<i2', 'fortran_order': False, 'shape': (2, 1), }",
                  s16, 4);
    d = load_ok(tpath("s.npy"));
    assert_int_equal(ql_dataset_conform(d, &in, &e), QL_OK);
    assert_true(((float *)d->samples->data)[0] == -32768.0f);
    ql_dataset_free(d);
}

static void test_conform_nonfinite(void **state)
{
    (void)state;
    ql_error e;
    enum { N = 20, PER = 3 * 4 * 5 };
    static float x[N * PER];
    tu_rng r = {3};
    tu_fill(&r, x, N * PER, -1, 1);
    ql_value in = input_value("input", QL_F32, 4, (int64_t[]){-1, 3, 4, 5});
    /* clean data passes */
    write_npy_f32(tpath("eval.npy"), "(20, 3, 4, 5)", x, N * PER);
    ql_dataset *d = load_ok(tpath("eval.npy"));
    assert_int_equal(ql_dataset_conform(d, &in, &e), QL_OK);
    ql_dataset_free(d);
    /* the first offending element is reported, not a later one */
    x[17 * PER + 42] = NAN;
    x[18 * PER + 1] = INFINITY;
    write_npy_f32(tpath("eval.npy"), "(20, 3, 4, 5)", x, N * PER);
    d = load_ok(tpath("eval.npy"));
    assert_fails(ql_dataset_conform(d, &in, err), QL_ERR_DATA,
                 "eval.npy: sample 17 has NaN at element 42");
    ql_dataset_free(d);
    x[17 * PER + 42] = 0;
    x[2 * PER + 0] = -INFINITY;
    write_npy_f32(tpath("eval.npy"), "(20, 3, 4, 5)", x, N * PER);
    d = load_ok(tpath("eval.npy"));
    assert_fails(ql_dataset_conform(d, &in, err), QL_ERR_DATA,
                 "eval.npy: sample 2 has -Inf at element 0");
    ql_dataset_free(d);
    /* f64 overflowing f32 becomes Inf and is caught too */
    double big[2] = {1, 1e300};
    write_npy_raw(tpath("big.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1), }",
                  big, sizeof big);
    in = input_value("input", QL_F32, 2, (int64_t[]){-1, 1});
    d = load_ok(tpath("big.npy"));
    assert_fails(ql_dataset_conform(d, &in, err), QL_ERR_DATA,
                 "big.npy: sample 1 has Inf at element 0");
    ql_dataset_free(d);
}

/* ---------------------------------------------------------------------------
 * Labels
 * ------------------------------------------------------------------------- */

static void test_labels(void **state)
{
    (void)state;
    ql_error e;
    int64_t *l, n;
    int64_t v[5] = {3, 0, 9, 1, 2};
    write_npy_raw(tpath("l.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }",
                  v, sizeof v);
    assert_int_equal(ql_labels_load(tpath("l.npy"), 0, &l, &n, &e), QL_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(l, v, sizeof v);
    free(l);
    assert_int_equal(ql_labels_load(tpath("l.npy"), 2, &l, &n, &e), QL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(l[1], 0);
    free(l);
    uint8_t u[4] = {1, 2, 3, 255};
    write_npy_raw(tpath("l2.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 1), }",
                  u, 4);
    assert_int_equal(ql_labels_load(tpath("l2.npy"), 0, &l, &n, &e), QL_OK);
    assert_int_equal(n, 4);
    assert_int_equal(l[3], 255);
    free(l);
    write_idx(tpath("l.idx.gz"), true, 0x08, 1, (uint32_t[]){4}, u, 1);
    assert_int_equal(ql_labels_load(tpath("l.idx.gz"), 3, &l, &n, &e), QL_OK);
    assert_int_equal(n, 3);
    assert_int_equal(l[2], 3);
    free(l);
    int32_t i32[3] = {70000, 1, 2};
    write_idx(tpath("l32.idx"), false, 0x0C, 1, (uint32_t[]){3}, i32, 4);
    assert_int_equal(ql_labels_load(tpath("l32.idx"), 0, &l, &n, &e), QL_OK);
    assert_int_equal(l[0], 70000);
    free(l);

    /* errors */
    float f[3] = {1, 2, 3};
    write_npy_f32(tpath("lf.npy"), "(3,)", f, 3);
    assert_fails(ql_labels_load(tpath("lf.npy"), 0, &l, &n, err), QL_ERR_DATA,
                 "lf.npy: labels must be integer class ids, not floating-point values");
    assert_null(l);
    assert_int_equal(n, 0);
    int32_t neg[5] = {0, 1, 2, -1, 4};
    write_npy_raw(tpath("ln.npy"), 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }",
                  neg, sizeof neg);
    assert_fails(ql_labels_load(tpath("ln.npy"), 0, &l, &n, err), QL_ERR_DATA,
                 "ln.npy: label of sample 3 is -1, negative");
    assert_int_equal(ql_labels_load(tpath("ln.npy"), 3, &l, &n, &e), QL_OK); /* not read */
    free(l);
    write_npy_raw(tpath("l22.npy"), 1,
                  "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }", neg, 16);
    assert_fails(ql_labels_load(tpath("l22.npy"), 0, &l, &n, err), QL_ERR_DATA,
                 "l22.npy: labels must have shape [N] or [Nx1], not [2x2]");
    write_npy_raw(tpath("l0.npy"), 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (0,), }",
                  NULL, 0);
    assert_fails(ql_labels_load(tpath("l0.npy"), 0, &l, &n, err), QL_ERR_DATA,
                 "l0.npy: holds no labels");
    assert_fails(ql_labels_load(tpath("nolabels"), 0, &l, &n, err), QL_ERR_IO,
                 "nolabels: cannot open");
}

/* ---------------------------------------------------------------------------
 * The real Fashion-MNIST test set, when installed
 * ------------------------------------------------------------------------- */

#define FMNIST "/usr/share/datasets/fashion-mnist/"

static void test_fashion_mnist(void **state)
{
    (void)state;
    ql_error e;
    if (access(FMNIST "t10k-images-idx3-ubyte.gz", R_OK) != 0 ||
        access(FMNIST "t10k-labels-idx1-ubyte.gz", R_OK) != 0)
        skip();
    ql_dataset *d = NULL;
    assert_int_equal(ql_dataset_load(FMNIST "t10k-images-idx3-ubyte.gz", 0, &d, &e), QL_OK);
    assert_int_equal(d->n, 10000);
    assert_int_equal(d->samples->dtype, QL_U8);
    assert_true(ql_shape_equal(d->samples->ndim, d->samples->dims, 3,
                               (int64_t[]){10000, 28, 28}));
    ql_value in = input_value("input", QL_F32, 4, (int64_t[]){-1, 1, 28, 28});
    assert_int_equal(ql_dataset_conform(d, &in, &e), QL_OK);
    assert_int_equal(d->samples->ndim, 4);
    ql_dataset_free(d);

    int64_t *l, n, count[10] = {0};
    assert_int_equal(ql_labels_load(FMNIST "t10k-labels-idx1-ubyte.gz", 0, &l, &n, &e), QL_OK);
    assert_int_equal(n, 10000);
    for (int64_t i = 0; i < n; i++) {
        assert_in_range(l[i], 0, 9);
        count[l[i]]++;
    }
    for (int c = 0; c < 10; c++) /* the test set is balanced */
        assert_int_equal(count[c], 1000);
    assert_int_equal(l[0], 9); /* the first test image is an ankle boot */
    free(l);
}

/* ---------------------------------------------------------------------------
 * Setup
 * ------------------------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qlens-dataset.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_file_gzip),
        cmocka_unit_test(test_npy_dtypes),
        cmocka_unit_test(test_npy_errors),
        cmocka_unit_test(test_npy_save_roundtrip),
        cmocka_unit_test(test_npy_save_atomic_failure),
        cmocka_unit_test(test_idx_types),
        cmocka_unit_test(test_batched_npy),
        cmocka_unit_test(test_folder),
        cmocka_unit_test(test_conform_shapes),
        cmocka_unit_test(test_conform_dtypes),
        cmocka_unit_test(test_conform_nonfinite),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
