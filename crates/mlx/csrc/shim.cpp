// Thin C ABI over MLX's C++ API. Each function: convert arguments, call MLX, catch.
#include "shim.h"
#include "qmm.h"

#include <cmath>
#include <dlfcn.h>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "mlx/compile_impl.h"
#include "mlx/mlx.h"

namespace mx = mlx::core;
using mx::array;

struct mlxs_vec {
  std::vector<array> v;
};
struct mlxs_strings {
  std::vector<std::string> v;
};
struct mlxs_gguf {
  std::vector<std::string> names;
  std::vector<array> tensors;
  std::vector<std::string> meta_keys;
  std::vector<mx::GGUFMetaData> meta;
};
struct mlxs_checkpointed {
  std::function<std::vector<array>(const std::vector<array>&)> fn;
};
struct mlxs_compiled {
  std::function<std::vector<array>(const std::vector<array>&)> fn;
  std::uintptr_t id;
  mx::detail::CompileCacheWeakPtr cache;
};

#ifdef MLX_HUB_OPENBLAS
extern "C" {
char* openblas_get_config(void);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
}
// Nothing in a binary calls OpenBLAS unless it asks which BLAS is in use, so the
// linker's --as-needed would drop it from most binaries (tests ran on the wheel's
// reference BLAS). A constructor (always kept) that references it keeps libopenblas
// in every binary's DT_NEEDED list, ahead of libmlx.
__attribute__((constructor)) static void mlxs_keep_openblas() {
  (void)openblas_get_num_threads();
}
#endif

namespace {

thread_local std::string last_error;

void set_error(const char* what) {
  last_error = what ? what : "unknown MLX error";
}

inline array& A(mlxs_array* a) {
  return *reinterpret_cast<array*>(a);
}
inline const array& A(const mlxs_array* a) {
  return *reinterpret_cast<const array*>(a);
}
inline mlxs_array* H(array&& a) {
  return reinterpret_cast<mlxs_array*>(new array(std::move(a)));
}
inline std::optional<array> opt(const mlxs_array* a) {
  if (a == nullptr) {
    return std::nullopt;
  }
  return A(a);
}

// Runs f and turns any exception into NULL + last_error.
template <typename F>
mlxs_array* wrap(F&& f) {
  try {
    return H(f());
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown C++ exception in MLX");
  }
  return nullptr;
}

template <typename F>
int wrap_status(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown C++ exception in MLX");
  }
  return 1;
}

// Dtype codes follow mx::Dtype::Val order.
mx::Dtype to_dtype(int code) {
  static const mx::Dtype table[] = {
      mx::bool_,   mx::uint8,   mx::uint16,  mx::uint32, mx::uint64,
      mx::int8,    mx::int16,   mx::int32,   mx::int64,  mx::float16,
      mx::float32, mx::float64, mx::bfloat16, mx::complex64};
  if (code < 0 || code >= static_cast<int>(sizeof(table) / sizeof(table[0]))) {
    throw std::invalid_argument("unknown dtype code " + std::to_string(code));
  }
  return table[code];
}
int from_dtype(mx::Dtype d) {
  return static_cast<int>(d.val());
}

mx::Shape to_shape(const int32_t* p, size_t n) {
  return mx::Shape(p, p + n);
}
std::vector<int> to_ints(const int32_t* p, size_t n) {
  return std::vector<int>(p, p + n);
}
std::vector<array> to_vec(const mlxs_array* const* arrays, size_t n) {
  std::vector<array> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(A(arrays[i]));
  }
  return out;
}
std::unordered_map<std::string, array> to_map(const mlxs_strings* names, const mlxs_vec* arrays) {
  std::unordered_map<std::string, array> out;
  for (size_t i = 0; i < names->v.size(); ++i) {
    out.insert_or_assign(names->v[i], arrays->v.at(i));
  }
  return out;
}

template <typename V>
std::unordered_map<std::string, V> to_meta(const mlxs_strings* keys, const mlxs_strings* values) {
  std::unordered_map<std::string, V> out;
  for (size_t i = 0; i < keys->v.size(); ++i) {
    out[keys->v[i]] = values->v.at(i);
  }
  return out;
}

mx::Device to_device(int kind) {
  return kind == 1 ? mx::Device(mx::Device::gpu) : mx::Device(mx::Device::cpu);
}

// Wraps a Rust closure as an MLX function. A nonzero return from Rust becomes a C++
// exception here, which unwinds only through MLX frames to our catch.
std::function<std::vector<array>(const std::vector<array>&)> closure(
    mlxs_closure_fn fn,
    void* ctx) {
  return [fn, ctx](const std::vector<array>& inputs) {
    mlxs_vec in{inputs};
    mlxs_vec out;
    if (fn(ctx, &in, &out) != 0) {
      throw std::runtime_error(last_error);
    }
    return std::move(out.v);
  };
}

} // namespace

extern "C" {

const char* mlxs_last_error(void) {
  return last_error.c_str();
}
void mlxs_set_error(const char* message) {
  set_error(message);
}

// ----- info, devices, memory

const char* mlxs_version(void) {
  return mx::version();
}

const char* mlxs_blas_name(void) {
#ifdef MLX_HUB_OPENBLAS
  return openblas_get_config();
#else
#ifdef __APPLE__
  return "Accelerate";
#else
  return "reference BLAS (bundled with the MLX wheel)";
#endif
#endif
}

const char* mlxs_blas_library(void) {
  // Which library the dynamic loader bound cblas_sgemm to: the BLAS MLX really calls.
  static std::string path;
  void* sym = dlsym(RTLD_DEFAULT, "cblas_sgemm");
  Dl_info info;
  if (sym != nullptr && dladdr(sym, &info) != 0 && info.dli_fname != nullptr) {
    path = info.dli_fname;
  } else {
    path = "";
  }
  return path.c_str();
}

int mlxs_blas_threads(void) {
#ifdef MLX_HUB_OPENBLAS
  return openblas_get_num_threads();
#else
  return 1;
#endif
}

void mlxs_blas_set_threads(int n) {
#ifdef MLX_HUB_OPENBLAS
  openblas_set_num_threads(n);
#else
  (void)n;
#endif
}

int mlxs_default_device(void) {
  return mx::default_device().type == mx::Device::gpu ? 1 : 0;
}
int mlxs_set_default_device(int kind) {
  return wrap_status([&] { mx::set_default_device(to_device(kind)); });
}
int mlxs_device_available(int kind) {
  try {
    return mx::is_available(to_device(kind)) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}
const char* mlxs_device_info(int kind) {
  thread_local std::string text;
  int status = wrap_status([&] {
    std::ostringstream os;
    for (const auto& [key, value] : mx::device_info(to_device(kind))) {
      os << key << '\t';
      std::visit([&](const auto& v) { os << v; }, value);
      os << '\n';
    }
    text = os.str();
  });
  return status == 0 ? text.c_str() : nullptr;
}
size_t mlxs_active_memory(void) {
  return mx::get_active_memory();
}
size_t mlxs_peak_memory(void) {
  return mx::get_peak_memory();
}
size_t mlxs_cache_memory(void) {
  return mx::get_cache_memory();
}
void mlxs_reset_peak_memory(void) {
  mx::reset_peak_memory();
}
size_t mlxs_memory_limit(void) {
  return mx::get_memory_limit();
}
size_t mlxs_set_memory_limit(size_t limit) {
  return mx::set_memory_limit(limit);
}
size_t mlxs_set_cache_limit(size_t limit) {
  return mx::set_cache_limit(limit);
}
int mlxs_set_wired_limit(size_t limit, size_t* previous) {
  // Metal only (macOS 15+); a no-op returning 0 on other backends.
  return wrap_status([&] { *previous = mx::set_wired_limit(limit); });
}
void mlxs_clear_cache(void) {
  mx::clear_cache();
}

// ----- arrays

mlxs_array* mlxs_array_from_data(
    const void* data,
    const int32_t* shape,
    size_t ndim,
    int dtype) {
  return wrap([&] {
    auto dt = to_dtype(dtype);
    auto sh = to_shape(shape, ndim);
    size_t count = 1;
    for (auto d : sh) {
      if (d < 0) {
        throw std::invalid_argument("negative dimension in shape");
      }
      count *= static_cast<size_t>(d);
    }
    size_t nbytes = count * dt.size();
    // MLX takes ownership of a private copy (no copy on the CPU path).
    void* copy = std::malloc(nbytes == 0 ? 1 : nbytes);
    if (copy == nullptr) {
      throw std::bad_alloc();
    }
    if (nbytes > 0) {
      std::memcpy(copy, data, nbytes);
    }
    return array(copy, std::move(sh), dt, [](void* p) { std::free(p); });
  });
}

mlxs_array* mlxs_array_scalar(double value, int dtype) {
  return wrap([&] {
    auto dt = to_dtype(dtype);
    if (dt == mx::float64) {
      return array(value, mx::float64);
    }
    if (mx::issubdtype(dt, mx::integer) || dt == mx::bool_) {
      // Through int64 so large integers stay exact.
      return mx::astype(array(static_cast<int64_t>(value), mx::int64), dt);
    }
    return mx::astype(array(static_cast<float>(value)), dt);
  });
}

mlxs_array* mlxs_array_clone(const mlxs_array* a) {
  return wrap([&] { return array(A(a)); });
}
void mlxs_array_free(mlxs_array* a) {
  delete reinterpret_cast<array*>(a);
}
size_t mlxs_array_ndim(const mlxs_array* a) {
  return A(a).ndim();
}
void mlxs_array_shape(const mlxs_array* a, int32_t* out) {
  const auto& s = A(a).shape();
  for (size_t i = 0; i < s.size(); ++i) {
    out[i] = s[i];
  }
}
size_t mlxs_array_size(const mlxs_array* a) {
  return A(a).size();
}
int mlxs_array_dtype(const mlxs_array* a) {
  return from_dtype(A(a).dtype());
}
size_t mlxs_array_nbytes(const mlxs_array* a) {
  return A(a).nbytes();
}

int mlxs_array_copy_out(const mlxs_array* a, void* dst, size_t nbytes) {
  return wrap_status([&] {
    if (A(a).nbytes() != nbytes) {
      throw std::invalid_argument("copy_out: destination size does not match the array");
    }
    array c = mx::contiguous(A(a));
    c.eval();
    if (nbytes > 0) {
      std::memcpy(dst, c.data<char>(), nbytes);
    }
  });
}

char* mlxs_array_to_string(const mlxs_array* a) {
  try {
    std::ostringstream os;
    array c = A(a);
    os << c;
    return strdup(os.str().c_str());
  } catch (const std::exception& e) {
    return strdup((std::string("<error: ") + e.what() + ">").c_str());
  }
}
void mlxs_string_free(char* s) {
  std::free(s);
}

int mlxs_eval(const mlxs_array* const* arrays, size_t n) {
  return wrap_status([&] { mx::eval(to_vec(arrays, n)); });
}
int mlxs_async_eval(const mlxs_array* const* arrays, size_t n) {
  return wrap_status([&] { mx::async_eval(to_vec(arrays, n)); });
}

// ----- vectors

mlxs_vec* mlxs_vec_new(void) {
  return new mlxs_vec();
}
void mlxs_vec_free(mlxs_vec* v) {
  delete v;
}
void mlxs_vec_push(mlxs_vec* v, const mlxs_array* a) {
  v->v.push_back(A(a));
}
size_t mlxs_vec_len(const mlxs_vec* v) {
  return v->v.size();
}
mlxs_array* mlxs_vec_get(const mlxs_vec* v, size_t i) {
  return wrap([&] { return array(v->v.at(i)); });
}
mlxs_strings* mlxs_strings_new(void) {
  return new mlxs_strings();
}
void mlxs_strings_free(mlxs_strings* s) {
  delete s;
}
void mlxs_strings_push(mlxs_strings* s, const char* data, size_t len) {
  s->v.emplace_back(data, len);
}
size_t mlxs_strings_len(const mlxs_strings* s) {
  return s->v.size();
}
const char* mlxs_strings_get(const mlxs_strings* s, size_t i, size_t* len) {
  const auto& str = s->v.at(i);
  *len = str.size();
  return str.data();
}

// ----- element-wise

mlxs_array* mlxs_unary(int op, const mlxs_array* a_) {
  return wrap([&]() -> array {
    const array& a = A(a_);
    switch (op) {
      case 0: return mx::abs(a);
      case 1: return mx::negative(a);
      case 2: return mx::sign(a);
      case 3: return mx::sqrt(a);
      case 4: return mx::rsqrt(a);
      case 5: return mx::exp(a);
      case 6: return mx::log(a);
      case 7: return mx::log1p(a);
      case 8: return mx::sin(a);
      case 9: return mx::cos(a);
      case 10: return mx::tanh(a);
      case 11: return mx::sigmoid(a);
      case 12: return mx::erf(a);
      case 13: return mx::floor(a);
      case 14: return mx::ceil(a);
      case 15: return mx::square(a);
      case 16: return mx::reciprocal(a);
      case 17: return mx::logical_not(a);
      case 18: return mx::stop_gradient(a);
      case 19: return mx::isnan(a);
      case 20: return mx::isinf(a);
      case 21: return mx::isfinite(a);
      case 22: return mx::expm1(a);
      case 23: return mx::erfinv(a);
      case 24: return mx::log2(a);
      // silu(x) = x * sigmoid(x), as mlx.nn.silu
      case 25: return mx::multiply(a, mx::sigmoid(a));
      // gelu(x) = x * (1 + erf(x / sqrt(2))) / 2, as mlx.nn.gelu
      case 26: {
        auto half = mx::astype(array(0.5f), a.dtype());
        auto inv_sqrt2 = mx::astype(array(static_cast<float>(M_SQRT1_2)), a.dtype());
        return mx::multiply(
            mx::multiply(a, half),
            mx::add(mx::astype(array(1.0f), a.dtype()), mx::erf(mx::multiply(a, inv_sqrt2))));
      }
      // gelu_approx: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as mlx.nn.gelu_approx
      case 27: {
        auto dt = a.dtype();
        auto c = mx::astype(array(0.7978845608028654f), dt);
        auto k = mx::astype(array(0.044715f), dt);
        auto inner = mx::multiply(c, mx::add(a, mx::multiply(k, mx::power(a, mx::astype(array(3.0f), dt)))));
        return mx::multiply(
            mx::multiply(mx::astype(array(0.5f), dt), a),
            mx::add(mx::astype(array(1.0f), dt), mx::tanh(inner)));
      }
      case 28: return mx::maximum(a, mx::astype(array(0.0f), a.dtype()));
      case 29: return mx::copy(a);
      case 30: return mx::tan(a);
      default: throw std::invalid_argument("unknown unary op " + std::to_string(op));
    }
  });
}

mlxs_array* mlxs_binary(int op, const mlxs_array* a_, const mlxs_array* b_) {
  return wrap([&]() -> array {
    const array& a = A(a_);
    const array& b = A(b_);
    switch (op) {
      case 0: return mx::add(a, b);
      case 1: return mx::subtract(a, b);
      case 2: return mx::multiply(a, b);
      case 3: return mx::divide(a, b);
      case 4: return mx::maximum(a, b);
      case 5: return mx::minimum(a, b);
      case 6: return mx::power(a, b);
      case 7: return mx::equal(a, b);
      case 8: return mx::not_equal(a, b);
      case 9: return mx::less(a, b);
      case 10: return mx::less_equal(a, b);
      case 11: return mx::greater(a, b);
      case 12: return mx::greater_equal(a, b);
      case 13: return mx::logical_and(a, b);
      case 14: return mx::logical_or(a, b);
      case 15: return mx::remainder(a, b);
      case 16: return mx::floor_divide(a, b);
      case 17: return mx::logaddexp(a, b);
      case 18: return mx::arctan2(a, b);
      case 19: return mx::bitwise_and(a, b);
      case 20: return mx::bitwise_or(a, b);
      case 21: return mx::left_shift(a, b);
      case 22: return mx::right_shift(a, b);
      default: throw std::invalid_argument("unknown binary op " + std::to_string(op));
    }
  });
}

mlxs_array* mlxs_where(const mlxs_array* c, const mlxs_array* a, const mlxs_array* b) {
  return wrap([&] { return mx::where(A(c), A(a), A(b)); });
}
mlxs_array* mlxs_astype(const mlxs_array* a, int dtype) {
  return wrap([&] { return mx::astype(A(a), to_dtype(dtype)); });
}
mlxs_array* mlxs_clip(const mlxs_array* a, const mlxs_array* lo, const mlxs_array* hi) {
  return wrap([&] { return mx::clip(A(a), opt(lo), opt(hi)); });
}
mlxs_array* mlxs_round(const mlxs_array* a, int decimals) {
  return wrap([&] { return mx::round(A(a), decimals); });
}

// ----- reductions and scans

mlxs_array* mlxs_reduce(
    int op,
    const mlxs_array* a_,
    const int32_t* axes_,
    size_t n,
    int all_axes,
    int keepdims) {
  return wrap([&]() -> array {
    const array& a = A(a_);
    std::vector<int> axes;
    if (all_axes) {
      for (int i = 0; i < static_cast<int>(a.ndim()); ++i) {
        axes.push_back(i);
      }
    } else {
      axes = to_ints(axes_, n);
    }
    bool k = keepdims != 0;
    switch (op) {
      case 0: return mx::sum(a, axes, k);
      case 1: return mx::mean(a, axes, k);
      case 2: return mx::max(a, axes, k);
      case 3: return mx::min(a, axes, k);
      case 4: return mx::prod(a, axes, k);
      case 5: return mx::logsumexp(a, axes, k);
      case 6: return mx::all(a, axes, k);
      case 7: return mx::any(a, axes, k);
      default: throw std::invalid_argument("unknown reduction " + std::to_string(op));
    }
  });
}

mlxs_array* mlxs_arg_reduce(int op, const mlxs_array* a_, int axis, int all_axes, int keepdims) {
  return wrap([&]() -> array {
    const array& a = A(a_);
    bool k = keepdims != 0;
    if (op == 0) {
      return all_axes ? mx::argmax(a, k) : mx::argmax(a, axis, k);
    }
    return all_axes ? mx::argmin(a, k) : mx::argmin(a, axis, k);
  });
}

mlxs_array* mlxs_softmax(const mlxs_array* a, const int32_t* axes, size_t n, int precise) {
  return wrap([&] { return mx::softmax(A(a), to_ints(axes, n), precise != 0); });
}

mlxs_array* mlxs_scan(int op, const mlxs_array* a_, int axis, int reverse, int inclusive) {
  return wrap([&]() -> array {
    const array& a = A(a_);
    bool r = reverse != 0, inc = inclusive != 0;
    switch (op) {
      case 0: return mx::cumsum(a, axis, r, inc);
      case 1: return mx::cumprod(a, axis, r, inc);
      case 2: return mx::cummax(a, axis, r, inc);
      case 3: return mx::cummin(a, axis, r, inc);
      case 4: return mx::logcumsumexp(a, axis, r, inc);
      default: throw std::invalid_argument("unknown scan " + std::to_string(op));
    }
  });
}

mlxs_array* mlxs_var(const mlxs_array* a, const int32_t* axes, size_t n, int keepdims, int ddof) {
  return wrap([&] { return mx::var(A(a), to_ints(axes, n), keepdims != 0, ddof); });
}

// ----- shapes and indexing

mlxs_array* mlxs_reshape(const mlxs_array* a, const int32_t* shape, size_t n) {
  return wrap([&] { return mx::reshape(A(a), to_shape(shape, n)); });
}
mlxs_array* mlxs_transpose(const mlxs_array* a, const int32_t* axes, size_t n, int reverse) {
  return wrap([&] {
    return reverse ? mx::transpose(A(a)) : mx::transpose(A(a), to_ints(axes, n));
  });
}
mlxs_array* mlxs_swapaxes(const mlxs_array* a, int axis1, int axis2) {
  return wrap([&] { return mx::swapaxes(A(a), axis1, axis2); });
}
mlxs_array* mlxs_expand_dims(const mlxs_array* a, const int32_t* axes, size_t n) {
  return wrap([&] { return mx::expand_dims(A(a), to_ints(axes, n)); });
}
mlxs_array* mlxs_squeeze(const mlxs_array* a, const int32_t* axes, size_t n, int all_axes) {
  return wrap([&] { return all_axes ? mx::squeeze(A(a)) : mx::squeeze(A(a), to_ints(axes, n)); });
}
mlxs_array* mlxs_broadcast_to(const mlxs_array* a, const int32_t* shape, size_t n) {
  return wrap([&] { return mx::broadcast_to(A(a), to_shape(shape, n)); });
}
mlxs_array* mlxs_flatten(const mlxs_array* a, int start_axis, int end_axis) {
  return wrap([&] { return mx::flatten(A(a), start_axis, end_axis); });
}
mlxs_array* mlxs_slice(
    const mlxs_array* a,
    const int32_t* start,
    const int32_t* stop,
    const int32_t* strides,
    size_t n) {
  return wrap([&] {
    return mx::slice(A(a), to_shape(start, n), to_shape(stop, n), to_shape(strides, n));
  });
}
mlxs_array* mlxs_slice_update(
    const mlxs_array* src,
    const mlxs_array* update,
    const int32_t* start,
    const int32_t* stop,
    const int32_t* strides,
    size_t n) {
  return wrap([&] {
    return mx::slice_update(
        A(src), A(update), to_shape(start, n), to_shape(stop, n), to_shape(strides, n));
  });
}
mlxs_array* mlxs_concatenate(const mlxs_array* const* arrays, size_t n, int axis) {
  return wrap([&] { return mx::concatenate(to_vec(arrays, n), axis); });
}
mlxs_array* mlxs_stack(const mlxs_array* const* arrays, size_t n, int axis) {
  return wrap([&] { return mx::stack(to_vec(arrays, n), axis); });
}
int mlxs_split(
    const mlxs_array* a,
    const int32_t* indices,
    size_t n_indices,
    int sections,
    int axis,
    mlxs_vec* out) {
  return wrap_status([&] {
    out->v = indices != nullptr ? mx::split(A(a), to_shape(indices, n_indices), axis)
                                : mx::split(A(a), sections, axis);
  });
}
mlxs_array* mlxs_take(const mlxs_array* a, const mlxs_array* indices, int axis, int flat) {
  return wrap([&] { return flat ? mx::take(A(a), A(indices)) : mx::take(A(a), A(indices), axis); });
}
mlxs_array* mlxs_take_along_axis(const mlxs_array* a, const mlxs_array* indices, int axis) {
  return wrap([&] { return mx::take_along_axis(A(a), A(indices), axis); });
}
mlxs_array* mlxs_put_along_axis(
    const mlxs_array* a,
    const mlxs_array* indices,
    const mlxs_array* values,
    int axis) {
  return wrap([&] { return mx::put_along_axis(A(a), A(indices), A(values), axis); });
}
mlxs_array* mlxs_scatter_add_axis(
    const mlxs_array* a,
    const mlxs_array* indices,
    const mlxs_array* values,
    int axis) {
  return wrap([&] { return mx::scatter_add_axis(A(a), A(indices), A(values), axis); });
}
mlxs_array* mlxs_sort(const mlxs_array* a, int axis, int arg) {
  return wrap([&] { return arg ? mx::argsort(A(a), axis) : mx::sort(A(a), axis); });
}
mlxs_array* mlxs_partition(const mlxs_array* a, int kth, int axis, int arg) {
  return wrap([&] {
    return arg ? mx::argpartition(A(a), kth, axis) : mx::partition(A(a), kth, axis);
  });
}
mlxs_array* mlxs_topk(const mlxs_array* a, int k, int axis) {
  return wrap([&] { return mx::topk(A(a), k, axis); });
}
mlxs_array* mlxs_pad(
    const mlxs_array* a,
    const int32_t* axes,
    const int32_t* low,
    const int32_t* high,
    size_t n,
    const mlxs_array* value) {
  return wrap([&] {
    return mx::pad(A(a), to_ints(axes, n), to_shape(low, n), to_shape(high, n), A(value));
  });
}
mlxs_array* mlxs_repeat(const mlxs_array* a, int repeats, int axis) {
  return wrap([&] { return mx::repeat(A(a), repeats, axis); });
}
mlxs_array* mlxs_tile(const mlxs_array* a, const int32_t* reps, size_t n) {
  return wrap([&] { return mx::tile(A(a), to_ints(reps, n)); });
}
mlxs_array* mlxs_tri(const mlxs_array* a, int k, int upper) {
  return wrap([&] { return upper ? mx::triu(A(a), k) : mx::tril(A(a), k); });
}
mlxs_array* mlxs_contiguous(const mlxs_array* a) {
  return wrap([&] { return mx::contiguous(A(a)); });
}

// ----- constructors

mlxs_array* mlxs_full(const int32_t* shape, size_t n, const mlxs_array* value, int dtype) {
  return wrap([&] { return mx::full(to_shape(shape, n), A(value), to_dtype(dtype)); });
}
mlxs_array* mlxs_arange(double start, double stop, double step, int dtype) {
  return wrap([&] { return mx::arange(start, stop, step, to_dtype(dtype)); });
}
mlxs_array* mlxs_linspace(double start, double stop, int num, int dtype) {
  return wrap([&] { return mx::linspace(start, stop, num, to_dtype(dtype)); });
}
mlxs_array* mlxs_eye(int n, int m, int k, int dtype) {
  return wrap([&] { return mx::eye(n, m, k, to_dtype(dtype)); });
}

// ----- linear algebra

mlxs_array* mlxs_matmul(const mlxs_array* a, const mlxs_array* b) {
  return wrap([&] { return mx::matmul(A(a), A(b)); });
}
mlxs_array* mlxs_addmm(
    const mlxs_array* c,
    const mlxs_array* a,
    const mlxs_array* b,
    float alpha,
    float beta) {
  return wrap([&] { return mx::addmm(A(c), A(a), A(b), alpha, beta); });
}

// ----- fast kernels

mlxs_array* mlxs_fast_rms_norm(const mlxs_array* x, const mlxs_array* weight, float eps) {
  return wrap([&] { return mx::fast::rms_norm(A(x), opt(weight), eps); });
}
mlxs_array* mlxs_fast_layer_norm(
    const mlxs_array* x,
    const mlxs_array* weight,
    const mlxs_array* bias,
    float eps) {
  return wrap([&] { return mx::fast::layer_norm(A(x), opt(weight), opt(bias), eps); });
}
mlxs_array* mlxs_fast_rope(
    const mlxs_array* x,
    int dims,
    int traditional,
    float base,
    float scale,
    int offset,
    const mlxs_array* offset_array,
    const mlxs_array* freqs) {
  return wrap([&] {
    std::optional<float> b = std::isnan(base) ? std::nullopt : std::optional<float>(base);
    if (offset_array != nullptr) {
      return mx::fast::rope(A(x), dims, traditional != 0, b, scale, A(offset_array), opt(freqs));
    }
    return mx::fast::rope(A(x), dims, traditional != 0, b, scale, offset, opt(freqs));
  });
}
mlxs_array* mlxs_fast_sdpa(
    const mlxs_array* q,
    const mlxs_array* k,
    const mlxs_array* v,
    float scale,
    const char* mask_mode,
    const mlxs_array* mask) {
  return wrap([&] {
    return mx::fast::scaled_dot_product_attention(
        A(q), A(k), A(v), scale, mask_mode ? mask_mode : "", opt(mask));
  });
}

// ----- quantization

int mlxs_quantize(const mlxs_array* w, int group_size, int bits, const char* mode, mlxs_vec* out) {
  return wrap_status([&] { out->v = mx::quantize(A(w), group_size, bits, mode); });
}
mlxs_array* mlxs_dequantize(
    const mlxs_array* w,
    const mlxs_array* scales,
    const mlxs_array* biases,
    int group_size,
    int bits,
    const char* mode,
    int dtype) {
  return wrap([&] {
    std::optional<mx::Dtype> dt =
        dtype < 0 ? std::nullopt : std::optional<mx::Dtype>(to_dtype(dtype));
    return mx::dequantize(A(w), A(scales), opt(biases), group_size, bits, mode, std::nullopt, dt);
  });
}
mlxs_array* mlxs_quantized_matmul(
    const mlxs_array* x,
    const mlxs_array* w,
    const mlxs_array* scales,
    const mlxs_array* biases,
    int transpose,
    int group_size,
    int bits,
    const char* mode) {
  return wrap([&] {
    return mlxs_qmm::quantized_matmul(
        A(x), A(w), A(scales), opt(biases), transpose != 0, group_size, bits, mode);
  });
}
mlxs_array* mlxs_quantized_matmul_mlx(
    const mlxs_array* x,
    const mlxs_array* w,
    const mlxs_array* scales,
    const mlxs_array* biases,
    int transpose,
    int group_size,
    int bits,
    const char* mode) {
  return wrap([&] {
    return mx::quantized_matmul(
        A(x), A(w), A(scales), opt(biases), transpose != 0, group_size, bits, mode);
  });
}
const char* mlxs_qmm_kernel(void) {
  return mlxs_qmm::kernel_name();
}
int mlxs_qmm_threads(void) {
  return mlxs_qmm::threads();
}
int64_t mlxs_qmm_pool_self_check(int rounds) {
  return mlxs_qmm::pool_self_check(rounds);
}
uint64_t mlxs_qmm_calls(void) {
  return mlxs_qmm::calls();
}
void mlxs_qmm_force_portable(int on) {
  mlxs_qmm::force_portable(on != 0);
}
void mlxs_qmm_configure(int threads, int fast_path) {
  mlxs_qmm::configure_threads(threads);
  mlxs_qmm::configure_fast_path(fast_path != 0);
}
int mlxs_decode_layer(const mlxs_vec* inputs, const mlxs_decode_spec* spec,
                      const int32_t* offsets, const int32_t* copy, int32_t rows,
                      mlxs_vec* outputs) {
  return wrap_status([&] {
    std::vector<int> off(offsets, offsets + std::max(rows, 0));
    std::vector<int> cp(copy, copy + std::max(rows, 0));
    outputs->v = mlxs_qmm::decode_layer(inputs->v, *spec, off, cp);
  });
}
uint64_t mlxs_decode_layer_calls(void) {
  return mlxs_qmm::decode_layer_calls();
}
int mlxs_decode_layer_available(void) {
  return mlxs_qmm::decode_layer_available() ? 1 : 0;
}

// ----- random

mlxs_array* mlxs_random_key(uint64_t seed) {
  return wrap([&] { return mx::random::key(seed); });
}
void mlxs_random_seed(uint64_t seed) {
  mx::random::seed(seed);
}
mlxs_array* mlxs_random_split(const mlxs_array* key, int num) {
  return wrap([&] { return mx::random::split(A(key), num); });
}
mlxs_array* mlxs_random_normal(
    const int32_t* shape,
    size_t n,
    int dtype,
    float loc,
    float scale,
    const mlxs_array* key) {
  return wrap([&] {
    return mx::random::normal(to_shape(shape, n), to_dtype(dtype), loc, scale, opt(key));
  });
}
mlxs_array* mlxs_random_uniform(
    const mlxs_array* low,
    const mlxs_array* high,
    const int32_t* shape,
    size_t n,
    int dtype,
    const mlxs_array* key) {
  return wrap([&] {
    return mx::random::uniform(A(low), A(high), to_shape(shape, n), to_dtype(dtype), opt(key));
  });
}
mlxs_array* mlxs_random_randint(
    const mlxs_array* low,
    const mlxs_array* high,
    const int32_t* shape,
    size_t n,
    int dtype,
    const mlxs_array* key) {
  return wrap([&] {
    return mx::random::randint(A(low), A(high), to_shape(shape, n), to_dtype(dtype), opt(key));
  });
}
mlxs_array* mlxs_random_bernoulli(
    const mlxs_array* p,
    const int32_t* shape,
    size_t n,
    const mlxs_array* key) {
  return wrap([&] { return mx::random::bernoulli(A(p), to_shape(shape, n), opt(key)); });
}
mlxs_array* mlxs_random_categorical(
    const mlxs_array* logits,
    int axis,
    int num_samples,
    const mlxs_array* key) {
  return wrap([&] {
    if (num_samples > 0) {
      return mx::random::categorical(A(logits), axis, num_samples, opt(key));
    }
    return mx::random::categorical(A(logits), axis, opt(key));
  });
}
mlxs_array* mlxs_random_gumbel(const int32_t* shape, size_t n, int dtype, const mlxs_array* key) {
  return wrap([&] { return mx::random::gumbel(to_shape(shape, n), to_dtype(dtype), opt(key)); });
}
mlxs_array* mlxs_random_permutation(int n, const mlxs_array* key) {
  return wrap([&] { return mx::random::permutation(n, opt(key)); });
}

// ----- transforms

int mlxs_value_and_grad(
    mlxs_closure_fn fn,
    void* ctx,
    const mlxs_vec* inputs,
    const int32_t* argnums,
    size_t n_argnums,
    mlxs_vec* values,
    mlxs_vec* grads) {
  return wrap_status([&] {
    auto vg = mx::value_and_grad(closure(fn, ctx), to_ints(argnums, n_argnums));
    auto [v, g] = vg(inputs->v);
    values->v = std::move(v);
    grads->v = std::move(g);
  });
}

int mlxs_vjp(
    mlxs_closure_fn fn,
    void* ctx,
    const mlxs_vec* primals,
    const mlxs_vec* cotangents,
    mlxs_vec* outputs,
    mlxs_vec* vjps) {
  return wrap_status([&] {
    auto [o, v] = mx::vjp(closure(fn, ctx), primals->v, cotangents->v);
    outputs->v = std::move(o);
    vjps->v = std::move(v);
  });
}

mlxs_compiled* mlxs_compile(mlxs_closure_fn fn, void* ctx, int shapeless) {
  try {
    auto* c = new mlxs_compiled();
    // The object's address is its identity in MLX's compile cache; erased on free.
    c->id = reinterpret_cast<std::uintptr_t>(c);
    c->cache = mx::detail::compile_cache();
    c->fn = mx::detail::compile(closure(fn, ctx), c->id, shapeless != 0);
    return c;
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown C++ exception in MLX compile");
  }
  return nullptr;
}
int mlxs_compiled_call(mlxs_compiled* f, const mlxs_vec* inputs, mlxs_vec* outputs) {
  return wrap_status([&] { outputs->v = f->fn(inputs->v); });
}
mlxs_checkpointed* mlxs_checkpoint(mlxs_closure_fn fn, void* ctx, void (*drop_ctx)(void*)) {
  try {
    // Every copy of the function (the graph's backward holds some) shares ownership.
    std::shared_ptr<void> owned(ctx, drop_ctx);
    auto inner = [fn, owned](const std::vector<array>& inputs) {
      return closure(fn, owned.get())(inputs);
    };
    return new mlxs_checkpointed{mx::checkpoint(std::move(inner))};
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown C++ exception in MLX checkpoint");
  }
  return nullptr;
}
int mlxs_checkpointed_call(mlxs_checkpointed* f, const mlxs_vec* inputs, mlxs_vec* outputs) {
  return wrap_status([&] { outputs->v = f->fn(inputs->v); });
}
void mlxs_checkpointed_free(mlxs_checkpointed* f) {
  delete f;
}
void mlxs_compiled_free(mlxs_compiled* f) {
  if (f != nullptr) {
    try {
      mx::detail::compile_erase(f->cache, f->id);
    } catch (...) {
    }
    delete f;
  }
}
void mlxs_set_compile_enabled(int enabled) {
  if (enabled) {
    mx::enable_compile();
  } else {
    mx::disable_compile();
  }
}

// ----- io

int mlxs_load_safetensors(
    const char* path,
    mlxs_strings* names,
    mlxs_vec* arrays,
    mlxs_strings* meta_keys,
    mlxs_strings* meta_values) {
  return wrap_status([&] {
    // Loading is lazy in MLX: read on the CPU stream so GPU-default setups work too.
    auto [tensors, meta] = mx::load_safetensors(std::string(path), mx::Device(mx::Device::cpu));
    for (auto& [k, v] : tensors) {
      names->v.push_back(k);
      arrays->v.push_back(v);
    }
    for (auto& [k, v] : meta) {
      meta_keys->v.push_back(k);
      meta_values->v.push_back(v);
    }
  });
}

int mlxs_save_safetensors(
    const char* path,
    const mlxs_strings* names,
    const mlxs_vec* arrays,
    const mlxs_strings* meta_keys,
    const mlxs_strings* meta_values) {
  return wrap_status([&] {
    mx::save_safetensors(
        std::string(path),
        to_map(names, arrays),
        to_meta<std::string>(meta_keys, meta_values));
  });
}

mlxs_gguf* mlxs_load_gguf(const char* path) {
  try {
    auto [tensors, meta] = mx::load_gguf(std::string(path), mx::Device(mx::Device::cpu));
    auto* g = new mlxs_gguf();
    for (auto& [k, v] : tensors) {
      g->names.push_back(k);
      g->tensors.push_back(v);
    }
    for (auto& [k, v] : meta) {
      g->meta_keys.push_back(k);
      g->meta.push_back(v);
    }
    return g;
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown C++ exception while loading GGUF");
  }
  return nullptr;
}
void mlxs_gguf_free(mlxs_gguf* g) {
  delete g;
}
size_t mlxs_gguf_n_tensors(const mlxs_gguf* g) {
  return g->names.size();
}
const char* mlxs_gguf_tensor_name(const mlxs_gguf* g, size_t i) {
  return g->names.at(i).c_str();
}
mlxs_array* mlxs_gguf_tensor(const mlxs_gguf* g, size_t i) {
  return wrap([&] { return array(g->tensors.at(i)); });
}
size_t mlxs_gguf_n_meta(const mlxs_gguf* g) {
  return g->meta_keys.size();
}
const char* mlxs_gguf_meta_key(const mlxs_gguf* g, size_t i) {
  return g->meta_keys.at(i).c_str();
}
int mlxs_gguf_meta_kind(const mlxs_gguf* g, size_t i) {
  return static_cast<int>(g->meta.at(i).index());
}
mlxs_array* mlxs_gguf_meta_array(const mlxs_gguf* g, size_t i) {
  return wrap([&] { return std::get<array>(g->meta.at(i)); });
}
const char* mlxs_gguf_meta_string(const mlxs_gguf* g, size_t i, size_t* len) {
  const auto& s = std::get<std::string>(g->meta.at(i));
  *len = s.size();
  return s.data();
}
size_t mlxs_gguf_meta_strings_len(const mlxs_gguf* g, size_t i) {
  return std::get<std::vector<std::string>>(g->meta.at(i)).size();
}
const char* mlxs_gguf_meta_strings_get(const mlxs_gguf* g, size_t i, size_t j, size_t* len) {
  const auto& s = std::get<std::vector<std::string>>(g->meta.at(i)).at(j);
  *len = s.size();
  return s.data();
}

int mlxs_save_gguf(
    const char* path,
    const mlxs_strings* names,
    const mlxs_vec* arrays,
    const mlxs_strings* meta_keys,
    const mlxs_strings* meta_values) {
  return wrap_status([&] {
    mx::save_gguf(
        std::string(path),
        to_map(names, arrays),
        to_meta<mx::GGUFMetaData>(meta_keys, meta_values));
  });
}

} // extern "C"
