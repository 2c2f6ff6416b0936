/* Status codes and located error messages for the qlens engine.
 * Engine functions return a ql_status and, on failure, describe what went
 * wrong and where (file, node, JSON path, line) in a caller-provided ql_error. */
#ifndef QL_STATUS_H
#define QL_STATUS_H

#include <stddef.h>

#define QL_STATUS_LIST(X)                                   \
    X(QL_OK, "ok")                                          \
    X(QL_ERR_NOMEM, "out of memory")                        \
    X(QL_ERR_IO, "input/output error")                      \
    X(QL_ERR_FORMAT, "malformed input")                     \
    X(QL_ERR_UNSUPPORTED, "unsupported")                    \
    X(QL_ERR_SHAPE, "shape mismatch")                       \
    X(QL_ERR_ARG, "invalid argument")                       \
    X(QL_ERR_DATA, "invalid data")                          \
    X(QL_ERR_CANCELLED, "cancelled")                        \
    X(QL_ERR_INTERNAL, "internal error")

#define QL_STATUS_ENUM_(name, msg) name,
typedef enum { QL_STATUS_LIST(QL_STATUS_ENUM_) QL_STATUS_COUNT } ql_status;
#undef QL_STATUS_ENUM_

/* A located, human-readable error message; filled only on failure. */
typedef struct ql_error {
    char msg[1024];
} ql_error;

const char *ql_status_str(ql_status s);

/* Formats a message into err (may be NULL) and returns s; use as
 * `return ql_fail(err, QL_ERR_FORMAT, "%s: ...", path);`. */
ql_status ql_fail(ql_error *err, ql_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (to add location as an error
 * travels up), returns s. */
ql_status ql_fail_prefix(ql_error *err, ql_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
