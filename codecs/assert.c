#include <stdio.h>
#include <stdlib.h>

#include "codecs/assert.h"

void iotgw_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "iotgw: internal error: %s:%d: %s: invariant '%s' broken; aborting\n", file, line, func,
            expr);
    fflush(stderr);
    abort();
}
