#include "codecs/hostport.h"

#include <stdlib.h>
#include <string.h>

#include "codecs/error.h"

int iotgw_hostport_parse(const char *text, char *host, size_t host_size, int *port)
{
    const char *colon = text ? strrchr(text, ':') : NULL;
    if (!colon || colon == text || !colon[1])
        return IOTGW_ERR_INVALID_ARG;
    long p = 0;
    for (const char *c = colon + 1; *c; c++) {
        if (*c < '0' || *c > '9' || (p = p * 10 + (*c - '0')) > 65535)
            return IOTGW_ERR_INVALID_ARG;
    }
    const char *h = text;
    size_t n = (size_t)(colon - text);
    if (h[0] == '[') { /* [v6]:port */
        if (n < 3 || h[n - 1] != ']')
            return IOTGW_ERR_INVALID_ARG;
        h++, n -= 2;
    } else if (memchr(h, ':', n)) {
        return IOTGW_ERR_INVALID_ARG; /* a bare IPv6 address: which colon ends it? */
    }
    if (n >= host_size)
        return IOTGW_ERR_INVALID_ARG;
    memcpy(host, h, n);
    host[n] = '\0';
    *port = (int)p;
    return 0;
}
