/* Atomic output files (temporary file + fsync + rename). */
#include "outfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* mkstemp makes files 0600; the result should get the mode any new file
 * gets. umask() cannot be read without setting it (racy with other
 * threads), so read it from /proc, assuming the common 022 where missing. */
static mode_t current_umask(void)
{
    mode_t um = 022;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return um;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Umask:", 6)) {
            um = (mode_t)strtoul(line + 6, NULL, 8) & 0777;
            break;
        }
    fclose(f);
    return um;
}

ql_status ql_outfile_open(ql_outfile *o, const char *path, ql_error *err)
{
    memset(o, 0, sizeof *o);
    size_t n = strlen(path);
    o->path = strdup(path);
    o->tmp = malloc(n + sizeof ".tmpXXXXXX");
    if (!o->path || !o->tmp) {
        ql_outfile_abort(o);
        return ql_fail(err, QL_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(o->tmp, path, n);
    memcpy(o->tmp + n, ".tmpXXXXXX", sizeof ".tmpXXXXXX");
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        ql_status st = ql_fail(err, QL_ERR_IO, "%s: cannot create a temporary file: %s", path,
                               strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        ql_outfile_abort(o);
        return st;
    }
    if (fchmod(fd, 0666 & ~current_umask()) != 0 || !(o->f = fdopen(fd, "w"))) {
        ql_status st = ql_fail(err, QL_ERR_IO, "%s: %s", path, strerror(errno));
        close(fd);
        ql_outfile_abort(o);
        return st;
    }
    return QL_OK;
}

ql_status ql_outfile_commit(ql_outfile *o, ql_error *err)
{
    ql_status st = QL_OK;
    errno = 0;
    int bad = fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0;
    int e = errno;
    bad |= fclose(o->f) != 0;
    o->f = NULL;
    if (bad)
        st = ql_fail(err, QL_ERR_IO, "%s: write failed: %s", o->path,
                     strerror(e ? e : errno ? errno : EIO));
    else if (rename(o->tmp, o->path) != 0)
        st = ql_fail(err, QL_ERR_IO, "%s: cannot rename the temporary file into place: %s",
                     o->path, strerror(errno));
    else {
        free(o->tmp);
        o->tmp = NULL;
    }
    ql_outfile_abort(o);
    return st;
}

void ql_outfile_abort(ql_outfile *o)
{
    if (o->f)
        fclose(o->f);
    if (o->tmp)
        unlink(o->tmp);
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof *o);
}

ql_status ql_write_file_atomic(const char *path, const void *buf, size_t len, ql_error *err)
{
    ql_outfile o;
    ql_status st = ql_outfile_open(&o, path, err);
    if (st != QL_OK)
        return st;
    if (len && fwrite(buf, 1, len, o.f) != len) {
        st = ql_fail(err, QL_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        ql_outfile_abort(&o);
        return st;
    }
    return ql_outfile_commit(&o, err);
}
