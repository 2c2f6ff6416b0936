/* Status names and error formatting. */
#include "status.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define QL_STATUS_STR_(name, msg) msg,
static const char *const status_names[] = {QL_STATUS_LIST(QL_STATUS_STR_)};
#undef QL_STATUS_STR_
static_assert(sizeof status_names / sizeof status_names[0] == QL_STATUS_COUNT,
              "status name table out of step with ql_status");

const char *ql_status_str(ql_status s)
{
    if ((unsigned)s >= QL_STATUS_COUNT)
        return "unknown status";
    return status_names[s];
}

ql_status ql_fail(ql_error *err, ql_status s, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return s;
}

ql_status ql_fail_prefix(ql_error *err, ql_status s, const char *fmt, ...)
{
    if (err) {
        char prefix[512], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        size_t n;
        memcpy(old, err->msg, sizeof old);
        old[sizeof old - 1] = '\0';
        /* Built piecewise so the result is cut at the buffer's end, by design. */
        n = strlen(prefix);
        if (n > sizeof err->msg - 3)
            n = sizeof err->msg - 3;
        memcpy(err->msg, prefix, n);
        memcpy(err->msg + n, ": ", 2);
        n += 2;
        size_t rest = strlen(old);
        if (rest > sizeof err->msg - 1 - n)
            rest = sizeof err->msg - 1 - n;
        memcpy(err->msg + n, old, rest);
        err->msg[n + rest] = '\0';
    }
    return s;
}
