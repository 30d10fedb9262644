#ifndef IOTGW_TESTS_CHECK_MAIN_H
#define IOTGW_TESTS_CHECK_MAIN_H

#include <check.h>

Suite *suite_under_test(void);

#endif
