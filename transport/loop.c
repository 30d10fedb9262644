#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "transport/failure_text.h"
#include "transport/internal.h"
#include "transport/log.h"
#include "transport/tls_reason.h"

/* A client vhost holds the TLS client context (CA, certificate) and proxy shared by
 * every client connection with the same settings. */
struct client_vhost {
    struct lws_vhost *vhost;
    char *ca_file, *cert_file, *key_file, *proxy;
    client_vhost *next;
};

static const struct lws_protocols client_protocols[] = {
    {LWS_PROTOCOL_HTTP, client_http_callback, 0, 0, 0, NULL, 0},
    {IOTGW_WS_SUBPROTOCOL, wss_callback, 0, RX_CHUNK, 0, NULL, 0},
    {LWS_PROTOCOL_RAW, raw_callback, 0, RX_CHUNK, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

const struct lws_protocols *loop_client_protocols(void)
{
    return client_protocols;
}

/* Only the event-loop thread runs libwebsockets, so one buffer is enough; wss.c puts
 * it in a 200-byte description after "TLS handshake failed: ". */
static char last_tls_error[176];

const char *loop_tls_error(void)
{
    return last_tls_error;
}

void loop_tls_error_clear(void)
{
    last_tls_error[0] = '\0';
}

static void log_to_stderr(int level, const char *line)
{
    /* "... SSL error: certificate has expired (preverify_ok=0;err=10;depth=0)": the
     * verify error and depth, named as on AMQPS (tls_reason.c); the host is not known
     * here. Without them, lws' own words. */
    int err, depth;
    const char *words;
    size_t words_len;
    if (failure_text_lws_ssl_error(line, &err, &depth, &words, &words_len)) {
        if (err)
            tls_reason_describe(err, depth, 1, NULL, last_tls_error, sizeof last_tls_error);
        else
            snprintf(last_tls_error, sizeof last_tls_error, "%.*s", (int)words_len, words);
        return; /* reported with the connection's failure instead */
    }
    iotgw_log_library(level & LLL_ERR ? IOTGW_LOG_ERROR : IOTGW_LOG_WARN, "lws", line);
}

int iotgw_loop_backend_from_environment(iotgw_loop_backend *out, iotgw_diag *diag)
{
    const char *env = getenv("IOTGW_EVENT_LOOP");
    *out = !env || !*env           ? IOTGW_LOOP_DEFAULT
           : !strcmp(env, "poll")  ? IOTGW_LOOP_POLL
           : !strcmp(env, "libuv") ? IOTGW_LOOP_LIBUV
                                   : IOTGW_LOOP_DEFAULT;
    if (env && *env && *out == IOTGW_LOOP_DEFAULT)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                               "IOTGW_EVENT_LOOP must be libuv or poll, not \"%s\"", env);
    return 0;
}

int iotgw_loop_backend_choose(const iotgw_loop_options *opt, iotgw_loop_backend *out, const char **why,
                              iotgw_diag *diag)
{
    const char *reason = "the options";
    iotgw_loop_backend b = opt ? opt->backend : IOTGW_LOOP_DEFAULT;
    if (!b) {
        int rc = iotgw_loop_backend_from_environment(&b, diag);
        if (rc)
            return rc;
        reason = "IOTGW_EVENT_LOOP";
    }
    if (!b) {
        b = opt && opt->default_backend ? opt->default_backend : IOTGW_LOOP_POLL;
        reason = "the default";
    }
    *out = b;
    if (why)
        *why = reason;
    return 0;
}

/* lws loads its libuv plugin with each context and unloads it when the context is freed,
 * but on a foreign loop the plugin's handles close (their callbacks run) after that: a
 * reference of our own keeps the plugin's code mapped for the life of the process. */
static int keep_uv_plugin_loaded(iotgw_diag *diag)
{
    static void *plugin;
    if (!plugin)
        plugin = dlopen("libwebsockets-evlib_uv.so", RTLD_NOW | RTLD_NODELETE);
    if (!plugin) {
        const char *why = dlerror();
        iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL,
                        "the libuv event loop needs libwebsockets' libuv plugin (Debian package "
                        "libwebsockets-evlib-uv): %s; IOTGW_EVENT_LOOP=poll avoids it",
                        why ? why : "not found");
        return 0;
    }
    return 1;
}

iotgw_loop *iotgw_loop_new(const iotgw_loop_options *opt, iotgw_diag *diag)
{
    iotgw_loop_backend backend;
    if (iotgw_loop_backend_choose(opt, &backend, NULL, diag))
        return NULL;
    iotgw_loop *loop = calloc(1, sizeof *loop);
    if (!loop)
        return NULL;
    lws_set_log_level(opt && opt->log_level ? opt->log_level : LLL_ERR, log_to_stderr);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.user = loop;
    /* lws reads sockets into this per-thread buffer; its 4 KiB default costs a read
     * (and a TLS read) per 4 KiB. */
    info.pt_serv_buf_size = RX_CHUNK;
    /* HTTP on WSS listeners (http.c): lws stops storing a header at IOTGW_HTTP_MAX_HEADER
     * + 1 bytes and the request line at IOTGW_HTTP_MAX_PATH + 1, skipping the rest, where
     * it would fail the connection once its header space is full; http.c sees the length
     * over the bound and answers 431 or 414. Only a request over
     * IOTGW_HTTP_MAX_HEADER_BLOCK in all is still closed without an answer. */
    static struct lws_token_limits http_limits;
    static const enum lws_token_indexes request_lines[] = {
        WSI_TOKEN_GET_URI,    WSI_TOKEN_POST_URI,    WSI_TOKEN_PUT_URI,  WSI_TOKEN_PATCH_URI,
        WSI_TOKEN_DELETE_URI, WSI_TOKEN_OPTIONS_URI, WSI_TOKEN_HEAD_URI, WSI_TOKEN_CONNECT,
    };
    for (int t = 0; t < WSI_TOKEN_COUNT; t++)
        http_limits.token_limit[t] = IOTGW_HTTP_MAX_HEADER + 1;
    for (size_t i = 0; i < sizeof request_lines / sizeof request_lines[0]; i++)
        http_limits.token_limit[request_lines[i]] = IOTGW_HTTP_MAX_PATH + 1;
    info.token_limits = &http_limits;
    info.max_http_header_data = IOTGW_HTTP_MAX_HEADER_BLOCK;
    /* libuv: the loop is ours (lws calls it foreign) so that iotgw_loop_run can run one
     * round of it; lws_service would run it until stopped. */
    void *foreign[1];
    if (backend == IOTGW_LOOP_LIBUV && !keep_uv_plugin_loaded(diag)) {
        free(loop);
        return NULL;
    }
    if (backend == IOTGW_LOOP_LIBUV) {
        loop->uv = malloc(sizeof *loop->uv);
        if (!loop->uv || uv_loop_init(loop->uv)) {
            free(loop->uv);
            free(loop);
            iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "could not create the libuv loop");
            return NULL;
        }
        foreign[0] = loop->uv;
        info.foreign_loops = foreign;
        info.pcontext = &loop->ctx;
        info.options |= LWS_SERVER_OPTION_LIBUV;
    }
    iotgw_list_init(&loop->wakes);
    iotgw_list_init(&loop->conns);
    iotgw_list_init(&loop->listeners);
    iotgw_timer_init(loop, &loop->wake_timer, loop_serve_wakes, loop);
    loop->ctx = lws_create_context(&info);
    if (!loop->ctx) {
        if (loop->uv) {
            uv_loop_close(loop->uv);
            free(loop->uv);
        }
        free(loop);
        iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "could not create the event loop (%s)",
                        backend == IOTGW_LOOP_LIBUV ? "libuv" : "poll");
        return NULL;
    }
    return loop;
}

const char *iotgw_loop_backend_name(const iotgw_loop *loop)
{
    return loop->uv ? "libuv" : "poll";
}

static void wake_cb(lws_sorted_usec_list_t *sul)
{
    iotgw_loop *loop = lws_container_of(sul, iotgw_loop, wake);
    loop->wake_at = 0;
    /* lws may run this before it polls in the same round, and would then wait for the
     * next timer (up to 30 s): make that poll return at once. */
    lws_cancel_service(loop->ctx);
}

int iotgw_loop_run(iotgw_loop *loop, int timeout_ms)
{
    /* lws_service waits for the next socket event or scheduled callback: keep a wake-up
     * armed no later than the deadline so that the call returns in time. Re-arming it on
     * every call would cost more than the poll round itself under load. */
    int64_t deadline = iotgw_loop_now_ms(loop) + (timeout_ms > 0 ? timeout_ms : 0);
    if (!loop->wake_at || loop->wake_at > deadline) {
        loop->wake_at = deadline;
        lws_sul_schedule(loop->ctx, 0, &loop->wake, wake_cb,
                         (lws_usec_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000);
    }
    if (loop->uv) { /* one round: blocks until a socket event or a timer (the wake-up at the latest) */
        uv_run(loop->uv, UV_RUN_ONCE);
        return IOTGW_OK;
    }
    return lws_service(loop->ctx, timeout_ms > 0 ? timeout_ms : 0) < 0 ? IOTGW_ERR_INTERNAL : IOTGW_OK;
}

int64_t iotgw_loop_now_ms(iotgw_loop *loop)
{
    (void)loop;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void iotgw_loop_free(iotgw_loop *loop)
{
    if (!loop)
        return;
    lws_sul_cancel(&loop->wake);
    iotgw_list *n;
    while ((n = iotgw_list_first(&loop->listeners)))
        iotgw_listener_free(iotgw_list_entry(n, iotgw_listener, loop_node));
    conn_free_all(loop);
    amqps_domains_free(loop);
    iotgw_timer_stop(&loop->wake_timer);
    loop_timers_shutdown(loop);
    lws_context_destroy(loop->ctx);
    if (loop->uv) {
        /* On a foreign loop lws_context_destroy() only starts: lws closes its handles,
         * whose close callbacks the loop must run (some of those handles live in the
         * context); once none is left, a second call frees the context, and lws clears
         * loop->ctx (info.pcontext). Calling it again earlier frees handles the loop
         * still holds. */
        for (int i = 0; i < 10000 && uv_run(loop->uv, UV_RUN_NOWAIT); i++)
            ;
        for (int i = 0; i < 10 && loop->ctx; i++)
            lws_context_destroy(loop->ctx);
        for (int i = 0; i < 10000 && uv_run(loop->uv, UV_RUN_NOWAIT); i++)
            ;
        if (uv_loop_close(loop->uv) == 0)
            free(loop->uv);
        else
            fprintf(stderr, "iotgw: the libuv loop still had handles at shutdown\n");
    }
    for (client_vhost *cv = loop->client_vhosts, *next; cv; cv = next) {
        next = cv->next;
        free(cv->ca_file), free(cv->cert_file), free(cv->key_file), free(cv->proxy);
        free(cv);
    }
    free(loop);
}

/* ------------------------------------------------------------------ client vhosts */

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

struct lws_vhost *loop_client_vhost(iotgw_loop *loop, const iotgw_tls_options *tls, const char *proxy,
                                    iotgw_diag *diag)
{
    for (client_vhost *cv = loop->client_vhosts; cv; cv = cv->next)
        if (same(cv->ca_file, tls->ca_file) && same(cv->cert_file, tls->cert_file) &&
            same(cv->key_file, tls->key_file) && same(cv->proxy, proxy))
            return cv->vhost;

    client_vhost *cv = calloc(1, sizeof *cv);
    if (!cv)
        return NULL;
    static int serial;
    char name[32];
    snprintf(name, sizeof name, "client-%d", ++serial);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.vhost_name = name;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = client_protocols;
    info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.client_ssl_ca_filepath = tls->ca_file;
    info.client_ssl_cert_filepath = tls->cert_file;
    info.client_ssl_private_key_filepath = tls->key_file;
    /* TLS 1.2 or later */
    info.ssl_client_options_set = SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1;
    cv->vhost = lws_create_vhost(loop->ctx, &info);
    if (!cv->vhost) {
        free(cv);
        iotgw_diag_fail(
            diag, IOTGW_ERR_INVALID_ARG,
            "could not set up TLS for clients (CA file '%s', certificate '%s'): unreadable or invalid",
            tls->ca_file ? tls->ca_file : "(system)", tls->cert_file ? tls->cert_file : "(none)");
        return NULL;
    }
    if (proxy && lws_set_proxy(cv->vhost, proxy)) {
        lws_vhost_destroy(cv->vhost);
        free(cv);
        iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "proxy '%s' is not host:port", proxy);
        return NULL;
    }
    cv->ca_file = iotgw_strdup_or_null(tls->ca_file);
    cv->cert_file = iotgw_strdup_or_null(tls->cert_file);
    cv->key_file = iotgw_strdup_or_null(tls->key_file);
    cv->proxy = iotgw_strdup_or_null(proxy);
    cv->next = loop->client_vhosts;
    loop->client_vhosts = cv;
    return cv->vhost;
}
