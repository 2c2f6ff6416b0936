/* Atomic output files (temporary file + fsync + rename). */
#include "outfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ql_status outfile_open(outfile *o, const char *path, ql_error *err)
{
    memset(o, 0, sizeof *o);
    size_t n = strlen(path);
    o->path = strdup(path);
    o->tmp = malloc(n + sizeof ".tmpXXXXXX");
    if (!o->path || !o->tmp) {
        outfile_abort(o);
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
        outfile_abort(o);
        return st;
    }
    /* mkstemp makes 0600; give the file the mode a plain fopen would */
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0 || !(o->f = fdopen(fd, "w"))) {
        ql_status st = ql_fail(err, QL_ERR_IO, "%s: %s", path, strerror(errno));
        close(fd);
        outfile_abort(o);
        return st;
    }
    return QL_OK;
}

ql_status outfile_commit(outfile *o, ql_error *err)
{
    ql_status st = QL_OK;
    int bad = fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0;
    int e = errno;
    bad |= fclose(o->f) != 0;
    o->f = NULL;
    if (bad)
        st = ql_fail(err, QL_ERR_IO, "%s: write failed: %s", o->path, strerror(e ? e : errno));
    else if (rename(o->tmp, o->path) != 0)
        st = ql_fail(err, QL_ERR_IO, "%s: cannot rename the temporary file into place: %s",
                     o->path, strerror(errno));
    else {
        free(o->tmp);
        o->tmp = NULL;
    }
    outfile_abort(o);
    return st;
}

void outfile_abort(outfile *o)
{
    if (o->f)
        fclose(o->f);
    if (o->tmp)
        unlink(o->tmp);
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof *o);
}
