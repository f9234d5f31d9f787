/* The traced program of benchmarks/overhead.py: a small function called a known
 * number of times through a few nested calls (so a stack has frames), built with
 * frame pointers. It waits for a line on stdin (the tracer is attached by then),
 * makes N calls, and prints the seconds they took. Untraced it makes well over
 * a million calls a second. Usage: hot N */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) void hot_work(unsigned long i) {
    unsigned long x = i;
    for (int k = 0; k < 600; k++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink += x;
}

__attribute__((noinline)) void hot_step(unsigned long i) { hot_work(i); sink++; }

__attribute__((noinline)) void hot_loop(unsigned long n) {
    for (unsigned long i = 0; i < n; i++)
        hot_step(i);
}

int main(int argc, char **argv) {
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    hot_loop(n);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.6f\n", (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
