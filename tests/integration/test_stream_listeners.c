/* Byte-stream listeners (transport/stream.h) side by side in one process, each with its
 * own TLS certificate: a client that sends a ServerName (as every MQTT SDK does) gets
 * the certificate of the listener it connected to, never another listener's (libwebsockets'
 * SNI callback would pick "the first vhost on the port", and stream listeners' vhosts all
 * listen on none). Real loop, real sockets, an OpenSSL client on its own thread. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tests/unit/check_main.h"
#include "transport/stream.h"
#include "transport/transport.h"

static char certs[512];

static const char *cert(const char *name)
{
    static char p[4][600];
    static int i;
    char *out = p[i++ % 4];
    snprintf(out, 600, "%s/%s", certs, name);
    return out;
}

static void on_accept(iotgw_stream_listener *l, iotgw_stream *s, void *ctx)
{
    (void)l;
    atomic_int *accepted = ctx;
    (*accepted)++;
    static const iotgw_stream_handler none = {0};
    iotgw_stream_set_handler(s, &none, NULL);
}

typedef struct probe {
    int port;
    char subject_cn[128]; /* of the certificate the server showed */
    int done;
} probe;

/* Connect with ServerName "localhost", take the server's certificate, close. */
static void *client(void *arg)
{
    probe *p = arg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* what is shown is checked below */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, "localhost");
        if (SSL_connect(ssl) == 1) {
            X509 *x = SSL_get1_peer_certificate(ssl);
            if (x) {
                X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, p->subject_cn,
                                          sizeof p->subject_cn);
                X509_free(x);
            }
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
    }
    close(fd);
    SSL_CTX_free(ctx);
    atomic_store((atomic_int *)&p->done, 1);
    return NULL;
}

static void probe_listener(iotgw_loop *loop, int port, probe *p)
{
    memset(p, 0, sizeof *p);
    p->port = port;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, client, p), 0);
    int64_t end = iotgw_loop_now_ms(loop) + 10000;
    while (!atomic_load((atomic_int *)&p->done) && iotgw_loop_now_ms(loop) < end)
        iotgw_loop_run(loop, 10);
    pthread_join(t, NULL);
}

START_TEST(each_listener_shows_its_own_certificate_to_a_client_sending_a_server_name)
{
    const char *dir = getenv("IOTGW_TEST_CERTS");
    ck_assert_msg(dir != NULL, "IOTGW_TEST_CERTS must name the test certificate folder");
    snprintf(certs, sizeof certs, "%s", dir);
    iotgw_diag d = {0};
    iotgw_loop *loop = iotgw_loop_new(NULL, &d);
    ck_assert_msg(loop != NULL, "%s", d.text);
    atomic_int accepted = 0;
    /* three listeners, the client's ServerName matching none's vhost name */
    const char *names[] = {"wrongname", "server", "gateway"};
    const char *cns[] = {"not-this-host.example", "localhost", "edge-gateway"};
    iotgw_stream_listener *l[3];
    for (int i = 0; i < 3; i++) {
        char pem[64], key[64];
        snprintf(pem, sizeof pem, "%s.pem", names[i]);
        snprintf(key, sizeof key, "%s.key", names[i]);
        const char *pem_path = cert(pem), *key_path = cert(key);
        iotgw_stream_listener_options o = {.address = "127.0.0.1",
                                           .on_accept = on_accept,
                                           .ctx = &accepted,
                                           .tls = {.cert_file = pem_path, .key_file = key_path}};
        ck_assert_msg(!iotgw_stream_listener_new(loop, &o, &l[i], &d), "%s", d.text);
    }
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 3; i++) {
            probe p;
            probe_listener(loop, iotgw_stream_listener_port(l[i]), &p);
            ck_assert_msg(!strcmp(p.subject_cn, cns[i]), "listener %d (%s) showed the certificate of \"%s\"",
                          i, names[i], p.subject_cn);
        }
    ck_assert_int_eq(atomic_load(&accepted), 6);
    for (int i = 0; i < 3; i++)
        iotgw_stream_listener_free(l[i]);
    iotgw_loop_free(loop);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("stream listeners");
    TCase *tc = tcase_create("tls");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, each_listener_shows_its_own_certificate_to_a_client_sending_a_server_name);
    suite_add_tcase(s, tc);
    return s;
}
