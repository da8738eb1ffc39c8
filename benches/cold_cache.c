// How cold this machine's caches and TLBs are after an idle gap: a pointer
// chase over N KiB of cache lines (4 KiB pages), or over one line in each
// of N 4 KiB pages (with or without transparent huge pages), timed back to
// back and after a gap, slept or spun. Median ns per line / per page.
// gcc -O2 benches/cold_cache.c -o /tmp/cold && /tmp/cold lines 64 20000 && /tmp/cold pages 512 20000
//   mode lines KIB GAP_US [spin] | mode pages N GAP_US [huge]
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
static double now() { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static int cmp(const void *x, const void *y) { double d = *(double *)x - *(double *)y; return d < 0 ? -1 : d > 0; }
static void wait_gap(int gap, int spin) {
  if (!gap) return;
  if (spin) { double t = now(); while (now() - t < gap) {} } else usleep(gap);
}
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: %s lines KIB GAP_US [spin] | pages N GAP_US [huge]\n", argv[0]); return 2; }
  int pages = !strcmp(argv[1], "pages"), n_arg = atoi(argv[2]), gap = atoi(argv[3]);
  if ((!pages && strcmp(argv[1], "lines")) || n_arg <= 0 || gap < 0) { fprintf(stderr, "%s: bad arguments\n", argv[0]); return 2; }
  int flag = argc > 4;  // spin (lines) or huge pages (pages)
  size_t stride = pages ? 4096 : 64, n = pages ? (size_t)n_arg : (size_t)n_arg * 1024 / 64;
  size_t huge = 2 << 20, size = (n * stride + huge - 1) & ~(huge - 1);
  char *raw = mmap(0, size + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) { perror("mmap"); return 1; }
  char *b = (char *)(((size_t)raw + huge - 1) & ~(huge - 1));
  madvise(b, size, pages && flag ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  memset(b, 1, size);
  // A random cycle through the n slots; in page mode each page's line varies.
  size_t *order = malloc(n * sizeof *order);
  for (size_t i = 0; i < n; i++) order[i] = i;
  for (size_t i = n - 1; i > 0; i--) { size_t j = rand() % (i + 1), t = order[i]; order[i] = order[j]; order[j] = t; }
#define AT(k) ((k) * stride + (pages ? ((k) % 64) * 64 : 0))
  for (size_t i = 0; i < n; i++) *(size_t *)(b + AT(order[i])) = AT(order[(i + 1) % n]);
  enum { ROUNDS = 200 };
  double r[ROUNDS]; volatile size_t sink = 0;
  for (int k = 0; k < ROUNDS; k++) {
    wait_gap(gap, !pages && flag);
    double s = now(); size_t q = AT(order[0]);
    for (size_t i = 0; i < n; i++) q = *(size_t *)(b + q);
    sink += q; r[k] = now() - s;
  }
  qsort(r, ROUNDS, sizeof r[0], cmp);
  printf("%s %d%s, gap %d us%s: median %.1f us, %.1f ns per %s\n", argv[1], n_arg, pages ? " pages" : " KiB",
         gap, flag ? (pages ? ", huge pages" : ", spun") : "", r[ROUNDS / 2], r[ROUNDS / 2] * 1000 / n, pages ? "page" : "line");
  return 0;
}
