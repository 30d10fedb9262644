#include "codecs/base64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t iotgw_base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

void iotgw_base64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0, o = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
}

size_t iotgw_base64_decoded_max(size_t n)
{
    return (n + 3) / 4 * 3;
}

static int sextet(char c, int flags)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || (c == '-' && (flags & IOTGW_BASE64_LENIENT)))
        return 62;
    if (c == '/' || (c == '_' && (flags & IOTGW_BASE64_LENIENT)))
        return 63;
    return -1;
}

int iotgw_base64_decode(const char *in, size_t n, uint8_t *out, size_t *out_len, int flags, iotgw_diag *diag)
{
    size_t data = n;
    while (data > 0 && in[data - 1] == '=')
        data--;
    size_t pad = n - data;
    if (pad > 2)
        return iotgw_diag_fail(diag, IOTGW_ERR_BASE64, "base64: too much '=' padding");
    if (pad ? n % 4 != 0 : (data % 4 != 0 && !(flags & IOTGW_BASE64_LENIENT)))
        return iotgw_diag_fail(diag, IOTGW_ERR_BASE64, "base64: length %zu is not a multiple of 4", n);
    if (data % 4 == 1)
        return iotgw_diag_fail(diag, IOTGW_ERR_BASE64, "base64: truncated (%zu characters)", n);

    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < data; i++) {
        int v = sextet(in[i], flags);
        if (v < 0)
            return iotgw_diag_fail(diag, IOTGW_ERR_BASE64, "base64: invalid character at offset %zu", i);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = o;
    return IOTGW_OK;
}
