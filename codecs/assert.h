/*
 * assert: invariants checked in every build, release included (as Proton's libuv
 * proactor does): a broken invariant is a bug that would otherwise corrupt state
 * silently, so the process says where and aborts. Only cheap checks belong here.
 *
 * Threading: any thread. Errors: none returned; a failure prints one line to stderr and
 * calls abort().
 */
#ifndef IOTGW_CODECS_ASSERT_H
#define IOTGW_CODECS_ASSERT_H

_Noreturn void iotgw_assert_fail(const char *expr, const char *file, int line, const char *func);

#define IOTGW_ASSERT(expr) ((expr) ? (void)0 : iotgw_assert_fail(#expr, __FILE__, __LINE__, __func__))

#endif
