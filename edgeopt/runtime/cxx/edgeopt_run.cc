// edgeopt_run: run an edgeopt artifact with no Python on the device: the TVM runtime (libtvm_runtime.so,
// libtvm_ffi.so) and this one file.
//
//   edgeopt_run <flat-dir> <out-prefix> [--repeat N] <input files (raw bytes, C order)...>
//
// <flat-dir> is what edgeopt.cxx.export_flat writes on the host from a verified artifact: kernels.so,
// weights.bin (every weight at a 64-byte aligned offset) and plan.txt, one record per line:
//   edgeopt-flat 2
//   arena <bytes>
//   value <name> <input|buffer> <dtype> <arena offset> <live first> <live last> <rank> <dims...>
//   value <name> const <dtype> <weights.bin offset> <rank> <dims...>
//   view <name> <source> <dtype> <rank> <dims...>                 (a reshape: same memory; source defined above)
//   step <kernel> <num outputs> <argc> <value names...> <num in-place pairs> (<input> <output>)...
//   input <name>    /    output <name>
// Every activation lives at its planned offset in one 64-byte aligned arena, as in the Python runtime.
// Outputs are written to <out-prefix><i>.bin; with --repeat N the plan runs N more times and the median
// wall time of one run is printed as "median_ms <t>".
//
// plan.txt is validated as a whole before anything is allocated or any kernel is loaded, independently of the
// host's checks (edgeopt/runtime/plan_check.py; the same rules): every tensor inside the arena or weights.bin,
// aligned, with overflow-safe sizes; views the same dtype and bytes as their source; every name known; argument
// counts consistent; kernels write buffers only, each once, before anything reads it; every output written;
// each tensor's live range covers its uses; and no two tensors in use at one step share arena bytes, except a
// step's in-place pair whose input dies there. The arena is no larger than all its tensors side by side (each
// rounded up to 256 bytes, the largest alignment a target plans with), so no plan makes it allocate more than its
// tensors' own bytes. Values, steps and each step's arguments and in-place pairs are at most 2^20, and every check
// takes O(n log n) time in the plan's size. A bad plan, a bad input file or a kernel refusing its arguments ends the
// run with a message on stderr and exit status 2, never a crash.
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/tvm_ffi.h>

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <cerrno>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

constexpr uint64_t kAlign = 64;
constexpr uint64_t kMaxElements = uint64_t{1} << 40;  // per tensor: no size computation below can overflow
constexpr uint64_t kMaxBytes = uint64_t{1} << 50;     // offsets and the arena
constexpr uint64_t kArenaSlack = 256;                 // the arena may exceed its tensors' needs by this much
constexpr uint64_t kMaxTargetAlign = 256;  // the largest alignment a target plans with (Vulkan/WebGPU)
constexpr size_t kMaxRank = 32;
constexpr size_t kMaxValues = size_t{1} << 20;  // values (and input, output records) in a plan
constexpr size_t kMaxSteps = size_t{1} << 20;
constexpr size_t kMaxArgs = size_t{1} << 20;  // arguments, and in-place pairs, of one step

[[noreturn]] void Fail(const std::string& msg) {
  std::fprintf(stderr, "edgeopt_run: %s\n", msg.c_str());
  std::exit(2);
}

[[noreturn]] void Bad(const std::string& msg) { Fail("invalid plan.txt: " + msg); }

struct Dtype {
  DLDataType dl;
  uint64_t size;
};

Dtype ParseDtype(const std::string& s) {
  static const std::map<std::string, Dtype> kTypes = {
      {"f32", {{kDLFloat, 32, 1}, 4}}, {"f16", {{kDLFloat, 16, 1}, 2}}, {"f64", {{kDLFloat, 64, 1}, 8}},
      {"i8", {{kDLInt, 8, 1}, 1}},     {"u8", {{kDLUInt, 8, 1}, 1}},    {"i16", {{kDLInt, 16, 1}, 2}},
      {"i32", {{kDLInt, 32, 1}, 4}},   {"i64", {{kDLInt, 64, 1}, 8}},   {"bool", {{kDLBool, 8, 1}, 1}}};
  auto it = kTypes.find(s);
  if (it == kTypes.end()) Bad("unknown dtype " + s);
  return it->second;
}

struct Value {
  std::string kind;  // input, buffer, const, view
  std::string dtype_name, base;  // base: the input, buffer or const a view is of (itself otherwise)
  Dtype dtype{};
  std::vector<int64_t> shape;
  uint64_t offset = 0, nbytes = 0;
  int64_t live_first = 0, live_last = 0;
  DLTensor t{};
};

struct Step {
  std::string kernel;
  size_t num_outputs = 0;
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> inplace;
};

struct Plan {
  uint64_t arena_bytes = 0;
  bool has_arena = false;
  std::map<std::string, Value> values;  // a map never moves its elements: DLTensors may point into them
  std::vector<std::string> storage;     // inputs and buffers, in file order
  std::vector<Step> steps;
  std::vector<std::string> inputs, outputs;
};

// The whitespace-separated fields of one plan.txt line, read with checks.
class Fields {
 public:
  Fields(const std::string& line, int number) : where_("line " + std::to_string(number)) {
    std::istringstream ss(line);
    for (std::string f; ss >> f;) fields_.push_back(f);
  }
  bool Empty() const { return fields_.empty(); }
  size_t Left() const { return fields_.size() - next_; }
  std::string Next(const char* what) {
    if (next_ >= fields_.size()) Bad(where_ + ": missing " + what);
    return fields_[next_++];
  }
  uint64_t Uint(const char* what, uint64_t max) {
    std::string s = Next(what);
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v > max)
      Bad(where_ + ": " + what + " '" + s.substr(0, 40) + "' is not an integer in [0, " + std::to_string(max) + "]");
    return v;
  }
  void End() {
    if (next_ != fields_.size()) Bad(where_ + ": unexpected '" + fields_[next_].substr(0, 40) + "'");
  }
  const std::string& where() const { return where_; }

 private:
  std::string where_;
  std::vector<std::string> fields_;
  size_t next_ = 0;
};

std::string Quote(const std::string& name) { return "'" + name.substr(0, 80) + "'"; }

uint64_t Aligned(uint64_t nbytes, uint64_t align = kAlign) {
  return std::max(align, (nbytes + align - 1) / align * align);
}

void ReadShape(Fields& f, Value& v) {
  size_t rank = f.Uint("rank", kMaxRank);
  uint64_t count = 1;
  for (size_t i = 0; i < rank; ++i) {
    uint64_t d = f.Uint("dimension", kMaxElements);
    if (d != 0 && count > kMaxElements / d) Bad(f.where() + ": the shape has more than 2^40 elements");
    count *= d;
    v.shape.push_back(static_cast<int64_t>(d));
  }
  v.nbytes = count * v.dtype.size;  // <= 2^43
}

void ParseValue(Fields& f, bool view, Plan& p) {
  std::string name = f.Next("name");
  if (p.values.count(name)) Bad(f.where() + ": value " + Quote(name) + " is defined twice");
  if (p.values.size() >= kMaxValues) Bad(f.where() + ": more than " + std::to_string(kMaxValues) + " values");
  Value v;
  if (view) {
    std::string src = f.Next("source");
    auto it = p.values.find(src);
    if (it == p.values.end()) Bad(f.where() + ": view " + Quote(name) + " of " + Quote(src) + ", not defined above");
    v.kind = "view";
    v.base = it->second.base;
    v.dtype_name = f.Next("dtype");
    v.dtype = ParseDtype(v.dtype_name);
    ReadShape(f, v);
    if (v.dtype_name != it->second.dtype_name || v.nbytes != it->second.nbytes)
      Bad("view " + Quote(name) + " is not a reshape of " + Quote(src) + " (another dtype or byte size)");
  } else {
    v.kind = f.Next("kind");
    if (v.kind != "input" && v.kind != "buffer" && v.kind != "const") Bad(f.where() + ": unknown kind " + v.kind);
    v.base = name;
    v.dtype_name = f.Next("dtype");
    v.dtype = ParseDtype(v.dtype_name);
    v.offset = f.Uint("offset", kMaxBytes);
    if (v.kind != "const") {
      v.live_first = static_cast<int64_t>(f.Uint("live first", kMaxBytes));
      v.live_last = static_cast<int64_t>(f.Uint("live last", kMaxBytes));
      if (v.live_first > v.live_last) Bad("value " + Quote(name) + ": live range ends before it starts");
      p.storage.push_back(name);
    }
    ReadShape(f, v);
    if (v.offset % kAlign) Bad("value " + Quote(name) + ": offset " + std::to_string(v.offset) + " is misaligned");
  }
  f.End();
  p.values.emplace(name, std::move(v));
}

void ParseStep(Fields& f, Plan& p) {
  if (p.steps.size() >= kMaxSteps) Bad(f.where() + ": more than " + std::to_string(kMaxSteps) + " steps");
  Step s;
  s.kernel = f.Next("kernel");
  s.num_outputs = f.Uint("number of outputs", kMaxBytes);
  size_t argc = f.Uint("argument count", f.Left());
  if (argc > kMaxArgs) Bad(f.where() + ": more than " + std::to_string(kMaxArgs) + " arguments");
  if (s.num_outputs < 1 || s.num_outputs > argc) Bad(f.where() + ": the outputs are not among the arguments");
  for (size_t i = 0; i < argc; ++i) s.args.push_back(f.Next("argument"));
  size_t pairs = f.Uint("in-place pair count", f.Left() / 2);
  if (pairs > kMaxArgs) Bad(f.where() + ": more than " + std::to_string(kMaxArgs) + " in-place pairs");
  for (size_t i = 0; i < pairs; ++i) {
    std::string src = f.Next("in-place input");
    s.inplace.emplace_back(src, f.Next("in-place output"));
  }
  f.End();
  p.steps.push_back(std::move(s));
}

Plan ReadPlan(const std::string& path) {
  std::ifstream in(path);
  if (!in) Fail("cannot open " + path);
  Plan p;
  std::string line;
  if (!std::getline(in, line) || line != "edgeopt-flat 2")
    Fail(path + " is not a flat plan of version 2 (export it again with this edgeopt's export_flat)");
  for (int number = 2; std::getline(in, line); ++number) {
    Fields f(line, number);
    if (f.Empty()) continue;
    std::string kind = f.Next("record");
    if (kind == "arena") {
      if (p.has_arena) Bad(f.where() + ": a second arena");
      p.arena_bytes = f.Uint("arena bytes", kMaxBytes);
      p.has_arena = true;
      f.End();
    } else if (kind == "value" || kind == "view") {
      ParseValue(f, kind == "view", p);
    } else if (kind == "step") {
      ParseStep(f, p);
    } else if (kind == "input" || kind == "output") {
      auto& names = kind == "input" ? p.inputs : p.outputs;
      if (names.size() >= kMaxValues) Bad(f.where() + ": more than " + std::to_string(kMaxValues) + " " + kind + "s");
      names.push_back(f.Next("name"));
      f.End();
    } else {
      Bad(f.where() + ": unknown record " + kind.substr(0, 40));
    }
  }
  if (!p.has_arena) Bad("no arena record");
  return p;
}

const Value& Get(const Plan& p, const std::string& name, const std::string& where) {
  auto it = p.values.find(name);
  if (it == p.values.end()) Bad(where + " names " + Quote(name) + ", which is not a value");
  return it->second;
}

// The plan's rules (as edgeopt/runtime/plan_check.py): see the header.
void Validate(const Plan& p, uint64_t weights_bytes) {
  uint64_t need = 0, unshared = 0;
  for (auto& [name, v] : p.values) {
    if (v.kind == "const" && (v.offset > weights_bytes || v.nbytes > weights_bytes - v.offset))
      Bad("weight " + Quote(name) + " lies outside weights.bin");
    if (v.kind != "input" && v.kind != "buffer") continue;
    uint64_t end = v.offset + Aligned(v.nbytes);  // <= 2^50 + 2^43: no overflow
    if (end > p.arena_bytes) Bad("value " + Quote(name) + " lies outside the arena");
    need = std::max(need, end);
    // all of them side by side, each rounded up to 256: the most the planner's arena takes (saturating past 2^50)
    unshared = std::min(unshared + Aligned(v.nbytes, kMaxTargetAlign), kMaxBytes + 1);
  }
  if (p.arena_bytes > need + kArenaSlack) Bad("the arena is larger than its tensors need");
  if (p.arena_bytes > unshared)
    Bad("the arena is larger than its tensors need: " + std::to_string(p.arena_bytes) + " bytes, more than all " +
        std::to_string(p.storage.size()) + " of them side by side (" + std::to_string(unshared) + " bytes)");
  std::set<std::string> listed;
  for (auto& name : p.inputs) {
    if (Get(p, name, "an input record").kind != "input" || !listed.insert(name).second)
      Bad("input " + Quote(name) + " is not an input value, or is listed twice");
  }
  for (auto& name : p.storage)
    if (p.values.at(name).kind == "input" && !listed.count(name)) Bad("input value " + Quote(name) + " is not an input");
  for (auto& name : p.outputs) Get(p, name, "an output record");

  const int64_t num_steps = static_cast<int64_t>(p.steps.size());
  std::map<std::string, std::pair<size_t, std::vector<std::pair<std::string, std::vector<int64_t>>>>> signature;
  std::map<std::string, int64_t> writer, first, last;
  for (int64_t i = 0; i < num_steps; ++i) {
    const Step& s = p.steps[i];
    std::string where = "step " + std::to_string(i) + " (" + s.kernel.substr(0, 80) + ")";
    std::vector<std::pair<std::string, std::vector<int64_t>>> sig;
    for (auto& a : s.args) {
      const Value& v = Get(p, a, where);
      sig.emplace_back(v.dtype_name, v.shape);
    }
    auto known = signature.emplace(s.kernel, std::make_pair(s.num_outputs, sig));
    if (!known.second && known.first->second != std::make_pair(s.num_outputs, sig))
      Bad(where + ": its arguments differ from another step of that kernel");
    size_t num_in = s.args.size() - s.num_outputs;
    for (size_t k = 0; k < s.args.size(); ++k) {
      const std::string& base = p.values.at(s.args[k]).base;
      const Value& b = p.values.at(base);
      if (k < num_in) {
        if (b.kind == "buffer" && !writer.count(base)) Bad(where + " reads " + Quote(s.args[k]) + " before it is written");
        if (b.kind != "const") last[base] = i;
      } else {
        if (b.kind != "buffer") Bad(where + " writes " + Quote(s.args[k]) + ", which is not a buffer");
        if (!writer.emplace(base, i).second) Bad(where + " writes " + Quote(s.args[k]) + " a second time");
      }
    }
    if (s.inplace.empty()) continue;
    std::unordered_set<std::string_view> ins(s.args.begin(), s.args.begin() + static_cast<std::ptrdiff_t>(num_in));
    std::unordered_set<std::string_view> outs(s.args.begin() + static_cast<std::ptrdiff_t>(num_in), s.args.end());
    for (auto& [src, dst] : s.inplace) {
      if (!ins.count(src) || !outs.count(dst))
        Bad(where + ": an in-place pair is not (an input argument, an output argument)");
    }
  }
  for (auto& name : p.storage) {
    const Value& v = p.values.at(name);
    if (v.kind == "buffer" && !writer.count(name)) Bad("buffer " + Quote(name) + " is written by no step");
    first[name] = v.kind == "buffer" ? writer[name] : 0;
    last[name] = std::max(last.count(name) ? last[name] : 0, first[name]);
  }
  for (auto& name : p.outputs) {
    const std::string& base = p.values.at(name).base;
    if (first.count(base)) last[base] = num_steps;
  }
  for (auto& name : p.storage) {
    const Value& v = p.values.at(name);
    if (v.live_last > num_steps) Bad("value " + Quote(name) + ": its live range ends after the last step");
    if (first[name] < v.live_first || last[name] > v.live_last)
      Bad("value " + Quote(name) + " is used outside its declared live range");
  }
  // in-place pairs that may share bytes: the input dies at the step, is read there through that argument only,
  // and has the output's dtype and shape
  std::set<std::pair<std::string, std::string>> shared;
  for (int64_t i = 0; i < num_steps; ++i) {
    const Step& s = p.steps[i];
    if (s.inplace.empty()) continue;
    size_t num_in = s.args.size() - s.num_outputs;
    std::unordered_map<std::string_view, size_t> reads;  // storage -> the step's arguments that read it
    for (size_t k = 0; k < num_in; ++k) ++reads[p.values.at(s.args[k]).base];
    for (auto& [src, dst] : s.inplace) {
      const std::string &u = p.values.at(src).base, &w = p.values.at(dst).base;
      if (!first.count(u) || last[u] != i || writer[w] != i) continue;
      const Value &a = p.values.at(src), &b = p.values.at(dst);
      if (reads[u] == 1 && a.dtype_name == b.dtype_name && a.shape == b.shape) shared.emplace(u, w);
    }
  }
  // No two tensors in use at one step share a byte: a sweep over the steps, in O(n log n). Tensors start in order
  // of (first step, name); before each starts, those whose last step is past are dropped. The live ones are kept by
  // offset, in groups of one offset whose byte ranges are pairwise disjoint (the members of a group have the same
  // bytes: an in-place pair), so a new tensor shares bytes with a live one iff it does with the group at the
  // largest offset below its end.
  std::vector<std::pair<int64_t, const std::string*>> order;
  std::vector<std::vector<const std::string*>> ending(static_cast<size_t>(num_steps) + 1);
  for (auto& name : p.storage) {
    order.emplace_back(first[name], &name);
    ending[static_cast<size_t>(last[name])].push_back(&name);  // last <= live last <= num_steps: checked above
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : *a.second < *b.second;
  });
  std::map<uint64_t, std::vector<const std::string*>> groups;  // offset -> the live tensors there
  int64_t swept = 0;  // the tensors whose last step is before this one are dropped
  for (auto& [start, t] : order) {
    for (; swept < start; ++swept) {
      for (const std::string* a : ending[static_cast<size_t>(swept)]) {
        auto g = groups.find(p.values.at(*a).offset);
        g->second.erase(std::find(g->second.begin(), g->second.end(), a));
        if (g->second.empty()) groups.erase(g);
      }
    }
    const Value& vt = p.values.at(*t);
    auto it = groups.lower_bound(vt.offset + Aligned(vt.nbytes));
    if (it != groups.begin()) {
      --it;
      const Value& head = p.values.at(*it->second.front());
      if (it->first + Aligned(head.nbytes) > vt.offset) {
        for (const std::string* a : it->second) {
          const Value& va = p.values.at(*a);
          bool same = va.offset == vt.offset && va.nbytes == vt.nbytes;
          if (!same || (!shared.count({*a, *t}) && !shared.count({*t, *a})))
            Bad("values " + Quote(*a) + " and " + Quote(*t) + " are in use at the same step and share arena bytes");
        }
      }
    }
    groups[vt.offset].push_back(t);  // a new group, or an in-place pair: the same bytes as every tensor there
  }
}

std::vector<char> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) Fail("cannot open " + path);
  std::vector<char> data(static_cast<size_t>(f.tellg()));
  f.seekg(0);
  f.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (!f) Fail("cannot read " + path);
  return data;
}

char* AlignedAlloc(uint64_t bytes) {
  void* p = std::aligned_alloc(kAlign, Aligned(bytes));
  if (!p) Fail("out of memory");
  return static_cast<char*>(p);
}

int Run(int argc, char** argv) {
  if (argc < 3) Fail("usage: edgeopt_run <flat-dir> <out-prefix> [--repeat N] <input files...>");
  const std::string dir = argv[1], out_prefix = argv[2];
  int repeat = 0, first_input = 3;
  if (argc > 4 && std::string(argv[3]) == "--repeat") repeat = std::atoi(argv[4]), first_input = 5;

  Plan p = ReadPlan(dir + "/plan.txt");
  std::vector<char> weight_file = ReadFile(dir + "/weights.bin");
  Validate(p, weight_file.size());
  char* weights = AlignedAlloc(weight_file.size());
  std::memcpy(weights, weight_file.data(), weight_file.size());
  weight_file = {};
  char* arena = AlignedAlloc(p.arena_bytes);
  for (auto& [name, v] : p.values) {  // views point at their base's bytes
    const Value& b = p.values.at(v.base);
    v.t.data = (b.kind == "const" ? weights : arena) + b.offset;
    v.t.device = DLDevice{kDLCPU, 0};
    v.t.dtype = v.dtype.dl;
    v.t.ndim = static_cast<int32_t>(v.shape.size());
    v.t.shape = v.shape.data();
  }
  if (argc - first_input != static_cast<int>(p.inputs.size()))
    Fail("the model takes " + std::to_string(p.inputs.size()) + " input file(s), got " +
         std::to_string(argc - first_input));
  for (size_t i = 0; i < p.inputs.size(); ++i) {
    Value& v = p.values.at(p.inputs[i]);
    std::vector<char> data = ReadFile(argv[first_input + i]);
    if (data.size() != v.nbytes)
      Fail(std::string(argv[first_input + i]) + ": " + std::to_string(data.size()) + " bytes, but input '" +
           p.inputs[i] + "' needs " + std::to_string(v.nbytes));
    std::memcpy(v.t.data, data.data(), data.size());
  }

  // TVM's pool defaults to half the cores; like the Python runtime, use every core this process may run on
  // (TVM_NUM_THREADS, when set, wins)
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0)
    setenv("TVM_NUM_THREADS", std::to_string(CPU_COUNT(&cpus)).c_str(), /*overwrite=*/0);
#if defined(__x86_64__) && defined(__linux__)
  // int8 kernels built for a CPU with AMX may run on its tiles (edgeopt/lower/amx.py), which Linux gives a process
  // only on request (once; it covers every thread). kernels.so asks too when loaded (runtime/amx_tiles.c); asking
  // here first tells a refusal apart: a CPU without AMX refuses and its artifacts have no tile code (the host
  // checked the artifact's CPU features before export_flat), on one with AMX a refusal is worth a warning
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1))  // CPUID.(7,0):EDX[24] AMX-TILE
      std::fprintf(stderr, "warning: Linux refused this process AMX tiles (%s): an artifact whose kernels use them "
                   "(manifest target amx_tiles) stops with an illegal instruction; recompile it with "
                   "mattr=['-amx-tile', '-amx-int8']\n", std::strerror(errno));
  }
#endif
  ffi::Module lib = ffi::Module::LoadFromFile(dir + "/kernels.so");
  // the library's parallel loops on edgeopt's thread pool (thread_pool.c), as the Python runtime does
  const char* pool = getenv("EDGEOPT_THREAD_POOL");
  if (auto install = lib->GetFunction("edgeopt_thread_pool"); install && !(pool && std::string(pool) == "tvm"))
    (*install)();
  std::vector<std::pair<ffi::Function, std::vector<ffi::AnyView>>> calls;
  for (auto& s : p.steps) {
    auto fn = lib->GetFunction(s.kernel);
    if (!fn.has_value()) Fail("kernels.so has no kernel " + s.kernel);
    std::vector<ffi::AnyView> views;
    for (auto& a : s.args) views.emplace_back(&p.values.at(a).t);
    calls.emplace_back(*fn, std::move(views));
  }
  auto run_once = [&]() {
    ffi::Any ret;
    for (size_t i = 0; i < calls.size(); ++i) {
      try {
        calls[i].first.CallPacked(calls[i].second.data(), static_cast<int32_t>(calls[i].second.size()), &ret);
      } catch (const std::exception& e) {  // the kernel's own checks: argument count, shapes, dtypes
        Fail("step " + std::to_string(i) + " (" + p.steps[i].kernel + ") refused its arguments: " + e.what());
      }
    }
  };
  run_once();
  for (size_t i = 0; i < p.outputs.size(); ++i) {
    const Value& v = p.values.at(p.outputs[i]);
    std::ofstream(out_prefix + std::to_string(i) + ".bin", std::ios::binary)
        .write(static_cast<const char*>(v.t.data), static_cast<std::streamsize>(v.nbytes));
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

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    Fail(std::string("error: ") + e.what());
  } catch (...) {
    Fail("unknown error");
  }
}
