/* classes.c - class names that must agree between records (classes.h). */
#include "classes.h"

#include "err.h"
#include "mval.h"

#include <stdlib.h>
#include <string.h>

int classes_check(const record *a, const char *what_a, const record *b, const char *what_b)
{
    if (!mv_map_get(a->meta, "classes") || !mv_map_get(b->meta, "classes"))
        return 0;
    const char **x = NULL, **y = NULL;
    size_t nx = 0, ny = 0;
    int rc = rec_get_strs(a, "classes", &x, &nx);
    if (!rc)
        rc = rec_get_strs(b, "classes", &y, &ny);
    for (size_t i = 0; !rc && (i < nx || i < ny); i++) {
        if (i < nx && i < ny && !strcmp(x[i], y[i]))
            continue;
        rc = err_set(ERR_FORMAT,
                     "%s (stream %s) and %s (stream %s) name other classes (field meta.classes): "
                     "class %zu is '%s' in %s, '%s' in %s (%zu and %zu classes)",
                     what_a, a->src, what_b, b->src, i, i < nx ? x[i] : "(none)", what_a,
                     i < ny ? y[i] : "(none)", what_b, nx, ny);
    }
    free(x);
    free(y);
    return rc;
}
