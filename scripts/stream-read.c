// Memory read bandwidth: a streaming read of a 512 MiB buffer (much larger than any
// cache), summed with AVX2 loads (portable loop elsewhere), by 1..T threads, best of
// 5 passes. The decode bound of a model is this figure / bytes read per token.
//   cc -O2 -pthread -o target/stream-read scripts/stream-read.c && target/stream-read [threads]
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static size_t N = (size_t)512 << 20;  // bytes
static float* buf;
static int threads = 1;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static float sum(const float* a, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(a + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(a + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(a + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(a + i + 24));
  }
  float o[8];
  _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}
#else
static float sum(const float* a, size_t n) {
  float s[8] = {0};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += a[i + j];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}
#endif

static volatile float sink;
static void* part(void* arg) {
  size_t t = (size_t)arg, n = N / 4 / threads;
  sink = sum(buf + t * n, n);
  return NULL;
}

int main(int argc, char** argv) {
  int max_threads = argc > 1 ? atoi(argv[1]) : 2;
  buf = aligned_alloc(64, N);
  for (size_t i = 0; i < N / 4; i++) buf[i] = (float)(i & 1023);
  for (threads = 1; threads <= max_threads; threads++) {
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
      pthread_t th[64];
      double t0 = now();
      for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, part, (void*)(size_t)i);
      for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
      double d = now() - t0;
      if (d < best) best = d;
    }
    printf("{\"threads\": %d, \"read_gb_per_s\": %.2f}\n", threads, N / best / 1e9);
  }
  return 0;
}
