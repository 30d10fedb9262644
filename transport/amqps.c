/*
 * AMQP over TLS (AMQPS) on libwebsockets' raw sockets.
 *
 * Listeners: libwebsockets does the TLS (the listener's vhost holds the certificate, as
 * for WSS), so that conn.c sees the peer's AMQP in plaintext and its frame guard
 * (frame_guard.c) checks every frame before Proton reads it. Clients: Proton's own TLS
 * layer (pn_ssl) encrypts plain TCP bytes; the peer there is the hub, which TLS itself
 * authenticates, and OpenSSL's verdict on its certificate is noted as described below.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <proton/condition.h>
#include <proton/ssl.h>
#include <proton/transport.h>

#include "transport/internal.h"
#include "transport/tls_reason.h"

/* Where Debian keeps the system's trusted CAs, used when no CA file is given. */
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

static pn_ssl_domain_t *make_domain(pn_ssl_mode_t mode, const iotgw_tls_options *tls, iotgw_diag *diag)
{
    pn_ssl_domain_t *d = pn_ssl_domain(mode);
    if (!d) {
        iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "Proton has no TLS support");
        return NULL;
    }
    if (pn_ssl_domain_set_protocols(d, "TLSv1.2 TLSv1.3")) {
        pn_ssl_domain_free(d);
        iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "could not restrict TLS to 1.2 and later");
        return NULL;
    }
    if (tls->cert_file && pn_ssl_domain_set_credentials(
                              d, tls->cert_file, tls->key_file ? tls->key_file : tls->cert_file, NULL)) {
        pn_ssl_domain_free(d);
        iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "TLS certificate '%s' or key '%s' unreadable or invalid",
                        tls->cert_file, tls->key_file ? tls->key_file : tls->cert_file);
        return NULL;
    }
    if (mode == PN_SSL_MODE_CLIENT) {
        const char *ca = tls->ca_file ? tls->ca_file : SYSTEM_CA_BUNDLE;
        int rc = tls->insecure ? pn_ssl_domain_set_peer_authentication(d, PN_SSL_ANONYMOUS_PEER, NULL)
                               : pn_ssl_domain_set_trusted_ca_db(d, ca) ||
                                     pn_ssl_domain_set_peer_authentication(d, PN_SSL_VERIFY_PEER_NAME, NULL);
        if (rc) {
            pn_ssl_domain_free(d);
            iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "TLS CA file '%s' unreadable or invalid", ca);
            return NULL;
        }
    }
    return d;
}

/*
 * TLS settings made once and shared: pn_ssl_domain() alone reads the system's CA store
 * (about 140 certificates decoded from PEM), and the files are read again for each
 * domain, some 20 ms of CPU that every accepted or opened connection paid before. A
 * domain is made again when one of its files changed (a certificate renewed in place),
 * which a stat() of each per connection tells.
 */
typedef struct amqps_domain {
    struct amqps_domain *next;
    pn_ssl_mode_t mode;
    int insecure;
    char *files[3]; /* cert, key, CA: as given, or NULL */
    struct timespec mtimes[3];
    off_t sizes[3];
    pn_ssl_domain_t *d;
} amqps_domain;

static int same_text(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

/* A file's modification time and size now (zeros when it cannot be read or is NULL). */
static void file_stamp(const char *path, struct timespec *mtime, off_t *size)
{
    struct stat st;
    if (path && !stat(path, &st)) {
        *mtime = st.st_mtim;
        *size = st.st_size;
    } else {
        memset(mtime, 0, sizeof *mtime);
        *size = 0;
    }
}

static void domain_entry_free(amqps_domain *e)
{
    pn_ssl_domain_free(e->d);
    for (int i = 0; i < 3; i++)
        free(e->files[i]);
    free(e);
}

void amqps_domains_free(iotgw_loop *loop)
{
    while (loop->amqps_domains) {
        amqps_domain *e = loop->amqps_domains;
        loop->amqps_domains = e->next;
        domain_entry_free(e);
    }
}

/* The loop's domain for these settings, made (or made again) when needed. NULL with
 * diag when the settings do not work. */
static pn_ssl_domain_t *shared_domain(iotgw_loop *loop, pn_ssl_mode_t mode, const iotgw_tls_options *tls,
                                      iotgw_diag *diag)
{
    const char *files[3] = {tls->cert_file, tls->key_file, tls->ca_file};
    struct timespec mtimes[3];
    off_t sizes[3];
    for (int i = 0; i < 3; i++)
        file_stamp(files[i], &mtimes[i], &sizes[i]);
    for (amqps_domain **pe = &loop->amqps_domains; *pe; pe = &(*pe)->next) {
        amqps_domain *e = *pe;
        if (e->mode != mode || e->insecure != tls->insecure || !same_text(e->files[0], files[0]) ||
            !same_text(e->files[1], files[1]) || !same_text(e->files[2], files[2]))
            continue;
        int changed = 0;
        for (int i = 0; i < 3; i++)
            changed |= e->sizes[i] != sizes[i] || e->mtimes[i].tv_sec != mtimes[i].tv_sec ||
                       e->mtimes[i].tv_nsec != mtimes[i].tv_nsec;
        if (!changed)
            return e->d;
        *pe = e->next; /* a file changed: made again below */
        domain_entry_free(e);
        break;
    }
    pn_ssl_domain_t *d = make_domain(mode, tls, diag);
    amqps_domain *e = d ? calloc(1, sizeof *e) : NULL;
    if (!e) {
        if (d)
            pn_ssl_domain_free(d);
        return d ? (iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory"), NULL) : NULL;
    }
    e->mode = mode;
    e->insecure = tls->insecure;
    e->d = d;
    for (int i = 0; i < 3; i++) {
        e->files[i] = files[i] ? strdup(files[i]) : NULL;
        e->mtimes[i] = mtimes[i];
        e->sizes[i] = sizes[i];
    }
    e->next = loop->amqps_domains;
    loop->amqps_domains = e;
    return d;
}

/*
 * Why a certificate was refused. Proton 0.37 reports every refusal as "certificate verify
 * failed", logs only a name mismatch (at its SSL error level), and gives no access to its
 * OpenSSL object, which alone knows OpenSSL's verdict. So OpenSSL tells us of each SSL
 * object it creates (a "new" hook on an ex_data index of ours), the one created inside
 * pn_ssl_init() is this transport's, and a verify callback of ours wraps Proton's on it and
 * notes the first refusal: OpenSSL's error and depth, or Proton's own name check. Chosen
 * over the alternatives because it reads OpenSSL's verdict on this very handshake through
 * OpenSSL's public API only: no parsing of Proton's text or log (which never say which
 * check failed), no reliance on Proton's private structures, no second handshake of our
 * own (another connection may meet another server). Should Proton make its SSL object
 * elsewhere or use another TLS library, nothing is noted and Proton's text is reported.
 */
static int ssl_index = -1;
static pthread_once_t ssl_index_once = PTHREAD_ONCE_INIT;
/* set around pn_ssl_init() on this thread: where the SSL objects made meanwhile go */
static _Thread_local SSL *made_ssl;
static _Thread_local int making, made_count;

static void on_ssl_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)ptr, (void)ad, (void)idx, (void)argl, (void)argp;
    if (making) {
        made_ssl = parent;
        made_count++;
    }
}

static void make_ssl_index(void)
{
    ssl_index = SSL_get_ex_new_index(0, NULL, on_ssl_new, NULL, NULL);
}

static int verify_and_note(int ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    iotgw_conn *c = ssl ? SSL_get_ex_data(ssl, ssl_index) : NULL;
    if (!c || !c->tls_next_verify)
        return 0; /* cannot happen (set before the handshake); never skip Proton's checks */
    int verdict = c->tls_next_verify(ok, x);
    if (!verdict && !c->tls_verify_error) {
        /* OpenSSL accepted what Proton refused: its host-name check, the only one it adds */
        c->tls_verify_error = ok ? X509_V_ERR_HOSTNAME_MISMATCH : X509_STORE_CTX_get_error(x);
        c->tls_verify_depth = X509_STORE_CTX_get_error_depth(x);
    }
    return verdict;
}

/* After pn_ssl_init(): wrap Proton's verify callback on the SSL object it made, if one. */
static void watch_verification(iotgw_conn *c)
{
    SSL *ssl = made_count == 1 ? made_ssl : NULL;
    making = made_count = 0;
    made_ssl = NULL;
    if (!ssl || ssl_index < 0 || !(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) ||
        !SSL_get_verify_callback(ssl) || !SSL_set_ex_data(ssl, ssl_index, c))
        return;
    c->tls_next_verify = SSL_get_verify_callback(ssl);
    SSL_set_verify(ssl, SSL_get_verify_mode(ssl), verify_and_note);
}

int amqps_tls_refusal(iotgw_conn *c, char *out, size_t size)
{
    if (!c->tls_verify_error)
        return 0;
    char host[256];
    size_t n = sizeof host;
    pn_ssl_t *ssl = pn_ssl(c->driver.transport);
    int have_host = !c->is_server && ssl && !pn_ssl_get_peer_hostname(ssl, host, &n) && host[0];
    tls_reason_describe(c->tls_verify_error, c->tls_verify_depth, !c->is_server, have_host ? host : NULL, out,
                        size);
    return 1;
}

int amqps_setup_tls(iotgw_conn *c, const iotgw_tls_options *tls, const char *host, iotgw_diag *diag)
{
    IOTGW_ASSERT(!c->is_server); /* listeners: libwebsockets' TLS */
    pn_ssl_domain_t *d = shared_domain(c->loop, PN_SSL_MODE_CLIENT, tls, diag);
    if (!d)
        return IOTGW_ERR_INVALID_ARG;
    pthread_once(&ssl_index_once, make_ssl_index);
    pn_ssl_t *ssl = pn_ssl(c->driver.transport);
    making = 1;
    int rc = pn_ssl_init(ssl, d, NULL); /* makes the transport's SSL object */
    watch_verification(c);
    if (rc) /* (the domain stays the loop's; the transport holds its own reference) */
        return iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "could not start TLS");
    if (host)
        pn_ssl_set_peer_hostname(ssl, host); /* SNI and the name check */
    return IOTGW_OK;
}

/* Why the handshake failed, from the fatal alert we sent: OpenSSL refused the client's
 * certificate before any verify callback (none sent) or for a reason of its own. */
static void note_alert(iotgw_conn *c, struct lws *wsi, const struct lws_ssl_info *si)
{
    if (c->tls_failure[0] || !(si->where & SSL_CB_WRITE) || (si->ret >> 8) != 2 /* fatal */)
        return;
    int alert = si->ret & 0xff;
    SSL *ssl = lws_get_ssl(wsi);
    X509 *cert = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
    int no_cert = alert == 116 /* certificate_required */ ||
                  (alert == SSL3_AD_HANDSHAKE_FAILURE && !cert && c->listener && c->listener->ca_file);
    X509_free(cert);
    if (no_cert)
        snprintf(c->tls_failure, sizeof c->tls_failure, "the client sent no certificate");
    else
        snprintf(c->tls_failure, sizeof c->tls_failure, "alert sent: %s", SSL_alert_desc_string_long(si->ret));
}

int raw_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    iotgw_conn *c;
    if (conn_callback_prologue(wsi, reason, &c))
        return 0;
    switch (reason) {
    case LWS_CALLBACK_RAW_ADOPT: /* server: accepted; libwebsockets' TLS handshake under way */
        c = conn_accept(wsi, IOTGW_TRANSPORT_AMQPS);
        if (!c)
            return -1;
        conn_announce(c);
        return 0;

    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION: { /* accepted, before TLS */
        iotgw_listener *l = lws_get_vhost_user(lws_get_vhost(wsi));
        if (l)
            listener_refresh_certificate(l);
        return 0;
    }
    case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION: {
        char why[sizeof c->tls_failure];
        int refuse = tls_peer_verify(wsi, user, (int)len, why, sizeof why);
        if (refuse && c && !c->tls_failure[0])
            memcpy(c->tls_failure, why, sizeof why);
        return refuse;
    }
    case LWS_CALLBACK_SSL_INFO:
        if (c && in)
            note_alert(c, wsi, in);
        return 0;

    case LWS_CALLBACK_RAW_CONNECTED: /* client: TCP connected */
        if (!c)
            return -1;
        conn_on_connected(c, wsi);
        return 0;

    case LWS_CALLBACK_RAW_RX:
        if (!c)
            return -1;
        if (c->is_server && !c->rx_started) { /* the handshake is done once data arrives */
            /* lws 4.1.6 gives a server connection timeout_secs once its handshake is done
             * (PENDING_TIMEOUT_ESTABLISH_WITH_SERVER) and its raw-skt role never ends it */
            lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
            if (c->listener && c->listener->ca_file)
                tls_peer_verified_cn(wsi, c->peer_cn, sizeof c->peer_cn);
            c->rx_started = 1;
        }
        return conn_on_bytes(c, in, len);

    case LWS_CALLBACK_RAW_WRITEABLE:
        if (!c)
            return -1;
        return conn_on_writable(c, 0);

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c) {
            char why[300];
            snprintf(why, sizeof why, "%s", in ? (const char *)in : "connection failed");
            if (c->host[0])
                conn_connect_failure_words(c, why, sizeof why);
            conn_on_socket_gone(c, wsi, IOTGW_COND_CONNECT, why);
        }
        return 0;

    case LWS_CALLBACK_RAW_CLOSE:
        if (c && c->is_server)
            tls_close_notify(wsi, 1);
        if (c)
            conn_on_socket_gone(c, wsi, IOTGW_COND_IO, "connection closed by the peer");
        return 0;

    default: return 0;
    }
}
