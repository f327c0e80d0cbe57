// pte_runner: an edgeag policy.pte on ExecuTorch's C++ runtime, through the Module API
// (executorch/extension/module), the one an Android app calls through the AAR's JNI.
//
// The contract (docs/export.md): input `obs` float32 [batch, obs_dim], the raw
// observation; output `action`, ready for env.step: int64 [batch] (argmax, discrete
// actions) or float32 [batch, act_dim] (continuous actions).
//
//   pte_runner POLICY.pte --obs OBS.npy --out ACTIONS.npy [--batch N] [--threads N]
//       Reads float32 [n, obs_dim] observations from a .npy file (C order, little
//       endian), runs them in calls of N rows (default 1: one action per call, as a
//       device acts), writes the actions as .npy (<i8 [n] or <f4 [n, act_dim]) and
//       prints one JSON line of figures on stdout.
//   pte_runner POLICY.pte --stdio [--threads N]
//       Prints one JSON line (runtime, obs_dim, action dtype and width), then reads one
//       observation per line on stdin (obs_dim numbers separated by spaces) and
//       writes one action per line on stdout (an integer, or act_dim numbers printed
//       with 9 significant digits, which float32 survives exactly); at the end of
//       stdin prints one JSON line of figures.
//
// Figures: per-call latency (median and p90, microseconds: copying the observation
// in, Module::forward, reading the action out; at batch 1 that is per action), the
// time to load the program and its method, and this process's peak RSS (VmHWM) with
// its anonymous and file-backed RSS at the end (RssAnon, RssFile).
// What the libraries print on stderr (cpuinfo's probing, ExecuTorch's log) is held
// back, and shown only with --verbose; an error is one line on stderr, `error: ...`,
// with exit 2 for bad input (a file that does not load, malformed observations) and
// 1 otherwise.

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/extension/threadpool/threadpool_guard.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

// The wheel ships libexecutorch_threadpool.so but not this declaration (its header,
// extension/threadpool/threadpool.h, includes pthreadpool.h, which is not shipped);
// these two are declared there as below in executorch 1.5.
namespace executorch::extension::threadpool {
class ThreadPool final {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::extension::TensorPtr;
using executorch::runtime::Error;
using Clock = std::chrono::steady_clock;

const char* const USAGE =
    "usage: pte_runner POLICY.pte --obs OBS.npy --out ACTIONS.npy [--batch N] [--threads N] "
    "[--verbose]\n"
    "       pte_runner POLICY.pte --stdio [--threads N] [--verbose]\n";

struct Failure {
  int code;
  std::string message;
};

[[noreturn]] void fail(int code, const std::string& message) {
  throw Failure{code, message};
}

// File descriptor 2 sent to a temporary file, so the libraries' messages do not reach
// the caller; our own go to the original stderr.
class HeldStderr {
 public:
  explicit HeldStderr(bool hold) {
    std::fflush(stderr);
    saved_ = dup(2);
    if (hold && saved_ >= 0) {
      held_ = std::tmpfile();
      if (held_ != nullptr) {
        dup2(fileno(held_), 2);
      }
    }
  }

  // The last line the libraries wrote that is not cpuinfo's, without ExecuTorch's
  // "E 00:00:00.000123 executorch:file.cpp:12] " prefix.
  std::string last_line() const {
    if (held_ == nullptr) {
      return "";
    }
    std::fflush(stderr);
    std::rewind(held_);
    std::string text, line, last;
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, held_)) > 0) {
      text.append(buffer, n);
    }
    std::istringstream lines(text);
    while (std::getline(lines, line)) {
      if (line.find("cpuinfo") != std::string::npos || line.empty()) {
        continue;
      }
      size_t bracket = line.find("] ");
      last = bracket == std::string::npos ? line : line.substr(bracket + 2);
    }
    return last;
  }

  // One line: control characters and bytes outside ASCII (from a garbage file's
  // header, quoted by ExecuTorch's log) become '?'.
  void report(const std::string& text) const {
    std::string line = "error: " + text;
    for (char& c : line) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) {
        c = '?';
      }
    }
    line.push_back('\n');
    ssize_t ignored = write(saved_ >= 0 ? saved_ : 2, line.data(), line.size());
    (void)ignored;
  }

 private:
  int saved_ = -1;
  std::FILE* held_ = nullptr;
};

const HeldStderr* held_stderr = nullptr;

std::string why(Error error, const char* what) {
  std::string text = std::string(what) + ": " + executorch::runtime::to_string(error);
  std::string logged = held_stderr != nullptr ? held_stderr->last_line() : "";
  return logged.empty() ? text : text + " (" + logged + ")";
}

// --- .npy ----------------------------------------------------------------------------

struct Array {
  std::vector<float> data;
  int64_t rows = 0;
  int64_t cols = 0;
};

Array read_npy(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    fail(2, "cannot read " + path);
  }
  std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    fail(2, path + " is not a .npy file");
  }
  const auto* raw = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t header_len, start;
  if (raw[6] == 1) {
    header_len = raw[8] | (raw[9] << 8);
    start = 10;
  } else {
    if (bytes.size() < 12) {
      fail(2, path + " is not a .npy file");
    }
    header_len = raw[8] | (raw[9] << 8) | (raw[10] << 16) | (static_cast<size_t>(raw[11]) << 24);
    start = 12;
  }
  if (start + header_len > bytes.size()) {
    fail(2, path + ": truncated .npy header");
  }
  std::string header = bytes.substr(start, header_len);
  header.erase(std::remove(header.begin(), header.end(), ' '), header.end());
  if (header.find("'descr':'<f4'") == std::string::npos ||
      header.find("'fortran_order':False") == std::string::npos) {
    fail(2, path + ": expected float32 ('<f4') in C order, the header is " +
                bytes.substr(start, header_len));
  }
  size_t open = header.find("'shape':(");
  size_t close = open == std::string::npos ? open : header.find(')', open);
  if (close == std::string::npos) {
    fail(2, path + ": no shape in the .npy header");
  }
  std::vector<int64_t> shape;
  std::stringstream dims(header.substr(open + 9, close - open - 9));
  std::string dim;
  while (std::getline(dims, dim, ',')) {
    if (!dim.empty()) {
      shape.push_back(std::strtoll(dim.c_str(), nullptr, 10));
    }
  }
  if (shape.size() != 2) {
    fail(2, path + ": expected observations of shape [n, obs_dim], got " +
                std::to_string(shape.size()) + " dimension(s)");
  }
  Array out;
  out.rows = shape[0];
  out.cols = shape[1];
  size_t count = static_cast<size_t>(out.rows * out.cols);
  if (bytes.size() - start - header_len != count * sizeof(float)) {
    fail(2, path + ": the data does not match the header's shape");
  }
  out.data.resize(count);
  std::memcpy(out.data.data(), bytes.data() + start + header_len, count * sizeof(float));
  return out;
}

void write_npy(const std::string& path, const std::string& descr, const std::string& shape,
               const void* data, size_t bytes) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape +
                       ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream file(path, std::ios::binary);
  uint16_t len = static_cast<uint16_t>(header.size());
  file.write("\x93NUMPY\x01\x00", 8);
  file.put(static_cast<char>(len & 0xff));
  file.put(static_cast<char>(len >> 8));
  file << header;
  file.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!file) {
    fail(2, "cannot write " + path);
  }
}

// --- the policy ----------------------------------------------------------------------

// A field of /proc/self/status in bytes (VmHWM: peak RSS), or -1.
int64_t status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      return std::strtoll(line.c_str() + field.size() + 1, nullptr, 10) * 1024;
    }
  }
  return -1;
}

class Policy {
 public:
  Policy(const std::string& path)
      : module_(path, Module::LoadMode::File) {
    auto start = Clock::now();
    Error error = module_.load();
    if (error != Error::Ok) {
      fail(2, why(error, ("cannot load " + path).c_str()));
    }
    error = module_.load_forward();
    if (error != Error::Ok) {
      fail(2, why(error, ("cannot load the forward method of " + path).c_str()));
    }
    auto meta = module_.method_meta("forward");
    if (!meta.ok() || meta->num_inputs() != 1 || meta->num_outputs() != 1) {
      fail(2, path + " is not an edgeag policy: expected forward(obs) -> action");
    }
    auto input = meta->input_tensor_meta(0);
    if (!input.ok() || input->sizes().size() != 2 || input->scalar_type() != ScalarType::Float) {
      fail(2, path + " is not an edgeag policy: expected float32 obs [batch, obs_dim]");
    }
    max_batch_ = input->sizes()[0];
    obs_dim_ = input->sizes()[1];
    load_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    single_obs_.assign(obs_dim_, 0.0f);
    single_ = executorch::extension::from_blob(single_obs_.data(),
                                               {1, static_cast<int32_t>(obs_dim_)});
    run(single_obs_.data(), 1);  // the output's dtype and width
  }

  // Runs `rows` observations; the actions are left in int_actions_ or float_actions_.
  // One observation goes through a [1, obs_dim] tensor made once, as a device acts.
  void run(const float* obs, int64_t rows) {
    TensorPtr tensor = single_;
    if (rows == 1) {
      std::copy(obs, obs + obs_dim_, single_obs_.begin());
    } else {
      tensor = executorch::extension::from_blob(
          const_cast<float*>(obs), {static_cast<int32_t>(rows), static_cast<int32_t>(obs_dim_)});
    }
    auto result = module_.forward(tensor);
    if (!result.ok()) {
      fail(2, why(result.error(), "forward failed"));
    }
    if (result->size() != 1 || !(*result)[0].isTensor()) {
      fail(2, "the program's output is not one tensor");
    }
    const auto& out = (*result)[0].toTensor();
    discrete_ = out.scalar_type() == ScalarType::Long;
    if (discrete_ ? out.dim() != 1 : out.dim() != 2 || out.scalar_type() != ScalarType::Float) {
      fail(2, "the program's output is neither int64 [batch] nor float32 [batch, act_dim]");
    }
    act_dim_ = discrete_ ? 1 : out.size(1);
    if (discrete_) {
      const int64_t* values = out.const_data_ptr<int64_t>();
      int_actions_.assign(values, values + rows);
    } else {
      const float* values = out.const_data_ptr<float>();
      float_actions_.assign(values, values + rows * act_dim_);
    }
  }

  int64_t obs_dim() const { return obs_dim_; }
  int64_t max_batch() const { return max_batch_; }
  int64_t act_dim() const { return act_dim_; }
  bool discrete() const { return discrete_; }
  double load_ms() const { return load_ms_; }
  const std::vector<int64_t>& int_actions() const { return int_actions_; }
  const std::vector<float>& float_actions() const { return float_actions_; }

 private:
  Module module_;
  int64_t obs_dim_ = 0;
  int64_t max_batch_ = 0;
  int64_t act_dim_ = 0;
  bool discrete_ = false;
  double load_ms_ = 0;
  std::vector<float> single_obs_;
  TensorPtr single_;
  std::vector<int64_t> int_actions_;
  std::vector<float> float_actions_;
};

// --- figures -------------------------------------------------------------------------

// Linear interpolation between order statistics (numpy's default, as runner.py).
double quantile(const std::vector<double>& ordered, double q) {
  if (ordered.empty()) {
    return 0;
  }
  double pos = q * (ordered.size() - 1);
  size_t low = static_cast<size_t>(pos);
  size_t high = std::min(low + 1, ordered.size() - 1);
  return ordered[low] + (ordered[high] - ordered[low]) * (pos - low);
}

std::string runtime_name() {
  return std::string("executorch ") + EDGEAG_EXECUTORCH_VERSION + " C++ (pte_runner)";
}

std::string figures(const Policy& policy, std::vector<double> latencies_us, int64_t rows,
                    int64_t batch, int threads) {
  std::sort(latencies_us.begin(), latencies_us.end());
  char text[1024];
  std::snprintf(text, sizeof text,
                "{\"runtime\": \"%s\", \"threads\": %d, \"obs_dim\": %lld, "
                "\"action_dtype\": \"%s\", \"action_dim\": %lld, \"observations\": %lld, "
                "\"batch\": %lld, \"calls\": %zu, \"median_latency_us\": %.3f, "
                "\"p90_latency_us\": %.3f, \"load_ms\": %.3f, \"peak_rss_bytes\": %lld, "
                "\"rss_anon_bytes\": %lld, \"rss_file_bytes\": %lld}",
                runtime_name().c_str(), threads, static_cast<long long>(policy.obs_dim()),
                policy.discrete() ? "int64" : "float32",
                static_cast<long long>(policy.discrete() ? 0 : policy.act_dim()),
                static_cast<long long>(rows), static_cast<long long>(batch), latencies_us.size(),
                quantile(latencies_us, 0.5), quantile(latencies_us, 0.9), policy.load_ms(),
                static_cast<long long>(status_bytes("VmHWM")),
                static_cast<long long>(status_bytes("RssAnon")),
                static_cast<long long>(status_bytes("RssFile")));
  return text;
}

double since_us(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// --- the two modes -------------------------------------------------------------------

int run_files(Policy& policy, const std::string& obs_path, const std::string& out_path,
              int64_t batch, int threads) {
  Array obs = read_npy(obs_path);
  if (obs.cols != policy.obs_dim()) {
    fail(2, obs_path + " holds observations of " + std::to_string(obs.cols) +
                " values, the policy takes " + std::to_string(policy.obs_dim()));
  }
  if (batch > policy.max_batch()) {
    fail(2, "--batch " + std::to_string(batch) + " is above the program's bound of " +
                std::to_string(policy.max_batch()));
  }
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::vector<double> latencies;
  for (int64_t row = 0; row < obs.rows; row += batch) {
    int64_t rows = std::min(batch, obs.rows - row);
    auto start = Clock::now();
    policy.run(obs.data.data() + row * obs.cols, rows);
    if (policy.discrete()) {
      ints.insert(ints.end(), policy.int_actions().begin(), policy.int_actions().end());
    } else {
      floats.insert(floats.end(), policy.float_actions().begin(), policy.float_actions().end());
    }
    latencies.push_back(since_us(start));
  }
  std::string n = std::to_string(obs.rows);
  if (policy.discrete()) {
    write_npy(out_path, "<i8", "(" + n + ",)", ints.data(), ints.size() * sizeof(int64_t));
  } else {
    write_npy(out_path, "<f4", "(" + n + ", " + std::to_string(policy.act_dim()) + ")",
              floats.data(), floats.size() * sizeof(float));
  }
  std::cout << figures(policy, latencies, obs.rows, batch, threads) << std::endl;
  return 0;
}

int run_stdio(Policy& policy, int threads) {
  std::cout << "{\"runtime\": \"" << runtime_name() << "\", \"obs_dim\": " << policy.obs_dim()
            << ", \"action_dtype\": \""
            << (policy.discrete() ? "int64" : "float32")
            << "\", \"action_dim\": " << (policy.discrete() ? 0 : policy.act_dim()) << "}"
            << std::endl;
  std::vector<float> obs(policy.obs_dim());
  std::vector<float> values(policy.discrete() ? 1 : policy.act_dim());
  std::vector<double> latencies;
  std::string line, reply;
  int64_t count = 0;
  while (std::getline(std::cin, line)) {
    const char* cursor = line.c_str();
    int64_t got = 0;
    for (char* end = nullptr;; cursor = end) {
      float value = std::strtof(cursor, &end);
      if (end == cursor) {
        break;
      }
      if (got < policy.obs_dim()) {
        obs[got] = value;
      }
      ++got;
    }
    while (*cursor == ' ' || *cursor == '\t' || *cursor == '\r') {
      ++cursor;
    }
    if (got != policy.obs_dim() || *cursor != '\0') {
      fail(2, "observation line " + std::to_string(count + 1) + ": expected " +
                  std::to_string(policy.obs_dim()) + " numbers");
    }
    auto start = Clock::now();
    policy.run(obs.data(), 1);
    int64_t action = policy.discrete() ? policy.int_actions()[0] : 0;
    if (!policy.discrete()) {
      std::copy(policy.float_actions().begin(), policy.float_actions().end(), values.begin());
    }
    latencies.push_back(since_us(start));
    reply.clear();
    char number[32];
    if (policy.discrete()) {
      std::snprintf(number, sizeof number, "%lld", static_cast<long long>(action));
      reply = number;
    } else {
      for (size_t i = 0; i < values.size(); ++i) {
        std::snprintf(number, sizeof number, i ? " %.9g" : "%.9g", values[i]);
        reply += number;
      }
    }
    reply.push_back('\n');
    std::cout.write(reply.data(), static_cast<std::streamsize>(reply.size()));
    std::cout.flush();
    ++count;
  }
  std::cout << figures(policy, latencies, count, 1, threads) << std::endl;
  return 0;
}

int64_t positive(const char* flag, const char* text) {
  char* end = nullptr;
  long long value = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || value < 1) {
    fail(2, std::string("invalid ") + flag + " " + text + ": expected a positive integer");
  }
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  std::string policy_path, obs_path, out_path;
  bool stdio = false, verbose = false;
  int64_t batch = 1, threads = 1;
  std::ios::sync_with_stdio(false);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--verbose") {
      verbose = true;
    }
  }
  HeldStderr held(!verbose);
  held_stderr = &held;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      bool has_value = i + 1 < argc;
      if (arg == "--stdio") {
        stdio = true;
      } else if (arg == "--verbose") {
      } else if (arg == "--obs" && has_value) {
        obs_path = argv[++i];
      } else if (arg == "--out" && has_value) {
        out_path = argv[++i];
      } else if (arg == "--batch" && has_value) {
        batch = positive("--batch", argv[++i]);
      } else if (arg == "--threads" && has_value) {
        threads = positive("--threads", argv[++i]);
      } else if (arg == "-h" || arg == "--help") {
        std::cout << USAGE;
        return 0;
      } else if (arg.rfind("--", 0) != 0 && policy_path.empty()) {
        policy_path = arg;
      } else {
        fail(2, "unexpected argument " + arg + " (see --help)");
      }
    }
    if (policy_path.empty() || (stdio == (!obs_path.empty() || !out_path.empty())) ||
        (!stdio && (obs_path.empty() || out_path.empty()))) {
      fail(2, "expected a policy and either --stdio or --obs and --out (see --help)");
    }
    // XNNPACK takes the thread pool when the method is loaded: one thread means none.
    executorch::extension::threadpool::NoThreadPoolGuard single_thread;
    executorch::extension::threadpool::NoThreadPoolGuard::set_enabled(threads == 1);
    if (threads > 1) {
      executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(
          static_cast<uint32_t>(threads));
    }
    Policy policy(policy_path);
    return stdio ? run_stdio(policy, static_cast<int>(threads))
                 : run_files(policy, obs_path, out_path, batch, static_cast<int>(threads));
  } catch (const Failure& failure) {
    held.report(failure.message);
    return failure.code;
  } catch (const std::exception& e) {
    held.report(std::string("internal error: ") + e.what());
    return 1;
  }
}
