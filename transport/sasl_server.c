/* The SASL layer of accepted connections. Proton's built-in server offers only
 * ANONYMOUS and EXTERNAL, but IoT Hub's clients need more: the C SDK refuses a server
 * that does not offer MSSBCBS (authentication then happens through CBS, so it is
 * accepted like ANONYMOUS), and PLAIN carries a SAS token as the password, which the
 * listener's owner checks (shared/docs/iothub-amqp-protocol.md, 1.3). */
#include <stdlib.h>
#include <string.h>
#include <proton/sasl.h>
#include <proton/sasl_plugin.h>
#include <proton/transport.h>

#include "transport/internal.h"

static const char *sasl_mechanisms(pn_transport_t *t)
{
    iotgw_conn *c = pnx_sasl_get_context(t);
    return c && c->listener && c->listener->opt.on_sasl_plain ? "MSSBCBS ANONYMOUS PLAIN"
                                                              : "MSSBCBS ANONYMOUS";
}

static bool sasl_init_server(pn_transport_t *t)
{
    pnx_sasl_set_desired_state(t, SASL_POSTED_MECHANISMS);
    return true;
}

/* PLAIN's initial response is authzid NUL username NUL password (RFC 4616). */
static int check_plain(iotgw_conn *c, const pn_bytes_t *recv)
{
    if (!c->listener || !c->listener->opt.on_sasl_plain || !recv->start)
        return -1;
    const char *p = recv->start, *end = p + recv->size;
    const char *user = memchr(p, 0, recv->size);
    if (!user++)
        return -1;
    const char *pass = memchr(user, 0, (size_t)(end - user));
    if (!pass++)
        return -1;
    char *u = strndup(user, (size_t)(pass - 1 - user));
    char *w = strndup(pass, (size_t)(end - pass));
    int rc = -1;
    if (u && w && strlen(w) == (size_t)(end - pass))
        rc = c->listener->opt.on_sasl_plain(c, u, w, c->listener->opt.ctx);
    free(u);
    if (w)
        explicit_bzero(w, strlen(w));
    free(w);
    return rc;
}

static void sasl_process_init(pn_transport_t *t, const char *mechanism, const pn_bytes_t *recv)
{
    iotgw_conn *c = pnx_sasl_get_context(t);
    int ok = 0;
    if (!mechanism) /* a sasl-init naming none (a malformed frame): refused, not a crash */
        ok = 0;
    else if (!strcmp(mechanism, "ANONYMOUS") || !strcmp(mechanism, "MSSBCBS"))
        ok = 1;
    else if (!strcmp(mechanism, "PLAIN"))
        ok = c && check_plain(c, recv) == 0;
    if (ok)
        pnx_sasl_set_succeeded(t, "anonymous", NULL);
    else
        pnx_sasl_set_failed(t);
    pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
}

static void sasl_noop(pn_transport_t *t)
{
    (void)t;
}
static bool sasl_no_client(pn_transport_t *t)
{
    (void)t;
    return false;
}
static void sasl_ignore_bytes(pn_transport_t *t, const pn_bytes_t *recv)
{
    (void)t, (void)recv;
}
static bool sasl_no_mechs(pn_transport_t *t, const char *mechs)
{
    (void)t, (void)mechs;
    return false;
}
static bool sasl_cannot_encrypt(pn_transport_t *t)
{
    (void)t;
    return false;
}
static ssize_t sasl_no_encrypt_size(pn_transport_t *t)
{
    (void)t;
    return 0;
}
static ssize_t sasl_no_coding(pn_transport_t *t, pn_bytes_t in, pn_bytes_t *out)
{
    (void)t, (void)in, (void)out;
    return 0;
}

static const pnx_sasl_implementation server_sasl = {
    .free = sasl_noop,
    .list_mechanisms = sasl_mechanisms,
    .init_server = sasl_init_server,
    .init_client = sasl_no_client,
    .prepare_write = sasl_noop,
    .process_init = sasl_process_init,
    .process_response = sasl_ignore_bytes,
    .process_mechanisms = sasl_no_mechs,
    .process_challenge = sasl_ignore_bytes,
    .process_outcome = sasl_ignore_bytes,
    .can_encrypt = sasl_cannot_encrypt,
    .max_encrypt_size = sasl_no_encrypt_size,
    .encode = sasl_no_coding,
    .decode = sasl_no_coding,
};

void sasl_server_setup(iotgw_conn *c)
{
    pn_transport_t *t = c->driver.transport;
    pn_sasl_t *sasl = pn_sasl(t);
    /* PLAIN over WSS runs inside libwebsockets' TLS, which Proton cannot see. */
    pn_sasl_set_allow_insecure_mechs(sasl, true);
    pnx_sasl_set_implementation(t, &server_sasl, c);
    pn_transport_require_auth(t, false);
}
