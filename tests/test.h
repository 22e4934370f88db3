/*
 * tests/test.h — a tiny test harness. Each test file defines TEST(name)
 * functions and a main() that calls RUN(name) for each, then TEST_DONE().
 * A failed ASSERT reports file:line and both values, marks the test failed
 * and returns from it. Exit code: 0 all passed, 1 any failed, 77 skipped
 * (ctest SKIP_RETURN_CODE).
 */
#ifndef WEFT_TEST_H
#define WEFT_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failed_count, test_passed_count, test_cur_failed;

#define TEST(name) static void test_##name(void)
#define RUN(name)                                                                   \
    do {                                                                            \
        test_cur_failed = 0;                                                        \
        test_##name();                                                              \
        if (test_cur_failed) {                                                      \
            test_failed_count++;                                                    \
            fprintf(stderr, "FAIL %s\n", #name);                                    \
        } else {                                                                    \
            test_passed_count++;                                                    \
            fprintf(stderr, "ok   %s\n", #name);                                    \
        }                                                                           \
    } while (0)
#define TEST_DONE()                                                                 \
    do {                                                                            \
        fprintf(stderr, "%d passed, %d failed\n", test_passed_count,                \
                test_failed_count);                                                 \
        return test_failed_count ? 1 : 0;                                           \
    } while (0)
#define TEST_SKIP(why)                                                              \
    do {                                                                            \
        fprintf(stderr, "skipped: %s\n", why);                                      \
        return 77;                                                                  \
    } while (0)

#define TEST_FAIL_(...)                                                             \
    do {                                                                            \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                           \
        fprintf(stderr, __VA_ARGS__);                                               \
        fprintf(stderr, "\n");                                                      \
        test_cur_failed = 1;                                                        \
        return;                                                                     \
    } while (0)

#define ASSERT(c)                                                                   \
    do {                                                                            \
        if (!(c)) TEST_FAIL_("ASSERT(%s) failed", #c);                              \
    } while (0)
#define ASSERT_EQ_INT(a, b)                                                         \
    do {                                                                            \
        long long a_ = (long long)(a), b_ = (long long)(b);                         \
        if (a_ != b_) TEST_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);         \
    } while (0)
#define ASSERT_NE_INT(a, b)                                                         \
    do {                                                                            \
        long long a_ = (long long)(a), b_ = (long long)(b);                         \
        if (a_ == b_) TEST_FAIL_("%s != %s: both %lld", #a, #b, a_);                \
    } while (0)
#define ASSERT_LT_INT(a, b)                                                         \
    do {                                                                            \
        long long a_ = (long long)(a), b_ = (long long)(b);                         \
        if (!(a_ < b_)) TEST_FAIL_("%s < %s: %lld >= %lld", #a, #b, a_, b_);        \
    } while (0)
#define ASSERT_STR_EQ(a, b)                                                         \
    do {                                                                            \
        const char *a_ = (a), *b_ = (b);                                            \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                      \
            TEST_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",    \
                       b_ ? b_ : "(null)");                                         \
    } while (0)
#define ASSERT_NEAR(a, b, tol)                                                      \
    do {                                                                            \
        double a_ = (double)(a), b_ = (double)(b);                                  \
        if (!(fabs(a_ - b_) <= (tol)))                                              \
            TEST_FAIL_("%s ~ %s: %.9g vs %.9g (tol %g)", #a, #b, a_, b_,            \
                       (double)(tol));                                              \
    } while (0)

#endif
