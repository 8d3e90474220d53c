// edgert.cc — the C API of edgert.h on top of the TVM runtime (tvm::ffi only).
//
// Order of edgert_open matters: everything is checked (manifest, format version,
// architecture, sha256 of every listed file) before any bundle library is loaded,
// so a tampered or foreign bundle never gets to run code in this process.

#include "edgert.h"

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ffi = tvm::ffi;

#if defined(__aarch64__)
#define EDGERT_ARCH "aarch64"
#elif defined(__x86_64__)
#define EDGERT_ARCH "x86_64"
#else
#error "edgert supports aarch64 and x86_64 only"
#endif
#if defined(__ANDROID__)
#define EDGERT_OS "android"
#else
#define EDGERT_OS "linux"
#endif

namespace {

// ---------------------------------------------------------------- errors

thread_local std::string g_last_error;

// Thrown inside the library, turned into a status + message at the C boundary.
struct Failure {
  edgert_status code;
  std::string message;
};

[[noreturn]] void Fail(edgert_status code, std::string message) {
  throw Failure{code, std::move(message)};
}

// Runs `body`, mapping every exception to a status so none crosses the C boundary.
template <typename F>
edgert_status Guarded(F&& body) {
  try {
    body();
    return EDGERT_OK;
  } catch (const Failure& f) {
    g_last_error = f.message;
    return f.code;
  } catch (const ffi::Error& e) {
    g_last_error = "TVM runtime error: " + e.kind() + ": " + e.message();
  } catch (const std::bad_alloc&) {
    g_last_error = "out of memory";
  } catch (const std::exception& e) {
    g_last_error = std::string("runtime error: ") + e.what();
  }
  return EDGERT_E_RUNTIME;
}

// ---------------------------------------------------------------- JSON

// Just enough JSON for manifest.json: numbers are doubles (shapes fit in 2^53).
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool boolean = false;
  double number = 0;
  std::string str;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;

  const Json* Get(const std::string& key) const {
    for (const auto& m : members)
      if (m.first == key) return &m.second;
    return nullptr;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : p_(text.data()), end_(text.data() + text.size()) {}

  Json ParseDocument() {
    Json value = ParseValue(0);
    SkipSpace();
    if (p_ != end_) Error("unexpected text after the top-level value");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;
  const char* p_;
  const char* end_;

  [[noreturn]] void Error(const std::string& what) { throw std::runtime_error(what); }

  void SkipSpace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool Consume(char c) {
    SkipSpace();
    if (p_ != end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }

  void Expect(char c) {
    if (!Consume(c)) Error(std::string("expected '") + c + "'");
  }

  bool ConsumeWord(const char* word) {
    size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) >= n && std::strncmp(p_, word, n) == 0) {
      p_ += n;
      return true;
    }
    return false;
  }

  Json ParseValue(int depth) {
    if (depth > kMaxDepth) Error("nested too deeply");
    SkipSpace();
    if (p_ == end_) Error("unexpected end of text");
    Json v;
    char c = *p_;
    if (c == '{') {
      v.kind = Json::kObject;
      ++p_;
      if (Consume('}')) return v;
      do {
        SkipSpace();
        std::string key = ParseString();
        Expect(':');
        v.members.emplace_back(std::move(key), ParseValue(depth + 1));
      } while (Consume(','));
      Expect('}');
    } else if (c == '[') {
      v.kind = Json::kArray;
      ++p_;
      if (Consume(']')) return v;
      do v.items.push_back(ParseValue(depth + 1));
      while (Consume(','));
      Expect(']');
    } else if (c == '"') {
      v.kind = Json::kString;
      v.str = ParseString();
    } else if (ConsumeWord("true")) {
      v.kind = Json::kBool;
      v.boolean = true;
    } else if (ConsumeWord("false")) {
      v.kind = Json::kBool;
    } else if (ConsumeWord("null")) {
      v.kind = Json::kNull;
    } else {
      v.kind = Json::kNumber;
      v.number = ParseNumber();
    }
    return v;
  }

  double ParseNumber() {
    const char* start = p_;
    while (p_ != end_ && std::strchr("+-0123456789.eE", *p_) != nullptr) ++p_;
    std::string text(start, p_);
    char* stop = nullptr;
    double d = std::strtod(text.c_str(), &stop);
    if (text.empty() || *stop != '\0') Error("invalid value '" + text + "'");
    return d;
  }

  unsigned ParseHex4() {
    if (end_ - p_ < 4) Error("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      char h = *p_++;
      code <<= 4;
      if (h >= '0' && h <= '9') code |= h - '0';
      else if (h >= 'a' && h <= 'f') code |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') code |= h - 'A' + 10;
      else Error("invalid \\u escape");
    }
    return code;
  }

  static void AppendUtf8(std::string* out, unsigned cp) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string ParseString() {
    if (p_ == end_ || *p_ != '"') Error("expected a string");
    ++p_;
    std::string out;
    while (true) {
      if (p_ == end_) Error("unterminated string");
      char c = *p_++;
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p_ == end_) Error("unterminated string");
      char e = *p_++;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = ParseHex4();
          // A UTF-16 surrogate pair encodes one code point above U+FFFF.
          if (cp >= 0xD800 && cp < 0xDC00 && ConsumeWord("\\u")) {
            unsigned low = ParseHex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          AppendUtf8(&out, cp);
          break;
        }
        default: Error(std::string("invalid escape '\\") + e + "'");
      }
    }
  }
};

// ---------------------------------------------------------------- SHA-256

class Sha256 {
 public:
  void Update(const unsigned char* data, size_t n) {
    length_ += n;
    while (n > 0) {
      size_t take = std::min(n, sizeof(block_) - used_);
      std::memcpy(block_ + used_, data, take);
      used_ += take;
      data += take;
      n -= take;
      if (used_ == sizeof(block_)) {
        Compress(block_);
        used_ = 0;
      }
    }
  }

  std::string HexDigest() {
    uint64_t bits = length_ * 8;
    unsigned char pad = 0x80;
    Update(&pad, 1);
    pad = 0;
    while (used_ != 56) Update(&pad, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    Update(len, 8);
    static const char* kHex = "0123456789abcdef";
    std::string hex;
    for (uint32_t word : h_)
      for (int shift = 28; shift >= 0; shift -= 4) hex += kHex[(word >> shift) & 0xF];
    return hex;
  }

 private:
  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char block_[64];
  size_t used_ = 0;
  uint64_t length_ = 0;

  static uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void Compress(const unsigned char* b) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(b[4 * i]) << 24) | (uint32_t(b[4 * i + 1]) << 16) |
             (uint32_t(b[4 * i + 2]) << 8) | uint32_t(b[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6],
             h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = bb;
      bb = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += bb;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }
};

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Hex sha256 of a file, or nullopt if it cannot be read. Only regular files: reading a FIFO or
// a device a hostile bundle put in place of a listed file would block or never end.
std::optional<std::string> Sha256File(const std::string& path) {
  if (!IsRegularFile(path)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  Sha256 sha;
  std::vector<char> buf(1 << 16);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    sha.Update(reinterpret_cast<const unsigned char*>(buf.data()), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return std::nullopt;
  return sha.HexDigest();
}

// ---------------------------------------------------------------- manifest

struct DType {
  const char* name;
  DLDataType dl;
};

// The dtypes a manifest may name, with their DLPack encoding (TVM stores bool as 8 bits).
const DType kDTypes[] = {
    {"float32", {kDLFloat, 32, 1}}, {"float16", {kDLFloat, 16, 1}}, {"float64", {kDLFloat, 64, 1}},
    {"int8", {kDLInt, 8, 1}},       {"uint8", {kDLUInt, 8, 1}},     {"int16", {kDLInt, 16, 1}},
    {"int32", {kDLInt, 32, 1}},     {"int64", {kDLInt, 64, 1}},     {"bool", {kDLBool, 8, 1}},
};

bool SameDType(DLDataType a, DLDataType b) {
  return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}

struct TensorSpec {
  std::string name;
  std::string dtype;
  DLDataType dl;
  std::vector<int64_t> shape;
  size_t nbytes;
  std::string golden;  // bundle-relative path, empty if none
};

// A continual step model's states: input index <- output index after every step.
struct StreamSpec {
  bool present = false;
  int64_t delay = 0, stride = 1;
  std::vector<std::pair<size_t, size_t>> states;  // (state_in input index, state_out output index)
};

struct Manifest {
  std::string arch, os, device;
  std::vector<TensorSpec> inputs, outputs;
  std::vector<std::pair<std::string, std::string>> files;  // relative path, sha256 hex
  StreamSpec stream;
};

std::string ShapeText(const int64_t* shape, size_t ndim) {
  std::string s = "[";
  for (size_t i = 0; i < ndim; ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string NumberText(double number) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", number);
  return buf;
}

[[noreturn]] void BadManifest(const std::string& what) {
  Fail(EDGERT_E_BUNDLE, "manifest.json: " + what + "; rebuild the bundle with 'edgert compile'");
}

const Json& Field(const Json& obj, const char* key, Json::Kind kind, const std::string& where) {
  const Json* v = obj.Get(key);
  if (v == nullptr) BadManifest(where + " has no '" + key + "'");
  if (v->kind != kind) BadManifest(where + "." + key + " has the wrong type");
  return *v;
}

// Bytes of memory this device has: no tensor the manifest declares may be larger. The manifest is
// not covered by the hashes, so its shapes must not be able to ask for absurd allocations.
size_t PhysicalMemory() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return size_t(1) << 40;
  return size_t(pages) * size_t(page);
}

// More dimensions than any model has; bounds the .npy headers the runner writes.
constexpr size_t kMaxDims = 32;

std::vector<TensorSpec> ParseTensors(const Json& root, const char* key) {
  std::vector<TensorSpec> specs;
  const Json& list = Field(root, key, Json::kArray, "manifest");
  for (size_t i = 0; i < list.items.size(); ++i) {
    const Json& t = list.items[i];
    std::string where = std::string(key) + "[" + std::to_string(i) + "]";
    if (t.kind != Json::kObject) BadManifest(where + " is not an object");
    TensorSpec spec;
    spec.name = Field(t, "name", Json::kString, where).str;
    spec.dtype = Field(t, "dtype", Json::kString, where).str;
    const DType* dtype = nullptr;
    for (const DType& d : kDTypes)
      if (spec.dtype == d.name) dtype = &d;
    if (dtype == nullptr) BadManifest(where + " has unsupported dtype '" + spec.dtype + "'");
    spec.dl = dtype->dl;
    const Json& dims = Field(t, "shape", Json::kArray, where);
    if (dims.items.size() > kMaxDims)
      BadManifest(where + ".shape has " + std::to_string(dims.items.size()) + " dimensions, more than " +
                  std::to_string(kMaxDims));
    // Every dimension is checked before any product, so numel can be bounded without overflow
    // (a zero dimension must not hide the product of the others wrapping around).
    for (const Json& dim : dims.items) {
      // The bound keeps the cast to int64 defined.
      if (dim.kind != Json::kNumber || !(dim.number >= 0 && dim.number < 1e15) ||
          dim.number != double(int64_t(dim.number)))
        BadManifest(where + ".shape must hold non-negative integers (static shapes)");
      spec.shape.push_back(int64_t(dim.number));
    }
    const size_t limit = PhysicalMemory();
    const size_t item = dtype->dl.bits / 8;
    size_t numel = 1;
    bool too_large = false;
    for (int64_t d : spec.shape) {
      if (d == 0) {
        numel = 0;
        too_large = false;
        break;
      }
      if (numel > limit / item / size_t(d)) too_large = true;
      else numel *= size_t(d);
    }
    if (too_large)
      BadManifest(where + " (" + spec.dtype + " " + ShapeText(spec.shape.data(), spec.shape.size()) +
                  ") is larger than this device's memory (" + std::to_string(limit) + " bytes)");
    spec.nbytes = numel * item;
    specs.push_back(std::move(spec));
  }
  return specs;
}

void AttachGolden(const Json& root, const char* key, std::vector<TensorSpec>* specs) {
  const Json* golden = root.Get("golden");
  const Json* list = golden && golden->kind == Json::kObject ? golden->Get(key) : nullptr;
  if (list == nullptr || list->kind != Json::kArray) return;
  for (size_t i = 0; i < list->items.size() && i < specs->size(); ++i)
    if (list->items[i].kind == Json::kString) (*specs)[i].golden = list->items[i].str;
}

size_t IndexOf(const std::vector<TensorSpec>& specs, const std::string& name, const std::string& where) {
  for (size_t i = 0; i < specs.size(); ++i)
    if (specs[i].name == name) return i;
  BadManifest(where + " names '" + name + "', which the model does not have");
}

StreamSpec ParseStream(const Json& root, const Manifest& m) {
  StreamSpec s;
  const Json* stream = root.Get("stream");
  if (stream == nullptr || stream->kind == Json::kNull) return s;
  if (stream->kind != Json::kObject) BadManifest("'stream' is not an object");
  s.present = true;
  const Json& delay = Field(*stream, "delay", Json::kNumber, "stream");
  const Json& stride = Field(*stream, "stride", Json::kNumber, "stream");
  if (!(delay.number >= 0 && delay.number < 1e15) || !(stride.number >= 1 && stride.number < 1e15))
    BadManifest("stream.delay must be >= 0 and stream.stride >= 1");
  s.delay = int64_t(delay.number);
  s.stride = int64_t(stride.number);
  const Json& states = Field(*stream, "states", Json::kArray, "stream");
  for (size_t i = 0; i < states.items.size(); ++i) {
    std::string where = "stream.states[" + std::to_string(i) + "]";
    if (states.items[i].kind != Json::kObject) BadManifest(where + " is not an object");
    size_t in = IndexOf(m.inputs, Field(states.items[i], "name_in", Json::kString, where).str, where);
    size_t out = IndexOf(m.outputs, Field(states.items[i], "name_out", Json::kString, where).str, where);
    if (m.inputs[in].nbytes != m.outputs[out].nbytes || !SameDType(m.inputs[in].dl, m.outputs[out].dl))
      BadManifest(where + ": state input and output differ in shape or dtype");
    s.states.emplace_back(in, out);
  }
  return s;
}

// Far above any real manifest (a few KB: the golden data lives in files of its own).
constexpr off_t kMaxManifestBytes = off_t(16) << 20;

Manifest ParseManifest(const std::string& dir) {
  std::string path = dir + "/manifest.json";
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    Fail(EDGERT_E_BUNDLE, dir + " is not an edgert bundle (" + path +
                              " is missing or not a regular file); point at the directory 'edgert compile' wrote");
  if (st.st_size > kMaxManifestBytes) BadManifest("the file is " + std::to_string(st.st_size) + " bytes, too large");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    Fail(EDGERT_E_BUNDLE, dir + " is not an edgert bundle (cannot read " + path +
                              "); point at the directory 'edgert compile' wrote");
  std::stringstream text;
  text << in.rdbuf();
  Json root;
  try {
    root = JsonParser(text.str()).ParseDocument();
  } catch (const std::runtime_error& e) {
    BadManifest(std::string("invalid JSON (") + e.what() + ")");
  }
  if (root.kind != Json::kObject) BadManifest("not a JSON object");
  const Json* format = root.Get("format");
  if (format == nullptr || format->kind != Json::kString || format->str != "edgert-bundle")
    BadManifest("'format' is not \"edgert-bundle\"");
  const Json& version = Field(root, "format_version", Json::kNumber, "manifest");
  if (version.number > EDGERT_FORMAT_VERSION)
    Fail(EDGERT_E_BUNDLE, "bundle format version " + NumberText(version.number) +
                              " is newer than this runtime supports (" +
                              std::to_string(EDGERT_FORMAT_VERSION) +
                              "); rebuild the bundle with a matching edgert or upgrade the runtime");
  if (version.number != EDGERT_FORMAT_VERSION) BadManifest("unknown format_version");

  Manifest m;
  const Json& target = Field(root, "target", Json::kObject, "manifest");
  m.arch = Field(target, "arch", Json::kString, "target").str;
  const Json* os = target.Get("os");
  m.os = os && os->kind == Json::kString ? os->str : "linux";
  const Json* device = target.Get("device");
  m.device = device && device->kind == Json::kString ? device->str : "cpu";
  m.inputs = ParseTensors(root, "inputs");
  m.outputs = ParseTensors(root, "outputs");
  AttachGolden(root, "inputs", &m.inputs);
  AttachGolden(root, "outputs", &m.outputs);
  m.stream = ParseStream(root, m);
  for (const auto& f : Field(root, "files", Json::kObject, "manifest").members) {
    if (f.second.kind != Json::kString) BadManifest("files['" + f.first + "'] is not a sha256 string");
    m.files.emplace_back(f.first, f.second.str);
  }
  return m;
}

// ---------------------------------------------------------------- checks before loading

void CheckPlatform(const Manifest& m) {
  if (m.arch != EDGERT_ARCH || m.os != EDGERT_OS)
    Fail(EDGERT_E_ARCH, "the bundle was built for " + m.arch + "-" + m.os + " but this runtime is " +
                            EDGERT_ARCH "-" EDGERT_OS +
                            "; run it on a matching device (or under qemu), or compile the model "
                            "again with a target for this machine");
  if (m.device != "cpu" && m.device != "cuda")
    BadManifest("target.device '" + m.device + "' is not cpu or cuda");
}

bool Listed(const Manifest& m, const std::string& rel) {
  for (const auto& f : m.files)
    if (f.first == rel) return true;
  return false;
}

// Absolute, symlink-free path, or empty if it does not exist.
std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

// Files in lib/ the manifest does not cover: the loader may pick them up through RUNPATH
// $ORIGIN, so an unverified library there is refused like a modified one.
std::vector<std::string> UnlistedLibraries(const std::string& root, const Manifest& m) {
  std::vector<std::string> unlisted;
  DIR* dir = opendir((root + "/lib").c_str());
  if (dir == nullptr) return unlisted;
  while (const dirent* entry = readdir(dir)) {
    std::string rel = std::string("lib/") + entry->d_name;
    if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0 && !Listed(m, rel))
      unlisted.push_back(rel);
  }
  closedir(dir);
  return unlisted;
}

void CheckIntegrity(const std::string& root, const Manifest& m) {
  std::vector<std::string> required = {"lib/model.so"};
  if (m.device == "cuda") required.push_back("lib/libtvm_runtime_cuda.so");
  for (const auto& rel : required)
    if (!Listed(m, rel))
      Fail(EDGERT_E_INTEGRITY, "manifest.json lists no hash for " + rel +
                                   ", so it cannot be verified; rebuild the bundle with 'edgert compile'");
  if (m.files.empty()) BadManifest("'files' is empty");
  // Golden files are read as inputs by the runner: only hash-checked ones.
  for (const auto* specs : {&m.inputs, &m.outputs})
    for (const TensorSpec& spec : *specs)
      if (!spec.golden.empty() && !Listed(m, spec.golden))
        Fail(EDGERT_E_INTEGRITY, "golden file '" + spec.golden + "' of '" + spec.name +
                                     "' is not in the manifest's files, so it cannot be verified; "
                                     "rebuild the bundle with 'edgert compile'");
  std::string bad;
  for (const std::string& rel : UnlistedLibraries(root, m))
    bad += (bad.empty() ? "" : ", ") + rel + " (not in the manifest)";
  for (const auto& f : m.files) {
    std::string real = RealPath(root + "/" + f.first);
    // Symlinks or ".." could make a listed name point at a file outside the bundle.
    if (!real.empty() && real.compare(0, root.size() + 1, root + "/") != 0)
      Fail(EDGERT_E_INTEGRITY, "bundle file '" + f.first + "' points outside the bundle; refusing it");
    if (!real.empty() && !IsRegularFile(real)) {
      bad += (bad.empty() ? "" : ", ") + f.first + " (not a regular file)";
      continue;
    }
    std::optional<std::string> digest = real.empty() ? std::nullopt : Sha256File(real);
    if (!digest) bad += (bad.empty() ? "" : ", ") + f.first + " (missing)";
    else if (*digest != f.second) bad += (bad.empty() ? "" : ", ") + f.first + " (modified)";
  }
  if (!bad.empty())
    Fail(EDGERT_E_INTEGRITY, "bundle " + root + " failed its integrity check: " + bad +
                                 "; copy the bundle again or rebuild it with 'edgert compile'");
}

// ---------------------------------------------------------------- tensors

// 64-byte aligned host memory: TVM's kernels assume this alignment for their buffers.
struct HostAlloc {
  void AllocData(DLTensor* t) {
    size_t n = (ffi::GetDataSize(*t) + 63) / 64 * 64;
    t->data = aligned_alloc(64, n ? n : 64);
    if (t->data == nullptr) throw std::bad_alloc();
  }
  void FreeData(DLTensor* t) { free(t->data); }
};

bool OnHost(const ffi::Tensor& t) { return t.device().device_type == kDLCPU; }

ffi::Tensor AllocTensor(const TensorSpec& spec, DLDevice device) {
  ffi::ShapeView shape(spec.shape.data(), spec.shape.size());
  if (device.device_type == kDLCPU) return ffi::Tensor::FromNDAlloc(HostAlloc(), shape, spec.dl, device);
  // Device memory comes from the runtime's own device API (libtvm_runtime_cuda.so).
  static const ffi::Function alloc = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
  return alloc(ffi::Shape(shape), spec.dl, device, ffi::Optional<ffi::String>()).cast<ffi::Tensor>();
}

void CopyIn(const ffi::Tensor& t, const void* data, size_t nbytes) {
  if (OnHost(t)) {
    std::memcpy(static_cast<char*>(t.data_ptr()) + t.byte_offset(), data, nbytes);
    return;
  }
  static const ffi::Function copy = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
  copy(t, const_cast<void*>(data), nbytes);
}

void CopyOut(const ffi::Tensor& t, void* data, size_t nbytes) {
  if (OnHost(t)) {
    std::memcpy(data, static_cast<const char*>(t.data_ptr()) + t.byte_offset(), nbytes);
    return;
  }
  // Synchronises the device stream before returning, so the bytes are final.
  static const ffi::Function copy = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
  copy(t, data, nbytes);
}

// main returns one tensor or a (possibly nested) tuple of them; flatten in order.
void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto tuple = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *tuple) Flatten(item, out);
  } else {
    Fail(EDGERT_E_RUNTIME, "the model returned a " + value.GetTypeKey() +
                               ", expected tensors; rebuild the bundle with 'edgert compile'");
  }
}

void CheckOutput(const TensorSpec& spec, const ffi::Tensor& t) {
  ffi::ShapeView shape = t.shape();
  bool same = SameDType(t.dtype(), spec.dl) && shape.size() == spec.shape.size();
  for (size_t d = 0; same && d < shape.size(); ++d) same = shape[d] == spec.shape[d];
  if (!same || !t.IsContiguous())
    Fail(EDGERT_E_RUNTIME, "output '" + spec.name + "' came back as " +
                               std::string(ffi::DLDataTypeToString(t.dtype())) + " " +
                               ShapeText(shape.data(), shape.size()) + " but the manifest says " +
                               spec.dtype + " " + ShapeText(spec.shape.data(), spec.shape.size()) +
                               "; the bundle's model.so and manifest disagree, rebuild it");
}

// ---------------------------------------------------------------- loading

std::string CanonicalDir(const char* dir) {
  std::string real = RealPath(dir);
  if (real.empty())
    Fail(EDGERT_E_BUNDLE, std::string("bundle not found: ") + dir +
                              "; build one with 'edgert compile MODEL --target NAME -o DIR'");
  return real;
}

// libtvm_runtime_cuda.so registers the CUDA device API and module loader when loaded.
// It stays loaded for the life of the process: its registrations cannot be undone.
void LoadCudaRuntime(const std::string& root) {
  std::string path = root + "/lib/libtvm_runtime_cuda.so";
  if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr)
    Fail(EDGERT_E_RUNTIME, std::string("cannot load the CUDA runtime: ") + dlerror() +
                               "; install the NVIDIA driver and the CUDA runtime (libcudart) the "
                               "bundle was built against");
}

// model.so calls into libtvm_ffi / libtvm_runtime (TVMFFI*, TVMBackend*) without listing them
// as dependencies, so they must be in the global symbol scope. They already are when a
// program links libedgert; promote them for hosts that dlopen libedgert with RTLD_LOCAL
// (Python ctypes, for one). RTLD_NOLOAD finds the copies libedgert itself loaded.
void ExposeRuntimeSymbols() {
  for (const char* lib : {"libtvm_ffi.so", "libtvm_runtime.so"})
    if (dlopen(lib, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL) == nullptr)
      Fail(EDGERT_E_RUNTIME, std::string("cannot expose ") + lib + " to the model: " + dlerror());
}

ffi::Function RequireFunction(const ffi::Module& mod, const char* name) {
  ffi::Optional<ffi::Function> f = mod->GetFunction(name, true);
  if (!f.has_value())
    Fail(EDGERT_E_RUNTIME, std::string("lib/model.so has no '") + name +
                               "'; it is not a TVM Relax executable, rebuild the bundle");
  return *f;
}

}  // namespace

// ---------------------------------------------------------------- the model

// The library of a bundle, loaded once per process and kept until exit. Compiled VM code
// (a bundle's "main") caches the VM builtins it calls in model.so's globals, as weak
// references owned by the library Module that looked them up, and dlopen hands a second
// Module over the same file the same globals: opening a bundle twice and closing one
// handle left the other calling freed functions (heap corruption). One Module per file
// and content (path and sha256, so a redeployed bundle is loaded afresh) keeps every
// cached reference alive; models share it and each gets its own VM.
ffi::Module LoadLibraryOnce(const std::string& path, const std::string& sha256) {
  static std::mutex mutex;
  // Never destroyed: a model closed during static destruction may still need its library.
  static auto* loaded = new std::map<std::string, ffi::Module>();
  char resolved[PATH_MAX];
  std::string key = (realpath(path.c_str(), resolved) ? std::string(resolved) : path) + "\n" + sha256;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = loaded->find(key);
  if (it == loaded->end()) it = loaded->emplace(key, ffi::Module::LoadFromFile(path)).first;
  return it->second;
}


struct edgert_model {
  Manifest manifest;
  // Declaration order is teardown order reversed: tensors go before the VM, the VM
  // before the library whose code it runs.
  std::optional<ffi::Module> library;
  std::optional<ffi::Module> vm;
  ffi::Function compiled;  // the model's "main" (machine code in a bundle built with a compiled VM)
  ffi::Function bytecode;  // "main__bytecode": the same function as VM bytecode, which the VM instruments
  std::vector<ffi::Tensor> inputs;
  std::vector<bool> input_set;
  std::vector<ffi::Tensor> outputs;
  int64_t frames = 0;  // stream steps since the last reset
  edgert_call_hook hook = nullptr;
  void* hook_user = nullptr;
  bool instrumented = false;  // the VM's instrument points at SetCallHook's function

  void Load(const std::string& root) {
    bool cuda = manifest.device == "cuda";
    ExposeRuntimeSymbols();
    if (cuda) LoadCudaRuntime(root);
    std::string sha256;
    for (const auto& f : manifest.files)
      if (f.first == "lib/model.so") sha256 = f.second;
    library = LoadLibraryOnce(root + "/lib/model.so", sha256);
    vm = RequireFunction(*library, "vm_load_executable")().cast<ffi::Module>();
    // One (device type, id, allocator) triple per device, the CPU last; allocator 2 = pooled.
    ffi::Function init = RequireFunction(*vm, "vm_initialization");
    if (cuda) init(int(kDLCUDA), 0, 2, int(kDLCPU), 0, 2);
    else init(int(kDLCPU), 0, 2);
    compiled = RequireFunction(*vm, "main");
    // Older bundles and models with symbolic shapes have bytecode only: main is instrumentable.
    ffi::Optional<ffi::Function> twin = (*vm)->GetFunction("main__bytecode", true);
    bytecode = twin.has_value() ? *twin : compiled;
    DLDevice device{cuda ? kDLCUDA : kDLCPU, 0};
    for (const TensorSpec& spec : manifest.inputs) inputs.push_back(AllocTensor(spec, device));
    input_set.assign(inputs.size(), false);
  }

  // The Relax VM calls its instrument before and after every Call instruction with
  // (func, func_symbol, before_run, ret_value, args...); returning 0 (kNoOp) lets the call run.
  // Once installed it stays (set_instrument cannot take it out); a NULL hook makes it a no-op.
  void SetCallHook(edgert_call_hook new_hook, void* user) {
    hook = new_hook;
    hook_user = user;
    if (new_hook == nullptr) {
      // Uninstall the VM's instrument too: left in place it costs two packed calls per VM
      // instruction even with no hook (a third of a small model's run time).
      if (instrumented) RequireFunction(*vm, "set_instrument")(ffi::Function());
      instrumented = false;
      return;
    }
    if (instrumented) return;
    ffi::Function instrument = ffi::Function::FromPacked([this](ffi::PackedArgs args, ffi::Any* rv) {
      *rv = 0;
      if (hook == nullptr || args.size() < 3) return;
      // The symbol arrives as a raw C string (a view of the executable's function table).
      const char* name = "?";
      if (auto raw = args[1].try_cast<const char*>()) name = *raw;
      hook(hook_user, name, args[2].cast<bool>() ? 1 : 0);
    });
    RequireFunction(*vm, "set_instrument")(instrument);
    instrumented = true;
  }

  void Run() {
    outputs.clear();
    std::vector<ffi::AnyView> args;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!input_set[i])
        Fail(EDGERT_E_ARGUMENT, "input '" + manifest.inputs[i].name + "' was not set; call edgert_set_input first");
      args.emplace_back(inputs[i]);
    }
    ffi::Any result;
    // While a hook is set, the bytecode twin: compiled VM functions call kernels directly, past the instrument.
    const ffi::Function& entry = hook != nullptr ? bytecode : compiled;
    entry.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
    std::vector<ffi::Tensor> got;
    Flatten(result, &got);
    if (got.size() != manifest.outputs.size())
      Fail(EDGERT_E_RUNTIME, "the model returned " + std::to_string(got.size()) + " outputs, the manifest lists " +
                                 std::to_string(manifest.outputs.size()) + "; rebuild the bundle");
    for (size_t i = 0; i < got.size(); ++i) CheckOutput(manifest.outputs[i], got[i]);
    outputs = std::move(got);
  }

  void StreamReset() {
    for (const auto& st : manifest.stream.states) {
      std::vector<char> zeros(manifest.inputs[st.first].nbytes, 0);
      // A fresh tensor: the old one may be a VM output still referenced by `outputs`.
      inputs[st.first] = AllocTensor(manifest.inputs[st.first], inputs[st.first].device());
      CopyIn(inputs[st.first], zeros.data(), zeros.size());
      input_set[st.first] = true;
    }
    frames = 0;
  }

  // One step; the state outputs become the next state inputs (the tensor handles move, no bytes are copied).
  bool StreamStep() {
    Run();
    for (const auto& st : manifest.stream.states) inputs[st.first] = outputs[st.second];
    const StreamSpec& s = manifest.stream;
    bool emitted = frames >= s.delay && (frames - s.delay) % s.stride == 0;
    ++frames;
    return emitted;
  }
};

namespace {

edgert_status Describe(const TensorSpec& spec, edgert_tensor_info* info) {
  info->name = spec.name.c_str();
  info->dtype = spec.dtype.c_str();
  info->ndim = static_cast<int32_t>(spec.shape.size());
  info->shape = spec.shape.data();
  info->nbytes = spec.nbytes;
  info->golden = spec.golden.empty() ? nullptr : spec.golden.c_str();
  return EDGERT_OK;
}

edgert_status BadArgument(const std::string& message) {
  g_last_error = message;
  return EDGERT_E_ARGUMENT;
}

// Index and byte-count checks shared by set_input / get_output.
edgert_status CheckAccess(const edgert_model* model, size_t index, const void* data, size_t nbytes,
                          bool input) {
  const char* kind = input ? "input" : "output";
  if (model == nullptr || data == nullptr) return BadArgument(std::string("edgert: NULL model or buffer for ") + kind);
  const auto& specs = input ? model->manifest.inputs : model->manifest.outputs;
  if (index >= specs.size())
    return BadArgument(std::string(kind) + " index " + std::to_string(index) + " out of range (the model has " +
                       std::to_string(specs.size()) + ")");
  const TensorSpec& spec = specs[index];
  if (nbytes != spec.nbytes)
    return BadArgument(std::string(kind) + " '" + spec.name + "' (" + spec.dtype + " " +
                       ShapeText(spec.shape.data(), spec.shape.size()) + ") needs " +
                       std::to_string(spec.nbytes) + " bytes, got " + std::to_string(nbytes));
  return EDGERT_OK;
}

}  // namespace

extern "C" {

const char* edgert_last_error(void) { return g_last_error.c_str(); }

edgert_status edgert_open(const char* bundle_dir, edgert_model** out) {
  if (bundle_dir == nullptr || out == nullptr) return BadArgument("edgert_open: NULL argument");
  *out = nullptr;
  return Guarded([&] {
    std::string root = CanonicalDir(bundle_dir);
    auto model = std::make_unique<edgert_model>();
    model->manifest = ParseManifest(root);
    CheckPlatform(model->manifest);
    CheckIntegrity(root, model->manifest);
    model->Load(root);
    if (model->manifest.stream.present) model->StreamReset();
    *out = model.release();
  });
}

void edgert_close(edgert_model* model) { delete model; }

size_t edgert_num_inputs(const edgert_model* model) { return model ? model->manifest.inputs.size() : 0; }

size_t edgert_num_outputs(const edgert_model* model) { return model ? model->manifest.outputs.size() : 0; }

edgert_status edgert_input_info(const edgert_model* model, size_t index, edgert_tensor_info* info) {
  if (model == nullptr || info == nullptr) return BadArgument("edgert_input_info: NULL argument");
  if (index >= model->manifest.inputs.size()) return BadArgument("input index " + std::to_string(index) + " out of range");
  return Describe(model->manifest.inputs[index], info);
}

edgert_status edgert_output_info(const edgert_model* model, size_t index, edgert_tensor_info* info) {
  if (model == nullptr || info == nullptr) return BadArgument("edgert_output_info: NULL argument");
  if (index >= model->manifest.outputs.size()) return BadArgument("output index " + std::to_string(index) + " out of range");
  return Describe(model->manifest.outputs[index], info);
}

edgert_status edgert_set_input(edgert_model* model, size_t index, const void* data, size_t nbytes) {
  edgert_status status = CheckAccess(model, index, data, nbytes, true);
  if (status != EDGERT_OK) return status;
  return Guarded([&] {
    CopyIn(model->inputs[index], data, nbytes);
    model->input_set[index] = true;
  });
}

edgert_status edgert_run(edgert_model* model) {
  if (model == nullptr) return BadArgument("edgert_run: NULL model");
  return Guarded([&] { model->Run(); });
}

edgert_status edgert_set_call_hook(edgert_model* model, edgert_call_hook hook, void* user) {
  if (model == nullptr) return BadArgument("edgert_set_call_hook: NULL model");
  return Guarded([&] { model->SetCallHook(hook, user); });
}

edgert_status edgert_get_output(const edgert_model* model, size_t index, void* data, size_t nbytes) {
  edgert_status status = CheckAccess(model, index, data, nbytes, false);
  if (status != EDGERT_OK) return status;
  if (model->outputs.empty()) return BadArgument("no outputs yet; call edgert_run first");
  return Guarded([&] { CopyOut(model->outputs[index], data, nbytes); });
}

int edgert_is_stream(const edgert_model* model) { return model && model->manifest.stream.present ? 1 : 0; }

edgert_status edgert_stream_info(const edgert_model* model, int64_t* delay, int64_t* stride) {
  if (model == nullptr || delay == nullptr || stride == nullptr) return BadArgument("edgert_stream_info: NULL argument");
  if (!model->manifest.stream.present)
    return BadArgument("the bundle is not a step model; convert the model with 'edgert continual' and compile that");
  *delay = model->manifest.stream.delay;
  *stride = model->manifest.stream.stride;
  return EDGERT_OK;
}

edgert_status edgert_stream_reset(edgert_model* model) {
  if (model == nullptr) return BadArgument("edgert_stream_reset: NULL model");
  if (!model->manifest.stream.present)
    return BadArgument("the bundle is not a step model; convert the model with 'edgert continual' and compile that");
  return Guarded([&] { model->StreamReset(); });
}

edgert_status edgert_stream_step(edgert_model* model, int* emitted) {
  if (model == nullptr) return BadArgument("edgert_stream_step: NULL model");
  if (!model->manifest.stream.present)
    return BadArgument("the bundle is not a step model; convert the model with 'edgert continual' and compile that");
  return Guarded([&] {
    bool valid = model->StreamStep();
    if (emitted != nullptr) *emitted = valid ? 1 : 0;
  });
}

}  // extern "C"
