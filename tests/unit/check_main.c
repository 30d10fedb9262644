/* The main() of every Check test program: each defines suite_under_test(). */
#include <check.h>
#include <stdlib.h>

#include "tests/unit/check_main.h"

int main(void)
{
    SRunner *sr = srunner_create(suite_under_test());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
