/* File upload, as IoT Hub serves it ("Upload files with IoT Hub"): a device asks the hub
 * for a SAS on a blob (POST /devices/{id}/files, files_rest.c), uploads to the storage
 * account itself, then tells the hub how it went (POST /devices/{id}/files/notifications);
 * for a successful upload the hub reads the blob's size and time from the storage and
 * queues a file notification for the service on /messages/serviceBound/filenotifications
 * (feedback.c's service-bound queues).
 *
 * The storage is not the emulator's: an Azure Storage blob endpoint (Azurite in the tests)
 * named by the blob options. The hub signs each SAS itself, a service SAS for one blob
 * (version 2020-10-02, HMAC-SHA256 over the string-to-sign with the account key), and
 * never creates the container: as with IoT Hub, it must exist.
 *
 * Reading the blob's properties (HEAD with a read SAS of the hub's own, over HTTPS) is
 * blocking I/O, so it runs on a thread of its own, bounded by READ_TIMEOUT_S, and hands
 * its result back to the loop through an iotgw_async; the device's request waits for it.
 * The thread reads only its completion and the storage's fixed settings.
 *
 * Ownership: the hub owns the emu_files (hub->files); uploads and completions are its.
 * Threading: event-loop thread, except read_blob. Errors: emu_files_status.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "codecs/base64.h"
#include "codecs/hostport.h"
#include "codecs/percent.h"
#include "emulator/hub_internal.h"
#include "transport/async.h"

#define SAS_VERSION    "2020-10-02" /* the storage service version the SAS names, and the hub's read uses */
#define MAX_BLOB_NAME  1024         /* Azure's bound on a blob's name ("{device}/{name}") */
#define MAX_KEY        128          /* bytes of a decoded account key (Azure's are 64) */
#define READ_SAS_TTL   300          /* seconds: the hub's own SAS for reading the blob */
#define READ_TIMEOUT_S 5            /* connecting to the storage, and each read and write */
#define MAX_ANSWER     16384        /* of the storage's answer to the HEAD: its headers */

typedef struct upload {
    char correlation_id[48];
    char *device_id;
    char *blob_name; /* in the container: "{device}/{name}" */
    uint64_t expiry; /* seconds since the epoch: the SAS's */
    iotgw_list in_files;
} upload;

struct emu_files_completion {
    emu_files *files;
    emu_files_done_fn done; /* NULL once cancelled */
    void *ctx;
    char *device_id, *blob_name;
    char *target; /* the HEAD's request-target: path and read SAS */
    pthread_t thread;
    /* the thread's results; finished is set under files->lock, the rest before it */
    int finished;
    int http_status; /* the storage's answer; 0: not reached */
    long long size;
    char last_modified[40]; /* ISO 8601 */
    char error[240];
    iotgw_list in_files;
};

struct emu_files {
    emu_hub *hub;
    char *host_name; /* what devices get as hostName: the endpoint without "https://" */
    char *authority; /* host[:port] as written, for the Host header */
    char *host;      /* without brackets */
    int port;
    char *path; /* the endpoint's path without a trailing '/' ("" or "/account") */
    char *account, *container;
    uint8_t key[MAX_KEY];
    size_t key_len;
    SSL_CTX *tls;
    iotgw_list uploads;     /* upload.in_files, oldest first */
    iotgw_list completions; /* emu_files_completion.in_files, whose blob read is under way */
    iotgw_async *async;
    pthread_mutex_t lock;
};

/* ------------------------------------------------------------------ setting up */

static void on_reads_done(iotgw_async *a, void *ctx);

static int parse_endpoint(emu_files *f, const char *endpoint, iotgw_diag *diag)
{
    if (strncasecmp(endpoint, "https://", 8))
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                               "the blob endpoint must be an https:// URL (the device SDKs upload over HTTPS "
                               "only), not \"%.200s\"",
                               endpoint);
    const char *a = endpoint + 8;
    size_t alen = strcspn(a, "/?#");
    const char *path = a + alen;
    if (!alen || strpbrk(path, "?#") || strchr(path, '%') || strpbrk(a, " \t\r\n"))
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                               "the blob endpoint must be https://HOST[:PORT][/PATH], not \"%.200s\"",
                               endpoint);
    f->authority = strndup(a, alen);
    size_t plen = strlen(path);
    while (plen && path[plen - 1] == '/')
        plen--;
    f->path = strndup(path, plen);
    f->host_name = malloc(alen + plen + 1);
    f->host = malloc(alen + 1);
    if (!f->authority || !f->path || !f->host_name || !f->host)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    snprintf(f->host_name, alen + plen + 1, "%s%s", f->authority, f->path);
    const char *close = strchr(f->authority, ']');
    if (strchr(close ? close : f->authority, ':')) {
        if (iotgw_hostport_parse(f->authority, f->host, alen + 1, &f->port) || !f->port)
            return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                                   "the blob endpoint's host or port is not valid: %s", f->authority);
    } else {
        size_t n = strlen(f->authority);
        if (f->authority[0] == '[' && (n < 3 || f->authority[n - 1] != ']'))
            return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "the blob endpoint's host is not valid: %s",
                                   f->authority);
        snprintf(f->host, alen + 1, "%.*s", (int)(f->authority[0] == '[' ? n - 2 : n),
                 f->authority + (f->authority[0] == '['));
        f->port = 443;
    }
    return 0;
}

int emu_files_new(emu_hub *hub, const emu_hub_options *opt, emu_files **out, iotgw_diag *diag)
{
    *out = NULL;
    if (!opt->blob_endpoint)
        return 0;
    if (!opt->blob_account || !*opt->blob_account || !opt->blob_key || !opt->blob_container ||
        !*opt->blob_container)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                               "a blob endpoint needs the storage account's name, key and container");
    emu_files *f = calloc(1, sizeof *f);
    if (!f)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    f->hub = hub;
    iotgw_list_init(&f->uploads);
    iotgw_list_init(&f->completions);
    pthread_mutex_init(&f->lock, NULL);
    int rc = parse_endpoint(f, opt->blob_endpoint, diag);
    size_t klen = strlen(opt->blob_key);
    if (!rc && (iotgw_base64_decoded_max(klen) > MAX_KEY ||
                iotgw_base64_decode(opt->blob_key, klen, f->key, &f->key_len, IOTGW_BASE64_STRICT, NULL) ||
                !f->key_len))
        rc = iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                             "the storage account key must be base64 (at most %d bytes)", MAX_KEY);
    if (!rc && (!(f->account = strdup(opt->blob_account)) || !(f->container = strdup(opt->blob_container))))
        rc = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    if (!rc && !(f->tls = SSL_CTX_new(TLS_client_method())))
        rc = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    if (!rc) {
        SSL_CTX_set_min_proto_version(f->tls, TLS1_2_VERSION);
        SSL_CTX_set_verify(f->tls, SSL_VERIFY_PEER, NULL);
        if (opt->blob_ca_file ? SSL_CTX_load_verify_locations(f->tls, opt->blob_ca_file, NULL) != 1
                              : SSL_CTX_set_default_verify_paths(f->tls) != 1)
            rc = iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "the blob endpoint's CA %s cannot be loaded",
                                 opt->blob_ca_file ? opt->blob_ca_file : "(the system's)");
    }
    if (!rc && !(f->async = iotgw_async_new(hub->loop, on_reads_done, f, diag)))
        rc = IOTGW_ERR_NOMEM;
    if (rc) {
        emu_files_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

static void upload_free(upload *u)
{
    iotgw_list_remove(&u->in_files);
    free(u->device_id);
    free(u->blob_name);
    free(u);
}

static void completion_free(emu_files_completion *c)
{
    iotgw_list_remove(&c->in_files);
    free(c->device_id);
    free(c->blob_name);
    free(c->target);
    free(c);
}

void emu_files_free(emu_files *f)
{
    if (!f)
        return;
    emu_files_completion *c;
    IOTGW_LIST_FOREACH (c, &f->completions, emu_files_completion, in_files) {
        pthread_join(c->thread, NULL);
        if (c->done)
            c->done(c->ctx, EMU_FILES_SERVER_ERROR, "the hub is stopping");
        completion_free(c);
    }
    upload *u;
    IOTGW_LIST_FOREACH (u, &f->uploads, upload, in_files)
        upload_free(u);
    if (f->async)
        iotgw_async_free(f->async);
    if (f->tls)
        SSL_CTX_free(f->tls);
    OPENSSL_cleanse(f->key, sizeof f->key);
    pthread_mutex_destroy(&f->lock);
    free(f->host_name);
    free(f->authority);
    free(f->host);
    free(f->path);
    free(f->account);
    free(f->container);
    free(f);
}

/* ------------------------------------------------------------------ signing */

/* "YYYY-MM-DDTHH:MM:SS" and tail ("Z", "+00:00") */
static void iso_time(time_t t, const char *tail, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, "%s", tail);
}

/* The query of a service SAS for one blob of the container: sv, sr, sig, se, sp as the
 * storage service checks them (string-to-sign of versions 2018-11-09 to 2020-12-05),
 * URL-encoded; malloc'd, NULL when out of memory. */
static char *blob_sas(const emu_files *f, const char *blob_name, const char *permissions, uint64_t expiry)
{
    char se[32];
    iso_time((time_t)expiry, "Z", se, sizeof se);
    size_t n =
        strlen(permissions) + strlen(se) + strlen(f->account) + strlen(f->container) + strlen(blob_name) + 64;
    char *to_sign = malloc(n);
    if (!to_sign)
        return NULL;
    /* sp, st, se, canonicalized resource, si, sip, spr, sv, sr, snapshot, rscc, rscd, rsce, rscl, rsct */
    int len = snprintf(to_sign, n, "%s\n\n%s\n/blob/%s/%s/%s\n\n\n\n" SAS_VERSION "\nb\n\n\n\n\n\n",
                       permissions, se, f->account, f->container, blob_name);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    const uint8_t *ok =
        HMAC(EVP_sha256(), f->key, (int)f->key_len, (const uint8_t *)to_sign, (size_t)len, mac, &mac_len);
    free(to_sign);
    char sig[EVP_MAX_MD_SIZE * 2];
    if (!ok || iotgw_base64_encoded_len(mac_len) >= sizeof sig)
        return NULL;
    iotgw_base64_encode(mac, mac_len, sig);
    char *sig_enc = iotgw_percent_encode(sig), *se_enc = iotgw_percent_encode(se);
    char *sas = NULL;
    if (sig_enc && se_enc &&
        asprintf(&sas, "sv=" SAS_VERSION "&sr=b&sig=%s&se=%s&sp=%s", sig_enc, se_enc, permissions) < 0)
        sas = NULL;
    free(sig_enc);
    free(se_enc);
    return sas;
}

/* ------------------------------------------------------------------ beginning */

static void forget_expired(emu_files *f, uint64_t now)
{
    upload *u;
    IOTGW_LIST_FOREACH (u, &f->uploads, upload, in_files)
        if (u->expiry <= now)
            upload_free(u);
}

/* An opaque correlationId, as long as IoT Hub's and safe in a URL path. */
static void new_correlation_id(char out[48])
{
    uint8_t r[33];
    RAND_bytes(r, sizeof r);
    iotgw_base64_encode(r, sizeof r, out);
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

json_t *emu_files_begin(emu_hub *hub, const emu_identity *device, const char *blob_name,
                        emu_files_status *status)
{
    emu_files *f = hub->files;
    if (!f) {
        *status = EMU_FILES_NO_STORAGE;
        return NULL;
    }
    size_t n = strlen(blob_name);
    int control = 0;
    for (const char *p = blob_name; *p; p++)
        control |= (unsigned char)*p < 0x20 || *p == 0x7f;
    if (!n || control || strlen(device->device_id) + 1 + n > MAX_BLOB_NAME) {
        *status = EMU_FILES_BAD_NAME;
        return NULL;
    }
    uint64_t now = emu_now_s();
    forget_expired(f, now);
    int active = 0;
    upload *u;
    IOTGW_LIST_FOREACH (u, &f->uploads, upload, in_files)
        active += !strcmp(u->device_id, device->device_id);
    if (active >= EMU_FILES_MAX_ACTIVE) {
        *status = EMU_FILES_TOO_MANY;
        return NULL;
    }
    *status = EMU_FILES_SERVER_ERROR;
    if (!(u = calloc(1, sizeof *u)))
        return NULL;
    iotgw_list_init(&u->in_files);
    u->expiry = now + EMU_FILES_SAS_TTL;
    new_correlation_id(u->correlation_id);
    char *sas = NULL;
    json_t *answer = NULL;
    if ((u->device_id = strdup(device->device_id)) &&
        asprintf(&u->blob_name, "%s/%s", device->device_id, blob_name) >= 0 &&
        (sas = blob_sas(f, u->blob_name, "rcw", u->expiry)))
        answer =
            json_pack("{s:s,s:s,s:s,s:s,s:s+}", "correlationId", u->correlation_id, "hostName", f->host_name,
                      "containerName", f->container, "blobName", u->blob_name, "sasToken", "?", sas);
    free(sas);
    if (!answer) {
        upload_free(u);
        return NULL;
    }
    iotgw_list_push_back(&f->uploads, &u->in_files);
    iotgw_log(IOTGW_LOG_INFO, "%s: file upload %s begun: blob %s in container %s", device->device_id,
              u->correlation_id, u->blob_name, f->container);
    *status = EMU_FILES_OK;
    return answer;
}

/* ------------------------------------------------------------------ completing */

/* HEAD of the blob: http_status, size and last_modified, or error. On the reader's thread. */
static void read_blob(emu_files_completion *c)
{
    const emu_files *f = c->files;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%d", f->port);
    int gai = getaddrinfo(f->host, port, &hints, &res), fd = -1, err = 0;
    if (gai) {
        snprintf(c->error, sizeof c->error, "cannot resolve %s: %s", f->host, gai_strerror(gai));
        return;
    }
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        struct timeval tv = {.tv_sec = READ_TIMEOUT_S};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect() too */
        if (connect(fd, ai->ai_addr, ai->ai_addrlen)) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(c->error, sizeof c->error, "cannot connect to %s: %s", f->authority, strerror(err));
        return;
    }
    SSL *ssl = SSL_new(f->tls);
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, f->host, ip) == 1 || inet_pton(AF_INET6, f->host, ip) == 1;
    char *request = NULL;
    int ok = ssl && SSL_set_fd(ssl, fd) == 1 &&
             (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), f->host) == 1
                    : SSL_set_tlsext_host_name(ssl, f->host) == 1 && SSL_set1_host(ssl, f->host) == 1);
    if (ok && SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        snprintf(c->error, sizeof c->error, "TLS with %s failed: %s", f->authority,
                 v != X509_V_OK ? X509_verify_cert_error_string(v)
                                : ERR_reason_error_string(ERR_peek_last_error()));
        ok = 0;
    } else if (ok) {
        int n = asprintf(&request,
                         "HEAD %s HTTP/1.1\r\nHost: %s\r\nx-ms-version: " SAS_VERSION
                         "\r\nUser-Agent: iothub-emulator\r\nConnection: close\r\n\r\n",
                         c->target, f->authority);
        if (n < 0 || SSL_write(ssl, request, n) != n) {
            snprintf(c->error, sizeof c->error, "cannot send to %s", f->authority);
            ok = 0;
        }
    }
    char *answer = ok ? malloc(MAX_ANSWER + 1) : NULL;
    size_t got = 0;
    int r;
    while (answer && got < MAX_ANSWER && (r = SSL_read(ssl, answer + got, (int)(MAX_ANSWER - got))) > 0) {
        got += (size_t)r;
        answer[got] = '\0';
        if (strstr(answer, "\r\n\r\n"))
            break;
    }
    int minor;
    if (answer && got && sscanf(answer, "HTTP/1.%d %d", &minor, &c->http_status) == 2 &&
        strstr(answer, "\r\n\r\n")) {
        for (char *line = strstr(answer, "\r\n"); line && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
            char *h = line + 2;
            if (!strncasecmp(h, "Content-Length:", 15))
                c->size = strtoll(h + 15, NULL, 10);
            else if (!strncasecmp(h, "Last-Modified:", 14)) {
                struct tm tm = {0};
                const char *v = h + 14 + strspn(h + 14, " ");
                if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm))
                    iso_time(timegm(&tm), "+00:00", c->last_modified, sizeof c->last_modified);
            }
        }
    } else if (ok) {
        c->http_status = 0;
        snprintf(c->error, sizeof c->error, "no HTTP answer from %s", f->authority);
    }
    free(answer);
    free(request);
    SSL_free(ssl);
    close(fd);
}

static void *reader(void *arg)
{
    emu_files_completion *c = arg;
    read_blob(c);
    pthread_mutex_lock(&c->files->lock);
    c->finished = 1;
    pthread_mutex_unlock(&c->files->lock);
    iotgw_async_send(c->files->async);
    return NULL;
}

/* A blob read is over: queue the notification, and tell the device's request. */
static void finish(emu_files *f, emu_files_completion *c)
{
    emu_files_status status = EMU_FILES_OK;
    char detail[300] = "";
    if (c->http_status == 200) {
        char when[64], fraction[24];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(fraction, sizeof fraction, ".%07ldZ", ts.tv_nsec / 100); /* as IoT Hub writes it */
        iso_time(ts.tv_sec, fraction, when, sizeof when);
        if (!c->last_modified[0])
            iso_time(ts.tv_sec, "+00:00", c->last_modified, sizeof c->last_modified);
        json_t *note = json_pack("{s:s,s:o,s:s,s:s,s:I,s:s}", "deviceId", c->device_id, "blobUri",
                                 json_sprintf("https://%s/%s/%s", f->host_name, f->container, c->blob_name),
                                 "blobName", c->blob_name, "lastUpdatedTime", c->last_modified,
                                 "blobSizeInBytes", (json_int_t)c->size, "enqueuedTimeUtc", when);
        if (!note) {
            status = EMU_FILES_SERVER_ERROR;
            snprintf(detail, sizeof detail, "out of memory");
        } else {
            iotgw_log(IOTGW_LOG_INFO, "%s: file upload of %s complete (%lld bytes): notification queued",
                      c->device_id, c->blob_name, c->size);
            emu_service_queue_push(f->hub, EMU_SERVICE_FILE_NOTIFICATIONS, note);
        }
    } else if (c->http_status) {
        status = EMU_FILES_BLOB_REFUSED;
        snprintf(detail, sizeof detail,
                 "the storage answered %d to the hub's read of blob %s in container %s", c->http_status,
                 c->blob_name, f->container);
    } else {
        status = EMU_FILES_STORAGE_UNREACHABLE;
        snprintf(detail, sizeof detail, "the hub cannot read blob %s from the storage: %s", c->blob_name,
                 c->error);
    }
    if (status != EMU_FILES_OK)
        iotgw_log(IOTGW_LOG_WARN, "%s: file upload not notified: %s", c->device_id, detail);
    if (c->done)
        c->done(c->ctx, status, detail);
    completion_free(c);
}

static void on_reads_done(iotgw_async *a, void *ctx)
{
    emu_files *f = ctx;
    (void)a;
    iotgw_list done;
    iotgw_list_init(&done);
    emu_files_completion *c;
    pthread_mutex_lock(&f->lock);
    IOTGW_LIST_FOREACH (c, &f->completions, emu_files_completion, in_files) {
        if (c->finished) {
            iotgw_list_remove(&c->in_files);
            iotgw_list_push_back(&done, &c->in_files);
        }
    }
    pthread_mutex_unlock(&f->lock);
    IOTGW_LIST_FOREACH (c, &done, emu_files_completion, in_files) {
        pthread_join(c->thread, NULL);
        finish(f, c);
    }
}

emu_files_status emu_files_complete(emu_hub *hub, const emu_identity *device, const char *correlation_id,
                                    int success, int status_code, const char *description,
                                    emu_files_done_fn done, void *ctx, emu_files_completion **pending)
{
    emu_files *f = hub->files;
    *pending = NULL;
    upload *u = NULL, *each;
    if (f)
        IOTGW_LIST_FOREACH (each, &f->uploads, upload, in_files)
            if (!strcmp(each->correlation_id, correlation_id) && !strcmp(each->device_id, device->device_id))
                u = each;
    if (!u)
        return EMU_FILES_UNKNOWN_CORRELATION;
    iotgw_log(IOTGW_LOG_INFO, "%s: file upload %s of %s notified: %s, status %d, \"%.200s\"",
              device->device_id, correlation_id, u->blob_name, success ? "succeeded" : "failed", status_code,
              description ? description : "");
    if (u->expiry <= emu_now_s()) {
        upload_free(u);
        return EMU_FILES_EXPIRED;
    }
    if (!success) { /* IoT Hub notifies the service of successful uploads only */
        upload_free(u);
        return EMU_FILES_OK;
    }
    emu_files_completion *c = calloc(1, sizeof *c);
    char *sas = NULL, *path = NULL;
    if (c) {
        iotgw_list_init(&c->in_files);
        c->files = f;
        c->done = done;
        c->ctx = ctx;
        c->device_id = strdup(u->device_id);
        c->blob_name = strdup(u->blob_name);
        sas = blob_sas(f, u->blob_name, "r", emu_now_s() + READ_SAS_TTL);
        /* the blob's name in the path, its '/' kept */
        char *container = iotgw_percent_encode(f->container), *blob = iotgw_percent_encode(u->blob_name);
        if (blob)
            for (char *p; (p = strstr(blob, "%2F"));)
                memmove(p + 1, p + 3, strlen(p + 3) + 1), *p = '/';
        if (container && blob && asprintf(&path, "%s/%s/%s?%s", f->path, container, blob, sas ? sas : "") < 0)
            path = NULL;
        free(container);
        free(blob);
    }
    upload_free(u);
    if (!c || !c->device_id || !c->blob_name || !sas || !path) {
        free(sas);
        free(path);
        if (c)
            completion_free(c);
        return EMU_FILES_SERVER_ERROR;
    }
    free(sas);
    c->target = path;
    pthread_mutex_lock(&f->lock);
    iotgw_list_push_back(&f->completions, &c->in_files);
    int rc = pthread_create(&c->thread, NULL, reader, c);
    if (rc)
        iotgw_list_remove(&c->in_files);
    pthread_mutex_unlock(&f->lock);
    if (rc) {
        iotgw_log(IOTGW_LOG_WARN, "%s: no thread to read blob %s: %s", device->device_id, c->blob_name,
                  strerror(rc));
        completion_free(c);
        return EMU_FILES_SERVER_ERROR;
    }
    *pending = c;
    return EMU_FILES_PENDING;
}

void emu_files_cancel(emu_files_completion *c)
{
    if (c)
        c->done = NULL;
}

/* ------------------------------------------------------------------ authorization */

emu_identity *emu_hub_authorize_device(emu_hub *hub, const char *authorization, const char *device_id,
                                       char *why, size_t len)
{
    emu_auth a;
    emu_identity *id = NULL;
    if (!authorization) {
        snprintf(why, len, "the Authorization header with a SAS token is missing");
    } else if (emu_auth_token(hub, authorization, NULL, &a)) {
        snprintf(why, len, "%s", a.description);
    } else if (a.stream_only) {
        snprintf(why, len, "the token is for the telemetry stream, not a device");
    } else if (a.id) {
        if (a.id->module_id || strcmp(a.id->device_id, device_id))
            snprintf(why, len, "the token is %s's, not device %s's", a.id->id, device_id);
        else
            id = a.id;
    } else if (!(a.policy->rights & EMU_RIGHT_DEVICE_CONNECT)) {
        snprintf(why, len, "policy \"%s\" does not have DeviceConnect", a.policy->name);
    } else if (!(id = emu_registry_find(hub->registry, device_id, NULL))) {
        snprintf(why, len, "%s is not registered on this hub", device_id);
    } else if (!id->enabled) {
        snprintf(why, len, "%s is disabled", device_id);
        id = NULL;
    }
    return id;
}
