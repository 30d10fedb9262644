#include "tests/unit/check_main.h"
Suite *suite_under_test(void){ return suite_create("hubmsg"); }
