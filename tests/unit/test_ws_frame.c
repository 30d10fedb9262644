/* transport/ws_frame: the client role's own WebSocket frames. Each must be a single
 * binary frame with FIN and the mask bit set, the length in the shortest of RFC 6455's
 * three forms, a fresh masking key, and a payload that the key turns back into the
 * original bytes (whatever the payload's length and alignment). */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check_main.h"
#include "transport/internal.h"

/* Parse one frame as a server would: returns the payload length, unmasked into out. */
static size_t unmask(const uint8_t *f, size_t flen, uint8_t *out, size_t *header_len)
{
    ck_assert_uint_eq(f[0], 0x82);        /* FIN, binary */
    ck_assert_uint_eq(f[1] & 0x80, 0x80); /* masked */
    size_t n = f[1] & 0x7f, h = 2;
    if (n == 126) {
        n = (size_t)f[2] << 8 | f[3];
        h = 4;
    } else if (n == 127) {
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | f[2 + i];
        h = 10;
    }
    const uint8_t *mask = f + h;
    h += 4;
    ck_assert_uint_eq(flen, h + n);
    for (size_t i = 0; i < n; i++)
        out[i] = f[h + i] ^ mask[i % 4];
    *header_len = h;
    return n;
}

START_TEST(lengths_take_the_shortest_form_and_payload_unmasks)
{
    static const size_t sizes[] = {0, 1, 7, 8, 9, 125, 126, 127, 1000, 65535, 65536, 70001};
    static const size_t headers[] = {6, 6, 6, 6, 6, 6, 8, 8, 8, 8, 14, 14};
    size_t max = 70001;
    uint8_t *payload = malloc(max + 3), *frame = malloc(max + 3 + WS_CLIENT_FRAME_HEADER_MAX),
            *back = malloc(max);
    for (size_t i = 0; i < max + 3; i++)
        payload[i] = (uint8_t)(i * 131 + 7);
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        for (size_t offset = 0; offset < 3; offset++) { /* unaligned payloads too */
            size_t h, flen = ws_client_frame(frame, payload + offset, sizes[k]);
            ck_assert_uint_eq(unmask(frame, flen, back, &h), sizes[k]);
            ck_assert_uint_eq(h, headers[k]);
            ck_assert_mem_eq(back, payload + offset, sizes[k]);
        }
    free(payload), free(frame), free(back);
}
END_TEST

START_TEST(every_frame_gets_a_new_masking_key)
{
    uint8_t frame[64], seen[300][4];
    int zero_keys = 0;
    for (int i = 0; i < 300; i++) { /* crosses the key pool's refill */
        ck_assert_uint_eq(ws_client_frame(frame, (const uint8_t *)"abcd", 4), 10);
        memcpy(seen[i], frame + 2, 4);
        zero_keys += !memcmp(seen[i], "\0\0\0\0", 4);
    }
    int repeats = 0;
    for (int i = 1; i < 300; i++)
        repeats += !memcmp(seen[i], seen[i - 1], 4);
    ck_assert_int_lt(repeats, 2); /* 2^-32 each by chance */
    ck_assert_int_lt(zero_keys, 2);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("ws_frame");
    TCase *tc = tcase_create("ws_frame");
    tcase_add_test(tc, lengths_take_the_shortest_form_and_payload_unmasks);
    tcase_add_test(tc, every_frame_gets_a_new_masking_key);
    suite_add_tcase(s, tc);
    return s;
}
