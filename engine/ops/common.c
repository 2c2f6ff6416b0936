/* Helpers shared by the op families: broadcasting, axes, window geometry. */
#include <string.h>

#include "kernels.h"

bool ql_norm_axis(int64_t axis, int rank, int *out)
{
    if (axis < -rank || axis >= rank)
        return false;
    *out = (int)(axis < 0 ? axis + rank : axis);
    return true;
}

bool ql_broadcast_shape(int an, const int64_t *a, int bn, const int64_t *b, int *on,
                        int64_t *o)
{
    if (an < 0 || bn < 0) {
        *on = -1;
        return true;
    }
    int n = an > bn ? an : bn;
    if (n > QL_MAX_DIMS)
        return false;
    for (int i = 0; i < n; i++) {
        int ia = i - (n - an), ib = i - (n - bn);
        int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        if (da == db)
            o[i] = da;
        else if (da == 1)
            o[i] = db;
        else if (db == 1)
            o[i] = da;
        else if (da < 0 || db < 0)
            o[i] = da < 0 ? db : da; /* unknown must broadcast to the known extent */
        else
            return false;
    }
    *on = n;
    return true;
}

ql_status ql_window_init(const ql_node *n, int nsp, const int64_t *kernel, const int64_t *in,
                         int ceil_mode, ql_window *w, ql_error *err)
{
    int cnt;
    memset(w, 0, sizeof *w);
    if (nsp < 1 || nsp > QL_MAX_SPATIAL)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%d spatial dimensions (1 to %d supported)", nsp,
                       QL_MAX_SPATIAL);
    w->nsp = nsp;
    const int64_t *ks = ql_attr_ints(n, "kernel_shape", &cnt);
    if (ks && cnt != nsp)
        return ql_fail(err, QL_ERR_ARG, "kernel_shape has %d values for %d spatial dimensions", cnt, nsp);
    for (int i = 0; i < nsp; i++) {
        w->kernel[i] = ks ? ks[i] : (kernel ? kernel[i] : -1);
        if (kernel && ks && kernel[i] >= 0 && ks[i] != kernel[i])
            return ql_fail(err, QL_ERR_ARG, "kernel_shape %lld does not match the weight's %lld",
                           (long long)ks[i], (long long)kernel[i]);
        if (w->kernel[i] < 1)
            return ql_fail(err, QL_ERR_ARG, "kernel_shape is missing or not positive");
        w->stride[i] = 1;
        w->dilation[i] = 1;
    }
    const int64_t *v = ql_attr_ints(n, "strides", &cnt);
    if (v) {
        if (cnt != nsp)
            return ql_fail(err, QL_ERR_ARG, "strides has %d values for %d spatial dimensions", cnt, nsp);
        for (int i = 0; i < nsp; i++)
            if ((w->stride[i] = v[i]) < 1)
                return ql_fail(err, QL_ERR_ARG, "strides must be positive");
    }
    v = ql_attr_ints(n, "dilations", &cnt);
    if (v) {
        if (cnt != nsp)
            return ql_fail(err, QL_ERR_ARG, "dilations has %d values for %d spatial dimensions", cnt, nsp);
        for (int i = 0; i < nsp; i++)
            if ((w->dilation[i] = v[i]) < 1)
                return ql_fail(err, QL_ERR_ARG, "dilations must be positive");
    }
    const char *ap = ql_attr_string(n, "auto_pad", "NOTSET");
    v = ql_attr_ints(n, "pads", &cnt);
    if (v && strcmp(ap, "NOTSET") == 0) {
        if (cnt != 2 * nsp)
            return ql_fail(err, QL_ERR_ARG, "pads has %d values for %d spatial dimensions", cnt, nsp);
        for (int i = 0; i < nsp; i++) {
            w->pad_begin[i] = v[i];
            w->pad_end[i] = v[i + nsp];
            if (v[i] < 0 || v[i + nsp] < 0)
                return ql_fail(err, QL_ERR_ARG, "negative pads are not supported");
        }
    }
    for (int i = 0; i < nsp; i++) {
        w->in[i] = in ? in[i] : -1;
        int64_t ext = (w->kernel[i] - 1) * w->dilation[i] + 1;
        if (w->in[i] < 0) {
            w->out[i] = -1;
            continue;
        }
        if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) {
            int64_t o = (w->in[i] + w->stride[i] - 1) / w->stride[i];
            int64_t total = (o - 1) * w->stride[i] + ext - w->in[i];
            if (total < 0)
                total = 0;
            int64_t small = total / 2, big = total - small;
            w->pad_begin[i] = !strcmp(ap, "SAME_UPPER") ? small : big;
            w->pad_end[i] = !strcmp(ap, "SAME_UPPER") ? big : small;
            w->out[i] = o;
            continue;
        }
        if (!strcmp(ap, "VALID")) {
            w->pad_begin[i] = w->pad_end[i] = 0;
        } else if (strcmp(ap, "NOTSET") != 0) {
            return ql_fail(err, QL_ERR_ARG, "unknown auto_pad '%s'", ap);
        }
        int64_t span = w->in[i] + w->pad_begin[i] + w->pad_end[i] - ext;
        if (span < 0)
            return ql_fail(err, QL_ERR_SHAPE, "the window (%lld) is larger than the padded input (%lld)",
                           (long long)ext, (long long)(w->in[i] + w->pad_begin[i] + w->pad_end[i]));
        int64_t o = ceil_mode ? (span + w->stride[i] - 1) / w->stride[i] + 1 : span / w->stride[i] + 1;
        /* ceil mode: the last window must start inside the input or the begin padding */
        if (ceil_mode && (o - 1) * w->stride[i] >= w->in[i] + w->pad_begin[i])
            o--;
        w->out[i] = o;
    }
    return QL_OK;
}
