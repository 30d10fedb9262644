#include "codecs/identity.h"

#include <string.h>

int iotgw_identity_check(const char *id, const char *what, iotgw_diag *diag)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "%s is empty", what);
    if (n > IOTGW_IDENTITY_MAX_LEN)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "%s is %zu characters long, maximum is %d", what,
                               n, IOTGW_IDENTITY_MAX_LEN);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 (c && strchr("-.+%_#*?!(),:=@$'", c));
        if (!ok)
            return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                                   "%s has a character IoT Hub does not allow (0x%02x at offset %zu)", what,
                                   c, i);
    }
    return IOTGW_OK;
}
