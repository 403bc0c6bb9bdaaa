/* inspect - print what is in any fedsm record stream (a file, stdin or a ZeroMQ endpoint):
 * one line per record (kind, meta summary) and one per tensor (dtype, shape, min/max/mean,
 * NaN/Inf counts); --json for machines; --meta for the whole meta map; --tensor NAME -o F.npy
 * exports one tensor as a NumPy .npy file.  Not a converter for whole streams. */
#include "endpoint.h"
#include "err.h"
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Noreturn static void usage(void)
{
    printf("usage: inspect [options] STREAM...\n"
           "Print the records of fedsm streams: STREAM is a .mpk.zst file, '-' (stdin),\n"
           "or a ZeroMQ endpoint (tcp://host:port or ipc://path; '@' binds).\n\n"
           "  -j, --json           one JSON object per record (meta, tensors with stats)\n"
           "  -m, --meta           print each record's whole meta map (JSON)\n"
           "  -t, --tensor NAME    export tensor NAME as NumPy .npy (needs -o)\n"
           "  -r, --record N       with --tensor: take it from record N (default: first that has it)\n"
           "  -o, --out FILE       output file for --tensor ('-': stdout)\n"
           "      --no-stats       skip min/max/mean (faster on huge tensors)\n"
           "      --timeout SEC    ZeroMQ receive timeout (default 60)\n"
           "      --producers K    ZeroMQ: wait for K producers' end records (default 1)\n"
           "      --max-msg BYTES  ZeroMQ maximum message size (default 64 GiB)\n"
           "  -q, --quiet / -v, --verbose\n"
           "      --seed S, --threads N  accepted as by every tool; inspect draws nothing\n"
           "  -h, --help / -V, --version\n\n"
           "example: inspect runs/demo/round-001/model.mpk.zst\n"
           "         inspect --tensor fc.weight -o fc.npy model.mpk.zst\n"
           "exit: 0 ok, 2 usage, 3 bad input format, 4 I/O or network\n");
    exit(0);
}

static float half_to_float(uint16_t h)
{
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, u;
    if (e == 0) {
        if (m == 0)
            u = s;
        else {
            e = 113;
            while (!(m & 1024))
                m <<= 1, e--;
            u = s | e << 23 | (m & 1023) << 13;
        }
    } else if (e == 31)
        u = s | 0x7f800000u | m << 13;
    else
        u = s | (e + 112) << 23 | m << 13;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct stats {
    double min, max, sum;
    int64_t n, nan, inf;
} stats;

static stats tensor_stats(const tensor *t)
{
    stats s = {INFINITY, -INFINITY, 0, 0, 0, 0};
    int64_t n = tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v;
        switch (t->dtype) {
        case DT_F32: v = ((const float *)t->data)[i]; break;
        case DT_F16: v = half_to_float(((const uint16_t *)t->data)[i]); break;
        case DT_I32: v = ((const int32_t *)t->data)[i]; break;
        case DT_I64: v = (double)((const int64_t *)t->data)[i]; break;
        default: v = ((const uint8_t *)t->data)[i]; break;
        }
        if (isnan(v)) {
            s.nan++;
            continue;
        }
        if (isinf(v)) {
            s.inf++;
            continue;
        }
        s.min = fmin(s.min, v);
        s.max = fmax(s.max, v);
        s.sum += v;
        s.n++;
    }
    return s;
}

static void shape_str(const tensor *t, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

static int write_npy(const tensor *t, const char *path)
{
    char shp[256], hdr[512];
    size_t at = (size_t)snprintf(shp, sizeof shp, "(");
    for (int i = 0; i < t->ndim; i++)
        at += (size_t)snprintf(shp + at, sizeof shp - at, "%lld,%s", (long long)t->shape[i],
                               i + 1 < t->ndim ? " " : "");
    if (t->ndim > 1)
        shp[at - 1] = 0, at--; /* numpy writes (3,) for 1-d and (2, 3) otherwise */
    snprintf(shp + at, sizeof shp - at, ")");
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     dtype_str(t->dtype), shp);
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    memset(hdr + n, ' ', (size_t)pad);
    hdr[n + pad] = '\n';
    uint16_t hlen = (uint16_t)(n + pad + 1);
    unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 255),
                               (unsigned char)(hlen >> 8)};
    if (!strcmp(path, "-")) { /* stdout, as every endpoint's '-' (DESIGN 3) */
        if (isatty(1))
            return err_set(ERR_USAGE, "not writing a binary .npy to a terminal (-o -)");
        bool ok = fwrite(magic, 1, 10, stdout) == 10 && fwrite(hdr, 1, hlen, stdout) == hlen &&
                  (t->nbytes == 0 || fwrite(t->data, 1, t->nbytes, stdout) == t->nbytes);
        if (fflush(stdout) || !ok)
            return err_set(ERR_IO, "cannot write the tensor to stdout: %s", strerror(errno));
        return 0;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return err_set(ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    bool ok = fwrite(magic, 1, 10, f) == 10 && fwrite(hdr, 1, hlen, f) == hlen &&
              (t->nbytes == 0 || fwrite(t->data, 1, t->nbytes, f) == t->nbytes);
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return err_set(ERR_IO, "cannot write %s", path);
    }
    return 0;
}

static void print_json_record(const record *r, bool with_stats)
{
    printf("{\"stream\":");
    mval s = mv_str(r->src);
    mv_write_json(&s, stdout);
    mv_clear(&s);
    printf(",\"record\":%ld,\"kind\":\"%s\",\"meta\":", r->index, r->kind);
    mv_write_json(r->meta, stdout);
    printf(",\"tensors\":[");
    for (int i = 0; i < r->n_tensors; i++) {
        const tensor *t = &r->tensors[i];
        char sh[256];
        shape_str(t, sh, sizeof sh);
        printf("%s{\"name\":", i ? "," : "");
        mval nm = mv_str(t->name);
        mv_write_json(&nm, stdout);
        mv_clear(&nm);
        printf(",\"dtype\":\"%s\",\"shape\":%s,\"bytes\":%zu", dtype_str(t->dtype), sh, t->nbytes);
        if (with_stats) {
            stats st = tensor_stats(t);
            if (st.n)
                printf(",\"min\":%.9g,\"max\":%.9g,\"mean\":%.9g", st.min, st.max,
                       st.sum / (double)st.n);
            printf(",\"nan\":%lld,\"inf\":%lld", (long long)st.nan, (long long)st.inf);
        }
        printf("}");
    }
    printf("]}\n");
}

static void print_record(const record *r, bool with_stats, bool full_meta)
{
    char summ[400];
    mv_summary(r->meta, summ, sizeof summ);
    printf("#%ld %s  %s\n", r->index, r->kind, summ);
    if (full_meta) {
        printf("  meta: ");
        mv_write_json(r->meta, stdout);
        printf("\n");
    }
    for (int i = 0; i < r->n_tensors; i++) {
        const tensor *t = &r->tensors[i];
        char sh[256];
        shape_str(t, sh, sizeof sh);
        printf("  %-32s %s %-18s", t->name, dtype_str(t->dtype), sh);
        if (with_stats) {
            stats st = tensor_stats(t);
            if (st.n)
                printf(" min=%-11.5g max=%-11.5g mean=%-11.5g", st.min, st.max,
                       st.sum / (double)st.n);
            printf(" nan=%lld inf=%lld", (long long)st.nan, (long long)st.inf);
        }
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    tool_init("inspect");
    bool json = false, meta = false, with_stats = true;
    const char *tname = NULL, *out = NULL;
    long want_rec = -1;
    ep_opts o;
    ep_opts_default(&o);
    tool_common co = {.usage = usage};
    static const struct option lo[] = {
        {"json", no_argument, 0, 'j'},      {"meta", no_argument, 0, 'm'},
        {"tensor", required_argument, 0, 't'}, {"record", required_argument, 0, 'r'},
        {"no-stats", no_argument, 0, 'S'},
        {"timeout", required_argument, 0, 'T'}, {"producers", required_argument, 0, 'P'},
        {"max-msg", required_argument, 0, 'M'}, {0, 0, 0, 0}};
    int c;
    while ((c = tool_getopt(argc, argv, "jmt:r:", lo, &co)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'm': meta = true; break;
        case 't': tname = optarg; break;
        case 'r': want_rec = (long)tool_parse_int("--record", optarg, 0, INT32_MAX); break;
        case 'S': with_stats = false; break;
        case 'T': o.timeout_ms = (int)(1000 * tool_parse_double("--timeout", optarg, 0, 1e6)); break;
        case 'P': o.producers = (int)tool_parse_int("--producers", optarg, 1, 1 << 20); break;
        case 'M': o.max_msg_bytes = tool_parse_int("--max-msg", optarg, -1, INT64_MAX); break;
        }
    }
    out = co.out;
    if (optind >= argc)
        tool_usage_error("no stream given");
    if (tname && !out)
        tool_usage_error("--tensor needs -o FILE.npy");
    if (out && !tname)
        tool_usage_error("-o is only for --tensor");
    if (out && ep_check_writer(out)) /* a missing folder fails now, not after reading */
        tool_fail(err_last());
    record *keep = NULL; /* the record whose tensor is exported once all input read well */
    for (int a = optind; a < argc; a++) {
        rec_reader *rd = ep_open_reader(argv[a], &o);
        if (!rd)
            tool_fail(err_last());
        record *r;
        int rc;
        long n = 0;
        while ((rc = rec_read(rd, &r)) == 1) {
            n++;
            if (tname) {
                if (!keep && rec_find(r, tname) && (want_rec < 0 || want_rec == r->index)) {
                    keep = r;
                    continue;
                }
            } else if (json)
                print_json_record(r, with_stats);
            else
                print_record(r, with_stats, meta);
            rec_free(r);
            fflush(stdout);
        }
        if (rc < 0)
            tool_fail(rc);
        if (n == 0)
            tool_die(ERR_FORMAT, "no records in %s (empty stream)", rec_reader_name(rd));
        rec_reader_close(rd);
    }
    if (tname && !keep)
        tool_die(ERR_USAGE, "no tensor '%s'%s in the input", tname, want_rec >= 0 ? " in that record" : "");
    if (keep && write_npy(rec_find(keep, tname), out))
        tool_fail(err_last());
    rec_free(keep);
    return 0;
}
