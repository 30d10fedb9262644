/* Every library message transport/failure_text.c recognises, in the words of
 * libwebsockets 4.1.6 and Qpid Proton 0.37 as Debian 12 ships them: a library upgrade
 * that rewords one fails here. */
#include <check.h>
#include <string.h>

#include "tests/unit/check_main.h"
#include "transport/failure_text.h"
#include "transport/transport.h"

/* lws' LWS_CALLBACK_CLIENT_CONNECTION_ERROR texts (lib/roles/http/client, lib/core-net) */
static const struct {
    const char *text, *cond;
} client_errors[] = {
    {"HS: ws upgrade response not 101", IOTGW_COND_WEBSOCKET},
    {"HS: ACCEPT missing", IOTGW_COND_WEBSOCKET},
    {"HS: Accept hash wrong", IOTGW_COND_WEBSOCKET},
    {"HS: Cannot match protocol", IOTGW_COND_WEBSOCKET},
    {"HS: UPGRADE missing", IOTGW_COND_WEBSOCKET},
    {"HS: Upgrade to something other than websocket", IOTGW_COND_WEBSOCKET},
    {"HS: ws upgrade unauthorized", IOTGW_COND_WEBSOCKET},
    {"ws protocol no match", IOTGW_COND_WEBSOCKET},
    {"tls restriction limit", IOTGW_COND_TLS},
    {"Unable to connect", IOTGW_COND_CONNECT},
    {"Peer hung up", IOTGW_COND_CONNECT},
    {"read failed", IOTGW_COND_CONNECT},
    {"Closed before conn", IOTGW_COND_CONNECT},
    {"closed before established", IOTGW_COND_CONNECT},
    {"proxy conn dead", IOTGW_COND_CONNECT},
    {"ipv6 lws_getaddrinfo46 failed", IOTGW_COND_CONNECT},
};

START_TEST(wss_client_errors_map_to_conditions)
{
    for (size_t i = 0; i < sizeof client_errors / sizeof *client_errors; i++)
        ck_assert_msg(
            !strcmp(failure_text_wss_client_condition(client_errors[i].text), client_errors[i].cond),
            "\"%s\" gave %s, not %s", client_errors[i].text,
            failure_text_wss_client_condition(client_errors[i].text), client_errors[i].cond);
    ck_assert_str_eq(failure_text_wss_client_condition(NULL), IOTGW_COND_CONNECT);
}
END_TEST

START_TEST(lws_ssl_error_line_gives_openssl_error_and_depth)
{
    /* lib/tls/openssl/openssl-client.c: lwsl_err("SSL error: %s (preverify_ok=%d;err=%d;depth=%d)\n") */
    int err, depth;
    const char *words;
    size_t n;
    ck_assert(failure_text_lws_ssl_error(
        "[2026/12/02 05:00:00:0000] E: SSL error: certificate has expired (preverify_ok=0;err=10;depth=0)\n",
        &err, &depth, &words, &n));
    ck_assert_int_eq(err, 10);
    ck_assert_int_eq(depth, 0);
    ck_assert_int_eq((int)n, (int)strlen("certificate has expired"));
    ck_assert(!strncmp(words, "certificate has expired", n));
    ck_assert(failure_text_lws_ssl_error("E: SSL error: unable to get local issuer certificate "
                                         "(preverify_ok=0;err=20;depth=1)\n",
                                         &err, &depth, &words, &n));
    ck_assert_int_eq(err, 20);
    ck_assert_int_eq(depth, 1);
    /* without the numbers: the words alone */
    ck_assert(failure_text_lws_ssl_error("SSL error: handshake failure\n", &err, &depth, &words, &n));
    ck_assert_int_eq(err, 0);
    ck_assert(!strncmp(words, "handshake failure", n) && n == strlen("handshake failure"));
    ck_assert(
        !failure_text_lws_ssl_error("E: lws_client_connect_2: getaddrinfo failed", &err, &depth, &words, &n));
    ck_assert(!failure_text_lws_ssl_error(NULL, &err, &depth, &words, &n));
}
END_TEST

START_TEST(proton_tls_failure_reason_without_openssl_prefix)
{
    /* Proton's ssl layer: "SSL Failure: " then OpenSSL's ERR_error_string_n text */
    ck_assert_str_eq(
        failure_text_proton_tls_reason("SSL Failure: error:0A000086:SSL routines::certificate verify "
                                       "failed"),
        "certificate verify failed");
    ck_assert_str_eq(failure_text_proton_tls_reason(
                         "SSL Failure: error:0A00010B:SSL routines:ssl3_get_record:wrong version number"),
                     "wrong version number");
    ck_assert_str_eq(failure_text_proton_tls_reason("SSL Failure: Unknown error"), "Unknown error");
    ck_assert_ptr_null(
        failure_text_proton_tls_reason("AMQP header mismatch: 'HTTP/1.1 ' (connection aborted)"));
    ck_assert_ptr_null(failure_text_proton_tls_reason(NULL));
    ck_assert(failure_text_is_verify_failure("certificate verify failed"));
    ck_assert(!failure_text_is_verify_failure("wrong version number"));
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("failure_text");
    TCase *tc = tcase_create("libraries");
    tcase_add_test(tc, wss_client_errors_map_to_conditions);
    tcase_add_test(tc, lws_ssl_error_line_gives_openssl_error_and_depth);
    tcase_add_test(tc, proton_tls_failure_reason_without_openssl_prefix);
    suite_add_tcase(s, tc);
    return s;
}
