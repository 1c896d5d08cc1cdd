// edgeopt_run: run an edgeopt artifact with no Python on the device: the TVM runtime (libtvm_runtime.so,
// libtvm_ffi.so) and this one file.
//
//   edgeopt_run <flat-dir> <out-prefix> [--repeat N] <input files (raw bytes, C order)...>
//
// <flat-dir> is what edgeopt.cxx.export_flat writes on the host from a verified artifact: kernels.so,
// weights.bin (every weight at a 64-byte aligned offset) and plan.txt, one record per line:
//   edgeopt-flat 1
//   arena <bytes>
//   value <name> <input|buffer|const> <dtype> <byte offset> <rank> <dims...>   (arena or weights.bin offset)
//   view <name> <source> <dtype> <rank> <dims...>                              (a reshape: same memory)
//   step <kernel> <argc> <value names...>
//   input <name>    /    output <name>
// Every activation lives at its planned offset in one 64-byte aligned arena, as in the Python runtime.
// Outputs are written to <out-prefix><i>.bin; with --repeat N the plan runs N more times and the median
// wall time of one run is printed as "median_ms <t>".
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/tvm_ffi.h>

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

[[noreturn]] void Fail(const std::string& msg) {
  std::fprintf(stderr, "edgeopt_run: %s\n", msg.c_str());
  std::exit(2);
}

DLDataType ParseDtype(const std::string& s) {
  static const std::map<std::string, DLDataType> kTypes = {
      {"f32", {kDLFloat, 32, 1}}, {"f16", {kDLFloat, 16, 1}}, {"f64", {kDLFloat, 64, 1}},
      {"i8", {kDLInt, 8, 1}},     {"u8", {kDLUInt, 8, 1}},    {"i32", {kDLInt, 32, 1}},
      {"i64", {kDLInt, 64, 1}},   {"bool", {kDLBool, 8, 1}}};
  auto it = kTypes.find(s);
  if (it == kTypes.end()) Fail("unknown dtype " + s);
  return it->second;
}

struct Value {
  DLTensor t{};
  std::vector<int64_t> shape;
};

std::vector<char> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) Fail("cannot open " + path);
  std::vector<char> data(static_cast<size_t>(f.tellg()));
  f.seekg(0);
  f.read(data.data(), static_cast<std::streamsize>(data.size()));
  return data;
}

char* AlignedAlloc(size_t bytes) {
  void* p = std::aligned_alloc(64, std::max<size_t>(64, (bytes + 63) / 64 * 64));
  if (!p) Fail("out of memory");
  return static_cast<char*>(p);
}

size_t NumBytes(const Value& v) {
  size_t n = (v.t.dtype.bits * v.t.dtype.lanes + 7) / 8;
  for (int64_t d : v.shape) n *= static_cast<size_t>(d);
  return n;
}

std::vector<int64_t> ReadDims(std::istringstream& ss) {
  int rank = 0;
  ss >> rank;
  std::vector<int64_t> dims(rank);
  for (auto& d : dims) ss >> d;
  return dims;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) Fail("usage: edgeopt_run <flat-dir> <out-prefix> [--repeat N] <input files...>");
  const std::string dir = argv[1], out_prefix = argv[2];
  int repeat = 0, first_input = 3;
  if (argc > 4 && std::string(argv[3]) == "--repeat") repeat = std::atoi(argv[4]), first_input = 5;

  std::ifstream plan(dir + "/plan.txt");
  std::string magic;
  int version = 0;
  if (!(plan >> magic >> version) || magic != "edgeopt-flat" || version != 1) Fail(dir + "/plan.txt is not a flat plan");
  char* weights = nullptr;
  size_t weights_bytes = 0;
  {
    std::vector<char> file = ReadFile(dir + "/weights.bin");
    weights_bytes = file.size();
    weights = AlignedAlloc(weights_bytes);
    std::memcpy(weights, file.data(), weights_bytes);
  }

  char* arena = nullptr;
  size_t arena_bytes = 0;
  std::map<std::string, Value> values;
  std::vector<std::pair<std::string, std::vector<std::string>>> steps;
  std::vector<std::string> inputs, outputs;
  for (std::string line; std::getline(plan, line);) {
    std::istringstream ss(line);
    std::string kind;
    if (!(ss >> kind)) continue;
    if (kind == "arena") {
      ss >> arena_bytes;
      arena = AlignedAlloc(arena_bytes);
    } else if (kind == "value" || kind == "view") {
      std::string name, where, dtype;
      ss >> name >> where >> dtype;
      size_t offset = 0;
      if (kind == "value") ss >> offset;
      Value v;
      v.t.dtype = ParseDtype(dtype);
      v.shape = ReadDims(ss);
      v.t.device = DLDevice{kDLCPU, 0};
      if (kind == "view") {
        auto src = values.find(where);
        if (src == values.end()) Fail("view " + name + " of unknown value " + where);
        v.t.data = src->second.t.data;
      } else {
        bool is_const = where == "const";
        if (!is_const && !arena) Fail("plan.txt: 'arena' must come before the values");
        if (offset % 64 || offset + NumBytes(v) > (is_const ? weights_bytes : arena_bytes))
          Fail("value " + name + " lies outside its buffer or is misaligned (damaged plan)");
        v.t.data = (is_const ? weights : arena) + offset;
      }
      values[name] = std::move(v);
    } else if (kind == "step") {
      std::string kernel;
      int n = 0;
      ss >> kernel >> n;
      std::vector<std::string> args(n);
      for (auto& a : args) ss >> a;
      steps.emplace_back(kernel, args);
    } else if (kind == "input") {
      inputs.emplace_back();
      ss >> inputs.back();
    } else if (kind == "output") {
      outputs.emplace_back();
      ss >> outputs.back();
    } else {
      Fail("unknown plan record " + kind);
    }
  }
  for (auto& kv : values) {  // shapes are final now (the map no longer moves its elements)
    kv.second.t.ndim = static_cast<int32_t>(kv.second.shape.size());
    kv.second.t.shape = kv.second.shape.data();
  }
  if (argc - first_input != static_cast<int>(inputs.size()))
    Fail("the model takes " + std::to_string(inputs.size()) + " input file(s), got " +
         std::to_string(argc - first_input));
  for (size_t i = 0; i < inputs.size(); ++i) {
    Value& v = values.at(inputs[i]);
    std::vector<char> data = ReadFile(argv[first_input + i]);
    if (data.size() != NumBytes(v))
      Fail(std::string(argv[first_input + i]) + ": " + std::to_string(data.size()) + " bytes, but input '" +
           inputs[i] + "' needs " + std::to_string(NumBytes(v)));
    std::memcpy(v.t.data, data.data(), data.size());
  }

  // TVM's pool defaults to half the cores; like the Python runtime, use every core this process may run on
  // (TVM_NUM_THREADS, when set, wins)
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0)
    setenv("TVM_NUM_THREADS", std::to_string(CPU_COUNT(&cpus)).c_str(), /*overwrite=*/0);
  ffi::Module lib = ffi::Module::LoadFromFile(dir + "/kernels.so");
  std::vector<std::pair<ffi::Function, std::vector<ffi::AnyView>>> calls;
  for (auto& [kernel, args] : steps) {
    auto fn = lib->GetFunction(kernel);
    if (!fn.has_value()) Fail("kernels.so has no kernel " + kernel);
    std::vector<ffi::AnyView> views;
    for (auto& a : args) views.emplace_back(&values.at(a).t);
    calls.emplace_back(*fn, std::move(views));
  }
  auto run_once = [&]() {
    ffi::Any ret;
    for (auto& [fn, args] : calls) fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &ret);
  };
  run_once();
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Value& v = values.at(outputs[i]);
    std::ofstream(out_prefix + std::to_string(i) + ".bin", std::ios::binary)
        .write(static_cast<const char*>(v.t.data), static_cast<std::streamsize>(NumBytes(v)));
  }
  if (repeat > 0) {
    std::vector<double> ms;
    for (int i = 0; i < repeat; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      run_once();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("median_ms %.4f\n", ms[ms.size() / 2]);
  }
  std::free(arena);
  std::free(weights);
  return 0;
}
