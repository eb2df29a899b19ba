// A hiredis connection with the project's error conventions: connection failures are
// Code::connection, refused credentials Code::auth, and every message names the server
// by its redacted URL (never the password).
#pragma once

#include <hiredis/hiredis.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mevbackup/error.hpp"

namespace mevbackup::redis {

struct Url {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string user;      // empty: the default user
  std::string password;  // empty: no AUTH
  // "redis://host:port" or "redis://user@host:port": what messages may show.
  std::string redacted() const;
};

// Parses redis://[user[:password]@]host[:port][/db]; the password is `password`, else
// the URL's, else `fallback`. The database number is accepted and ignored (an RDB holds
// every database).
Url parse_url(const std::string& url, const std::string& password = "", const std::string& fallback = "");

// Replaces the password of any URL (scheme://user:password@...) inside a text by "***".
std::string redact(const std::string& text);

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

class Conn {
 public:
  // Connects and authenticates. Throws connection / auth.
  static Conn connect(const Url& url, int timeout_s);
  Conn(Conn&&) = default;
  Conn& operator=(Conn&&) = default;

  // Runs one command; an error reply throws `code` with `what` and the server's message.
  Reply command(const std::vector<std::string>& argv, Code code = Code::io);
  // Like command() but returns error replies instead of throwing.
  Reply command_raw(const std::vector<std::string>& argv);
  std::string status_or_string(const std::vector<std::string>& argv);
  // Pipelining: queue a command without waiting; get_reply() takes the next reply.
  void append(const std::vector<std::string>& argv);
  Reply get_reply();
  // INFO <section> as key -> value.
  std::map<std::string, std::string> info(const std::string& section);
  std::string config_get(const std::string& name);
  int fd() const { return ctx_->fd; }
  const std::string& name() const { return name_; }
  const Url& url() const { return url_; }

 private:
  struct CtxDeleter {
    void operator()(redisContext* c) const { redisFree(c); }
  };
  Conn(std::unique_ptr<redisContext, CtxDeleter> c, Url u);
  [[noreturn]] void fail_io(const std::string& what);
  std::unique_ptr<redisContext, CtxDeleter> ctx_;
  Url url_;
  std::string name_;
};

std::string to_string(const redisReply* r);

}  // namespace mevbackup::redis
