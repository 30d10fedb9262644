/* WebSocket frames written by the client role itself (RFC 6455 section 5.2). Client
 * frames must be masked; libwebsockets 4.1 masks one byte per loop turn, reloading its
 * state each time, which cost ~15 % of the CPU of a loopback WSS transfer. Here the
 * payload is copied and masked in one pass, eight bytes at a time, and the frame goes out
 * through lws_write(LWS_WRITE_RAW), which adds nothing. */
#include <string.h>
#include <openssl/rand.h>

#include "transport/internal.h"

/* Masking keys come from OpenSSL's generator (the RFC asks for a strong source of
 * entropy), drawn 1 KiB at a time; the transport runs on one thread per loop. */
static _Thread_local uint8_t key_pool[1024];
static _Thread_local size_t key_used = sizeof key_pool;

static int next_mask(uint8_t mask[4])
{
    if (key_used + 4 > sizeof key_pool) {
        if (RAND_bytes(key_pool, sizeof key_pool) != 1)
            return -1;
        key_used = 0;
    }
    memcpy(mask, key_pool + key_used, 4);
    key_used += 4;
    return 0;
}

size_t ws_client_frame(uint8_t *out, const uint8_t *payload, size_t n)
{
    uint8_t mask[4];
    if (next_mask(mask))
        return 0;
    size_t h = 0;
    out[h++] = 0x82; /* FIN, binary */
    if (n < 126) {
        out[h++] = (uint8_t)(0x80 | n);
    } else if (n <= 0xffff) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(n >> 8);
        out[h++] = (uint8_t)n;
    } else {
        out[h++] = 0x80 | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            out[h++] = (uint8_t)((uint64_t)n >> shift);
    }
    memcpy(out + h, mask, 4);
    h += 4;
    uint8_t *dst = out + h;
    uint64_t m64;
    uint8_t m8[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
    memcpy(&m64, m8, 8); /* byte i of the payload is XORed with mask[i % 4] */
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, payload + i, 8);
        v ^= m64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = payload[i] ^ mask[i & 3];
    return h + n;
}
