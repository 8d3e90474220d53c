// rpc_server.cc — `edgert-run --rpc-server`: a TVM RPC server on the device, so MetaSchedule
// (and tvm.rpc clients) can upload candidate libraries and time them where they will run.
//
//   edgert-run --rpc-server [--host 127.0.0.1] [--port 9090] [--key KEY]
//              [--tracker HOST:PORT] [--custom-addr HOST[:PORT]] [--work-dir DIR] [--once]
//              [--allow-remote]
//
// TVM RPC has no authentication: whoever reaches the port can upload and run native code. So the
// server binds loopback only and is reached through an ssh/adb port forward; a --host that is
// not a loopback address is refused unless --allow-remote says the network is trusted.
//
// The protocol is TVM's own (python/tvm/rpc/server.py, apps/cpp_rpc): a handshake with the
// RPC magic and keys, then libtvm_runtime's `rpc.ServerLoop` serves the session. With
// --tracker the server registers its key with a TVM RPC tracker and keeps a match key there.
// Each session runs in a forked child, so a candidate that crashes ends its session, not the
// server; the client's "-timeout=N" option bounds a session's length.
//
// stdout: one line "EDGERT {json}" once listening (with the bound port), and one error line
// if the server fails; messages for people go to stderr.

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

std::string EdgertJsonQuote(const std::string& s);  // edgert_run.cc

namespace {

// Constants of TVM's RPC protocol (python/tvm/rpc/base.py).
constexpr int32_t kRPCMagic = 0xFF271;
constexpr int32_t kRPCTrackerMagic = 0x2F271;
constexpr int32_t kRPCSuccess = kRPCMagic + 0;
constexpr int32_t kRPCMismatch = kRPCMagic + 2;
enum TrackerCode { kSuccess = 0, kPut = 3, kUpdateInfo = 5, kGetPendingMatchKeys = 7 };

// A client key naming this probe gets a quiet "mismatch": how edgert checks the server answers.
const char* kProbeKey = "client:edgert-probe";

const char* kRpcUsage =
    "usage: edgert-run --rpc-server [--host 127.0.0.1] [--port N] [--key KEY] [--tracker HOST:PORT] "
    "[--custom-addr HOST[:PORT]] [--work-dir DIR] [--once] [--allow-remote]";

struct RpcFailure {
  std::string code;  // "usage" or "rpc"
  std::string message;
};

[[noreturn]] void Fail(const std::string& message) { throw RpcFailure{"rpc", message}; }
[[noreturn]] void Usage(const std::string& message) { throw RpcFailure{"usage", message}; }

std::string Quote(const std::string& s) { return EdgertJsonQuote(s); }

void Log(const std::string& message) { std::fprintf(stderr, "edgert-run rpc: %s\n", message.c_str()); }

// ---------------------------------------------------------------- signals

// SIGTERM/SIGINT/SIGHUP ask the server to stop; every wait also watches this pipe, so a
// signal never gets lost between checking the flag and blocking.
volatile sig_atomic_t g_stop = 0;
int g_wake[2] = {-1, -1};

void OnSignal(int sig) {
  int saved = errno;
  if (sig != SIGCHLD) g_stop = 1;
  if (g_wake[1] >= 0) {
    ssize_t ignored = write(g_wake[1], "x", 1);
    (void)ignored;
  }
  errno = saved;
}

void InstallSignals() {
  if (pipe(g_wake) != 0) Fail(std::string("cannot create a pipe: ") + std::strerror(errno));
  for (int fd : g_wake) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaction(sig, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a vanished peer is an error return, not a death
}

void DrainWake() {
  char buf[64];
  while (read(g_wake[0], buf, sizeof buf) > 0) {
  }
}

struct Stopped {};  // thrown when a stop signal interrupts a wait

// Waits until fd is readable (true), the timeout passes (false) or a stop signal arrives (throws).
bool WaitReadable(int fd, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    if (g_stop) throw Stopped{};
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now())
                       .count());
    if (timeout_ms >= 0 && left <= 0) return false;
    pollfd fds[2] = {{fd, POLLIN, 0}, {g_wake[0], POLLIN, 0}};
    int n = poll(fds, 2, timeout_ms < 0 ? -1 : left);
    if (n < 0 && errno != EINTR) Fail(std::string("poll failed: ") + std::strerror(errno));
    if (n > 0 && (fds[1].revents & POLLIN)) DrainWake();
    if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) return true;
  }
}

// ---------------------------------------------------------------- sockets

void SendAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(std::string("send failed: ") + std::strerror(errno));
    p += n;
    size -= size_t(n);
  }
}

// Reads exactly size bytes within timeout_ms; throws on a closed peer or timeout.
void RecvAll(int fd, void* data, size_t size, int timeout_ms) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    if (!WaitReadable(fd, timeout_ms)) throw std::runtime_error("timed out waiting for the peer");
    ssize_t n = recv(fd, p, size, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n == 0) throw std::runtime_error("connection closed by the peer");
    if (n < 0) throw std::runtime_error(std::string("recv failed: ") + std::strerror(errno));
    p += n;
    size -= size_t(n);
  }
}

int32_t RecvInt(int fd, int timeout_ms) {
  int32_t v = 0;  // the protocol is little-endian, as are our targets
  RecvAll(fd, &v, sizeof v, timeout_ms);
  return v;
}

void SendInt(int fd, int32_t v) { SendAll(fd, &v, sizeof v); }

// Tracker messages: int32 length + JSON text.
void SendJson(int fd, const std::string& json) {
  SendInt(fd, int32_t(json.size()));
  SendAll(fd, json.data(), json.size());
}

std::string RecvJson(int fd, int timeout_ms) {
  int32_t size = RecvInt(fd, timeout_ms);
  if (size < 0 || size > (1 << 24)) throw std::runtime_error("bad message size from the tracker");
  std::string s(size_t(size), '\0');
  if (size) RecvAll(fd, &s[0], s.size(), timeout_ms);
  return s;
}

struct HostPort {
  std::string host;
  int port = -1;
};

HostPort ParseHostPort(const std::string& flag, const std::string& text, bool port_required) {
  size_t colon = text.rfind(':');
  HostPort hp;
  if (colon == std::string::npos) {
    if (port_required) Usage(flag + " takes HOST:PORT, got '" + text + "'");
    hp.host = text;
    return hp;
  }
  hp.host = text.substr(0, colon);
  std::string port = text.substr(colon + 1);
  char* end = nullptr;
  long n = std::strtol(port.c_str(), &end, 10);
  if (hp.host.empty() || port.empty() || *end != '\0' || n < 1 || n > 65535)
    Usage(flag + " takes HOST:PORT with a port in 1..65535, got '" + text + "'");
  hp.port = int(n);
  return hp;
}

addrinfo* Resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) Fail("cannot resolve '" + host + "': " + gai_strerror(rc));
  return res;
}

bool IsLoopback(const sockaddr* addr) {
  if (addr->sa_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(addr)->sin_addr.s_addr) >> 24) == 127;
  if (addr->sa_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&a)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;  // ::ffff:127.x.y.z
  }
  return false;
}

// Refuses, before anything starts, a --host that resolves to an address other machines can reach.
void CheckBindPolicy(const std::string& host, bool allow_remote) {
  if (allow_remote) return;
  addrinfo* res = Resolve(host, 0, true);
  bool loopback = IsLoopback(res->ai_addr);  // the address Listen binds: the first one
  freeaddrinfo(res);
  if (!loopback)
    Usage("--host " + host + " is not a loopback address, and TVM RPC has no authentication: anyone who "
          "reaches the port can run code on this device. Keep the default 127.0.0.1 and reach the server "
          "through an ssh or adb port forward, or pass --allow-remote on a network you trust");
}

int Listen(const std::string& host, int port, int* bound_port) {
  addrinfo* res = Resolve(host, port, true);
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    Fail(std::string("cannot create a socket: ") + std::strerror(errno));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
    int err = errno;
    freeaddrinfo(res);
    Fail("cannot listen on " + host + ":" + std::to_string(port) + ": " + std::strerror(err) +
         (err == EADDRINUSE ? "; pick another --port, or --port 0 for a free one" : ""));
  }
  freeaddrinfo(res);
  if (listen(fd, 8) != 0) Fail(std::string("listen failed: ") + std::strerror(errno));
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *bound_port = addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                           : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return fd;
}

int Connect(const HostPort& hp) {
  addrinfo* res = Resolve(hp.host, hp.port, false);
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rc = fd < 0 ? -1 : connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// ---------------------------------------------------------------- work directories

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) {
  ::remove(path);
  return 0;
}

void RemoveTree(const std::string& dir) {
  if (!dir.empty()) nftw(dir.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS);
}

std::string g_work_root;    // private to this server; removed on exit
std::string g_session_dir;  // this session's files (set in the session child)

// Path of a file of the current session; names stay inside the session folder.
std::string WorkPath(const std::string& name) {
  if (g_session_dir.empty()) throw std::runtime_error("no RPC session is active");
  if (!name.empty() && name[0] == '/') throw std::runtime_error("'" + name + "' must be relative to the RPC work folder");
  std::stringstream parts(name);
  for (std::string part; std::getline(parts, part, '/');)
    if (part == "..") throw std::runtime_error("'" + name + "' must stay inside the RPC work folder");
  mkdir(g_session_dir.c_str(), 0700);  // a client may have removed it ("remove('')")
  return name.empty() ? g_session_dir : g_session_dir + "/" + name;
}

// ---------------------------------------------------------------- functions the client calls

// Fills a tensor the way TVM's random_fill_for_measure does: values in [1, 10) converted to
// its dtype, so integer and quantised inputs are not all zero.
void RandomFill(DLTensor* t) {
  static thread_local std::mt19937 engine(std::random_device{}());
  std::uniform_real_distribution<double> dist(1.0, 10.0);
  int64_t count = 1;
  for (int i = 0; i < t->ndim; ++i) count *= t->shape[i];
  count *= t->dtype.lanes;
  const DLDataType dt = t->dtype;
  size_t nbytes = size_t((count * dt.bits + 7) / 8);
  std::vector<char> host(nbytes);
  char* p = host.data();
  for (int64_t i = 0; i < count; ++i) {
    double v = dist(engine);
    if (dt.code == kDLFloat && dt.bits == 32) {
      reinterpret_cast<float*>(p)[i] = float(v);
    } else if (dt.code == kDLFloat && dt.bits == 64) {
      reinterpret_cast<double*>(p)[i] = v;
    } else if ((dt.code == kDLFloat || dt.code == kDLBfloat) && dt.bits == 16) {
      float f = float(v);
      uint32_t u;
      std::memcpy(&u, &f, 4);
      uint16_t h;
      if (dt.code == kDLBfloat) {
        h = uint16_t(u >> 16);
      } else {  // [1, 10) is a normal half: rebias the exponent, truncate the mantissa
        h = uint16_t(((u >> 16) & 0x8000) | ((((u >> 23) & 0xFF) - 127 + 15) << 10) | ((u >> 13) & 0x3FF));
      }
      reinterpret_cast<uint16_t*>(p)[i] = h;
    } else if ((dt.code == kDLInt || dt.code == kDLUInt || dt.code == kDLBool) && dt.bits >= 8) {
      int64_t n = dt.code == kDLBool ? 1 : int64_t(v);
      std::memcpy(p + i * (dt.bits / 8), &n, dt.bits / 8);  // little-endian: the low bytes
    } else {
      std::memset(p, 0x11, nbytes);  // sub-byte or unusual types: small non-zero values
      break;
    }
  }
  if (t->device.device_type == kDLCPU) {
    std::memcpy(static_cast<char*>(t->data) + t->byte_offset, p, nbytes);
  } else {
    static const ffi::Function copy = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
    copy(t, static_cast<void*>(p), nbytes);
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void Register(const char* name, ffi::Function f) {
  if (ffi::Function::GetGlobal(name).has_value()) return;  // libtvm_runtime's own wins
  ffi::Function::SetGlobal(name, std::move(f));
}

void RegisterServerFunctions() {
  Register("tvm.rpc.server.workpath",
           ffi::Function::FromTyped([](ffi::String name) { return ffi::String(WorkPath(std::string(name))); }));
  Register("tvm.rpc.server.load_module", ffi::Function::FromTyped([](ffi::String name) {
             std::string path = WorkPath(std::string(name));
             size_t dot = path.rfind('.');
             std::string ext = dot == std::string::npos ? "" : path.substr(dot);
             if (ext != ".so")
               throw std::runtime_error("edgert-run's RPC server loads shared libraries (.so) only, got '" +
                                        std::string(name) + "': export with export_library(\"x.so\", cc=<the target's g++>)");
             return ffi::Module::LoadFromFile(path);
           }));
  // libtvm_runtime has these; registered only if a runtime build lacks them.
  Register("tvm.rpc.server.upload", ffi::Function::FromTyped([](ffi::String name, ffi::Bytes data) {
             std::ofstream out(WorkPath(std::string(name)), std::ios::binary | std::ios::trunc);
             out.write(data.data(), std::streamsize(data.size()));
             if (!out.flush()) throw std::runtime_error("cannot write " + std::string(name));
           }));
  Register("tvm.rpc.server.download",
           ffi::Function::FromTyped([](ffi::String name) { return ffi::Bytes(ReadFile(WorkPath(std::string(name)))); }));
  Register("tvm.rpc.server.remove",
           ffi::Function::FromTyped([](ffi::String name) { ::remove(WorkPath(std::string(name)).c_str()); }));
  Register("tvm.rpc.server.listdir", ffi::Function::FromTyped([](ffi::String name) {
             std::string dir = WorkPath(std::string(name)), out;
             if (DIR* d = opendir(dir.c_str())) {
               while (dirent* e = readdir(d)) {
                 std::string n = e->d_name;
                 if (n != "." && n != "..") out += (out.empty() ? "" : ",") + dir + "/" + n;
               }
               closedir(d);
             }
             return ffi::String(out);
           }));
  // MetaSchedule fills measurement inputs remotely; these live in libtvm_runtime_extra, which
  // bundles do not ship.
  Register("tvm.contrib.random.random_fill_for_measure", ffi::Function::FromTyped([](DLTensor* t) { RandomFill(t); }));
  Register("tvm.contrib.random.random_fill", ffi::Function::FromTyped([](DLTensor* t) { RandomFill(t); }));
}

// ---------------------------------------------------------------- options

struct RpcOptions {
  std::string host = "127.0.0.1";
  int port = 9090;
  std::string key;
  HostPort tracker;
  HostPort custom;  // what the tracker hands to clients, when they reach us through a forward
  std::string work_dir;
  bool once = false;
  bool allow_remote = false;  // bind a non-loopback --host (unauthenticated RPC on the network)
};

RpcOptions ParseRpcArgs(int argc, char** argv) {
  RpcOptions o;
  for (int i = 2; i < argc; ++i) {  // argv[1] is --rpc-server
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) Usage(arg + " needs a value; " + kRpcUsage);
      return argv[++i];
    };
    if (arg == "--host") {
      o.host = next();
    } else if (arg == "--port") {
      std::string text = next();
      char* end = nullptr;
      long n = std::strtol(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || n < 0 || n > 65535)
        Usage("--port needs an integer in 0..65535 (0 picks a free port), got '" + text + "'");
      o.port = int(n);
    } else if (arg == "--key") {
      o.key = next();
      if (o.key.find_first_of(" \t\n\"\\") != std::string::npos)
        Usage("--key must not contain spaces, quotes or backslashes, got '" + o.key + "'");
    } else if (arg == "--tracker") {
      o.tracker = ParseHostPort("--tracker", next(), true);
    } else if (arg == "--custom-addr") {
      o.custom = ParseHostPort("--custom-addr", next(), false);
      if (o.custom.host.find_first_of(" \"\\") != std::string::npos) Usage("--custom-addr has a bad host");
    } else if (arg == "--work-dir") {
      o.work_dir = next();
    } else if (arg == "--once" && !has_value) {
      o.once = true;
    } else if (arg == "--allow-remote" && !has_value) {
      o.allow_remote = true;
    } else {
      Usage("unexpected argument '" + std::string(argv[i]) + "'; " + kRpcUsage);
    }
  }
  if (!o.tracker.host.empty() && o.key.empty())
    Usage("--tracker needs --key KEY, the name clients request this device by");
  if (o.tracker.host.empty() && !o.custom.host.empty()) Usage("--custom-addr only makes sense with --tracker");
  return o;
}

// ---------------------------------------------------------------- tracker

class Tracker {
 public:
  Tracker(const RpcOptions& o, int port) : o_(o), port_(o.custom.port > 0 ? o.custom.port : port) {
    addr_json_ = o.custom.host.empty() ? "null" : Quote(o.custom.host);
  }
  ~Tracker() { Close(); }
  bool enabled() const { return !o_.tracker.host.empty(); }
  int fd() const { return fd_; }

  // Connects (retrying while the tracker starts) and announces this server.
  void Connect() {
    if (!enabled() || fd_ >= 0) return;
    auto start = std::chrono::steady_clock::now();
    while ((fd_ = ::Connect(o_.tracker)) < 0) {
      if (std::chrono::steady_clock::now() - start > std::chrono::seconds(30))
        Fail("cannot reach the RPC tracker at " + o_.tracker.host + ":" + std::to_string(o_.tracker.port) +
             " for 30 s; start it (python -m tvm.exec.rpc_tracker) or fix --tracker");
      WaitReadable(g_wake[0], 1000);
    }
    SendInt(fd_, kRPCTrackerMagic);
    if (RecvInt(fd_, 10000) != kRPCTrackerMagic)
      Fail(o_.tracker.host + ":" + std::to_string(o_.tracker.port) + " is not a TVM RPC tracker");
    Call("[" + std::to_string(kUpdateInfo) + ", {\"key\": " + Quote("server:" + o_.key) + ", \"addr\": [" + addr_json_ +
         ", " + std::to_string(port_) + "]}]");
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  // Offers this server under a fresh match key; clients the tracker sends must present it.
  std::string Put() {
    std::uniform_real_distribution<double> dist(0.0, 1.0);
    std::string matchkey;
    do {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.12f", dist(rng_));
      matchkey = o_.key + ":" + buf;
    } while (matchkey == last_);
    last_ = matchkey;
    Call("[" + std::to_string(kPut) + ", " + Quote(o_.key) + ", [" + std::to_string(port_) + ", " + Quote(matchkey) +
         "], " + addr_json_ + "]");
    return matchkey;
  }

  // True if a client took the match key from the tracker (it is no longer pending).
  bool Taken(const std::string& matchkey) {
    SendJson(fd_, "[" + std::to_string(kGetPendingMatchKeys) + "]");
    return RecvJson(fd_, 10000).find(Quote(matchkey)) == std::string::npos;
  }

 private:
  void Call(const std::string& json) {
    SendJson(fd_, json);
    std::string reply = RecvJson(fd_, 10000);
    if (std::atoi(reply.c_str()) != kSuccess || reply.empty()) throw std::runtime_error("the tracker refused " + json);
  }

  const RpcOptions& o_;
  int port_;
  int fd_ = -1;
  std::string addr_json_;
  std::string last_;
  std::mt19937_64 rng_{std::random_device{}()};
};

// ---------------------------------------------------------------- serving

struct Session {
  int fd = -1;
  int timeout_s = 0;
};

// Accepts one client that presents "client:<matchkey>"; answers everyone else per protocol.
bool Handshake(int fd, const std::string& matchkey, const std::string& server_key, Session* session) {
  if (RecvInt(fd, 10000) != kRPCMagic) return false;
  int32_t keylen = RecvInt(fd, 10000);
  if (keylen < 0 || keylen > 4096) return false;
  std::string key(size_t(keylen), '\0');
  if (keylen) RecvAll(fd, &key[0], key.size(), 10000);
  std::istringstream words(key);
  std::string head, opt;
  words >> head;
  if (head != "client:" + matchkey) {
    SendInt(fd, kRPCMismatch);
    if (head != kProbeKey) Log("refused a client with key '" + head + "' (expected client:" + matchkey + ")");
    return false;
  }
  SendInt(fd, kRPCSuccess);
  SendInt(fd, int32_t(server_key.size()));
  SendAll(fd, server_key.data(), server_key.size());
  session->timeout_s = 0;
  while (words >> opt)
    if (opt.rfind("-timeout=", 0) == 0) session->timeout_s = std::max(0, int(std::ceil(std::atof(opt.c_str() + 9))));
  return true;
}

// Waits for a client that completes the handshake, keeping the tracker's match key fresh
// (TVM's server renews a key that a client took from the tracker but never used).
Session Accept(int listen_fd, const RpcOptions& o, Tracker* tracker) {
  const std::string server_key = "server:" + o.key;
  std::string matchkey = o.key;
  bool offered = false;  // one offer per session: a refused client does not consume it
  while (true) {
    try {
      if (tracker->enabled() && tracker->fd() < 0) offered = false;
      tracker->Connect();
      if (tracker->enabled() && !offered) {
        matchkey = tracker->Put();
        offered = true;
      }
      int unused_rounds = 0;
      while (true) {
        if (WaitReadable(listen_fd, tracker->enabled() ? 2000 : -1)) break;
        if (!tracker->Taken(matchkey)) {
          unused_rounds = 0;
        } else if (++unused_rounds * 2 > 6) {
          matchkey = tracker->Put();
          unused_rounds = 0;
        }
      }
    } catch (const std::runtime_error& e) {  // the tracker went away: reconnect, as TVM does
      Log(std::string("lost the tracker (") + e.what() + "); reconnecting");
      tracker->Close();
      WaitReadable(g_wake[0], 1000);
      continue;
    }
    int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      Fail(std::string("accept failed: ") + std::strerror(errno));
    }
    Session s;
    bool ok = false;
    try {
      ok = Handshake(fd, matchkey, server_key, &s);
    } catch (const std::runtime_error& e) {
      Log(std::string("handshake failed: ") + e.what());
    }
    if (ok) {
      s.fd = fd;
      return s;
    }
    close(fd);
  }
}

int g_session_count = 0;

[[noreturn]] void SessionChild(Session s, int listen_fd, Tracker* tracker) {
  // Die with the server, whatever kills it: no orphan sessions on the device.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) _exit(1);
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaction(sig, &sa, nullptr);
  close(listen_fd);
  if (tracker->fd() >= 0) close(tracker->fd());
  if (s.timeout_s > 0) alarm(unsigned(s.timeout_s));  // the client's session length bound
  int code = 0;
  try {
    if (mkdir(g_session_dir.c_str(), 0700) != 0) throw std::runtime_error("cannot create " + g_session_dir);
    if (chdir(g_session_dir.c_str()) != 0) throw std::runtime_error("cannot enter " + g_session_dir);
    ffi::Function::GetGlobalRequired("rpc.ServerLoop")(int64_t(s.fd));
  } catch (const ffi::Error& e) {
    // The client closing its end also lands here; that is the normal end of a session.
    if (e.message().find("closed") == std::string::npos && e.message().find("shutdown") == std::string::npos) {
      Log("session ended: " + e.kind() + ": " + e.message());
      code = 1;
    }
  } catch (const std::exception& e) {
    Log(std::string("session ended: ") + e.what());
    code = 1;
  }
  std::fflush(stderr);
  _exit(code);
}

// Serves one session in a child process and waits for it; returns false when asked to stop.
bool Serve(Session s, int listen_fd, Tracker* tracker) {
  g_session_dir = g_work_root + "/session-" + std::to_string(++g_session_count);
  pid_t pid = fork();
  if (pid < 0) Fail(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) SessionChild(s, listen_fd, tracker);
  close(s.fd);
  int status = 0;
  bool stopping = false;
  while (true) {
    pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) break;
    if (g_stop && !stopping) {
      kill(pid, SIGKILL);
      stopping = true;
    }
    pollfd fd = {g_wake[0], POLLIN, 0};
    if (poll(&fd, 1, 1000) > 0) DrainWake();
  }
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
    Log("session " + std::to_string(g_session_count) + " ran past its " + std::to_string(s.timeout_s) + " s timeout");
  else if (WIFSIGNALED(status) && !stopping)
    Log("session " + std::to_string(g_session_count) + " died of signal " + std::to_string(WTERMSIG(status)) +
        " (a crashing library?)");
  RemoveTree(g_session_dir);
  g_session_dir.clear();
  return !g_stop;
}

void RunServer(const RpcOptions& o) {
  CheckBindPolicy(o.host, o.allow_remote);
  InstallSignals();
  std::string base = o.work_dir;
  if (base.empty()) base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : P_tmpdir;  // stdio.h: the system temp dir
  std::string root = base + "/edgert-rpc-XXXXXX";
  if (mkdtemp(&root[0]) == nullptr)
    Fail("cannot create a work folder in " + base + ": " + std::strerror(errno) + "; pass a writable --work-dir");
  g_work_root = root;
  struct Cleanup {
    ~Cleanup() { RemoveTree(g_work_root); }
  } cleanup;
  RegisterServerFunctions();
  int port = 0;
  int listen_fd = Listen(o.host, o.port, &port);
  Tracker tracker(o, port);
  try {
    tracker.Connect();  // fail before announcing if the tracker is unreachable
  } catch (const std::runtime_error& e) {
    Fail(std::string("RPC tracker handshake failed: ") + e.what());
  }
  std::printf("EDGERT {\"status\":\"listening\",\"host\":%s,\"port\":%d,\"pid\":%d,\"key\":%s,\"tracker\":%s}\n",
              Quote(o.host).c_str(), port, int(getpid()), Quote(o.key).c_str(),
              o.tracker.host.empty() ? "null" : Quote(o.tracker.host + ":" + std::to_string(o.tracker.port)).c_str());
  std::fflush(stdout);
  Log("serving TVM RPC on " + o.host + ":" + std::to_string(port) + " (work folder " + g_work_root + ")");
  try {
    while (true) {
      Session s = Accept(listen_fd, o, &tracker);
      if (!Serve(s, listen_fd, &tracker) || o.once) break;
    }
  } catch (const Stopped&) {
  }
  close(listen_fd);
}

}  // namespace

// Entry point from edgert_run.cc's main for `edgert-run --rpc-server ...`.
int EdgertRpcServerMain(int argc, char** argv) {
  RpcFailure failure;
  try {
    RunServer(ParseRpcArgs(argc, argv));
    return 0;
  } catch (const RpcFailure& f) {
    failure = f;
  } catch (const Stopped&) {
    return 0;
  } catch (const ffi::Error& e) {
    failure = {"rpc", "TVM runtime error: " + e.kind() + ": " + e.message()};
  } catch (const std::exception& e) {
    failure = {"rpc", e.what()};
  }
  std::fprintf(stderr, "edgert-run: error: %s\n", failure.message.c_str());
  std::printf("EDGERT {\"status\":\"error\",\"code\":%s,\"message\":%s}\n", Quote(failure.code).c_str(),
              Quote(failure.message).c_str());
  std::fflush(stdout);
  return failure.code == "usage" ? 2 : 6;
}
