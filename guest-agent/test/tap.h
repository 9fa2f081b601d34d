/* Minimal TAP producer for the C unit tests. */
#ifndef SM_TAP_H
#define SM_TAP_H
#include <stdio.h>

static int tap_n, tap_fail;

#define ok(cond, ...)                                                                              \
	do {                                                                                       \
		tap_n++;                                                                           \
		if (cond) {                                                                        \
			printf("ok %d - ", tap_n);                                                 \
		} else {                                                                           \
			tap_fail++;                                                                \
			printf("not ok %d - ", tap_n);                                             \
		}                                                                                  \
		printf(__VA_ARGS__);                                                               \
		printf("\n");                                                                      \
	} while (0)

#define skip(...)                                                                                  \
	do {                                                                                       \
		tap_n++;                                                                           \
		printf("ok %d - # SKIP ", tap_n);                                                  \
		printf(__VA_ARGS__);                                                               \
		printf("\n");                                                                      \
	} while (0)

static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_fail ? 1 : 0;
}
#endif
