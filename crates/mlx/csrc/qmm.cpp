// Our affine quantized matmul for the CPU, `y = x @ dequantize(w).T`, as an MLX
// custom primitive (see qmm.h for when it is used).
//
// Layout (MLX's affine format): w is [N, K * bits / 32] uint32, element j of a row at
// bits `bits * (j % (32 / bits))` of word `j / (32 / bits)`; scales and biases are
// [N, K / group_size] and the value is `scale * q + bias`. So per output row n:
//   y[m, n] = sum_g scale[n, g] * (q[n, g] . x[m, g]) + bias[n, g] * sum(x[m, g]).
//
// Kernels: AVX2/FMA (chosen at run time with __builtin_cpu_supports), NEON where it
// compiles, and a portable scalar loop. Few rows (decode): a fused matrix-vector kernel
// reading each weight once for up to 4 rows of x. Many rows (prefill, training): tiles of
// w dequantized to float (in parallel) and multiplied with the BLAS's sgemm.
// Work is split over output rows on a small persistent thread pool.
#include "qmm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QMM_X86 1
#endif
#if defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "mlx/backend/cpu/encoder.h"
#include "mlx/mlx.h"
#include "mlx/primitives.h"

namespace mx = mlx::core;
using mx::array;

namespace {

// ----- scale/bias loading: float32, float16 or bfloat16 converted to float

enum class SDtype { F32, F16, BF16 };

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        e++;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      bits = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

#ifdef QMM_X86
bool has_f16c() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  }();
  return yes;
}
// Converts count halfs (8 at a time, the rest one by one, all with F16C); returns count.
__attribute__((target("avx,f16c"))) inline int f16_to_f32_f16c(const uint16_t* p, int count, float* out) {
  int i = 0;
  for (; i + 8 <= count; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < count; i++) out[i] = _cvtsh_ss(p[i]);
  return i;
}
#endif

void load_row(const void* base, SDtype dt, size_t offset, int count, float* out) {
  switch (dt) {
    case SDtype::F32:
      std::memcpy(out, static_cast<const float*>(base) + offset, count * sizeof(float));
      break;
    case SDtype::F16: {
      auto p = static_cast<const uint16_t*>(base) + offset;
      int i = 0;
#ifdef QMM_X86
      if (has_f16c()) i = f16_to_f32_f16c(p, count, out);
#endif
      for (; i < count; i++) out[i] = f16_to_f32(p[i]);
      break;
    }
    case SDtype::BF16: {
      auto p = static_cast<const uint16_t*>(base) + offset;
      for (int i = 0; i < count; i++) out[i] = bf16_to_f32(p[i]);
      break;
    }
  }
}

// ----- the thread pool

// Set by configure_threads before the pool starts (0: the CPUs this process may use).
std::atomic<int> configured_threads{0};
// Set by configure_fast_path (the caller's settings, e.g. MLX_HUB_QMM=mlx read by the hub).
std::atomic<bool> fast_path_off{false};

int default_threads() {
  int configured = configured_threads.load(std::memory_order_relaxed);
  if (configured >= 1) return std::min(configured, 256);
#if defined(__linux__)
  // The CPUs this process may run on (a container or taskset may allow fewer).
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#elif defined(__APPLE__)
  // Apple Silicon: the performance cores (efficiency cores would set the pace of each job).
  int perf = 0;
  size_t len = sizeof(perf);
  if (sysctlbyname("hw.perflevel0.physicalcpu", &perf, &len, nullptr, 0) == 0 && perf >= 1) return perf;
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

inline void cpu_relax() {
#ifdef QMM_X86
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// The caller plus threads-1 workers take chunks from a shared counter. Workers spin a
// little after a job (decode issues hundreds of small jobs per token back to back),
// then sleep on a condition variable, so an idle pool costs nothing.
class Pool {
 public:
  explicit Pool(int threads) : threads_(std::max(1, threads)) {
    for (int i = 1; i < threads_; i++) {
      workers_.emplace_back([this] { loop(); });
    }
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int threads() const {
    return threads_;
  }

  // Runs fn(chunk) for chunk in [0, chunks), in parallel; returns when all are done.
  // `park`: the caller goes on to a BLAS call that uses every core, so the workers
  // sleep at once instead of spinning (they would take a core from OpenBLAS).
  // Chunks are claimed with a CAS on (generation, next chunk), and completion is
  // counted in chunks, not workers: when the machine is busy and a worker is not
  // scheduled in time, the caller does all the chunks itself and does not wait for it.
  void run(int chunks, const std::function<void(int)>& fn, bool park = false) {
    if (threads_ == 1 || chunks <= 1) {
      for (int c = 0; c < chunks; c++) fn(c);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mu_);  // one job at a time (several streams)
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lk(mu_);
      // First close the previous generation: a late worker still holding its state must
      // not claim a chunk against the new chunk count (it would run a stale job and
      // count a chunk twice, and the caller would then wait forever).
      gen = (state_.load(std::memory_order_relaxed) >> 32) + 1;
      state_.store((gen << 32) | kClosed, std::memory_order_release);
      job_ = &fn;
      chunks_ = chunks;
      park_ = park;
      done_.store(0, std::memory_order_relaxed);
      gen += 1;
      state_.store(gen << 32, std::memory_order_release);
    }
    cv_.notify_all();
    work(gen);
    for (long spins = 0; done_.load(std::memory_order_acquire) != chunks; spins++) {
      if (spins < 2000) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  // Claims and runs chunks of generation `gen` until none are left.
  void work(uint64_t gen) {
    uint64_t st = state_.load(std::memory_order_acquire);
    for (;;) {
      if ((st >> 32) != gen) return;
      uint32_t c = static_cast<uint32_t>(st);
      if (c >= static_cast<uint32_t>(chunks_.load(std::memory_order_acquire))) return;
      if (state_.compare_exchange_weak(st, st + 1, std::memory_order_acq_rel)) {
        (*job_.load(std::memory_order_relaxed))(static_cast<int>(c));
        done_.fetch_add(1, std::memory_order_acq_rel);
        st = state_.load(std::memory_order_acquire);
      }
    }
  }
  void loop() {
    uint64_t seen = 0;
    bool park = false;
    for (;;) {
      uint64_t gen = 0;
      for (int spins = 0; !park && spins < 2000; spins++) {
        gen = state_.load(std::memory_order_acquire) >> 32;
        if (gen != seen) break;
        cpu_relax();
      }
      gen = state_.load(std::memory_order_acquire) >> 32;
      if (gen == seen) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || (state_.load(std::memory_order_acquire) >> 32) != seen; });
        gen = state_.load(std::memory_order_acquire) >> 32;
      }
      if (stop_) return;
      seen = gen;
      park = park_;
      work(gen);
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_;
  // High 32 bits: the job's generation; low 32 bits: its next unclaimed chunk, or
  // kClosed while the next job is being posted.
  static constexpr uint64_t kClosed = 0xffffffffu;
  std::atomic<uint64_t> state_{0};
  std::atomic<int> done_{0};
  // Atomics: a late worker of an earlier job may read them while the next is posted
  // (its claim then fails on the generation).
  std::atomic<const std::function<void(int)>*> job_{nullptr};
  std::atomic<int> chunks_{0};
  std::atomic<bool> park_{false};
  bool stop_ = false;
};

Pool& pool() {
  // Leaked on purpose: workers must not be joined during static destruction.
  static Pool* p = new Pool(default_threads());
  return *p;
}

// ----- kernels

enum class Kernel { Scalar = 0, Avx2 = 1, Neon = 2 };

Kernel detect_kernel() {
#ifdef QMM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return Kernel::Avx2;
  }
#endif
#if defined(__ARM_NEON) && defined(__aarch64__)
  return Kernel::Neon;
#endif
  return Kernel::Scalar;
}

std::atomic<int> forced_portable{0};

Kernel best_kernel() {
  static const Kernel best = detect_kernel();
  return best;
}

Kernel active_kernel() {
  if (forced_portable.load(std::memory_order_relaxed)) return Kernel::Scalar;
  return best_kernel();
}

struct Args {
  const float* x;      // [M, K], row-contiguous
  const uint32_t* w;   // [N, K * bits / 32]
  const void* scales;  // [N, G]
  const void* biases;  // [N, G]
  SDtype sdt;
  float* y;  // [M, N]
  int M, N, K, gs, bits;
  int G() const {
    return K / gs;
  }
  size_t row_bytes() const {
    return static_cast<size_t>(K) * bits / 8;
  }
};

// Per-call prepared activations: the sum of x over each group (for the bias term) and,
// for the 4-bit SIMD kernels, x reordered within each 32 so that lanes line up with the
// low and high nibbles of 16 packed bytes (byte i holds elements 2i and 2i+1).
struct Prepared {
  std::vector<float> xs;    // [M, G]
  std::vector<float> xp;    // [M, K] (4-bit SIMD only)
  const float* xv;          // what the kernels read: xp or the original x
};

void prepare(const Args& a, Kernel kern, Prepared& p) {
  int G = a.G();
  p.xs.assign(static_cast<size_t>(a.M) * G, 0.0f);
  for (int m = 0; m < a.M; m++) {
    const float* xr = a.x + static_cast<size_t>(m) * a.K;
    for (int g = 0; g < G; g++) {
      float s = 0;
      for (int i = 0; i < a.gs; i++) s += xr[g * a.gs + i];
      p.xs[static_cast<size_t>(m) * G + g] = s;
    }
  }
  p.xv = a.x;
  if (a.bits != 4 || kern == Kernel::Scalar) return;
  p.xp.resize(static_cast<size_t>(a.M) * a.K);
  for (int m = 0; m < a.M; m++) {
    const float* xr = a.x + static_cast<size_t>(m) * a.K;
    float* out = p.xp.data() + static_cast<size_t>(m) * a.K;
    for (int c = 0; c < a.K; c += 32) {
      if (kern == Kernel::Avx2) {
        // low then high nibbles of bytes 0..7, low then high nibbles of bytes 8..15
        for (int i = 0; i < 8; i++) {
          out[c + i] = xr[c + 2 * i];
          out[c + 8 + i] = xr[c + 2 * i + 1];
          out[c + 16 + i] = xr[c + 16 + 2 * i];
          out[c + 24 + i] = xr[c + 17 + 2 * i];
        }
      } else {
        // NEON: low nibbles of bytes 0..15, then high nibbles of bytes 0..15
        for (int i = 0; i < 16; i++) {
          out[c + i] = xr[c + 2 * i];
          out[c + 16 + i] = xr[c + 2 * i + 1];
        }
      }
    }
  }
  p.xv = p.xp.data();
}

// Portable: any bits dividing 32, one output row n, rows [m0, m1) of x.
void rows_scalar(const Args& a, const Prepared& p, int n0, int n1) {
  int G = a.G();
  int per = 32 / a.bits;
  uint32_t mask = (1u << a.bits) - 1;
  size_t words = static_cast<size_t>(a.K) / per;
  std::vector<float> sc(G), bi(G);
  for (int n = n0; n < n1; n++) {
    load_row(a.scales, a.sdt, static_cast<size_t>(n) * G, G, sc.data());
    load_row(a.biases, a.sdt, static_cast<size_t>(n) * G, G, bi.data());
    const uint32_t* wr = a.w + n * words;
    for (int m = 0; m < a.M; m++) {
      const float* xr = a.x + static_cast<size_t>(m) * a.K;
      const float* xs = p.xs.data() + static_cast<size_t>(m) * G;
      float acc = 0;
      for (int g = 0; g < G; g++) {
        float dot = 0;
        for (int i = g * a.gs; i < (g + 1) * a.gs; i++) {
          uint32_t q = (wr[i / per] >> (a.bits * (i % per))) & mask;
          dot += static_cast<float>(q) * xr[i];
        }
        acc += sc[g] * dot + bi[g] * xs[g];
      }
      a.y[static_cast<size_t>(m) * a.N + n] = acc;
    }
  }
}

#ifdef QMM_X86
__attribute__((target("avx2,fma,f16c"))) inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma,f16c"))) inline __m256 u8x8_to_ps(__m128i v) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
}

// Decodes 32 weights at wr (4 or 8 bits) into 4 vectors of floats. For 4 bits the lanes
// are in nibble order (see prepare), for 8 bits in natural order. Each 8 bytes are
// widened to 32-bit lanes straight from memory (one shuffle per 8 bytes); a 4-bit lane
// then holds two weights, taken apart with an and and a shift.
__attribute__((target("avx2,fma,f16c"))) inline __m256i widen(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

template <int BITS>
__attribute__((target("avx2,fma,f16c"))) inline void decode32(
    const uint8_t* wr, __m256& w0, __m256& w1, __m256& w2, __m256& w3) {
  if constexpr (BITS == 4) {
    const __m256i low4 = _mm256_set1_epi32(0x0f);
    __m256i a = widen(wr), b = widen(wr + 8);
    w0 = _mm256_cvtepi32_ps(_mm256_and_si256(a, low4));
    w1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(a, 4));
    w2 = _mm256_cvtepi32_ps(_mm256_and_si256(b, low4));
    w3 = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
  } else {
    w0 = _mm256_cvtepi32_ps(widen(wr));
    w1 = _mm256_cvtepi32_ps(widen(wr + 8));
    w2 = _mm256_cvtepi32_ps(widen(wr + 16));
    w3 = _mm256_cvtepi32_ps(widen(wr + 24));
  }
}

// One row of scales or biases as float32, inlined into the kernels (a call per row
// to the generic loader was a few percent of decode).
__attribute__((target("avx2,fma,f16c"))) inline void row_f32(const void* base, SDtype dt,
                                                             size_t offset, int count,
                                                             float* out) {
  if (dt == SDtype::F16) {
    f16_to_f32_f16c(static_cast<const uint16_t*>(base) + offset, count, out);
  } else if (dt == SDtype::F32) {
    std::memcpy(out, static_cast<const float*>(base) + offset, count * sizeof(float));
  } else {
    load_row(base, dt, offset, count, out);
  }
}

// How many weight rows ahead the decode kernel prefetches.
constexpr size_t kPrefetchRows = 16;

// The 32-wide partial dot product of decoded weights with x[k..k+32), as a tree.
__attribute__((target("avx2,fma,f16c"))) inline __m256 dot32(__m256 w0, __m256 w1, __m256 w2,
                                                        __m256 w3, const float* xr) {
  __m256 p0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + 8), _mm256_mul_ps(w0, _mm256_loadu_ps(xr)));
  __m256 p1 =
      _mm256_fmadd_ps(w3, _mm256_loadu_ps(xr + 24), _mm256_mul_ps(w2, _mm256_loadu_ps(xr + 16)));
  return _mm256_add_ps(p0, p1);
}

// sum_g b[g] * xs[g], 8 at a time.
__attribute__((target("avx2,fma,f16c"))) inline float dot_groups(const float* b, const float* xs,
                                                            int G) {
  __m256 acc = _mm256_setzero_ps();
  int g = 0;
  for (; g + 8 <= G; g += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(b + g), _mm256_loadu_ps(xs + g), acc);
  }
  float r = hsum256(acc);
  for (; g < G; g++) r += b[g] * xs[g];
  return r;
}

// Up to 4 rows of x (MB) against output rows [n0, n1); each 32 weights decoded once.
// Each 32-wide partial dot product is reduced as a tree and folded in with its group's
// scale. The loop takes two chunks of 32 per step into two accumulators per row, named
// at compile time so they stay in registers (an accumulator picked at run time was kept
// on the stack, and its store-to-load chain bounded the loop), and the FMA latency
// chain is split in two.
template <int BITS, int MB>
__attribute__((target("avx2,fma,f16c"))) void block_avx2(
    const Args& a, const Prepared& p, int mbase, int n0, int n1, float* sc, float* bi) {
  const int G = a.G();
  const int nchunks = a.K / 32;
  const int gshift = __builtin_ctz(static_cast<unsigned>(a.gs));  // gs: 32, 64 or 128
  const size_t rb = a.row_bytes();
  const float* xrow[MB];
  const float* xsum[MB];
  for (int j = 0; j < MB; j++) {
    xrow[j] = p.xv + static_cast<size_t>(mbase + j) * a.K;
    xsum[j] = p.xs.data() + static_cast<size_t>(mbase + j) * G;
  }
  for (int n = n0; n < n1; n++) {
    row_f32(a.scales, a.sdt, static_cast<size_t>(n) * G, G, sc);
    row_f32(a.biases, a.sdt, static_cast<size_t>(n) * G, G, bi);
    const uint8_t* wr = reinterpret_cast<const uint8_t*>(a.w) + n * rb;
    // Decode streams the weights once: ask for the rows a few ahead (a hint; it never
    // faults past the end), the hardware prefetcher alone left the loads waiting.
    for (size_t off = 0; off < rb; off += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(wr + kPrefetchRows * rb + off), _MM_HINT_T0);
    }
    __m256 acc0[MB], acc1[MB];
    for (int j = 0; j < MB; j++) acc0[j] = acc1[j] = _mm256_setzero_ps();
    int c = 0;
    for (; c + 2 <= nchunks; c += 2) {
      const int k = c * 32;
      const __m256 s0 = _mm256_set1_ps(sc[k >> gshift]);
      const __m256 s1 = _mm256_set1_ps(sc[(k + 32) >> gshift]);
      __m256 w0, w1, w2, w3;
      decode32<BITS>(wr + k * BITS / 8, w0, w1, w2, w3);
      for (int j = 0; j < MB; j++) {
        acc0[j] = _mm256_fmadd_ps(dot32(w0, w1, w2, w3, xrow[j] + k), s0, acc0[j]);
      }
      decode32<BITS>(wr + (k + 32) * BITS / 8, w0, w1, w2, w3);
      for (int j = 0; j < MB; j++) {
        acc1[j] = _mm256_fmadd_ps(dot32(w0, w1, w2, w3, xrow[j] + k + 32), s1, acc1[j]);
      }
    }
    if (c < nchunks) {
      const int k = c * 32;
      const __m256 s0 = _mm256_set1_ps(sc[k >> gshift]);
      __m256 w0, w1, w2, w3;
      decode32<BITS>(wr + k * BITS / 8, w0, w1, w2, w3);
      for (int j = 0; j < MB; j++) {
        acc0[j] = _mm256_fmadd_ps(dot32(w0, w1, w2, w3, xrow[j] + k), s0, acc0[j]);
      }
    }
    for (int j = 0; j < MB; j++) {
      a.y[static_cast<size_t>(mbase + j) * a.N + n] =
          hsum256(_mm256_add_ps(acc0[j], acc1[j])) + dot_groups(bi, xsum[j], G);
    }
  }
}

// Rows [n0, n1) of w dequantized to float, in natural element order.
template <int BITS>
__attribute__((target("avx2,fma,f16c"))) void dequant_avx2(
    const Args& a, int n0, int n1, float* out, float* sc, float* bi) {
  const int G = a.G();
  const size_t rb = a.row_bytes();
  const __m128i low4 = _mm_set1_epi8(0x0f);
  for (int n = n0; n < n1; n++) {
    row_f32(a.scales, a.sdt, static_cast<size_t>(n) * G, G, sc);
    row_f32(a.biases, a.sdt, static_cast<size_t>(n) * G, G, bi);
    const uint8_t* wr = reinterpret_cast<const uint8_t*>(a.w) + n * rb;
    float* o = out + static_cast<size_t>(n - n0) * a.K;
    for (int k = 0; k < a.K; k += 32) {
      const __m256 s = _mm256_set1_ps(sc[k / a.gs]);
      const __m256 b = _mm256_set1_ps(bi[k / a.gs]);
      __m128i e0, e1;
      if constexpr (BITS == 4) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k / 2));
        __m128i lo = _mm_and_si128(v, low4);
        __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4);
        e0 = _mm_unpacklo_epi8(lo, hi);  // elements 0..15
        e1 = _mm_unpackhi_epi8(lo, hi);  // elements 16..31
      } else {
        e0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k));
        e1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k + 16));
      }
      _mm256_storeu_ps(o + k, _mm256_fmadd_ps(u8x8_to_ps(e0), s, b));
      _mm256_storeu_ps(o + k + 8, _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(e0, 8)), s, b));
      _mm256_storeu_ps(o + k + 16, _mm256_fmadd_ps(u8x8_to_ps(e1), s, b));
      _mm256_storeu_ps(o + k + 24, _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(e1, 8)), s, b));
    }
  }
}

template <int BITS>
void rows_avx2(const Args& a, const Prepared& p, int n0, int n1) {
  std::vector<float> sc(a.G()), bi(a.G());
  int m = 0;
  for (; m + 4 <= a.M; m += 4) block_avx2<BITS, 4>(a, p, m, n0, n1, sc.data(), bi.data());
  switch (a.M - m) {
    case 3:
      block_avx2<BITS, 3>(a, p, m, n0, n1, sc.data(), bi.data());
      break;
    case 2:
      block_avx2<BITS, 2>(a, p, m, n0, n1, sc.data(), bi.data());
      break;
    case 1:
      block_avx2<BITS, 1>(a, p, m, n0, n1, sc.data(), bi.data());
      break;
    default:
      break;
  }
}
#endif

#if defined(__ARM_NEON) && defined(__aarch64__)
// One row of x at a time; 32 weights per step, decoded with NEON shifts and widening.
template <int BITS>
void rows_neon(const Args& a, const Prepared& p, int n0, int n1) {
  const int G = a.G();
  const size_t rb = a.row_bytes();
  std::vector<float> sc(G), bi(G);
  for (int n = n0; n < n1; n++) {
    load_row(a.scales, a.sdt, static_cast<size_t>(n) * G, G, sc.data());
    load_row(a.biases, a.sdt, static_cast<size_t>(n) * G, G, bi.data());
    const uint8_t* wr = reinterpret_cast<const uint8_t*>(a.w) + n * rb;
    for (int m = 0; m < a.M; m++) {
      const float* xr = p.xv + static_cast<size_t>(m) * a.K;
      float acc = 0;
      for (int g = 0; g < G; g++) {
        float32x4_t d = vdupq_n_f32(0);
        for (int k = g * a.gs; k < (g + 1) * a.gs; k += 32) {
          uint8x16_t q[2];
          if constexpr (BITS == 4) {
            uint8x16_t v = vld1q_u8(wr + k / 2);
            q[0] = vandq_u8(v, vdupq_n_u8(0x0f));
            q[1] = vshrq_n_u8(v, 4);
          } else {
            q[0] = vld1q_u8(wr + k);
            q[1] = vld1q_u8(wr + k + 16);
          }
          for (int h = 0; h < 2; h++) {
            uint16x8_t lo = vmovl_u8(vget_low_u8(q[h]));
            uint16x8_t hi = vmovl_u8(vget_high_u8(q[h]));
            const float* xx = xr + k + 16 * h;
            d = vfmaq_f32(d, vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))), vld1q_f32(xx));
            d = vfmaq_f32(d, vcvtq_f32_u32(vmovl_u16(vget_high_u16(lo))), vld1q_f32(xx + 4));
            d = vfmaq_f32(d, vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))), vld1q_f32(xx + 8));
            d = vfmaq_f32(d, vcvtq_f32_u32(vmovl_u16(vget_high_u16(hi))), vld1q_f32(xx + 12));
          }
        }
        acc += sc[g] * vaddvq_f32(d) + bi[g] * p.xs[static_cast<size_t>(m) * G + g];
      }
      a.y[static_cast<size_t>(m) * a.N + n] = acc;
    }
  }
}
#endif

void rows_dispatch(Kernel kern, const Args& a, const Prepared& p, int n0, int n1) {
#ifdef QMM_X86
  if (kern == Kernel::Avx2) {
    if (a.bits == 4) return rows_avx2<4>(a, p, n0, n1);
    if (a.bits == 8) return rows_avx2<8>(a, p, n0, n1);
  }
#endif
#if defined(__ARM_NEON) && defined(__aarch64__)
  if (kern == Kernel::Neon) {
    if (a.bits == 4) return rows_neon<4>(a, p, n0, n1);
    if (a.bits == 8) return rows_neon<8>(a, p, n0, n1);
  }
#endif
  rows_scalar(a, p, n0, n1);
}

// Dequantizes rows [n0, n1) of w into out ([n1 - n0, K] floats).
void dequant_rows(Kernel kern, const Args& a, int n0, int n1, float* out) {
  const int G = a.G();
#ifdef QMM_X86
  if (kern == Kernel::Avx2 && (a.bits == 4 || a.bits == 8)) {
    std::vector<float> sc(G), bi(G);
    if (a.bits == 4) return dequant_avx2<4>(a, n0, n1, out, sc.data(), bi.data());
    return dequant_avx2<8>(a, n0, n1, out, sc.data(), bi.data());
  }
#endif
  const int per = 32 / a.bits;
  const uint32_t mask = (1u << a.bits) - 1;
  const size_t words = static_cast<size_t>(a.K) / per;
  std::vector<float> sc(G), bi(G);
  for (int n = n0; n < n1; n++) {
    load_row(a.scales, a.sdt, static_cast<size_t>(n) * G, G, sc.data());
    load_row(a.biases, a.sdt, static_cast<size_t>(n) * G, G, bi.data());
    const uint32_t* wr = a.w + n * words;
    float* o = out + static_cast<size_t>(n - n0) * a.K;
    for (size_t wi = 0; wi < words; wi++) {
      uint32_t word = wr[wi];
      int base = static_cast<int>(wi) * per;
      float s = sc[base / a.gs], b = bi[base / a.gs];
      for (int j = 0; j < per; j++) {
        o[base + j] = s * static_cast<float>((word >> (a.bits * j)) & mask) + b;
      }
    }
  }
}

using sgemm_fn = void (*)(int, int, int, int, int, int, float, const float*, int,
                          const float*, int, float, float*, int);

sgemm_fn find_sgemm() {
  static const sgemm_fn f = reinterpret_cast<sgemm_fn>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
  return f;
}

// From this many rows of x on, dequantize tiles and use sgemm.
constexpr int kGemmRows = 16;

std::atomic<uint64_t> runs{0};

void run(const Args& a) {
  runs.fetch_add(1, std::memory_order_relaxed);
  Pool& tp = pool();
  const Kernel kern = active_kernel();
  sgemm_fn sgemm = find_sgemm();
  if (a.M >= kGemmRows && sgemm != nullptr) {
    // Tiles of about 1 MB of floats: dequantized in parallel, then one sgemm each.
    int tile = std::max(64, static_cast<int>((1 << 20) / (static_cast<size_t>(a.K) * 4)));
    tile = std::min(tile, a.N);
    // Per calling thread; the workers get its address (a thread_local named inside the
    // lambda would be each worker's own).
    thread_local std::vector<float> tls_buf;
    tls_buf.resize(static_cast<size_t>(tile) * a.K);
    float* buf = tls_buf.data();
    for (int t0 = 0; t0 < a.N; t0 += tile) {
      int rows = std::min(tile, a.N - t0);
      int parts = std::min(tp.threads() * 2, std::max(1, rows / 16));
      int step = (rows + parts - 1) / parts;
      tp.run(parts, [&](int c) {
        int r0 = c * step, r1 = std::min(rows, r0 + step);
        if (r0 < r1) dequant_rows(kern, a, t0 + r0, t0 + r1, buf + static_cast<size_t>(r0) * a.K);
      }, /*park=*/true);
      // Row-major, y[:, t0:t0+rows] = x [M,K] . tile[rows,K]^T
      sgemm(101, 111, 112, a.M, rows, a.K, 1.0f, a.x, a.K, buf, a.K, 0.0f, a.y + t0, a.N);
    }
    return;
  }
  Prepared p;
  prepare(a, kern, p);
  // Chunks of output rows: a few per thread for balance, at least 8 rows each.
  int chunks = std::max(1, std::min(a.N / 8, tp.threads() * 4));
  int step = (a.N + chunks - 1) / chunks;
  tp.run(chunks, [&](int c) {
    int n0 = c * step, n1 = std::min(a.N, n0 + step);
    if (n0 < n1) rows_dispatch(kern, a, p, n0, n1);
  });
}

SDtype sdtype_of(const array& a) {
  if (a.dtype() == mx::float32) return SDtype::F32;
  if (a.dtype() == mx::float16) return SDtype::F16;
  if (a.dtype() == mx::bfloat16) return SDtype::BF16;
  throw std::invalid_argument("quantized matmul: scales must be float32, float16 or bfloat16");
}

// ----- the primitive

class HubQuantizedMatmul : public mx::UnaryPrimitive {
 public:
  HubQuantizedMatmul(mx::Stream s, int group_size, int bits)
      : mx::UnaryPrimitive(s), gs_(group_size), bits_(bits) {}

  void eval_cpu(const std::vector<array>& inputs, array& out) override {
    const array& x = inputs[0];
    const array& w = inputs[1];
    const array& scales = inputs[2];
    const array& biases = inputs[3];
    for (const array* in : {&x, &w, &scales, &biases}) {
      if (!in->flags().row_contiguous) {
        throw std::runtime_error("HubQuantizedMatmul: inputs must be row-contiguous");
      }
    }
    out.set_data(mx::allocator::malloc(out.nbytes()));
    Args a;
    a.K = x.shape(-1);
    a.M = a.K == 0 ? 0 : static_cast<int>(x.size() / a.K);
    a.N = w.shape(0);
    a.gs = gs_;
    a.bits = bits_;
    a.sdt = sdtype_of(scales);
    auto& enc = mx::cpu::get_command_encoder(stream());
    enc.set_input_array(x);
    enc.set_input_array(w);
    enc.set_input_array(scales);
    enc.set_input_array(biases);
    enc.set_output_array(out);
    a.x = x.data<float>();
    a.w = w.data<uint32_t>();
    a.scales = scales.data<void>();
    a.biases = biases.data<void>();
    a.y = out.data<float>();
    enc.dispatch([a]() {
      if (a.M > 0 && a.N > 0) run(a);
    });
  }

  void eval_gpu(const std::vector<array>&, array&) override {
    // Never built for a GPU stream: mlxs_quantized_matmul uses MLX's own op there.
    throw std::runtime_error("HubQuantizedMatmul runs on the CPU only");
  }

  std::vector<array> vjp(
      const std::vector<array>& primals,
      const std::vector<array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<array>& outputs) override {
    const array& x = primals[0];
    const array& w = primals[1];
    const array& cot = cotangents[0];
    std::vector<array> grads;
    std::optional<std::vector<array>> sb;
    for (int arg : argnums) {
      if (arg == 0) {
        // dx = dy @ dequantize(w): MLX's non-transposed quantized matmul.
        grads.push_back(mx::quantized_matmul(
            cot, w, primals[2], primals[3], false, gs_, bits_, "affine", stream()));
      } else if (arg == 1) {
        throw std::invalid_argument(
            "[quantized_matmul] cannot compute the gradient with respect to the quantized weights");
      } else {
        if (!sb) {
          int gs = gs_, bits = bits_;
          auto f = [x, w, gs, bits](const std::vector<array>& in) {
            return std::vector<array>{
                mx::quantized_matmul(x, w, in[0], in[1], true, gs, bits, "affine")};
          };
          sb = mx::vjp(f, {primals[2], primals[3]}, {cot}).second;
        }
        grads.push_back((*sb)[arg - 2]);
      }
    }
    return grads;
  }

  const char* name() const override {
    return "HubQuantizedMatmul";
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const HubQuantizedMatmul*>(&other);
    return o != nullptr && o->gs_ == gs_ && o->bits_ == bits_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<array>& inputs) override {
    mx::Shape s = inputs[0].shape();
    s.back() = inputs[1].shape(0);
    return {s};
  }

 private:
  int gs_, bits_;
};

// Already evaluated and row-contiguous arrays (loaded weights) go in as they are;
// anything else through MLX's contiguous op (a no-op copy when it already is).
array as_contiguous(const array& a, mx::Stream s) {
  // Scheduled arrays (async_eval) already know their layout, like available ones.
  if (a.status() != array::Status::unscheduled && a.flags().row_contiguous) return a;
  return mx::contiguous(a, false, s);
}


// ----- one decode step of a Llama block as one primitive (see qmm.h, decode_layer)

// Runs several products that read the same few rows of x (q/k/v, gate/up) as one pool
// job: one wake-up of the workers instead of one per product.
void run_many(Args* jobs, int n) {
  Pool& tp = pool();
  const Kernel kern = active_kernel();
  thread_local std::vector<Prepared> prep;
  thread_local std::vector<int> owner, first, last, prep_of;
  prep.resize(std::max<size_t>(prep.size(), n));
  prep_of.resize(n);
  owner.clear();
  first.clear();
  last.clear();
  int total = 0;
  for (int j = 0; j < n; j++) total += jobs[j].N;
  // Chunks of at least 8 rows, about 4 per thread over all products.
  const int step = std::max(8, (total + tp.threads() * 4 - 1) / (tp.threads() * 4));
  for (int j = 0; j < n; j++) {
    runs.fetch_add(1, std::memory_order_relaxed);
    // q/k/v and gate/up read the same x: prepare it once.
    const Args* prev = j > 0 ? &jobs[j - 1] : nullptr;
    if (prev && prev->x == jobs[j].x && prev->M == jobs[j].M && prev->K == jobs[j].K &&
        prev->gs == jobs[j].gs && prev->bits == jobs[j].bits) {
      prep_of[j] = prep_of[j - 1];
    } else {
      prepare(jobs[j], kern, prep[j]);
      prep_of[j] = j;
    }
    for (int n0 = 0; n0 < jobs[j].N; n0 += step) {
      owner.push_back(j);
      first.push_back(n0);
      last.push_back(std::min(jobs[j].N, n0 + step));
    }
  }
  // The workers must see this thread's vectors, not their own thread_locals.
  const Prepared* pp = prep.data();
  const int *ow = owner.data(), *f0 = first.data(), *f1 = last.data(), *po = prep_of.data();
  tp.run(static_cast<int>(owner.size()), [&](int c) {
    rows_dispatch(kern, jobs[ow[c]], pp[po[ow[c]]], f0[c], f1[c]);
  });
}

struct QuantIn {
  const uint32_t* w = nullptr;
  const void* scales = nullptr;
  const void* biases = nullptr;
  SDtype sdt = SDtype::F32;
  const float* bias = nullptr;  // optional per-output bias
};

// One sequence's cache in a decode-layer step: its buffers [Hkv, cap, D] and the position
// written and attended from.
struct RowCache {
  float* kc;
  float* vc;
  int cap;
  int offset;
};

// Everything a decode-layer kernel reads and writes, captured at eval time.
struct LayerData {
  mlxs_qmm::DecodeLayerSpec s;
  int rows;
  const float* x;  // element (b, i) at x[b * x_row + i * x_col]: x may be a strided view
  int64_t x_row, x_col;
  float* out;  // [rows, dim]
  std::vector<RowCache> cache;
  const float* in_norm;
  const float* post_norm;
  const float* q_norm;  // optional
  const float* k_norm;
  const float* freqs;  // optional [rope_dims / 2]
  QuantIn lin[7];      // q k v o gate up down
};

Args make_args(const QuantIn& q, const mlxs_qmm::LinearSpec& ls, const float* x, float* y, int m,
               int n, int k) {
  Args a;
  a.x = x;
  a.w = q.w;
  a.scales = q.scales;
  a.biases = q.biases;
  a.sdt = q.sdt;
  a.y = y;
  a.M = m;
  a.N = n;
  a.K = k;
  a.gs = ls.group_size;
  a.bits = ls.bits;
  return a;
}

// As mlx's fast::rms_norm in float32: x * rsqrt(mean(x²) + eps) * w.
void rms_norm(const float* x, const float* w, int n, float eps, float* out) {
  float ss = 0;
  for (int i = 0; i < n; i++) ss += x[i] * x[i];
  float r = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

void add_bias(float* y, const float* b, int rows, int n) {
  if (b == nullptr) return;
  for (int r = 0; r < rows; r++) {
    for (int i = 0; i < n; i++) y[static_cast<size_t>(r) * n + i] += b[i];
  }
}

// As mlx's fast::rope at one position (its reference formulation, float32).
void rope(const mlxs_qmm::DecodeLayerSpec& s, const float* freqs, int offset, float* x, int heads) {
  const int half = s.rope_dims / 2;
  thread_local std::vector<float> cs, sn;
  cs.resize(half);
  sn.resize(half);
  const float pos = static_cast<float>(offset) * s.rope_scale;
  const float lb = static_cast<float>(std::log(static_cast<double>(s.rope_base)) / half);
  for (int i = 0; i < half; i++) {
    float inv = freqs ? 1.0f / freqs[i] : std::exp(-static_cast<float>(i) * lb);
    float th = pos * inv;
    cs[i] = std::cos(th);
    sn[i] = std::sin(th);
  }
  for (int h = 0; h < heads; h++) {
    float* v = x + static_cast<size_t>(h) * s.head_dim;
    for (int i = 0; i < half; i++) {
      int a = s.rope_traditional ? 2 * i : i;
      int b = s.rope_traditional ? 2 * i + 1 : i + half;
      float x1 = v[a], x2 = v[b];
      v[a] = x1 * cs[i] - x2 * sn[i];
      v[b] = x1 * sn[i] + x2 * cs[i];
    }
  }
}

// One head of one row: softmax(q·K[0..len) * scale) · V[0..len), as mlx's reference
// sdpa computes it in float32 (q pre-scaled, max-subtracted exp, then the weighted sum).
struct HeadJob {
  const float* q;   // [D]
  const float* kb;  // [len, D] (rows of the cache buffer)
  const float* vb;
  float* out;  // [D]
  int len, D;
  float scale;
};

// sc[t] = exp(sc[t] - mx) for t < len; returns their sum (both head kernels).
float exp_shifted(float* sc, int len, float mx) {
  float sum = 0;
  for (int t = 0; t < len; t++) {
    sc[t] = std::exp(sc[t] - mx);
    sum += sc[t];
  }
  return sum;
}

void attend_head_scalar(const HeadJob& j, float* sc) {
  const int D = j.D;
  float mx = -INFINITY;
  for (int t = 0; t < j.len; t++) {
    const float* kr = j.kb + static_cast<size_t>(t) * D;
    float dot = 0;
    for (int i = 0; i < D; i++) dot += (j.q[i] * j.scale) * kr[i];
    sc[t] = dot;
    mx = std::max(mx, dot);
  }
  const float sum = exp_shifted(sc, j.len, mx);
  std::fill(j.out, j.out + D, 0.0f);
  for (int t = 0; t < j.len; t++) {
    const float p = sc[t] / sum;
    const float* vr = j.vb + static_cast<size_t>(t) * D;
    for (int i = 0; i < D; i++) j.out[i] += p * vr[i];
  }
}

#ifdef QMM_X86
// The same with 8-wide dot products and updates (head_dim a multiple of 8; decode
// spends most of its non-matmul time here on long contexts).
__attribute__((target("avx2,fma,f16c"))) void attend_head_avx2(const HeadJob& j, float* sc) {
  const int D = j.D;
  thread_local std::vector<float> qs;
  qs.resize(D);
  for (int i = 0; i < D; i++) qs[i] = j.q[i] * j.scale;
  float mx = -INFINITY;
  for (int t = 0; t < j.len; t++) {
    const float* kr = j.kb + static_cast<size_t>(t) * D;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= D; i += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qs.data() + i), _mm256_loadu_ps(kr + i), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qs.data() + i + 8), _mm256_loadu_ps(kr + i + 8), a1);
    }
    for (; i < D; i += 8) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qs.data() + i), _mm256_loadu_ps(kr + i), a0);
    }
    const float dot = hsum256(_mm256_add_ps(a0, a1));
    sc[t] = dot;
    mx = std::max(mx, dot);
  }
  const float sum = exp_shifted(sc, j.len, mx);
  for (int i = 0; i < D; i += 8) _mm256_storeu_ps(j.out + i, _mm256_setzero_ps());
  for (int t = 0; t < j.len; t++) {
    const __m256 p = _mm256_set1_ps(sc[t] / sum);
    const float* vr = j.vb + static_cast<size_t>(t) * D;
    for (int i = 0; i < D; i += 8) {
      _mm256_storeu_ps(j.out + i,
                       _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + i), _mm256_loadu_ps(j.out + i)));
    }
  }
}
#endif

// Attention of each row's query over positions [0, offset] of its cache, per head
// (grouped heads share their kv head as mlx's reference sdpa groups them).
void attend(const LayerData& d, const float* q, float* out) {
  const auto& s = d.s;
  const int H = s.n_heads, D = s.head_dim, rep = s.n_heads / s.n_kv_heads;
#ifdef QMM_X86
  const bool simd = active_kernel() == Kernel::Avx2 && D % 8 == 0;
#endif
  auto head = [&](int job) {
    const int b = job / H, h = job % H;
    const RowCache& c = d.cache[b];
    const int kvh = h / rep;
    HeadJob j;
    j.q = q + (static_cast<size_t>(b) * H + h) * D;
    j.kb = c.kc + static_cast<size_t>(kvh) * c.cap * D;
    j.vb = c.vc + static_cast<size_t>(kvh) * c.cap * D;
    j.out = out + (static_cast<size_t>(b) * H + h) * D;
    j.len = c.offset + 1;
    j.D = D;
    j.scale = s.attn_scale;
    thread_local std::vector<float> sc;
    sc.resize(j.len);
#ifdef QMM_X86
    if (simd) return attend_head_avx2(j, sc.data());
#endif
    attend_head_scalar(j, sc.data());
  };
  long work = 0;
  for (const auto& c : d.cache) work += static_cast<long>(c.offset + 1) * H * D;
  // Long contexts: heads in parallel; short ones are not worth a wake-up.
  if (work >= (1 << 16)) {
    pool().run(d.rows * H, head);
  } else {
    for (int j = 0; j < d.rows * H; j++) head(j);
  }
}

std::atomic<uint64_t> decode_layer_runs{0};

void decode_layer_run(const LayerData& d) {
  decode_layer_runs.fetch_add(1, std::memory_order_relaxed);
  const auto& s = d.s;
  const int B = d.rows;
  const int dim = s.dim, D = s.head_dim, H = s.n_heads, Hkv = s.n_kv_heads, F = s.hidden;
  thread_local std::vector<float> buf;
  buf.resize(static_cast<size_t>(B) * (4 * dim + 2 * (H + Hkv) * D + 3 * F));
  float* x = buf.data();
  float* n = x + B * dim;
  float* h = n + B * dim;
  float* tmp = h + B * dim;
  float* q = tmp + B * dim;
  float* k = q + B * H * D;
  float* v = k + B * Hkv * D;
  float* att = v + B * Hkv * D;
  float* g = att + B * H * D;
  float* u = g + B * F;
  float* act = u + B * F;
  for (int b = 0; b < B; b++) {
    for (int i = 0; i < dim; i++) x[b * dim + i] = d.x[b * d.x_row + i * d.x_col];
    rms_norm(x + b * dim, d.in_norm, dim, s.eps, n + b * dim);
  }
  Args qkv[3] = {make_args(d.lin[0], s.lin[0], n, q, B, H * D, dim),
                 make_args(d.lin[1], s.lin[1], n, k, B, Hkv * D, dim),
                 make_args(d.lin[2], s.lin[2], n, v, B, Hkv * D, dim)};
  run_many(qkv, 3);
  add_bias(q, d.lin[0].bias, B, H * D);
  add_bias(k, d.lin[1].bias, B, Hkv * D);
  add_bias(v, d.lin[2].bias, B, Hkv * D);
  if (d.q_norm != nullptr) {
    for (int i = 0; i < B * H; i++) rms_norm(q + i * D, d.q_norm, D, s.eps, q + i * D);
    for (int i = 0; i < B * Hkv; i++) rms_norm(k + i * D, d.k_norm, D, s.eps, k + i * D);
  }
  for (int b = 0; b < B; b++) {
    const RowCache& c = d.cache[b];
    rope(s, d.freqs, c.offset, q + b * H * D, H);
    rope(s, d.freqs, c.offset, k + b * Hkv * D, Hkv);
    for (int i = 0; i < Hkv; i++) {
      size_t at = (static_cast<size_t>(i) * c.cap + c.offset) * D;
      std::memcpy(c.kc + at, k + (b * Hkv + i) * D, D * sizeof(float));
      std::memcpy(c.vc + at, v + (b * Hkv + i) * D, D * sizeof(float));
    }
  }
  attend(d, q, att);
  Args o = make_args(d.lin[3], s.lin[3], att, tmp, B, dim, H * D);
  run_many(&o, 1);
  add_bias(tmp, d.lin[3].bias, B, dim);
  for (int i = 0; i < B * dim; i++) h[i] = x[i] + tmp[i];
  for (int b = 0; b < B; b++) rms_norm(h + b * dim, d.post_norm, dim, s.eps, n + b * dim);
  Args gu[2] = {make_args(d.lin[4], s.lin[4], n, g, B, F, dim),
                make_args(d.lin[5], s.lin[5], n, u, B, F, dim)};
  run_many(gu, 2);
  add_bias(g, d.lin[4].bias, B, F);
  add_bias(u, d.lin[5].bias, B, F);
  for (int i = 0; i < B * F; i++) act[i] = g[i] * (1.0f / (1.0f + std::exp(-g[i]))) * u[i];
  Args down = make_args(d.lin[6], s.lin[6], act, tmp, B, dim, F);
  run_many(&down, 1);
  add_bias(tmp, d.lin[6].bias, B, dim);
  for (int i = 0; i < B * dim; i++) d.out[i] = h[i] + tmp[i];
}

// Inputs: x [B, 1, dim] float32; per row the cache's keys and values [1, Hkv, cap, D]
// float32; the two norm weights; per linear (q k v o gate up down) weight, scales,
// biases and an optional bias; then the optional q/k norm weights and rope frequencies.
// Outputs: the block's output [B, 1, dim], then per row the keys and values with the
// row's position written: in place (the outputs share the inputs' buffers) unless the
// row's `copy`, when the caller's cache may be shared (a prefix-cache copy) and is
// copied first.
class HubDecodeLayer : public mx::Primitive {
 public:
  HubDecodeLayer(mx::Stream st, const mlxs_qmm::DecodeLayerSpec& spec, std::vector<int> offsets,
                 std::vector<int> copy)
      : mx::Primitive(st), s_(spec), offsets_(std::move(offsets)), copy_(std::move(copy)) {}

  void eval_cpu(const std::vector<array>& in, std::vector<array>& outs) override {
    const int B = static_cast<int>(offsets_.size());
    for (size_t i = 1; i < in.size(); i++) {
      if (!in[i].flags().row_contiguous) {
        throw std::runtime_error("HubDecodeLayer: inputs must be row-contiguous");
      }
    }
    auto& enc = mx::cpu::get_command_encoder(stream());
    outs[0].set_data(mx::allocator::malloc(outs[0].nbytes()));
    for (int c = 1; c <= 2 * B; c++) {
      if (!copy_[(c - 1) / 2]) {
        // The caller owns the cache exclusively: write the new position in place.
        outs[c].copy_shared_buffer(in[c]);
        continue;
      }
      outs[c].set_data(mx::allocator::malloc(outs[c].nbytes()));
      const void* src = in[c].data<void>();
      void* dst = outs[c].data<void>();
      size_t nb = in[c].nbytes();
      enc.dispatch([src, dst, nb]() { std::memcpy(dst, src, nb); });
    }
    LayerData d;
    d.s = s_;
    d.rows = B;
    d.x = in[0].data<float>();
    d.x_col = static_cast<int64_t>(in[0].strides().back());
    d.x_row = static_cast<int64_t>(in[0].strides().front());
    d.out = outs[0].data<float>();
    for (int b = 0; b < B; b++) {
      d.cache.push_back(RowCache{outs[1 + 2 * b].data<float>(), outs[2 + 2 * b].data<float>(),
                                 in[1 + 2 * b].shape(2), offsets_[b]});
    }
    size_t i = 1 + 2 * B;
    d.in_norm = in[i++].data<float>();
    d.post_norm = in[i++].data<float>();
    for (int l = 0; l < 7; l++) {
      d.lin[l].w = in[i++].data<uint32_t>();
      d.lin[l].sdt = sdtype_of(in[i]);
      d.lin[l].scales = in[i++].data<void>();
      d.lin[l].biases = in[i++].data<void>();
      d.lin[l].bias = s_.lin[l].has_bias ? in[i++].data<float>() : nullptr;
    }
    d.q_norm = s_.qk_norm ? in[i++].data<float>() : nullptr;
    d.k_norm = s_.qk_norm ? in[i++].data<float>() : nullptr;
    d.freqs = s_.rope_has_freqs ? in[i++].data<float>() : nullptr;
    enc.dispatch([d = std::move(d)]() { decode_layer_run(d); });
  }

  void eval_gpu(const std::vector<array>&, std::vector<array>&) override {
    throw std::runtime_error("HubDecodeLayer runs on the CPU only");
  }
  const char* name() const override {
    return "HubDecodeLayer";
  }
  bool is_equivalent(const mx::Primitive&) const override {
    return false;  // it writes its cache inputs: never merge two of them
  }
  std::vector<mx::Shape> output_shapes(const std::vector<array>& in) override {
    std::vector<mx::Shape> out{in[0].shape()};
    for (size_t c = 1; c <= 2 * offsets_.size(); c++) out.push_back(in[c].shape());
    return out;
  }

 private:
  mlxs_qmm::DecodeLayerSpec s_;
  std::vector<int> offsets_, copy_;
};

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("decode_layer: " + what);
}

void require_f32(const array& a, const std::string& name, std::initializer_list<int> shape) {
  require(a.dtype() == mx::float32, name + " must be float32");
  require(a.shape() == mx::Shape(shape), name + " has the wrong shape");
}

}  // namespace

namespace mlxs_qmm {

array quantized_matmul(
    const array& x,
    const array& w,
    const array& scales,
    const std::optional<array>& biases,
    bool transpose,
    int group_size,
    int bits,
    const std::string& mode) {
  // MLX's op checks the arguments (its messages), gives the output shape/dtype and the
  // stream; it stays an unevaluated node when the fast path replaces it.
  array ref = mx::quantized_matmul(x, w, scales, biases, transpose, group_size, bits, mode);
  mx::Stream s = ref.primitive().stream();
  bool fast = s.device == mx::Device::cpu && mode == "affine" && transpose && biases &&
              (bits == 4 || bits == 8) &&
              (group_size == 32 || group_size == 64 || group_size == 128) && w.ndim() == 2 &&
              scales.ndim() == 2 && biases->ndim() == 2 && w.dtype() == mx::uint32 &&
              scales.dtype() == biases->dtype() &&
              (scales.dtype() == mx::float32 || scales.dtype() == mx::float16 ||
               scales.dtype() == mx::bfloat16) &&
              (ref.dtype() == mx::float32 || ref.dtype() == mx::float16 ||
               ref.dtype() == mx::bfloat16) &&
              x.ndim() >= 1 && x.shape(-1) % group_size == 0 && !fast_path_disabled();
  if (!fast) return ref;
  array xf = as_contiguous(x.dtype() == mx::float32 ? x : mx::astype(x, mx::float32, s), s);
  std::vector<array> inputs{
      xf, as_contiguous(w, s), as_contiguous(scales, s), as_contiguous(*biases, s)};
  mx::Shape shape = ref.shape();
  array y(std::move(shape), mx::float32,
          std::make_shared<HubQuantizedMatmul>(s, group_size, bits), std::move(inputs));
  return ref.dtype() == mx::float32 ? y : mx::astype(y, ref.dtype(), s);
}

std::vector<array> decode_layer(std::vector<array> in, const DecodeLayerSpec& sp,
                                const std::vector<int>& offsets, const std::vector<int>& copy) {
  mx::Stream st = mx::default_stream(mx::default_device());
  require(st.device == mx::Device::cpu && !fast_path_disabled(),
          "needs MLX's CPU device and our kernels");
  const int dim = sp.dim, H = sp.n_heads, Hkv = sp.n_kv_heads, D = sp.head_dim, F = sp.hidden;
  const int B = static_cast<int>(offsets.size());
  require(B >= 1 && copy.size() == offsets.size(), "one offset and copy flag per row");
  require(dim > 0 && H > 0 && Hkv > 0 && D > 0 && F > 0 && H % Hkv == 0, "bad dimensions");
  require(sp.rope_dims > 0 && sp.rope_dims % 2 == 0 && sp.rope_dims <= D, "bad rope dims");
  size_t want = 1 + 2 * B + 2 + 7 * 3 + (sp.qk_norm ? 2 : 0) + (sp.rope_has_freqs ? 1 : 0);
  for (const auto& l : sp.lin) want += l.has_bias ? 1 : 0;
  require(in.size() == want, "expected " + std::to_string(want) + " inputs");
  require(in[0].ndim() >= 2 && in[0].shape(0) == B && in[0].size() == static_cast<size_t>(B) * dim &&
              mx::issubdtype(in[0].dtype(), mx::floating),
          "x must be [rows, 1, dim] floats");
  if (in[0].dtype() != mx::float32) in[0] = mx::astype(in[0], mx::float32, st);
  for (int c = 1; c <= 2 * B; c++) {
    const int off = offsets[(c - 1) / 2];
    require(off >= 0, "negative offset");
    require(in[c].dtype() == mx::float32 && in[c].ndim() == 4 && in[c].shape(0) == 1 &&
                in[c].shape(1) == Hkv && in[c].shape(3) == D && in[c].shape(2) > off,
            "each cache must be float32 [1, Hkv, > offset, D]");
  }
  size_t i = 1 + 2 * B;
  require_f32(in[i++], "input norm", {dim});
  require_f32(in[i++], "post-attention norm", {dim});
  const int outs[7] = {H * D, Hkv * D, Hkv * D, dim, F, F, dim};
  const int ins[7] = {dim, dim, dim, H * D, dim, dim, F};
  for (int l = 0; l < 7; l++) {
    const auto& ls = sp.lin[l];
    const std::string name = "linear " + std::to_string(l);
    require((ls.bits == 4 || ls.bits == 8) &&
                (ls.group_size == 32 || ls.group_size == 64 || ls.group_size == 128) &&
                ins[l] % ls.group_size == 0,
            name + ": unsupported quantization");
    const array& w = in[i];
    const array& sc = in[i + 1];
    const array& bi = in[i + 2];
    require(w.dtype() == mx::uint32 && w.shape() == mx::Shape{outs[l], ins[l] * ls.bits / 32},
            name + ": bad packed weight");
    require(sc.dtype() == bi.dtype() &&
                (sc.dtype() == mx::float32 || sc.dtype() == mx::float16 ||
                 sc.dtype() == mx::bfloat16) &&
                sc.shape() == mx::Shape{outs[l], ins[l] / ls.group_size} &&
                bi.shape() == sc.shape(),
            name + ": bad scales or biases");
    i += 3;
    if (ls.has_bias) require_f32(in[i++], name + " bias", {outs[l]});
  }
  if (sp.qk_norm) {
    require_f32(in[i++], "q norm", {D});
    require_f32(in[i++], "k norm", {D});
  }
  if (sp.rope_has_freqs) require_f32(in[i++], "rope freqs", {sp.rope_dims / 2});
  // x (a few floats) is read through its strides; the rest must be row-contiguous. The
  // cache buffers a previous step returned are: no contiguous node for them.
  for (size_t j = 1; j < in.size(); j++) {
    bool ours = in[j].has_primitive() && typeid(in[j].primitive()) == typeid(HubDecodeLayer);
    if (!ours) in[j] = as_contiguous(in[j], st);
  }
  std::vector<mx::Shape> shapes{in[0].shape()};
  for (int c = 1; c <= 2 * B; c++) shapes.push_back(in[c].shape());
  std::vector<mx::Dtype> dtypes(shapes.size(), mx::float32);
  return array::make_arrays(std::move(shapes), dtypes,
                            std::make_shared<HubDecodeLayer>(st, sp, offsets, copy), std::move(in));
}

uint64_t decode_layer_calls() {
  return decode_layer_runs.load(std::memory_order_relaxed);
}

bool decode_layer_available() {
  return mx::default_device() == mx::Device::cpu && !fast_path_disabled();
}

bool fast_path_disabled() {
  return fast_path_off.load(std::memory_order_relaxed);
}

void configure_fast_path(bool on) {
  fast_path_off.store(!on, std::memory_order_relaxed);
}

void configure_threads(int n) {
  configured_threads.store(std::max(0, n), std::memory_order_relaxed);
}

const char* kernel_name() {
  if (fast_path_disabled()) return "mlx";
  switch (best_kernel()) {
    case Kernel::Avx2:
      return "avx2-fma";
    case Kernel::Neon:
      return "neon";
    default:
      return "scalar";
  }
}

int threads() {
  return pool().threads();
}

int64_t pool_self_check(int rounds) {
  // Back-to-back jobs of changing sizes (as decode issues them): each chunk of each job
  // must run exactly once, and run() must return.
  Pool& tp = pool();
  std::vector<std::atomic<int>> hits(64);
  int64_t bad = 0;
  for (int r = 0; r < rounds; r++) {
    int chunks = 2 + (r * 7919) % 63;
    for (auto& h : hits) h.store(0, std::memory_order_relaxed);
    tp.run(chunks, [&](int c) { hits[c].fetch_add(1, std::memory_order_relaxed); }, r % 5 == 0);
    for (int c = 0; c < 64; c++) {
      int want = c < chunks ? 1 : 0;
      if (hits[c].load(std::memory_order_relaxed) != want) bad++;
    }
  }
  return bad;
}

uint64_t calls() {
  return runs.load(std::memory_order_relaxed);
}

void force_portable(bool on) {
  forced_portable.store(on ? 1 : 0);
}

}  // namespace mlxs_qmm
