#include "redis_conn.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace mevbackup::redis {

namespace {

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::string Url::redacted() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return fmt::format("redis://{}{}:{}", user.empty() ? "" : user + "@", h, port);
}

Url parse_url(const std::string& text, const std::string& password, const std::string& fallback) {
  const std::string scheme = "redis://";
  if (text.rfind(scheme, 0) != 0)
    throw Error(Code::invalid_argument,
                fmt::format("Redis URL \"{}\" must start with redis:// (rediss:// and unix sockets are not supported)",
                            redact(text)));
  std::string rest = text.substr(scheme.size());
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    std::string db = rest.substr(slash + 1);
    for (char c : db)
      if (!std::isdigit(static_cast<unsigned char>(c)))
        throw Error(Code::invalid_argument, fmt::format("Redis URL \"{}\": bad database \"{}\"", redact(text), db));
    rest = rest.substr(0, slash);
  }
  Url u;
  if (auto at = rest.rfind('@'); at != std::string::npos) {
    std::string userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (auto colon = userinfo.find(':'); colon != std::string::npos) {
      u.user = percent_decode(userinfo.substr(0, colon));
      u.password = percent_decode(userinfo.substr(colon + 1));
    } else {
      u.user = percent_decode(userinfo);
    }
  }
  std::string hostport = rest;
  std::string port;
  if (!hostport.empty() && hostport[0] == '[') {
    auto close = hostport.find(']');
    if (close == std::string::npos)
      throw Error(Code::invalid_argument, fmt::format("Redis URL \"{}\": unclosed [", redact(text)));
    u.host = hostport.substr(1, close - 1);
    if (close + 1 < hostport.size()) {
      if (hostport[close + 1] != ':')
        throw Error(Code::invalid_argument, fmt::format("Redis URL \"{}\": bad host", redact(text)));
      port = hostport.substr(close + 2);
    }
  } else if (auto colon = hostport.rfind(':'); colon != std::string::npos) {
    u.host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
  } else {
    u.host = hostport;
  }
  if (u.host.empty()) throw Error(Code::invalid_argument, fmt::format("Redis URL \"{}\" names no host", redact(text)));
  if (!port.empty()) {
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (*end || p < 1 || p > 65535)
      throw Error(Code::invalid_argument, fmt::format("Redis URL \"{}\": bad port \"{}\"", redact(text), port));
    u.port = static_cast<int>(p);
  }
  if (!password.empty()) u.password = password;
  if (u.password.empty()) u.password = fallback;
  return u;
}

std::string redact(const std::string& text) {
  // Any scheme (redis://, rediss://, a typo...): the password between "user:" and "@".
  std::string out = text;
  size_t pos = 0;
  while ((pos = out.find("://", pos)) != std::string::npos) {
    size_t start = pos + 3;
    size_t end = out.find_first_of("/ \t\"'", start);
    if (end == std::string::npos) end = out.size();
    size_t at = out.rfind('@', end);
    if (at != std::string::npos && at >= start) {
      size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) {
        out.replace(colon + 1, at - colon - 1, "***");
        end = colon + 4;
      }
    }
    pos = end;
  }
  return out;
}

std::string to_string(const redisReply* r) {
  if (!r) return "";
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      return std::string(r->str, r->len);
    case REDIS_REPLY_INTEGER:
      return std::to_string(r->integer);
    default:
      return "";
  }
}

Conn::Conn(std::unique_ptr<redisContext, CtxDeleter> c, Url u)
    : ctx_(std::move(c)), url_(std::move(u)), name_(url_.redacted()) {}

Conn Conn::connect(const Url& url, int timeout_s) {
  timeval tv{timeout_s > 0 ? timeout_s : 10, 0};
  std::unique_ptr<redisContext, CtxDeleter> c(redisConnectWithTimeout(url.host.c_str(), url.port, tv));
  if (!c) throw Error(Code::no_memory, "cannot allocate a Redis connection");
  if (c->err)
    throw Error(Code::connection, fmt::format("cannot connect to Redis at {}: {}", url.redacted(), c->errstr), true);
  redisSetTimeout(c.get(), tv);
  Conn conn(std::move(c), url);
  if (!url.password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!url.user.empty()) auth.push_back(url.user);
    auth.push_back(url.password);
    Reply r = conn.command_raw(auth);
    if (r->type == REDIS_REPLY_ERROR)
      throw Error(Code::auth, fmt::format("Redis at {} refused the credentials{}: {}", url.redacted(),
                                          url.user.empty() ? "" : " of user " + url.user, to_string(r.get())));
  }
  Reply ping = conn.command_raw({"PING"});
  if (ping->type == REDIS_REPLY_ERROR) {
    std::string msg = to_string(ping.get());
    if (msg.rfind("NOAUTH", 0) == 0)
      throw Error(Code::auth, fmt::format("Redis at {} requires a password (the CLI reads it from MEVBACKUP_REDIS_PASSWORD)",
                                          url.redacted()));
    throw Error(Code::connection, fmt::format("Redis at {} answered PING with: {}", url.redacted(), msg), true);
  }
  return conn;
}

void Conn::fail_io(const std::string& what) {
  std::string err = ctx_->err ? ctx_->errstr : "no reply";
  throw Error(Code::connection, fmt::format("lost the connection to Redis at {} during {}: {}", name_, what, err), true);
}

Reply Conn::command_raw(const std::vector<std::string>& argv) {
  std::vector<const char*> a;
  std::vector<size_t> l;
  for (auto& s : argv) {
    a.push_back(s.data());
    l.push_back(s.size());
  }
  auto* raw = static_cast<redisReply*>(redisCommandArgv(ctx_.get(), static_cast<int>(a.size()), a.data(), l.data()));
  if (!raw) fail_io(argv.empty() ? "a command" : argv[0]);
  return Reply(raw);
}

Reply Conn::command(const std::vector<std::string>& argv, Code code) {
  Reply r = command_raw(argv);
  if (r->type == REDIS_REPLY_ERROR) {
    std::string msg = to_string(r.get());
    if (msg.rfind("NOPERM", 0) == 0) code = Code::permission;
    throw Error(code, fmt::format("Redis at {}: {} failed: {}", name_, argv.empty() ? "" : argv[0], msg));
  }
  return r;
}

void Conn::append(const std::vector<std::string>& argv) {
  std::vector<const char*> a;
  std::vector<size_t> l;
  for (auto& s : argv) {
    a.push_back(s.data());
    l.push_back(s.size());
  }
  if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(a.size()), a.data(), l.data()) != REDIS_OK)
    fail_io(argv.empty() ? "a command" : argv[0]);
}

Reply Conn::get_reply() {
  void* raw = nullptr;
  if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || !raw) fail_io("a pipelined command");
  return Reply(static_cast<redisReply*>(raw));
}

std::string Conn::status_or_string(const std::vector<std::string>& argv) { return to_string(command(argv).get()); }

std::map<std::string, std::string> Conn::info(const std::string& section) {
  std::string text = status_or_string({"INFO", section});
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty() && line[0] != '#')
      if (auto c = line.find(':'); c != std::string::npos) out[line.substr(0, c)] = line.substr(c + 1);
    pos = nl + 1;
  }
  return out;
}

std::string Conn::config_get(const std::string& name) {
  Reply r = command({"CONFIG", "GET", name});
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 2)
    throw Error(Code::io, fmt::format("Redis at {}: CONFIG GET {} returned nothing", name_, name));
  return to_string(r->element[1]);
}

}  // namespace mevbackup::redis
