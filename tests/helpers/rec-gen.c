/* rec-gen - test helper: writes deterministic records (tests/unit/testgen.h) to an endpoint.
 *   rec-gen [--records N] [--client C] [--huge BYTES] [--level L] [--sleep-ms MS]
 *           [--bad-end COUNT] [--timeout-ms MS] OUT
 * --bad-end writes an extra `end` record claiming COUNT records before the real one;
 * --sleep-ms pauses before each record (for kill tests).  Exit codes as the tools'. */
#include "endpoint.h"
#include "testgen.h"
#include "tool.h"

#include <getopt.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    tool_init("rec-gen");
    int64_t records = 1, client = 0, huge = 0, sleep_ms = 0, bad_end = -1;
    ep_opts o;
    ep_opts_default(&o);
    static const struct option lo[] = {{"records", 1, 0, 'n'}, {"client", 1, 0, 'c'},
                                       {"huge", 1, 0, 'H'},    {"level", 1, 0, 'l'},
                                       {"sleep-ms", 1, 0, 's'}, {"bad-end", 1, 0, 'b'},
                                       {"timeout-ms", 1, 0, 't'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'n': records = tool_parse_int("--records", optarg, 0, 1 << 20); break;
        case 'c': client = tool_parse_int("--client", optarg, 0, 1 << 20); break;
        case 'H': huge = tool_parse_int("--huge", optarg, 0, INT64_MAX); break;
        case 'l': o.zstd_level = (int)tool_parse_int("--level", optarg, -5, 19); break;
        case 's': sleep_ms = tool_parse_int("--sleep-ms", optarg, 0, 100000); break;
        case 'b': bad_end = tool_parse_int("--bad-end", optarg, 0, 1 << 20); break;
        case 't': o.timeout_ms = (int)tool_parse_int("--timeout-ms", optarg, -1, 1 << 30); break;
        default: tool_usage_error("bad option");
        }
    }
    if (optind + 1 != argc)
        tool_usage_error("one output endpoint expected");
    rec_writer *w = ep_open_writer(argv[optind], &o);
    if (!w)
        tool_fail(err_last());
    for (int64_t q = 0; q < records; q++) {
        if (sleep_ms) {
            struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000};
            nanosleep(&ts, NULL);
        }
        record *r = tg_make(client, q, (size_t)huge);
        if (!r)
            tool_die(ERR_INTERNAL, "cannot build record %lld", (long long)q);
        int rc = rec_write(w, r);
        rec_free(r);
        if (rc) {
            rec_writer_close(w, false);
            tool_fail(rc);
        }
    }
    if (bad_end >= 0) {
        record *e = rec_new("end");
        if (!e || rec_set_int(e, "count", bad_end) || rec_write(w, e))
            tool_fail(ERR_INTERNAL);
        rec_free(e);
    }
    int rc = rec_writer_close(w, true);
    if (rc)
        tool_fail(rc);
    return 0;
}
