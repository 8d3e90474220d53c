// edgert-run — run an edgert bundle through the C API and report as one JSON line.
//
//   edgert-run BUNDLE_DIR [--input NAME=FILE.npy]... [--golden] [--output-dir DIR]
//              [--warmup N] [--repeat N]
//   edgert-run BUNDLE_DIR --stream FRAMES.npy [--output-dir DIR] [--repeat N]   (continual step models)
//              [--profile [--per-op] [--energy SPEC|auto]... [--idle-ms N] [--active-ms N] [--sample-ms N]]
//   edgert-run --rpc-server [...]      TVM RPC server for tuning on the device (rpc_server.cc)
//
// stdout gets exactly one line, "EDGERT " + JSON, whatever happens, so the host can
// parse the result the same way over any transport; messages for people go to stderr.

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <new>
#include <set>
#include <map>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "edgert.h"

// rpc_server.cc: `edgert-run --rpc-server ...`; prints its own EDGERT lines, returns the exit status.
int EdgertRpcServerMain(int argc, char** argv);
// A JSON string literal; rpc_server.cc prints its EDGERT lines with it too.
std::string EdgertJsonQuote(const std::string& s);

namespace {

const char* kUsage =
    "usage: edgert-run BUNDLE_DIR [--input NAME=FILE.npy]... [--golden] [--output-dir DIR] "
    "[--warmup N] [--repeat N] [--profile [--per-op] [--energy SPEC|auto]... [--idle-ms N] [--active-ms N] "
    "[--sample-ms N]]  |  edgert-run BUNDLE_DIR --stream FRAMES.npy [--output-dir DIR] [--repeat N]  |  "
    "edgert-run --rpc-server [--host H] [--allow-remote] [--port N] [--tracker HOST:PORT --key KEY]";

// ---------------------------------------------------------------- failures

// code is the JSON "code"; the exit status follows from it.
struct Failure {
  std::string code;
  std::string message;
};

[[noreturn]] void Fail(const std::string& code, const std::string& message) { throw Failure{code, message}; }

int ExitCode(const std::string& code) {
  if (code == "usage" || code == "input" || code == "energy") return 2;
  if (code == "runtime") return 6;
  return 5;  // bundle, integrity, arch
}

void Check(edgert_status status) {
  switch (status) {
    case EDGERT_OK: return;
    case EDGERT_E_ARGUMENT: Fail("input", edgert_last_error());
    case EDGERT_E_BUNDLE: Fail("bundle", edgert_last_error());
    case EDGERT_E_INTEGRITY: Fail("integrity", edgert_last_error());
    case EDGERT_E_ARCH: Fail("arch", edgert_last_error());
    case EDGERT_E_RUNTIME: Fail("runtime", edgert_last_error());
  }
  Fail("runtime", "unknown status " + std::to_string(int(status)) + ": " + edgert_last_error());
}

// ---------------------------------------------------------------- JSON output

std::string Quote(const std::string& s) { return EdgertJsonQuote(s); }

std::string Number(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", ms);
  return buf;
}

// Times and readings need more digits than Number's microseconds (a small model runs in 40 us).
std::string Precise(double value) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.15g", value);
  return buf;
}

std::string ShapeJson(const int64_t* shape, int32_t ndim) {
  std::string s = "[";
  for (int32_t i = 0; i < ndim; ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---------------------------------------------------------------- options

struct Options {
  std::string bundle;
  std::vector<std::pair<std::string, std::string>> inputs;  // name, .npy path
  bool golden = false;
  std::string output_dir;
  std::string stream;  // --stream: frames along axis 0 of this .npy, one step each
  int warmup = 0;
  int repeat = 1;
  // --profile: cold start, timed runs, CPU frequency, memory; optionally per-op time and energy.
  bool profile = false;
  bool per_op = false;
  std::vector<std::string> energy;  // power source specs, or "auto"
  int idle_ms = 1000;               // idle baseline before the energy runs
  int active_ms = 2000;             // the energy runs repeat for at least this long
  int sample_ms = 10;               // sampling period of polled power sources
};

int ParseCount(const std::string& flag, const std::string& text, int minimum) {
  char* end = nullptr;
  long n = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n < minimum || n > 1000000)
    Fail("usage", flag + " needs an integer >= " + std::to_string(minimum) + ", got '" + text + "'");
  return int(n);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {  // --flag=value
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) Fail("usage", arg + " needs a value; " + kUsage);
      return argv[++i];
    };
    if (arg == "--input") {
      std::string spec = next();
      size_t sep = spec.find('=');
      if (sep == std::string::npos || sep == 0 || sep + 1 == spec.size())
        Fail("usage", "--input takes NAME=FILE.npy, got '" + spec + "'");
      o.inputs.emplace_back(spec.substr(0, sep), spec.substr(sep + 1));
    } else if (arg == "--stream") {
      o.stream = next();
    } else if (arg == "--golden" && !has_value) {
      o.golden = true;
    } else if (arg == "--output-dir") {
      o.output_dir = next();
    } else if (arg == "--warmup") {
      o.warmup = ParseCount(arg, next(), 0);
    } else if (arg == "--repeat") {
      o.repeat = ParseCount(arg, next(), 1);
    } else if (arg == "--profile" && !has_value) {
      o.profile = true;
    } else if (arg == "--per-op" && !has_value) {
      o.per_op = o.profile = true;
    } else if (arg == "--energy") {
      o.energy.push_back(next());
      o.profile = true;
    } else if (arg == "--idle-ms") {
      o.idle_ms = ParseCount(arg, next(), 0);
    } else if (arg == "--active-ms") {
      o.active_ms = ParseCount(arg, next(), 1);
    } else if (arg == "--sample-ms") {
      o.sample_ms = ParseCount(arg, next(), 1);
    } else if (arg.rfind("-", 0) == 0 || !o.bundle.empty()) {
      Fail("usage", "unexpected argument '" + std::string(argv[i]) + "'; " + kUsage);
    } else {
      o.bundle = arg;
    }
  }
  if (o.bundle.empty()) Fail("usage", std::string("no bundle directory given; ") + kUsage);
  return o;
}

// ---------------------------------------------------------------- .npy files

struct NpyType {
  const char* dtype;
  const char* descr;
};

// Little-endian descrs numpy writes; one-byte types use '|' (no byte order).
const NpyType kNpyTypes[] = {
    {"float32", "<f4"}, {"float16", "<f2"}, {"float64", "<f8"}, {"int8", "|i1"}, {"uint8", "|u1"},
    {"int16", "<i2"},   {"int32", "<i4"},   {"int64", "<i8"},   {"bool", "|b1"},
};

const char* DescrOf(const std::string& dtype) {
  for (const NpyType& t : kNpyTypes)
    if (dtype == t.dtype) return t.descr;
  Fail("bundle", "the manifest names dtype '" + dtype + "', which edgert-run cannot read or write");
}

struct Npy {
  std::string path;
  std::string descr;  // normalised: '<' or '|' byte-order mark
  std::vector<int64_t> shape;
  size_t data_at = 0;     // file offset of the data
  size_t data_bytes = 0;  // checked: what the header declares is exactly what the file holds
  std::vector<char> data; // filled by LoadNpyData, after the caller checked dtype and shape
};

// Value text after "'key':" in the header dict, or empty if absent.
std::string HeaderValue(const std::string& header, const std::string& key) {
  for (const char* quote : {"'", "\""}) {
    size_t at = header.find(quote + key + quote);
    if (at == std::string::npos) continue;
    at = header.find(':', at);
    if (at == std::string::npos) return "";
    size_t start = header.find_first_not_of(' ', at + 1);
    if (start == std::string::npos) return "";
    char open = header[start];
    char close = open == '(' ? ')' : (open == '\'' || open == '"') ? open : ',';
    size_t end = header.find(close, start + 1);
    if (end == std::string::npos) end = header.find('}', start);
    if (end == std::string::npos) return "";
    return header.substr(start, end - start + (close == ',' ? 0 : 1));
  }
  return "";
}

std::vector<int64_t> ParseShape(const std::string& tuple, const std::string& path) {
  if (tuple.size() < 2 || tuple.front() != '(' || tuple.back() != ')')
    Fail("input", path + ": cannot read the shape in its .npy header");
  std::vector<int64_t> shape;
  std::string body = tuple.substr(1, tuple.size() - 2);
  size_t pos = 0;
  while (pos < body.size()) {
    size_t comma = body.find(',', pos);
    std::string item = body.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t first = item.find_first_not_of(' ');
    if (first != std::string::npos) {
      char* end = nullptr;
      long long dim = std::strtoll(item.c_str() + first, &end, 10);
      if (dim < 0 || (*end != '\0' && *end != ' ' && *end != 'L'))
        Fail("input", path + ": bad dimension '" + item + "' in its .npy header");
      shape.push_back(dim);
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return shape;
}

std::string NormaliseDescr(std::string descr, const std::string& path) {
  if (descr.size() >= 2 && descr[1] == 'O')
    Fail("input", path + " holds Python objects (dtype object); save a numeric array, e.g. arr.astype('float32')");
  if (descr.size() != 3 || !std::isdigit(static_cast<unsigned char>(descr[2])))
    Fail("input", path + ": unsupported .npy dtype '" + descr + "'");
  bool one_byte = descr[2] == '1';
  if (descr[0] == '=') descr[0] = '<';  // '=' is native order, little-endian on our targets
  if (one_byte && descr[0] == '<') descr[0] = '|';
  if (descr[0] == '>' && !one_byte)
    Fail("input", path + " is big-endian ('" + descr + "'); save it little-endian, e.g. np.save(f, arr.astype(arr.dtype.newbyteorder('<')))");
  return descr;
}

// Bytes of all elements of `shape` at `item` bytes each; false if that overflows size_t.
bool ShapeBytes(const std::vector<int64_t>& shape, size_t item, size_t* bytes) {
  size_t n = item;
  for (int64_t d : shape)
    if (d == 0) n = 0;
  if (n == 0) {
    *bytes = 0;
    return true;
  }
  for (int64_t d : shape) {
    if (size_t(d) > SIZE_MAX / n) return false;
    n *= size_t(d);
  }
  *bytes = n;
  return true;
}

// Reads and checks a .npy header; the data stays on disk until LoadNpyData. Nothing is allocated
// from what the header declares: the declared shape must account for exactly the file's bytes.
Npy ReadNpy(const std::string& path) {
  // A FIFO or device (/dev/zero) would block or never end; only regular files are inputs.
  struct stat st;
  if (stat(path.c_str(), &st) != 0) Fail("input", "cannot read " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) Fail("input", path + " is not a regular file; save arrays with numpy.save");
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("input", "cannot read " + path + ": " + std::strerror(errno));
  const size_t size = size_t(st.st_size);
  unsigned char prefix[12] = {0};
  in.read(reinterpret_cast<char*>(prefix), sizeof prefix);
  size_t got = size_t(in.gcount());
  static const char kMagic[] = "\x93NUMPY";
  if (got < 10 || std::memcmp(prefix, kMagic, 6) != 0)
    Fail("input", path + " is not a .npy file; save arrays with numpy.save");
  unsigned major = prefix[6];
  size_t header_len, header_at;
  if (major == 1) {
    header_len = size_t(prefix[8]) | size_t(prefix[9]) << 8;
    header_at = 10;
  } else if ((major == 2 || major == 3) && got >= 12) {
    header_len = size_t(prefix[8]) | size_t(prefix[9]) << 8 | size_t(prefix[10]) << 16 | size_t(prefix[11]) << 24;
    header_at = 12;
  } else {
    Fail("input", path + ": unsupported .npy format version " + std::to_string(major));
  }
  // numpy writes headers of a few hundred bytes; a bigger one is not worth reading.
  if (header_len > (size_t(1) << 20) || size < header_at + header_len) Fail("input", path + ": truncated .npy header");
  std::string header(header_len, '\0');
  in.clear();  // a short first read left the stream failed
  in.seekg(std::streamoff(header_at));
  in.read(&header[0], std::streamsize(header_len));
  if (size_t(in.gcount()) != header_len) Fail("input", path + ": truncated .npy header");
  Npy npy;
  npy.path = path;
  std::string descr = HeaderValue(header, "descr");
  if (descr.size() < 2) Fail("input", path + ": no dtype in its .npy header");
  npy.descr = NormaliseDescr(descr.substr(1, descr.size() - 2), path);
  npy.shape = ParseShape(HeaderValue(header, "shape"), path);
  if (HeaderValue(header, "fortran_order").rfind("True", 0) == 0 && npy.shape.size() > 1)
    Fail("input", path + " is Fortran-ordered; save it with numpy.save(f, numpy.ascontiguousarray(arr))");
  npy.data_at = header_at + header_len;
  npy.data_bytes = size - npy.data_at;
  size_t declared = 0;
  bool fits = ShapeBytes(npy.shape, size_t(npy.descr[2] - '0'), &declared);
  if (!fits || declared != npy.data_bytes)
    Fail("input", path + " declares " + npy.descr + " " + ShapeJson(npy.shape.data(), int32_t(npy.shape.size())) +
                      (fits ? " (" + std::to_string(declared) + " bytes)" : std::string(" (more bytes than fit in memory)")) +
                      " but holds " + std::to_string(npy.data_bytes) +
                      " data bytes; the file is truncated or corrupt, save it again with numpy.save");
  return npy;
}

void LoadNpyData(Npy* npy) {
  std::ifstream in(npy->path, std::ios::binary);
  npy->data.resize(npy->data_bytes);
  in.seekg(std::streamoff(npy->data_at));
  in.read(npy->data.data(), std::streamsize(npy->data.size()));
  if (!in || size_t(in.gcount()) != npy->data.size())
    Fail("input", "cannot read the data of " + npy->path + " (did it change while being read?)");
}

void WriteNpy(const std::string& path, const std::string& descr, const int64_t* shape, int32_t ndim,
              const std::vector<char>& data) {
  std::string dims;
  for (int32_t i = 0; i < ndim; ++i) dims += std::to_string(shape[i]) + (ndim == 1 ? "," : i + 1 < ndim ? ", " : "");
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Pad with spaces and end with '\n' so the data starts on a 64-byte boundary, as numpy does.
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  std::string prefix = "\x93NUMPY\x01";
  prefix += '\0';
  prefix += char(header.size() & 0xFF);
  prefix += char(header.size() >> 8);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << prefix << header;
  out.write(data.data(), std::streamsize(data.size()));
  if (!out.flush()) Fail("runtime", "cannot write " + path + ": " + std::strerror(errno));
}

// ---------------------------------------------------------------- inputs and outputs

std::string Describe(const std::string& dtype, const int64_t* shape, int32_t ndim) {
  return dtype + " " + ShapeJson(shape, ndim);
}

void SetInput(edgert_model* model, size_t index, const std::string& path) {
  edgert_tensor_info info;
  Check(edgert_input_info(model, index, &info));
  Npy npy = ReadNpy(path);
  std::string want = DescrOf(info.dtype);
  std::string expected = Describe(info.dtype, info.shape, info.ndim);
  if (npy.descr != want)
    Fail("input", std::string("input '") + info.name + "': " + path + " holds dtype '" + npy.descr +
                      "' but the model expects " + expected + " ('" + want + "'); convert it with arr.astype('" +
                      info.dtype + "')");
  bool same = npy.shape.size() == size_t(info.ndim);
  for (size_t d = 0; same && d < npy.shape.size(); ++d) same = npy.shape[d] == info.shape[d];
  if (!same)
    Fail("input", std::string("input '") + info.name + "': " + path + " has shape " +
                      ShapeJson(npy.shape.data(), int32_t(npy.shape.size())) + " but the model expects " + expected);
  // Shape and dtype agree and the header matches the file size, so this holds unless the manifest's
  // byte count disagrees with its own shape (which edgert_set_input would refuse anyway).
  if (npy.data_bytes != info.nbytes)
    Fail("input", std::string("input '") + info.name + "': " + path + " holds " + std::to_string(npy.data_bytes) +
                      " data bytes, " + expected + " needs " + std::to_string(info.nbytes) + "; the file is truncated");
  LoadNpyData(&npy);
  Check(edgert_set_input(model, index, npy.data.data(), npy.data.size()));
}

// Where each input's data comes from: --input, else the golden file with --golden.
void SetInputs(edgert_model* model, const Options& o) {
  std::vector<std::string> names;
  for (size_t i = 0; i < edgert_num_inputs(model); ++i) {
    edgert_tensor_info info;
    Check(edgert_input_info(model, i, &info));
    names.push_back(info.name);
  }
  for (const auto& given : o.inputs) {
    bool known = false;
    for (const auto& n : names) known = known || n == given.first;
    if (!known) {
      std::string valid;
      for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
      Fail("input", "the model has no input '" + given.first + "'; its inputs are: " + valid);
    }
  }
  for (size_t i = 0; i < names.size(); ++i) {
    std::string path;
    for (const auto& given : o.inputs)
      if (given.first == names[i]) path = given.second;
    if (path.empty() && o.golden) {
      edgert_tensor_info info;
      Check(edgert_input_info(model, i, &info));
      if (info.golden == nullptr) Fail("bundle", "the bundle has no golden data for input '" + names[i] + "'");
      path = o.bundle + "/" + info.golden;
    }
    if (path.empty())
      Fail("input", "no data for input '" + names[i] + "'; pass --input " + names[i] + "=FILE.npy or --golden");
    SetInput(model, i, path);
  }
}

void MakeDirs(const std::string& dir) {
  size_t pos = 0;
  do {
    pos = dir.find('/', pos + 1);
    std::string part = dir.substr(0, pos);
    if (mkdir(part.c_str(), 0777) != 0 && errno != EEXIST)
      Fail("runtime", "cannot create the output directory " + part + ": " + std::strerror(errno));
  } while (pos != std::string::npos);
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    Fail("runtime", "the output directory " + dir + " is not a directory");
}

std::string Sanitize(const std::string& name) {
  std::string out = name;
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  return out;
}

// Copies every output out; writes them as .npy under --output-dir if given. Returns the JSON list.
std::string CollectOutputs(edgert_model* model, const Options& o) {
  if (!o.output_dir.empty()) {
    // Checked before anything is written, so a refusal leaves the output directory as it was.
    std::set<std::string> used;
    for (size_t i = 0; i < edgert_num_outputs(model); ++i) {
      edgert_tensor_info info;
      Check(edgert_output_info(model, i, &info));
      std::string stem = Sanitize(info.name);
      // Hosts find outputs by this same rule, so a clash cannot be renamed away.
      if (!used.insert(stem).second)
        Fail("bundle", "two outputs map to the file name " + stem + ".npy; give the model's outputs distinct names");
    }
    MakeDirs(o.output_dir);
  }
  std::string list = "[";
  for (size_t i = 0; i < edgert_num_outputs(model); ++i) {
    edgert_tensor_info info;
    Check(edgert_output_info(model, i, &info));
    std::vector<char> data(info.nbytes);
    Check(edgert_get_output(model, i, data.data(), data.size()));
    std::string file = "null";
    if (!o.output_dir.empty()) {
      std::string path = o.output_dir + "/" + Sanitize(info.name) + ".npy";
      WriteNpy(path, DescrOf(info.dtype), info.shape, info.ndim, data);
      file = Quote(path);
    }
    list += std::string(i ? "," : "") + "{\"name\":" + Quote(info.name) + ",\"file\":" + file +
            ",\"shape\":" + ShapeJson(info.shape, info.ndim) + ",\"dtype\":" + Quote(info.dtype) + "}";
  }
  return list + "]";
}

double MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// ---------------------------------------------------------------- profiling: CPU frequency, memory

using Clock = std::chrono::steady_clock;

double MsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Reads the first number in a (sysfs) file; false if it cannot be read or holds none.
bool ReadNumber(const std::string& path, double* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[128];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  int saved = errno;
  close(fd);
  errno = saved;
  if (n <= 0) return false;
  buf[n] = '\0';
  char* end = nullptr;
  *out = std::strtod(buf, &end);
  return end != buf;
}

std::vector<std::string> Glob(const std::string& pattern) {
  std::vector<std::string> paths;
  glob_t g;
  if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
  globfree(&g);
  return paths;
}

// {"cpu0":1800000,...} in kHz from cpufreq, "{}" where the device exposes none (VMs, qemu).
std::string CpuFreqJson() {
  std::string json = "{";
  for (const std::string& path : Glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")) {
    double khz;
    if (!ReadNumber(path, &khz)) continue;
    size_t at = path.find("/cpu/") + 5;
    json += (json.size() > 1 ? "," : "") + Quote(path.substr(at, path.find('/', at) - at)) + ":" + Precise(khz);
  }
  return json + "}";
}

// Threads the TVM runtime will use. Unless TVM_NUM_THREADS says otherwise, one per physical
// core: TVM's own default on x86 is half the logical CPUs (it assumes two hyper-threads per
// core), which on a VM or a board without them leaves half the cores idle.
int CountThreads() {
  if (const char* env = std::getenv("TVM_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  std::set<std::string> cores;
  for (const std::string& path : Glob("/sys/devices/system/cpu/cpu[0-9]*/topology/core_id")) {
    std::ifstream core(path), package(path.substr(0, path.rfind('/')) + "/physical_package_id");
    std::string c, p;
    if (std::getline(core, c)) cores.insert((std::getline(package, p) ? p : "0") + ":" + c);
  }
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  int n = cores.empty() ? int(online > 0 ? online : 1) : int(cores.size());
  setenv("TVM_NUM_THREADS", std::to_string(n).c_str(), 0);
  return n;
}

int DefaultThreads() {
  static const int n = CountThreads();  // once: main sets it up, the profile report reads it
  return n;
}

// Peak resident memory of this process: getrusage's ru_maxrss and /proc's VmHWM, in KiB.
std::string MemoryJson() {
  struct rusage usage;
  std::string rss = getrusage(RUSAGE_SELF, &usage) == 0 ? std::to_string(usage.ru_maxrss) : "null";
  std::string hwm = "null";
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::to_string(std::strtoll(line.c_str() + 6, nullptr, 10));
  return "{\"max_rss_kb\":" + rss + ",\"vm_hwm_kb\":" + hwm + "}";
}

// ---------------------------------------------------------------- profiling: per-function time

// Self time per VM-called function (kernels and builtins): a call's time minus that of the calls
// nested in it, so the table sums to the time spent in calls without counting any twice.
// Besides the total, each function's median time per run: robust to the odd preempted run.
class OpTimer {
 public:
  static void Hook(void* user, const char* function, int before) {
    static_cast<OpTimer*>(user)->On(function, before != 0);
  }

  // Closes one run: every function's time in it becomes one sample of its per-run series.
  void EndRun() {
    for (auto& entry : stats_) {
      entry.second.per_run.push_back(entry.second.this_run);
      entry.second.this_run = 0;
    }
    ++runs_;
  }

  // [{"name":...,"calls":N,"self_ms":T,"median_ms":M}] (T summed over all runs), slowest first.
  std::string Json() const {
    std::map<std::string, Stat> merged;  // the same name may sit in two slots
    for (const auto& entry : stats_) {
      Stat& m = merged[entry.first];
      m.calls += entry.second.calls;
      m.self_ms += entry.second.self_ms;
      m.per_run.resize(entry.second.per_run.size());
      for (size_t i = 0; i < m.per_run.size(); ++i) m.per_run[i] += entry.second.per_run[i];
    }
    std::vector<std::pair<std::string, Stat>> rows(merged.begin(), merged.end());
    std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.self_ms > b.second.self_ms; });
    std::string json = "[";
    for (size_t i = 0; i < rows.size(); ++i) {
      std::vector<double> runs = rows[i].second.per_run;
      double median = 0;
      if (!runs.empty()) {
        std::sort(runs.begin(), runs.end());
        size_t n = runs.size();
        median = n % 2 ? runs[n / 2] : (runs[n / 2 - 1] + runs[n / 2]) / 2;
      }
      json += std::string(i ? "," : "") + "{\"name\":" + Quote(rows[i].first) + ",\"calls\":" +
              std::to_string(rows[i].second.calls) + ",\"self_ms\":" + Precise(rows[i].second.self_ms) +
              ",\"median_ms\":" + Precise(median) + "}";
    }
    return json + "]";
  }

 private:
  struct Frame {
    const char* name;
    Clock::time_point start;
    double child_ms;
  };
  struct Stat {
    long calls = 0;
    double self_ms = 0;
    double this_run = 0;
    std::vector<double> per_run;
  };
  std::vector<Frame> stack_;
  std::unordered_map<const char*, Stat> stats_;  // keyed by the VM's stable name pointer: no allocation per call
  size_t runs_ = 0;

  void On(const char* function, bool before) {
    if (before) {
      stack_.push_back({function, {}, 0.0});
      stack_.back().start = Clock::now();  // last, so the hook's own work is not counted
      return;
    }
    Clock::time_point now = Clock::now();
    if (stack_.empty() || stack_.back().name != function) return;  // unbalanced: ignore
    Frame frame = stack_.back();
    stack_.pop_back();
    double elapsed = MsBetween(frame.start, now);
    auto found = stats_.find(function);
    if (found == stats_.end()) {
      found = stats_.emplace(function, Stat()).first;
      found->second.per_run.assign(runs_, 0.0);  // first seen in a later run: absent from the earlier ones
    }
    Stat& stat = found->second;
    ++stat.calls;
    stat.self_ms += elapsed - frame.child_ms;
    stat.this_run += elapsed - frame.child_ms;
    if (!stack_.empty()) stack_.back().child_ms += elapsed;
  }
};

// ---------------------------------------------------------------- profiling: power sources

// A power source named by --energy. Raw readings go to the host unconverted; raw * scale is
// watts (power, vi, stream) or joules (energy, a counter that wraps at max).
struct PowerSource {
  std::string name, kind, path, path2;
  double scale = 1;
  double max = 0;
  int baud = 0;
  int fd = -1;  // stream sources
  std::vector<double> t_ms, value;
};

const size_t kMaxSamples = 500000;  // per source; about 80 minutes at 10 ms

speed_t BaudOf(int baud) {
  switch (baud) {
    case 9600: return B9600;
    case 19200: return B19200;
    case 38400: return B38400;
    case 57600: return B57600;
    case 115200: return B115200;
    case 230400: return B230400;
    case 460800: return B460800;
    case 921600: return B921600;
  }
  Fail("usage", "unsupported baud rate " + std::to_string(baud) + "; use 9600, 19200, 38400, 57600, 115200, "
                "230400, 460800 or 921600");
}

// "name=VDD_IN,kind=vi,path=/sys/.../in1_input,path2=/sys/.../curr1_input,scale=1e-6"
PowerSource ParsePowerSpec(const std::string& spec) {
  PowerSource s;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t eq = item.find('=');
    std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (eq == std::string::npos || value.empty())
      Fail("usage", "--energy '" + spec + "': '" + item + "' is not KEY=VALUE");
    char* end = nullptr;
    if (key == "name") s.name = value;
    else if (key == "kind") s.kind = value;
    else if (key == "path") s.path = value;
    else if (key == "path2") s.path2 = value;
    else if (key == "scale") s.scale = std::strtod(value.c_str(), &end);
    else if (key == "max") s.max = std::strtod(value.c_str(), &end);
    else if (key == "baud") s.baud = int(std::strtol(value.c_str(), &end, 10));
    else Fail("usage", "--energy '" + spec + "': unknown key '" + key + "' (name, kind, path, path2, scale, max, baud)");
    if (end != nullptr && *end != '\0') Fail("usage", "--energy '" + spec + "': " + key + " must be a number");
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (s.kind != "power" && s.kind != "vi" && s.kind != "energy" && s.kind != "stream")
    Fail("usage", "--energy '" + spec + "': kind must be power, vi, energy or stream");
  if (s.path.empty() || (s.kind == "vi") != !s.path2.empty())
    Fail("usage", "--energy '" + spec + "': give path (and path2, the current, for kind=vi only)");
  if (s.name.empty()) s.name = s.path;
  if (s.baud) BaudOf(s.baud);
  return s;
}

// Sources found on this machine for "--energy auto": RAPL packages (not their sub-domains,
// which the package already counts) and batteries reporting power_now.
std::vector<PowerSource> DetectPowerSources() {
  std::vector<PowerSource> found;
  for (const std::string& path : Glob("/sys/class/powercap/intel-rapl:*/energy_uj")) {
    std::string dir = path.substr(0, path.rfind('/'));
    std::string zone = dir.substr(dir.rfind('/') + 1);
    if (std::count(zone.begin(), zone.end(), ':') != 1) continue;
    PowerSource s;
    std::ifstream name_file(dir + "/name");
    if (!std::getline(name_file, s.name) || s.name.empty()) s.name = zone;
    s.name = "rapl-" + s.name;
    s.kind = "energy";
    s.path = path;
    s.scale = 1e-6;  // microjoules
    found.push_back(s);
  }
  for (const std::string& path : Glob("/sys/class/power_supply/*/power_now")) {
    std::string dir = path.substr(0, path.rfind('/'));
    PowerSource s;
    s.name = dir.substr(dir.rfind('/') + 1);
    s.kind = "power";
    s.path = path;
    s.scale = 1e-6;  // microwatts
    found.push_back(s);
  }
  return found;
}

// Opens stream sources and checks every polled one reads; fails naming the file and a fix.
void PreparePowerSource(PowerSource* s) {
  if (s->kind == "stream") {
    s->fd = open(s->path.c_str(), O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (s->fd < 0)
      Fail("energy", "cannot open the power meter stream " + s->path + ": " + std::strerror(errno) +
                         "; check the device path and that this user may read it (e.g. the dialout group)");
    if (isatty(s->fd)) {
      struct termios tio;
      if (tcgetattr(s->fd, &tio) == 0) {
        cfmakeraw(&tio);
        if (s->baud) {
          cfsetispeed(&tio, BaudOf(s->baud));
          cfsetospeed(&tio, BaudOf(s->baud));
        }
        tcsetattr(s->fd, TCSANOW, &tio);
      }
      tcflush(s->fd, TCIFLUSH);  // readings queued before now belong to no phase
    } else {
      lseek(s->fd, 0, SEEK_END);  // a growing log file: only readings from now on
    }
    return;
  }
  double v;
  for (const std::string& path : {s->path, s->path2}) {
    if (path.empty() || ReadNumber(path, &v)) continue;
    Fail("energy", "cannot read power source '" + s->name + "' at " + path + ": " +
                       (errno ? std::strerror(errno) : "no number in it") +
                       "; check the path (the target's [power] table or --power), or make it readable "
                       "(RAPL energy_uj is root-only on recent kernels: sudo chmod a+r it)");
  }
  if (s->kind == "energy" && s->max == 0) {
    std::string max_path = s->path.substr(0, s->path.rfind('/') + 1) + "max_energy_range_uj";
    if (ReadNumber(max_path, &v)) s->max = v;  // RAPL: the counter wraps at this value
  }
}

// Samples polled sources every period on one thread; each stream source gets a reader thread
// that timestamps readings as they arrive. Times are ms since t0.
class PowerSampler {
 public:
  PowerSampler(std::vector<PowerSource>* sources, int period_ms, Clock::time_point t0)
      : sources_(sources), period_(std::chrono::milliseconds(period_ms)), t0_(t0) {}

  ~PowerSampler() { Stop(); }

  // Returns after the first reading of every polled source, so a window opened now is covered.
  void Start() {
    PollOnce();
    threads_.emplace_back([this] { PollLoop(); });
    for (PowerSource& s : *sources_)
      if (s.kind == "stream") threads_.emplace_back([this, &s] { StreamLoop(&s); });
  }

  // Takes a last reading, so a window closed before now is covered, and joins the threads.
  void Stop() {
    if (stop_.exchange(true)) return;
    for (std::thread& t : threads_) t.join();
    PollOnce();
  }

 private:
  std::vector<PowerSource>* sources_;
  Clock::duration period_;
  Clock::time_point t0_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;

  void Record(PowerSource* s, Clock::time_point t, double value) {
    if (s->value.size() >= kMaxSamples) return;
    s->t_ms.push_back(MsBetween(t0_, t));
    s->value.push_back(value);
  }

  void PollOnce() {
    for (PowerSource& s : *sources_) {
      if (s.kind == "stream") continue;
      Clock::time_point before = Clock::now();
      double a = 0, b = 1;
      bool ok = ReadNumber(s.path, &a) && (s.path2.empty() || ReadNumber(s.path2, &b));
      Clock::time_point after = Clock::now();
      if (ok) Record(&s, before + (after - before) / 2, a * b);
    }
  }

  void PollLoop() {
    Clock::time_point next = Clock::now();
    while (!stop_.load()) {
      next += period_;
      std::this_thread::sleep_until(next);
      PollOnce();
    }
  }

  void StreamLoop(PowerSource* s) {
    std::string pending;
    char buf[512];
    while (!stop_.load()) {
      struct pollfd p = {s->fd, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      ssize_t n = read(s->fd, buf, sizeof buf);
      Clock::time_point now = Clock::now();
      if (n <= 0) {  // end of a log file, or a pty whose writer is gone: wait for more
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      pending.append(buf, size_t(n));
      size_t eol;
      while ((eol = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, eol);
        pending.erase(0, eol + 1);
        size_t at = line.find_first_of("+-.0123456789");  // the first number on the line
        if (at == std::string::npos) continue;
        char* end = nullptr;
        double v = std::strtod(line.c_str() + at, &end);
        if (end != line.c_str() + at) Record(s, now, v);
      }
    }
    close(s->fd);
    s->fd = -1;
  }
};

std::vector<PowerSource> PowerSources(const Options& o) {
  std::vector<PowerSource> sources;
  for (const std::string& spec : o.energy) {
    if (spec == "auto") {
      std::vector<PowerSource> found = DetectPowerSources();
      sources.insert(sources.end(), found.begin(), found.end());
    } else {
      sources.push_back(ParsePowerSpec(spec));
    }
  }
  if (!o.energy.empty() && sources.empty())
    Fail("energy", "no power source found on this device (no RAPL energy_uj, no battery power_now); name one "
                   "with --energy kind=...,path=... (edgert profile --power PATH)");
  for (PowerSource& s : sources) PreparePowerSource(&s);
  return sources;
}

std::string Series(const std::vector<double>& values) {
  std::string json = "[";
  for (size_t i = 0; i < values.size(); ++i) json += (i ? "," : "") + Precise(values[i]);
  return json + "]";
}

// ---------------------------------------------------------------- profiling: the whole run

// Phases, each apart so none disturbs another's numbers: cold start (open + first run), warm-up,
// timed runs (CPU frequency read around them; with --per-op in blocks alternating with
// instrumented runs), energy (idle baseline, then runs for at least --active-ms while the sampler reads the
// power sources).
std::string Profile(const Options& o) {
  Clock::time_point t0 = Clock::now();
  std::vector<PowerSource> sources = PowerSources(o);
  Clock::time_point open_at = Clock::now();
  edgert_model* raw = nullptr;
  Check(edgert_open(o.bundle.c_str(), &raw));
  std::unique_ptr<edgert_model, void (*)(edgert_model*)> model(raw, edgert_close);
  double load_ms = MsBetween(open_at, Clock::now());
  SetInputs(model.get(), o);
  Clock::time_point first_at = Clock::now();
  Check(edgert_run(model.get()));
  double first_run_ms = MsBetween(first_at, Clock::now());
  double cold_ms = MsBetween(open_at, Clock::now());
  for (int i = 0; i < o.warmup; ++i) Check(edgert_run(model.get()));

  // With --per-op, timed and instrumented runs alternate in ten blocks, so both series span the
  // same stretch of time: a vCPU whose speed changed between two whole phases moved the per-op
  // sum 30% off the latency. (Alternating single runs slowed the timed ones by a third.)
  OpTimer timer;
  std::vector<double> run_ms, op_run_ms;
  std::string freq_before = CpuFreqJson();
  int block = o.per_op ? std::max(1, o.repeat / 10) : o.repeat;
  for (int done = 0; done < o.repeat; done += block) {
    int n = std::min(block, o.repeat - done);
    for (int i = 0; i < n; ++i) {
      Clock::time_point t = Clock::now();
      Check(edgert_run(model.get()));
      run_ms.push_back(MsBetween(t, Clock::now()));
    }
    if (!o.per_op) continue;
    Check(edgert_set_call_hook(model.get(), &OpTimer::Hook, &timer));
    for (int i = 0; i < n; ++i) {
      Clock::time_point t = Clock::now();
      Check(edgert_run(model.get()));
      op_run_ms.push_back(MsBetween(t, Clock::now()));
      timer.EndRun();
    }
    Check(edgert_set_call_hook(model.get(), nullptr, nullptr));
  }
  std::string freq_after = CpuFreqJson();

  std::string energy = "null";
  if (!sources.empty()) {
    PowerSampler sampler(&sources, o.sample_ms, t0);
    sampler.Start();
    Clock::time_point idle_from = Clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(o.idle_ms));
    Clock::time_point idle_to = Clock::now();
    long runs = 0;
    do {
      Check(edgert_run(model.get()));
      ++runs;
    } while (MsBetween(idle_to, Clock::now()) < o.active_ms);
    Clock::time_point active_to = Clock::now();
    sampler.Stop();
    energy = "{\"clock_ms\":" + Precise(std::chrono::duration<double, std::milli>(t0.time_since_epoch()).count()) +
             ",\"sample_ms\":" + std::to_string(o.sample_ms) + ",\"idle_ms\":[" + Precise(MsBetween(t0, idle_from)) +
             "," + Precise(MsBetween(t0, idle_to)) + "],\"active_ms\":[" + Precise(MsBetween(t0, idle_to)) + "," +
             Precise(MsBetween(t0, active_to)) + "],\"runs\":" + std::to_string(runs) + ",\"sources\":[";
    for (size_t i = 0; i < sources.size(); ++i) {
      const PowerSource& s = sources[i];
      energy += std::string(i ? "," : "") + "{\"name\":" + Quote(s.name) + ",\"kind\":" + Quote(s.kind) +
                ",\"path\":" + Quote(s.path) + ",\"scale\":" + Precise(s.scale) + ",\"max\":" + Precise(s.max) +
                ",\"t_ms\":" + Series(s.t_ms) + ",\"value\":" + Series(s.value) + "}";
    }
    energy += "]}";
  }

  std::string per_op = "null";
  if (o.per_op) {
    per_op = "{\"runs\":" + std::to_string(o.repeat) + ",\"run_ms\":" + Series(op_run_ms) +
             ",\"functions\":" + timer.Json() + "}";
  }

  std::string outputs = CollectOutputs(model.get(), o);
  std::vector<double> sorted = run_ms;
  std::sort(sorted.begin(), sorted.end());
  std::fprintf(stderr, "edgert-run: cold start %.1f ms, %d timed run(s), median %.4f ms\n", cold_ms, o.repeat,
               sorted[sorted.size() / 2]);
  return "{\"status\":\"ok\",\"mode\":\"profile\",\"load_ms\":" + Precise(load_ms) + ",\"first_run_ms\":" +
         Precise(first_run_ms) + ",\"cold_ms\":" + Precise(cold_ms) + ",\"warmup\":" + std::to_string(o.warmup) + ",\"threads\":" + std::to_string(DefaultThreads()) +
         ",\"run_ms\":" + Series(run_ms) + ",\"cpu_freq_khz\":{\"before\":" + freq_before + ",\"after\":" +
         freq_after + "},\"memory\":" + MemoryJson() + ",\"energy\":" + energy + ",\"per_op\":" + per_op +
         ",\"outputs\":" + outputs + "}";
}

// ---------------------------------------------------------------- streams

bool StartsWith(const char* s, const char* prefix) { return std::strncmp(s, prefix, std::strlen(prefix)) == 0; }

// --stream: every frame of FRAMES.npy through edgert_stream_step; the state stays in the library.
// Writes each output's emitted steps stacked along a new axis 0 (NAME.npy) under --output-dir.
std::string Stream(const Options& o) {
  if (!o.inputs.empty() || o.golden || o.profile) Fail("usage", "--stream takes no --input, --golden or --profile");
  auto start = std::chrono::steady_clock::now();
  edgert_model* raw = nullptr;
  Check(edgert_open(o.bundle.c_str(), &raw));
  std::unique_ptr<edgert_model, void (*)(edgert_model*)> model(raw, edgert_close);
  double load_ms = MsSince(start);
  if (!edgert_is_stream(model.get()))
    Fail("input", "--stream needs the bundle of a continual step model; convert the model with 'edgert continual "
                  "MODEL -o STEP.onnx --time-axis N' and compile STEP.onnx");
  int64_t delay = 0, stride = 1;
  Check(edgert_stream_info(model.get(), &delay, &stride));
  std::vector<size_t> frame_inputs;
  for (size_t i = 0; i < edgert_num_inputs(model.get()); ++i) {
    edgert_tensor_info info;
    Check(edgert_input_info(model.get(), i, &info));
    if (!StartsWith(info.name, "state_in_")) frame_inputs.push_back(i);
  }
  if (frame_inputs.size() != 1)
    Fail("input", "--stream feeds one frame input; this model has " + std::to_string(frame_inputs.size()));
  edgert_tensor_info frame;
  Check(edgert_input_info(model.get(), frame_inputs[0], &frame));
  Npy npy = ReadNpy(o.stream);
  if (npy.descr != DescrOf(frame.dtype))
    Fail("input", o.stream + " holds dtype '" + npy.descr + "' but frames of '" + frame.name + "' are " + frame.dtype);
  size_t per = frame.nbytes;
  size_t n = npy.shape.empty() ? 0 : size_t(npy.shape[0]);
  // Elements per frame from the file's shape (any layout of them, as the host's check allows);
  // the header was checked against the file size, so n * per cannot wrap around here.
  std::vector<int64_t> frame_shape(npy.shape.begin() + (npy.shape.empty() ? 0 : 1), npy.shape.end());
  size_t file_frame_bytes = 0;
  bool fits = ShapeBytes(frame_shape, size_t(npy.descr[2] - '0'), &file_frame_bytes);
  if (n == 0 || per == 0 || !fits || file_frame_bytes != per || npy.data_bytes / per != n)
    Fail("input", o.stream + " has shape " + ShapeJson(npy.shape.data(), int32_t(npy.shape.size())) +
                      "; give frames along axis 0, each " + Describe(frame.dtype, frame.shape, frame.ndim) +
                      " (the time axis of size 1 may be left out)");
  LoadNpyData(&npy);
  struct Out {
    size_t index;
    edgert_tensor_info info;
    std::vector<char> data;
  };
  std::vector<Out> outs;
  for (size_t i = 0; i < edgert_num_outputs(model.get()); ++i) {
    Out out{i, {}, {}};
    Check(edgert_output_info(model.get(), i, &out.info));
    if (!StartsWith(out.info.name, "state_out_")) outs.push_back(std::move(out));
  }
  std::vector<double> step_ms;
  step_ms.reserve(n * size_t(o.repeat));
  size_t emitted_steps = 0;
  for (int pass = 0; pass < o.repeat; ++pass) {
    Check(edgert_stream_reset(model.get()));
    bool keep = pass + 1 == o.repeat;  // outputs of the last pass
    for (size_t f = 0; f < n; ++f) {
      auto t = std::chrono::steady_clock::now();
      Check(edgert_set_input(model.get(), frame_inputs[0], npy.data.data() + f * per, per));
      int emitted = 0;
      Check(edgert_stream_step(model.get(), &emitted));
      step_ms.push_back(MsSince(t));
      if (!emitted || !keep) continue;
      ++emitted_steps;
      for (Out& out : outs) {
        size_t at = out.data.size();
        out.data.resize(at + out.info.nbytes);
        Check(edgert_get_output(model.get(), out.index, out.data.data() + at, out.info.nbytes));
      }
    }
  }
  if (!o.output_dir.empty()) {
    std::set<std::string> used;
    for (const Out& out : outs)
      if (!used.insert(Sanitize(out.info.name)).second)
        Fail("bundle", "two outputs map to the file name " + Sanitize(out.info.name) +
                           ".npy; give the model's outputs distinct names");
    MakeDirs(o.output_dir);
  }
  std::string list = "[";
  for (size_t k = 0; k < outs.size(); ++k) {
    const Out& out = outs[k];
    std::vector<int64_t> shape = {int64_t(emitted_steps)};
    shape.insert(shape.end(), out.info.shape, out.info.shape + out.info.ndim);
    std::string file = "null";
    if (!o.output_dir.empty()) {
      std::string path = o.output_dir + "/" + Sanitize(out.info.name) + ".npy";
      WriteNpy(path, DescrOf(out.info.dtype), shape.data(), int32_t(shape.size()), out.data);
      file = Quote(path);
    }
    list += std::string(k ? "," : "") + "{\"name\":" + Quote(out.info.name) + ",\"file\":" + file +
            ",\"shape\":" + ShapeJson(shape.data(), int32_t(shape.size())) + ",\"dtype\":" + Quote(out.info.dtype) + "}";
  }
  std::vector<double> sorted = step_ms;
  std::sort(sorted.begin(), sorted.end());
  double total = 0;
  for (double ms : step_ms) total += ms;
  std::fprintf(stderr, "edgert-run: stream of %zu frames, %zu outputs (delay %lld, stride %lld), median step %.4f ms\n", n,
               emitted_steps, (long long)delay, (long long)stride, sorted[sorted.size() / 2]);
  return "{\"status\":\"ok\",\"mode\":\"stream\",\"load_ms\":" + Precise(load_ms) + ",\"frames\":" + std::to_string(n) +
         ",\"emitted\":" + std::to_string(emitted_steps) + ",\"delay\":" + std::to_string(delay) + ",\"stride\":" +
         std::to_string(stride) + ",\"repeat\":" + std::to_string(o.repeat) + ",\"threads\":" +
         std::to_string(DefaultThreads()) + ",\"step_ms\":{\"median\":" + Precise(sorted[sorted.size() / 2]) +
         ",\"mean\":" + Precise(total / double(step_ms.size())) + ",\"min\":" + Precise(sorted.front()) + ",\"p90\":" +
         Precise(sorted[sorted.size() * 9 / 10]) + "},\"outputs\":" + list + "]}";
}

// The whole run; returns the success JSON.
std::string Run(const Options& o) {
  if (!o.stream.empty()) return Stream(o);
  if (o.profile) return Profile(o);
  auto start = std::chrono::steady_clock::now();
  edgert_model* raw = nullptr;
  Check(edgert_open(o.bundle.c_str(), &raw));
  std::unique_ptr<edgert_model, void (*)(edgert_model*)> model(raw, edgert_close);
  double load_ms = MsSince(start);
  SetInputs(model.get(), o);
  for (int i = 0; i < o.warmup; ++i) Check(edgert_run(model.get()));
  std::string run_ms = "[";
  double total = 0;
  for (int i = 0; i < o.repeat; ++i) {
    auto t = std::chrono::steady_clock::now();
    Check(edgert_run(model.get()));
    double ms = MsSince(t);
    total += ms;
    run_ms += (i ? "," : "") + Number(ms);
  }
  std::string outputs = CollectOutputs(model.get(), o);
  std::fprintf(stderr, "edgert-run: loaded in %.1f ms, %d run(s), mean %.3f ms\n", load_ms, o.repeat,
               total / o.repeat);
  return "{\"status\":\"ok\",\"load_ms\":" + Number(load_ms) + ",\"run_ms\":" + run_ms + "],\"outputs\":" + outputs + "}";
}

}  // namespace

std::string EdgertJsonQuote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

int main(int argc, char** argv) {
  DefaultThreads();  // before the runtime starts its thread pool
  if (argc > 1 && std::strcmp(argv[1], "--rpc-server") == 0) return EdgertRpcServerMain(argc, argv);
  Failure failure;
  try {
    std::string json = Run(ParseArgs(argc, argv));
    std::printf("EDGERT %s\n", json.c_str());
    return 0;
  } catch (const Failure& f) {
    failure = f;
  } catch (const std::bad_alloc&) {
    failure = {"runtime", "out of memory"};
  } catch (const std::exception& e) {
    failure = {"runtime", e.what()};
  }
  std::fprintf(stderr, "edgert-run: error: %s\n", failure.message.c_str());
  std::printf("EDGERT {\"status\":\"error\",\"code\":%s,\"message\":%s}\n", Quote(failure.code).c_str(),
              Quote(failure.message).c_str());
  return ExitCode(failure.code);
}
