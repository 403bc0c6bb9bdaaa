#!/usr/bin/env bash
# Download scripts for real users: usage errors, and (when offline, as CI and the dev
# machines are) one clear error line, exit 4, nothing left in the destination.
# get-clip-weights.sh runs against a local HTTP server: the pytorch_model.bin fallback when
# model.safetensors is 404, sha256 checks, errors, and clip-embed on what it fetched.
source "$(dirname "$0")/lib.sh"
expect_rc 2 "$FEDSM_ROOT/data/get-cifar.sh" cifar7 && expect_one_error_line
expect_rc 0 "$FEDSM_ROOT/data/get-cifar.sh" --help
if timeout 5 getent hosts www.cs.toronto.edu >/dev/null 2>&1; then
    skip_check "online: the offline download-failure check (a real download is not a test)"
else
    expect_rc 4 timeout 60 "$FEDSM_ROOT/data/get-cifar.sh" cifar10 "$T/dl" && expect_one_error_line
    [ -z "$(ls -A "$T/dl" 2>/dev/null)" ] || fail "the failed download left files: $(ls -A "$T/dl")"
fi

# get-clip-weights.sh against a local stand-in for the Hugging Face server (LFS files answer
# 302 with x-linked-etag, then the bytes; a missing file is 404), one folder per case
CLIP_GET=$FEDSM_ROOT/data/get-clip-weights.sh
FIX=$FEDSM_ROOT/tests/fixtures/clip
mkdir -p "$T/srv/nost" "$T/srv/st" "$T/srv/badsum" "$T/srv/forbidden" "$T/srv/none"
for c in nost st badsum forbidden none; do cp "$FIX/config.json" "$T/srv/$c/"; done
cp "$FIX/tiny.bin" "$T/srv/nost/pytorch_model.bin"
cp "$FIX/tiny.safetensors" "$T/srv/st/model.safetensors"
cp "$FIX/tiny.bin" "$T/srv/st/pytorch_model.bin"
cp "$FIX/tiny.bin" "$T/srv/badsum/pytorch_model.bin"
echo 0000000000000000000000000000000000000000000000000000000000000000 > "$T/srv/badsum/pytorch_model.bin.etag"
echo 403 > "$T/srv/forbidden/model.safetensors.status"
$PY - "$T/srv" "$T/port" <<'PYEOF' &
import hashlib, http.server, os, sys
root, portfile = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def reply(self, code, headers, body=b""):
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        parts = self.path.split("/")  # /CASE/openai/clip-vit-base-patch32/resolve/REV/NAME or /cdn/CASE/NAME
        case, name = (parts[2], parts[3]) if parts[1] == "cdn" else (parts[1], parts[-1])
        f = os.path.join(root, case, name)
        if os.path.exists(f + ".status"):
            return self.reply(int(open(f + ".status").read()), {})
        if not os.path.isfile(f):
            return self.reply(404, {"X-Error-Code": "EntryNotFound"}, b"Entry not found")
        data = open(f, "rb").read()
        if parts[1] == "cdn" or name == "config.json":
            return self.reply(200, {}, data)
        etag = open(f + ".etag").read().strip() if os.path.exists(f + ".etag") else hashlib.sha256(data).hexdigest()
        self.reply(302, {"Location": "/cdn/%s/%s" % (case, name), "X-Linked-Etag": '"%s"' % etag})
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(portfile + ".tmp", "w") as p:
    p.write(str(srv.server_address[1]))
os.rename(portfile + ".tmp", portfile)
srv.serve_forever()
PYEOF
srv=$!
trap 'kill "$srv" 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 50); do [ -f "$T/port" ] && break; sleep 0.1; done
URL=http://127.0.0.1:$(cat "$T/port" 2>/dev/null)
printf '#version: test\nc a\nca t</w>\n' | gzip > "$T/merges.txt.gz"
seed() { mkdir -p "$1" && cp "$T/merges.txt.gz" "$1/bpe_simple_vocab_16e6.txt.gz"; } # the vocabulary is not fetched
no_weights() { # DIR: no weights and no temp folder left behind
    [ ! -e "$1/model.safetensors" ] && [ ! -e "$1/pytorch_model.bin" ] && [ -z "$(ls -d "$1"/.get.* 2>/dev/null)" ] \
        || fail "a failed download left files: $(ls -A "$1")"
}

# no model.safetensors at the revision: pytorch_model.bin instead, and clip-embed reads it
seed "$T/a"
if HF_ENDPOINT=$URL/nost expect_rc 0 sh "$CLIP_GET" "$T/a"; then
    cmp -s "$T/a/pytorch_model.bin" "$FIX/tiny.bin" || fail "pytorch_model.bin differs from the served file"
    [ ! -e "$T/a/model.safetensors" ] && [ -z "$(ls -d "$T/a"/.get.* 2>/dev/null)" ] || fail "leftovers: $(ls -A "$T/a")"
    grep -q 'HTTP 404); trying pytorch_model.bin' "$T/err" || fail "no word of the fallback"
    grep -q -- "--weights $T/a/pytorch_model.bin" "$T/err" || fail "final message does not name pytorch_model.bin"
    printf 'cat\n' > "$T/classes.txt"
    if [ -x "$FEDSM_BIN/clip-embed" ]; then
        expect_rc 0 "$FEDSM_BIN/clip-embed" -w "$T/a/pytorch_model.bin" -c "$T/classes.txt" -o "$T/a/emb.mpk.zst"
    fi
fi
# a second run finds the weights (offline is fine) and names the same file
HF_ENDPOINT=http://127.0.0.1:9 expect_rc 0 sh "$CLIP_GET" "$T/a" \
    && { grep -q -- "--weights $T/a/pytorch_model.bin" "$T/err" || fail "rerun message"; }
# model.safetensors served: taken, not the .bin
seed "$T/b"
HF_ENDPOINT=$URL/st expect_rc 0 sh "$CLIP_GET" "$T/b" && {
    cmp -s "$T/b/model.safetensors" "$FIX/tiny.safetensors" || fail "model.safetensors differs"
    [ ! -e "$T/b/pytorch_model.bin" ] || fail "pytorch_model.bin fetched although model.safetensors exists"
    grep -q -- "--weights $T/b/model.safetensors" "$T/err" || fail "final message does not name model.safetensors"
}
# the .bin's sha256 is checked: against the server's (wrong here), or a pinned MODEL_SHA256
seed "$T/c"
HF_ENDPOINT=$URL/badsum expect_rc 4 sh "$CLIP_GET" "$T/c" && expect_one_error_line \
    && { grep -q 'error: pytorch_model.bin: sha256' "$T/err" || fail "sha256 message"; }
no_weights "$T/c"
good=$(sha256sum "$FIX/tiny.bin" | cut -d' ' -f1)
HF_ENDPOINT=$URL/badsum MODEL_SHA256=$good expect_rc 0 sh "$CLIP_GET" "$T/c"
seed "$T/d"
HF_ENDPOINT=$URL/nost MODEL_SHA256=$(printf "%064d" 0) expect_rc 4 sh "$CLIP_GET" "$T/d" && expect_one_error_line
no_weights "$T/d"
# other answers than 404, neither file, offline: one error line, exit 4, no weights
seed "$T/e"
HF_ENDPOINT=$URL/forbidden expect_rc 4 sh "$CLIP_GET" "$T/e" && expect_one_error_line \
    && { grep -q 'HTTP 403' "$T/err" || fail "403 message"; }
no_weights "$T/e"
HF_ENDPOINT=$URL/none expect_rc 4 sh "$CLIP_GET" "$T/e" && expect_one_error_line \
    && { grep -q 'neither model.safetensors nor pytorch_model.bin' "$T/err" || fail "404 twice message"; }
no_weights "$T/e"
seed "$T/f"
HF_ENDPOINT=http://127.0.0.1:9 expect_rc 4 sh "$CLIP_GET" "$T/f" && expect_one_error_line
no_weights "$T/f"
done_tests
