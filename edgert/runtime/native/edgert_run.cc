// edgert-run — run an edgert bundle through the C API and report as one JSON line.
//
//   edgert-run BUNDLE_DIR [--input NAME=FILE.npy]... [--golden] [--output-dir DIR]
//              [--warmup N] [--repeat N]
//   edgert-run --rpc-server [...]      TVM RPC server for tuning on the device (rpc_server.cc)
//
// stdout gets exactly one line, "EDGERT " + JSON, whatever happens, so the host can
// parse the result the same way over any transport; messages for people go to stderr.

#include <errno.h>
#include <sys/stat.h>

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
#include <string>
#include <utility>
#include <vector>

#include "edgert.h"

// rpc_server.cc: `edgert-run --rpc-server ...`; prints its own EDGERT lines, returns the exit status.
int EdgertRpcServerMain(int argc, char** argv);

namespace {

const char* kUsage =
    "usage: edgert-run BUNDLE_DIR [--input NAME=FILE.npy]... [--golden] [--output-dir DIR] "
    "[--warmup N] [--repeat N]  |  edgert-run --rpc-server [--host H] [--port N] [--tracker HOST:PORT --key KEY]";

// ---------------------------------------------------------------- failures

// code is the JSON "code"; the exit status follows from it.
struct Failure {
  std::string code;
  std::string message;
};

[[noreturn]] void Fail(const std::string& code, const std::string& message) { throw Failure{code, message}; }

int ExitCode(const std::string& code) {
  if (code == "usage" || code == "input") return 2;
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

std::string Quote(const std::string& s) {
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

std::string Number(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", ms);
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
  int warmup = 0;
  int repeat = 1;
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
    } else if (arg == "--golden" && !has_value) {
      o.golden = true;
    } else if (arg == "--output-dir") {
      o.output_dir = next();
    } else if (arg == "--warmup") {
      o.warmup = ParseCount(arg, next(), 0);
    } else if (arg == "--repeat") {
      o.repeat = ParseCount(arg, next(), 1);
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
  std::string descr;  // normalised: '<' or '|' byte-order mark
  std::vector<int64_t> shape;
  std::vector<char> data;
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
  if (descr.size() != 3) Fail("input", path + ": unsupported .npy dtype '" + descr + "'");
  bool one_byte = descr[2] == '1';
  if (descr[0] == '=') descr[0] = '<';  // '=' is native order, little-endian on our targets
  if (one_byte && descr[0] == '<') descr[0] = '|';
  if (descr[0] == '>' && !one_byte)
    Fail("input", path + " is big-endian ('" + descr + "'); save it little-endian, e.g. np.save(f, arr.astype(arr.dtype.newbyteorder('<')))");
  return descr;
}

Npy ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("input", "cannot read " + path + ": " + std::strerror(errno));
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  static const char kMagic[] = "\x93NUMPY";
  if (bytes.size() < 10 || std::memcmp(bytes.data(), kMagic, 6) != 0)
    Fail("input", path + " is not a .npy file; save arrays with numpy.save");
  unsigned major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, header_at;
  auto byte = [&](size_t i) { return size_t(static_cast<unsigned char>(bytes[i])); };
  if (major == 1) {
    header_len = byte(8) | byte(9) << 8;
    header_at = 10;
  } else if ((major == 2 || major == 3) && bytes.size() >= 12) {
    header_len = byte(8) | byte(9) << 8 | byte(10) << 16 | byte(11) << 24;
    header_at = 12;
  } else {
    Fail("input", path + ": unsupported .npy format version " + std::to_string(major));
  }
  if (bytes.size() < header_at + header_len) Fail("input", path + ": truncated .npy header");
  std::string header(bytes.data() + header_at, header_len);
  Npy npy;
  std::string descr = HeaderValue(header, "descr");
  if (descr.size() < 2) Fail("input", path + ": no dtype in its .npy header");
  npy.descr = NormaliseDescr(descr.substr(1, descr.size() - 2), path);
  npy.shape = ParseShape(HeaderValue(header, "shape"), path);
  if (HeaderValue(header, "fortran_order").rfind("True", 0) == 0 && npy.shape.size() > 1)
    Fail("input", path + " is Fortran-ordered; save it with numpy.save(f, numpy.ascontiguousarray(arr))");
  npy.data.assign(bytes.begin() + long(header_at + header_len), bytes.end());
  return npy;
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
  if (npy.data.size() != info.nbytes)
    Fail("input", std::string("input '") + info.name + "': " + path + " holds " + std::to_string(npy.data.size()) +
                      " data bytes, " + expected + " needs " + std::to_string(info.nbytes) + "; the file is truncated");
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
  if (!o.output_dir.empty()) MakeDirs(o.output_dir);
  std::set<std::string> used;
  std::string list = "[";
  for (size_t i = 0; i < edgert_num_outputs(model); ++i) {
    edgert_tensor_info info;
    Check(edgert_output_info(model, i, &info));
    std::vector<char> data(info.nbytes);
    Check(edgert_get_output(model, i, data.data(), data.size()));
    std::string file = "null";
    if (!o.output_dir.empty()) {
      std::string stem = Sanitize(info.name);
      // Hosts find outputs by this same rule, so a clash cannot be renamed away.
      if (!used.insert(stem).second)
        Fail("bundle", "two outputs map to the file name " + stem + ".npy; give the model's outputs distinct names");
      std::string path = o.output_dir + "/" + stem + ".npy";
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

// The whole run; returns the success JSON.
std::string Run(const Options& o) {
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

int main(int argc, char** argv) {
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
