/* The open-file limit: raised at start, and the share kept back from connections. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/resource.h>

#include "transport/fdlimit.h"

static long reserve = IOTGW_FD_RESERVE_DEFAULT;

static long as_long(rlim_t v)
{
    return v == RLIM_INFINITY || v > (rlim_t)LONG_MAX ? LONG_MAX : (long)v;
}

int iotgw_fd_limit_raise(int apply, iotgw_fd_limit *out, iotgw_diag *diag)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "cannot read the open-file limit: %s",
                               strerror(errno));
    out->before = as_long(rl.rlim_cur);
    out->hard = as_long(rl.rlim_max);
    rlim_t want = rl.rlim_max < IOTGW_FD_LIMIT_CAP ? rl.rlim_max : IOTGW_FD_LIMIT_CAP;
    if (want <= rl.rlim_cur) {
        out->soft = out->before;
        return 0;
    }
    out->soft = as_long(want);
    if (!apply)
        return 0;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl))
        return iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL,
                               "cannot raise the open-file limit from %ld to %ld: %s", out->before, out->soft,
                               strerror(errno));
    return 0;
}

long iotgw_fd_limit_now(void)
{
    struct rlimit rl;
    return getrlimit(RLIMIT_NOFILE, &rl) ? 1024 : as_long(rl.rlim_cur);
}

void iotgw_fd_reserve_set(long n)
{
    reserve = n > 0 ? n : 0;
}

long iotgw_fd_reserve(void)
{
    return reserve;
}
