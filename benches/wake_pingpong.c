// Two threads ping-pong one byte over pipes, with a gap between round trips
// (an idle machine): median and p90 round trip (two wake-ups), microseconds.
// gcc -O2 -pthread benches/wake_pingpong.c -o /tmp/pp && /tmp/pp 20000 && /tmp/pp 0
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static int a[2], b[2];
static void *echo(void *x) { char c; for (;;) { if (read(a[0], &c, 1) != 1) return 0; write(b[1], &c, 1); } }
static double now() { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static int cmp(const void *x, const void *y) { double d = *(double *)x - *(double *)y; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
  int n = 400, gap = atoi(argv[1]); double r[400]; pthread_t t; char c = 'x';
  pipe(a); pipe(b); pthread_create(&t, 0, echo, 0);
  for (int i = 0; i < n; i++) { usleep(gap); double s = now(); write(a[1], &c, 1); read(b[0], &c, 1); r[i] = now() - s; }
  qsort(r, n, sizeof r[0], cmp);
  printf("gap %d us: round trip p50 %.1f us, p90 %.1f us\n", gap, r[n / 2], r[n * 9 / 10]);
}
