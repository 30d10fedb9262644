/* What the libraries' failure texts mean (transport/failure_text.h). */
#include <stdio.h>
#include <string.h>

#include "transport/failure_text.h"
#include "transport/transport.h"

const char *failure_text_wss_client_condition(const char *why)
{
    if (!why)
        return IOTGW_COND_CONNECT;
    /* "tls restriction limit", OpenSSL's words passed through, "waiting for server cert" */
    if (strstr(why, "ssl") || strstr(why, "SSL") || strstr(why, "tls") || strstr(why, "TLS") ||
        strstr(why, "certificate") || strstr(why, "verify"))
        return IOTGW_COND_TLS;
    /* "HS: ws upgrade response not 101", "HS: Cannot match protocol", "ws protocol no match" */
    if (strstr(why, "HS:") || strstr(why, "upgrade") || strstr(why, "protocol") || strstr(why, "101"))
        return IOTGW_COND_WEBSOCKET;
    return IOTGW_COND_CONNECT; /* "Unable to connect", "Peer hung up", "closed before established" */
}

int failure_text_lws_ssl_error(const char *line, int *err, int *depth, const char **words, size_t *words_len)
{
    const char *why = line ? strstr(line, "SSL error: ") : NULL;
    if (!why)
        return 0;
    why += strlen("SSL error: ");
    const char *detail = strstr(why, "(preverify_ok=");
    int ok;
    *err = *depth = 0;
    if (!detail || sscanf(detail, "(preverify_ok=%d;err=%d;depth=%d)", &ok, err, depth) != 3)
        *err = *depth = 0;
    size_t n = detail ? (size_t)(detail - why) : strcspn(why, "\n");
    while (n && (why[n - 1] == ' ' || why[n - 1] == '\n'))
        n--;
    *words = why;
    *words_len = n;
    return 1;
}

const char *failure_text_proton_tls_reason(const char *description)
{
    if (!description || strncmp(description, "SSL Failure: ", 13))
        return NULL;
    const char *why = description + 13;
    /* OpenSSL's "error:0A000086:SSL routines::certificate verify failed": the reason
     * follows the code, library and function */
    if (!strncmp(why, "error:", 6))
        for (int i = 0; i < 4 && strchr(why, ':'); i++)
            why = strchr(why, ':') + 1;
    return why;
}

int failure_text_is_verify_failure(const char *reason)
{
    return reason && strstr(reason, "certificate verify failed") != NULL;
}
