/* fl-client - the client side of federated rounds across hosts (README "Federated across
 * machines", docs/format.md "Federated messages"): connects a ZeroMQ DEALER to fl-server
 * (CURVE with its own key pair and the server's public key, or --insecure), says hello every
 * heartbeat, and for each task writes the global model into its work folder, runs
 * `local-train` on its own shard (exec'd with an argument array, never a shell; the options
 * are the server's, each checked to be a number or one of the known words first), and sends
 * the update back, byte for byte as local-train wrote it.  The shard never leaves the host.
 * ZeroMQ reconnects by itself after a server restart; a task the client already answered
 * (same round, same model bytes) is answered again from the work folder without training.
 *
 * Not here: the round logic (fl-server), training (local-train), the transport
 * (lib/io/fednet.c). */
#include "endpoint.h"
#include "err.h"
#include "fednet.h"
#include "shard.h"
#include "tool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

_Noreturn static void usage(void)
{
    printf(
        "usage: fl-client --server ADDR (--key CLIENT.key --server-key SERVER.pub | --insecure)\n"
        "                 --shard SHARD --work DIR [options]\n"
        "Take part in federated rounds: wait for the server's tasks, train the global model on\n"
        "this host's shard with local-train, send the update back.  Runs until the server says\n"
        "the run is over (fl-server --stop), --idle-exit, or a signal.\n\n"
        "      --server ADDR    the server: tcp://HOST:PORT (or ipc://PATH)\n"
        "      --key FILE       this client's secret key (fl-keygen; its .pub must be enrolled on\n"
        "                       the server as client-K.pub, K this shard's client id)\n"
        "      --server-key F   the server's public key (server.pub)\n"
        "      --insecure       no keys, no encryption (the server must be --insecure too)\n"
        "  -d, --shard SHARD    this client's data (kind shard, from partition); its meta.client\n"
        "                       is the client id\n"
        "      --work DIR       where models, updates and local-train's log go (round-RRR/)\n"
        "      --heartbeat SEC  seconds between hellos (default 1)\n"
        "      --threads N      local-train threads (default: the server's --threads)\n"
        "      --local-train P  the local-train program (default: the one beside fl-client)\n"
        "      --max-msg BYTES  largest message accepted from the server (default 64 GiB)\n"
        "      --idle-exit SEC  exit 0 after SEC seconds without a task (default: never)\n"
        "  -q, --quiet / -v, --verbose\n"
        "  -h, --help / -V, --version\n\n"
        "example: fl-client --server tcp://server.example.org:5555 --key keys/client-03.key \\\n"
        "           --server-key keys/server.pub --shard client-03.mpk.zst --work work-03\n"
        "exit: 0 told to stop (or idle), 2 usage, 3 bad shard, 4 I/O or network (the server\n"
        "      refused this client's key or security), 5 internal\n");
    exit(0);
}

typedef struct {
    const char *server, *key, *server_key, *shard, *work, *local_train, *threads;
    bool insecure;
    double heartbeat, idle_exit;
    int64_t max_msg;
} cli_args;

static cli_args A;
static int64_t me = -1;
static fn_sock *sock;
static volatile sig_atomic_t stop_sig;

/* the task in hand */
static struct {
    bool busy;
    int64_t round;     /* of the last task taken (-1 none) */
    pid_t pid;         /* local-train, 0 when none runs */
    double t0;         /* when it started */
    double max_msg;    /* the server's limit */
    char dir[PATH_MAX];
} job = {.round = -1};

static void on_signal(int sig) { stop_sig = sig; }

static void log_line(const char *line) { fprintf(stderr, "%s: %s\n", tool_name, line); }

/* ---- the messages ---- */
static void send_hello(void)
{
    record *h = rec_new("hello");
    if (!h || rec_set_int(h, "client", me) || rec_set_str(h, "state", job.busy ? "busy" : "idle") ||
        rec_set_int(h, "round", job.round) || rec_set_float(h, "heartbeat_s", A.heartbeat) ||
        rec_set_int(h, "protocol", 1))
        tool_die(ERR_INTERNAL, "out of memory");
    if (fn_send(sock, NULL, 0, h, NULL, 0, NULL))
        tool_log(3, "no server to greet (%s)", err_msg());
    rec_free(h);
}

static int read_text(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = 0;
    fclose(f);
    return 0;
}

/* Sends the outcome of the task in job.dir: the update (status ok), or why not. */
static void send_result(const char *status, const char *why, double train_s)
{
    record *h = rec_new("result");
    const char *files[] = {"update"};
    fn_blob *b = NULL;
    char path[PATH_MAX + 32];
    if (!h || rec_set_int(h, "client", me) || rec_set_int(h, "round", job.round) ||
        rec_set_float(h, "train_s", train_s))
        tool_die(ERR_INTERNAL, "out of memory");
    if (!strcmp(status, "ok")) {
        snprintf(path, sizeof path, "%s/update.mpk.zst", job.dir);
        b = fn_blob_file(path);
        if (!b) {
            status = "failed";
            why = err_msg();
        } else if ((double)fn_blob_len(b) + 65536 > job.max_msg) {
            static char msg[200];
            snprintf(msg, sizeof msg, "the update is %zu bytes, more than the server's --max-msg %.0f",
                     fn_blob_len(b), job.max_msg);
            status = "failed";
            why = msg;
            fn_blob_unref(b);
            b = NULL;
        }
    }
    if (rec_set_str(h, "status", status) || (why && rec_set_str(h, "error", why)) ||
        (b && rec_set_strs(h, "files", files, 1)))
        tool_die(ERR_INTERNAL, "out of memory");
    int rc = fn_send(sock, NULL, 0, h, b ? &b : NULL, b ? 1 : 0, NULL);
    if (rc)
        tool_log(1, "round %lld: cannot send the result now (%s); the server will ask again",
                 (long long)job.round, err_msg());
    else
        tool_log(1, "round %lld: %s sent%s%s", (long long)job.round,
                 b ? "update" : "failure", why ? ": " : "", why ? why : "");
    fn_blob_unref(b);
    rec_free(h);
}

/* ---- training ---- */
/* The task's training options, each checked (a number, or a known word) before it becomes an
 * argument of local-train. */
static int task_arg(const record *h, const char *key, bool required, bool integer, char *out,
                    size_t len)
{
    const char *v = NULL;
    out[0] = 0;
    if (rec_opt_str(h, key, &v) || !v)
        return required ? err_set(ERR_FORMAT, "the task has no %s", key) : 0;
    int64_t i;
    double d;
    if (!strcmp(key, "aug")) {
        if (strcmp(v, "batch") && strcmp(v, "sample") && strcmp(v, "none"))
            return err_set(ERR_FORMAT, "the task's aug '%.40s' is not batch, sample or none", v);
    } else if (integer ? parse_int(v, 0, INT64_MAX, &i) : parse_double(v, 0, 1e9, &d)) {
        return err_set(ERR_FORMAT, "the task's %s '%.40s' is not a number", key, v);
    }
    if (strlen(v) >= len)
        return err_set(ERR_FORMAT, "the task's %s is too long", key);
    snprintf(out, len, "%s", v);
    return 0;
}

/* A task's training options, checked, and as one string (the key of a kept answer). */
typedef struct {
    char ep[32], ba[32], lr[64], mo[64], wd[64], au[16], se[32], th[32];
    char key[512];
} task_opts;

static int parse_task_opts(const record *h, task_opts *o)
{
    if (task_arg(h, "epochs", true, true, o->ep, sizeof o->ep) ||
        task_arg(h, "batch", true, true, o->ba, sizeof o->ba) ||
        task_arg(h, "lr", true, false, o->lr, sizeof o->lr) ||
        task_arg(h, "momentum", false, false, o->mo, sizeof o->mo) ||
        task_arg(h, "wd", false, false, o->wd, sizeof o->wd) ||
        task_arg(h, "aug", true, false, o->au, sizeof o->au) ||
        task_arg(h, "seed", true, true, o->se, sizeof o->se) ||
        task_arg(h, "threads", true, true, o->th, sizeof o->th))
        return err_last();
    if (A.threads)
        snprintf(o->th, sizeof o->th, "%s", A.threads);
    snprintf(o->key, sizeof o->key,
             "epochs=%s\nbatch=%s\nlr=%s\nmomentum=%s\nwd=%s\naug=%s\nseed=%s\nthreads=%s\nshard=%s\n",
             o->ep, o->ba, o->lr, o->mo, o->wd, o->au, o->se, o->th, A.shard);
    return 0;
}

static void start_training(const task_opts *o)
{
    const char *ep = o->ep, *ba = o->ba, *lr = o->lr, *mo = o->mo, *wd = o->wd, *au = o->au,
               *se = o->se, *th = o->th;
    char model[PATH_MAX + 32], update[PATH_MAX + 32], logp[PATH_MAX + 32];
    snprintf(model, sizeof model, "%s/model.mpk.zst", job.dir);
    snprintf(update, sizeof update, "%s/update.mpk.zst", job.dir);
    snprintf(logp, sizeof logp, "%s/local-train.log", job.dir);
    const char *argv[40];
    int n = 0;
    argv[n++] = A.local_train;
    argv[n++] = "-m", argv[n++] = model;
    argv[n++] = "-d", argv[n++] = A.shard;
    argv[n++] = "--epochs", argv[n++] = ep;
    argv[n++] = "--batch", argv[n++] = ba;
    argv[n++] = "--lr", argv[n++] = lr;
    argv[n++] = "--aug", argv[n++] = au;
    argv[n++] = "--seed", argv[n++] = se;
    argv[n++] = "--threads", argv[n++] = th;
    argv[n++] = "-o", argv[n++] = update;
    if (mo[0])
        argv[n++] = "--momentum", argv[n++] = mo;
    if (wd[0])
        argv[n++] = "--wd", argv[n++] = wd;
    argv[n++] = "-q";
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        send_result("failed", "cannot fork local-train", 0);
        return;
    }
    if (pid == 0) {
        /* local-train dies with this client (a killed client leaves no orphan training) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            close(nul);
        }
        execv(A.local_train, (char *const *)argv);
        fprintf(stderr, "fl-client: error: cannot run %s: %s\n", A.local_train, strerror(errno));
        _exit(127);
    }
    job.pid = pid;
    job.busy = true;
    job.t0 = tool_now();
    tool_log(1, "round %lld: training (local-train, log in %s)", (long long)job.round, logp);
}

static void stop_training(void)
{
    if (job.pid > 0) {
        kill(job.pid, SIGTERM);
        waitpid(job.pid, NULL, 0);
    }
    job.pid = 0;
    job.busy = false;
}

/* Called when local-train has ended with wait status st. */
static void training_done(int st)
{
    double t = tool_now() - job.t0;
    job.pid = 0;
    job.busy = false;
    char tpath[PATH_MAX + 32], tbuf[64];
    snprintf(tpath, sizeof tpath, "%s/train_s.txt", job.dir);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        snprintf(tbuf, sizeof tbuf, "%.3f\n", t);
        if (fn_save(tpath, tbuf, strlen(tbuf), false))
            tool_log(1, "%s", err_msg());
        send_result("ok", NULL, t);
        return;
    }
    /* the last line of local-train's log says why */
    char logp[PATH_MAX + 32], buf[4096], why[600];
    snprintf(logp, sizeof logp, "%s/local-train.log", job.dir);
    const char *last = "";
    if (read_text(logp, buf, sizeof buf) == 0) {
        size_t n = strlen(buf);
        while (n && buf[n - 1] == '\n')
            buf[--n] = 0;
        char *nl = strrchr(buf, '\n');
        last = nl ? nl + 1 : buf;
    }
    if (WIFEXITED(st))
        snprintf(why, sizeof why, "local-train exited with %d: %.500s", WEXITSTATUS(st), last);
    else
        snprintf(why, sizeof why, "local-train was killed by signal %d", WTERMSIG(st));
    tool_log(1, "round %lld: %s", (long long)job.round, why);
    send_result("failed", why, t);
}

/* Removes round folders older than keep (the work folder holds the last two rounds). */
static void prune_work(int64_t keep)
{
    DIR *d = opendir(A.work);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long r;
        char rest;
        if (sscanf(e->d_name, "round-%lld%c", &r, &rest) != 1 || r >= keep)
            continue;
        char p[PATH_MAX + 300];
        const char *files[] = {"model.mpk.zst", "update.mpk.zst", "local-train.log", "train_s.txt",
                               "options.txt"};
        for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
            snprintf(p, sizeof p, "%s/%s/%s", A.work, e->d_name, files[i]);
            unlink(p);
        }
        snprintf(p, sizeof p, "%s/%s", A.work, e->d_name);
        rmdir(p);
    }
    closedir(d);
}

static bool same_file(const char *path, const void *data, size_t len)
{
    fn_blob *b = fn_blob_file(path);
    bool same = b && fn_blob_len(b) == len && memcmp(fn_blob_data(b), data, len) == 0;
    fn_blob_unref(b);
    err_clear();
    return same;
}

static void on_task(const fn_msg *m)
{
    int64_t r = -1, k = -1;
    if (rec_get_int(m->header, "round", &r) || rec_get_int(m->header, "client", &k) || r < 1) {
        tool_log(1, "ignored a task without a round and client");
        return;
    }
    if (k != me) {
        tool_log(1, "ignored a task for client %lld (this is client %lld)", (long long)k, (long long)me);
        return;
    }
    if (job.busy && job.round == r)
        return; /* the same task again: it is being done */
    if (job.busy) {
        tool_log(1, "round %lld abandoned for round %lld", (long long)job.round, (long long)r);
        stop_training();
    }
    job.round = r;
    double mm = (double)A.max_msg;
    rec_opt_float(m->header, "max_msg", &mm);
    job.max_msg = mm;
    const char **files = NULL;
    size_t nf = 0;
    size_t len = 0;
    const void *data = NULL;
    if (rec_get_strs(m->header, "files", &files, &nf) == 0 && nf == 1 && m->n_files == 1 &&
        !strcmp(files[0], "model"))
        data = fn_msg_file(m, 0, &len);
    free(files);
    snprintf(job.dir, sizeof job.dir, "%s/round-%03lld", A.work, (long long)r);
    if (!data) {
        send_result("failed", "the task carries no model", 0);
        return;
    }
    task_opts o;
    if (parse_task_opts(m->header, &o)) {
        tool_log(1, "round %lld: %s", (long long)r, err_msg());
        send_result("failed", err_msg(), 0);
        return;
    }
    char model[PATH_MAX + 32], update[PATH_MAX + 32], tpath[PATH_MAX + 32], tbuf[64];
    char apath[PATH_MAX + 32], abuf[600];
    snprintf(model, sizeof model, "%s/model.mpk.zst", job.dir);
    snprintf(update, sizeof update, "%s/update.mpk.zst", job.dir);
    snprintf(tpath, sizeof tpath, "%s/train_s.txt", job.dir);
    snprintf(apath, sizeof apath, "%s/options.txt", job.dir);
    struct stat st;
    /* answered before: the same round, model bytes and options (train_s.txt is written last) */
    if (stat(update, &st) == 0 && read_text(tpath, tbuf, sizeof tbuf) == 0 &&
        read_text(apath, abuf, sizeof abuf) == 0 && strcmp(abuf, o.key) == 0 &&
        same_file(model, data, len)) {
        tool_log(1, "round %lld: answered before; sending the kept update again", (long long)r);
        send_result("ok", NULL, atof(tbuf));
        return;
    }
    /* not decoded here: local-train checks the model (and says why it refuses one), and a
     * client busy decoding a large model would miss its heartbeats */
    prune_work(r - 1);
    if ((mkdir(job.dir, 0755) && errno != EEXIST) || fn_save(model, data, len, false)) {
        char why[600];
        snprintf(why, sizeof why, "cannot write %.300s: %.250s", model,
                 err_msg()[0] ? err_msg() : strerror(errno));
        send_result("failed", why, 0);
        return;
    }
    unlink(update);
    unlink(tpath);
    if (fn_save(apath, o.key, strlen(o.key), false)) {
        send_result("failed", err_msg(), 0);
        return;
    }
    start_training(&o);
}

/* The shard's client id, after the checks local-train makes (labels in range, shapes,
 * offsets, mean/std): a bad shard is refused at start, not in every round. */
static int64_t shard_client(const char *path)
{
    shard *s = shard_load(path, NULL);
    if (!s)
        tool_fail(err_last());
    int64_t c = s->client;
    shard_free(s);
    if (c < 0)
        tool_die(ERR_FORMAT, "%s is the test set (meta.client -1), not a client's shard", path);
    return c;
}

int main(int argc, char **argv)
{
    tool_init("fl-client");
    A = (cli_args){.heartbeat = 1, .idle_exit = -1, .max_msg = 64LL << 30};
    tool_common co = {.usage = usage, .seed = 7};
    enum { O_SERVER = 0x100, O_KEY, O_SKEY, O_INSECURE, O_WORK, O_HB, O_LT, O_MAXMSG, O_IDLE };
    static const struct option lo[] = {
        {"server", 1, 0, O_SERVER},      {"key", 1, 0, O_KEY},
        {"server-key", 1, 0, O_SKEY},    {"insecure", 0, 0, O_INSECURE},
        {"shard", 1, 0, 'd'},            {"work", 1, 0, O_WORK},
        {"heartbeat", 1, 0, O_HB},       {"local-train", 1, 0, O_LT},
        {"max-msg", 1, 0, O_MAXMSG},     {"idle-exit", 1, 0, O_IDLE},
        {0, 0, 0, 0}};
    int c;
    while ((c = tool_getopt(argc, argv, "d:", lo, &co)) != -1) {
        switch (c) {
        case O_SERVER: A.server = optarg; break;
        case O_KEY: A.key = optarg; break;
        case O_SKEY: A.server_key = optarg; break;
        case O_INSECURE: A.insecure = true; break;
        case 'd': A.shard = optarg; break;
        case O_WORK: A.work = optarg; break;
        case O_HB: A.heartbeat = tool_parse_double("--heartbeat", optarg, 0.01, 3600); break;
        case O_LT: A.local_train = optarg; break;
        case O_MAXMSG: A.max_msg = tool_parse_int("--max-msg", optarg, 1024, INT64_MAX); break;
        case O_IDLE: A.idle_exit = tool_parse_double("--idle-exit", optarg, 0, 1e9); break;
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (!A.server)
        tool_usage_error("no server: give --server tcp://HOST:PORT");
    if (A.insecure && (A.key || A.server_key))
        tool_usage_error("--insecure turns encryption off: give it without --key and --server-key");
    if (!A.insecure && (!A.key || !A.server_key))
        tool_usage_error("give --key CLIENT.key and --server-key SERVER.pub (CURVE), or --insecure");
    if (!A.shard || !A.work || !*A.shard || !*A.work)
        tool_usage_error("give --shard SHARD and --work DIR");
    if (fn_check_addr(A.server))
        tool_fail(err_last());
    if (co.out)
        tool_usage_error("fl-client writes into --work, not -o");
    static char th[24], lt[PATH_MAX];
    if (co.threads >= 0) {
        snprintf(th, sizeof th, "%d", co.threads);
        A.threads = th;
    }
    if (!A.local_train) {
        ssize_t n = readlink("/proc/self/exe", lt, sizeof lt - 16);
        if (n > 0) {
            lt[n] = 0;
            char *slash = strrchr(lt, '/');
            snprintf(slash ? slash + 1 : lt, 16, "local-train");
        }
        A.local_train = lt;
    }
    if (access(A.local_train, X_OK))
        tool_die(ERR_IO, "cannot run %s: %s (give --local-train PATH)", A.local_train, strerror(errno));
    me = shard_client(A.shard);
    if (mkdir(A.work, 0755) && errno != EEXIST)
        tool_die(ERR_IO, "cannot create %s: %s", A.work, strerror(errno));

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    fn_opts fo = {.secret_key = A.key, .server_key = A.server_key, .max_msg = A.max_msg,
                  .log = log_line};
    sock = fn_client_open(A.server, &fo);
    if (!sock)
        tool_fail(err_last());
    tool_log(1, "client %lld: connecting to %s (%s)", (long long)me, A.server,
             A.insecure ? "insecure" : "CURVE");
    double next_hello = 0, last_task = tool_now();
    int rc = 0;
    while (!stop_sig) {
        double now = tool_now();
        if (now >= next_hello) {
            send_hello();
            next_hello = now + A.heartbeat;
        }
        if (job.pid > 0) {
            int st;
            pid_t p = waitpid(job.pid, &st, WNOHANG);
            if (p == job.pid) {
                training_done(st);
                last_task = tool_now();
                send_hello();
                continue;
            }
        }
        if (!job.busy && A.idle_exit >= 0 && now - last_task > A.idle_exit) {
            tool_log(1, "no task for %.0f s: exiting", A.idle_exit);
            break;
        }
        int wait_ms = (int)((next_hello - now) * 1000);
        if (job.pid > 0 && wait_ms > 50)
            wait_ms = 50;
        fn_msg *m = NULL;
        int r = fn_recv(sock, wait_ms < 0 ? 0 : wait_ms, &m);
        if (r == FN_REFUSED) {
            tool_log(1, "%s", err_msg());
            continue;
        }
        if (r < 0) {
            if (stop_sig)
                break;
            rc = r;
            break;
        }
        if (r != FN_GOT)
            continue;
        if (!strcmp(m->header->kind, "task")) {
            last_task = tool_now();
            on_task(m);
            send_hello();
        } else if (!strcmp(m->header->kind, "bye")) {
            tool_log(1, "the server ended the run");
            fn_msg_free(m);
            break;
        } else {
            tool_log(1, "ignored a '%s' message from the server", m->header->kind);
        }
        fn_msg_free(m);
    }
    stop_training();
    fn_close(sock, 0);
    if (stop_sig) {
        signal(stop_sig, SIG_DFL);
        raise(stop_sig);
    }
    if (rc)
        tool_fail(rc);
    return 0;
}
