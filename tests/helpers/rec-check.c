/* rec-check - test helper: reads an endpoint and checks every record against the formulas
 * of tests/unit/testgen.h.
 *   rec-check [--records N] [--huge BYTES] [--producers K] [--timeout-ms MS]
 *             [--max-msg BYTES] [--level-any] IN
 * Prints "ok N records" on success.  Exit: the reader's error code (3 format, 4 I/O), or 1
 * when content differs or the record count is not N. */
#include "endpoint.h"
#include "testgen.h"
#include "tool.h"

#include <getopt.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    tool_init("rec-check");
    int64_t records = -1, huge = 0;
    ep_opts o;
    ep_opts_default(&o);
    static const struct option lo[] = {{"records", 1, 0, 'n'},    {"huge", 1, 0, 'H'},
                                       {"producers", 1, 0, 'p'},  {"timeout-ms", 1, 0, 't'},
                                       {"max-msg", 1, 0, 'm'},    {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'n': records = tool_parse_int("--records", optarg, 0, 1 << 20); break;
        case 'H': huge = tool_parse_int("--huge", optarg, 0, INT64_MAX); break;
        case 'p': o.producers = (int)tool_parse_int("--producers", optarg, 1, 1000); break;
        case 't': o.timeout_ms = (int)tool_parse_int("--timeout-ms", optarg, -1, 1 << 30); break;
        case 'm': o.max_msg_bytes = tool_parse_int("--max-msg", optarg, -1, INT64_MAX); break;
        default: tool_usage_error("bad option");
        }
    }
    if (optind + 1 != argc)
        tool_usage_error("one input endpoint expected");
    rec_reader *rd = ep_open_reader(argv[optind], &o);
    if (!rd)
        tool_fail(err_last());
    record *r;
    int rc;
    long n = 0;
    char why[256];
    while ((rc = rec_read(rd, &r)) == 1) {
        if (tg_check(r, (size_t)huge, why, sizeof why))
            tool_die(ERR_RUNTIME, "record %ld: %s", n, why);
        rec_free(r);
        n++;
    }
    if (rc < 0)
        tool_fail(rc);
    rec_reader_close(rd);
    if (records >= 0 && n != records)
        tool_die(ERR_RUNTIME, "%ld records, expected %lld", n, (long long)records);
    printf("ok %ld records\n", n);
    return 0;
}
