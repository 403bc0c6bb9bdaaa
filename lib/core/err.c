/* err.c - per-thread error message (see err.h). */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_buf[1024];
static _Thread_local int err_code;

/* Messages quote names and keys taken from hostile input: control characters (a newline
 * above all) would break the one-line rule of DESIGN section 7, so they become '?'. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

int err_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    one_line(err_buf);
    err_code = code;
    return code;
}

int err_wrap(int code, const char *fmt, ...)
{
    char prefix[512], old[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err_buf - 3)
        n = sizeof err_buf - 3;
    memcpy(err_buf, prefix, n);
    memcpy(err_buf + n, ": ", 2);
    size_t m = strlen(old);
    if (m > sizeof err_buf - n - 3)
        m = sizeof err_buf - n - 3;
    memcpy(err_buf + n + 2, old, m);
    err_buf[n + 2 + m] = 0;
    one_line(err_buf);
    err_code = code;
    return code;
}

const char *err_msg(void) { return err_buf; }
int err_last(void) { return err_code; }

void err_clear(void)
{
    err_buf[0] = 0;
    err_code = ERR_OK;
}

int err_exit_code(int code)
{
    if (code >= 0)
        return 0;
    if (code < ERR_INTERNAL)
        return 5;
    return -code;
}
