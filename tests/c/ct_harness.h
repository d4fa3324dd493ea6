/*
 * ct_harness.h - what the Valgrind constant-time harnesses (ct_*.c,
 * run by tests/engine/test_constant_time.py) share: the marks and main.
 *
 *     valgrind --error-exitcode=1 ct_X ct ROUNDS    must run clean
 *     valgrind --error-exitcode=1 ct_X leaky        must be reported
 *
 * SECRET marks bytes undefined, so memcheck reports every conditional jump
 * and memory address computed from them; PUBLIC marks an outcome the
 * caller may see (a return code) defined again before it is used.
 */
#ifndef CRUST_CT_HARNESS_H
#define CRUST_CT_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <valgrind/memcheck.h>

#define SECRET(p, n) VALGRIND_MAKE_MEM_UNDEFINED((p), (n))
#define PUBLIC(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))

/* round_ct returns a count to sum (printed after "N rounds" as
 * ", SUM counted", if counted is not NULL) or -1 for an unexpected
 * result; round_leaky is the positive control. */
static int ct_main(int argc, char **argv, int (*round_ct)(void), void (*round_leaky)(void),
                   const char *counted)
{
    if (argc >= 2 && strcmp(argv[1], "leaky") == 0) {
        round_leaky();
        printf("leaky round done\n");
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "ct") != 0) {
        fprintf(stderr, "usage: %s ct ROUNDS | leaky\n", argv[0]);
        return 2;
    }
    if (!RUNNING_ON_VALGRIND) {
        fprintf(stderr, "run me under valgrind\n");
        return 2;
    }
    int rounds = argc >= 3 ? atoi(argv[2]) : 8;
    int sum = 0;
    for (int i = 0; i < rounds; i++) {
        int r = round_ct();
        if (r < 0) {
            fprintf(stderr, "round %d: unexpected result\n", i);
            return 1;
        }
        sum += r;
    }
    if (counted)
        printf("%d rounds, %d %s\n", rounds, sum, counted);
    else
        printf("%d rounds\n", rounds);
    return 0;
}

#endif
