/* Fleet sharding (codecs/shard.h): a shard index from a StatefulSet pod name. */
#include "codecs/shard.h"

#include <string.h>

#define POD_NAME_MAX       253 /* a Kubernetes object name (RFC 1123 subdomain) */
#define ORDINAL_DIGITS_MAX 9

static int pod_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

int iotgw_shard_ordinal(const char *name, unsigned *ordinal, iotgw_diag *diag)
{
    size_t len = name ? strlen(name) : 0;
    if (!len)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "is empty, not a pod name ending in -N");
    if (len > POD_NAME_MAX)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                               "is %zu characters long: a pod name has at most %d", len, POD_NAME_MAX);
    for (size_t i = 0; i < len; i++)
        if (!pod_name_char(name[i])) /* not quoted: it could be anything, a control character too */
            return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                                   "is not a pod name: byte %zu is 0x%02x (a pod name is a-z, 0-9, '-', '.')",
                                   i, (unsigned)(unsigned char)name[i]);
    const char *dash = strrchr(name, '-');
    const char *digits = dash ? dash + 1 : NULL;
    size_t n = digits ? strlen(digits) : 0;
    int numeric = n > 0 && n <= ORDINAL_DIGITS_MAX && dash > name;
    for (size_t i = 0; numeric && i < n; i++)
        numeric = digits[i] >= '0' && digits[i] <= '9';
    if (!numeric || (n > 1 && digits[0] == '0'))
        return iotgw_diag_fail(
            diag, IOTGW_ERR_INVALID_ARG,
            "is \"%s\", which does not end in -N, a StatefulSet pod's ordinal (e.g. iotgw-2)", name);
    unsigned v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (unsigned)(digits[i] - '0');
    *ordinal = v;
    return 0;
}
