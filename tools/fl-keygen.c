/* fl-keygen - CURVE key pairs for federated runs across hosts (README "Federated across
 * machines"): NAME.pub (the public key, given to the other side) and NAME.key (the secret
 * key, mode 0600, never leaves its host), both Z85 text as ZeroMQ's zmq_curve_keypair makes
 * them.  A server enrolls client K by putting its public key in ENROLLED/client-K.pub.
 * Not here: the sockets that use the keys (lib/io/fednet.c). */
#include "err.h"
#include "fednet.h"
#include "tool.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn static void usage(void)
{
    printf("usage: fl-keygen -o NAME [--force]\n"
           "       fl-keygen --public NAME.key\n"
           "Make a CURVE key pair for fl-server / fl-client: NAME.pub (public, mode 0644) and\n"
           "NAME.key (secret, mode 0600; keep it on its host).  Existing files are never\n"
           "overwritten unless --force.\n\n"
           "  -o, --out NAME       write NAME.pub and NAME.key (e.g. keys/server, keys/client-03)\n"
           "      --force          replace existing NAME.pub / NAME.key\n"
           "      --public KEY     print the public key of the secret key file KEY (to remake a\n"
           "                       lost .pub)\n"
           "  -q, --quiet / -v, --verbose\n"
           "  -h, --help / -V, --version\n\n"
           "enrolling client 3 on the server:  fl-keygen -o client-03   (on the client's host),\n"
           "  then copy client-03.pub into the server's enrollment folder (fl-server --enrolled)\n"
           "  and the server's server.pub to the client (fl-client --server-key).\n"
           "exit: 0 ok, 2 usage, 3 not a key, 4 I/O (a file exists, a key file others may read)\n");
    exit(0);
}

int main(int argc, char **argv)
{
    tool_init("fl-keygen");
    const char *public_of = NULL;
    bool force = false;
    tool_common co = {.usage = usage, .seed = 7};
    enum { O_FORCE = 0x100, O_PUBLIC };
    static const struct option lo[] = {{"force", no_argument, 0, O_FORCE},
                                       {"public", required_argument, 0, O_PUBLIC},
                                       {0, 0, 0, 0}};
    int c;
    while ((c = tool_getopt(argc, argv, "", lo, &co)) != -1) {
        switch (c) {
        case O_FORCE: force = true; break;
        case O_PUBLIC: public_of = optarg; break;
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (public_of) {
        if (co.out)
            tool_usage_error("--public and -o are two modes: give one");
        char sec[FN_KEY_LEN + 1], pub[FN_KEY_LEN + 1];
        int rc = fn_key_read(public_of, true, sec);
        if (!rc)
            rc = fn_key_public(sec, pub);
        memset(sec, 0, sizeof sec);
        if (rc)
            tool_fail(rc);
        printf("%s\n", pub);
        return 0;
    }
    if (!co.out)
        tool_usage_error("no output: give -o NAME (writes NAME.pub and NAME.key)");
    const char *slash = strrchr(co.out, '/');
    int rc = fn_keygen(co.out, slash ? slash + 1 : co.out, force);
    if (rc)
        tool_fail(rc);
    tool_log(1, "wrote %s.pub (public) and %s.key (secret, mode 0600)", co.out, co.out);
    return 0;
}
