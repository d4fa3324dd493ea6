/* check.h - a tiny test harness for the C unit tests: CHECK() records a
 * failure with file:line and carries on; main() ends with check_summary(),
 * which prints "N passed, M failed" and returns the exit code. */
#ifndef CRUST_CHECK_H
#define CRUST_CHECK_H

#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) {                                                              \
            check_passed++;                                                      \
        } else {                                                                 \
            check_failed++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
