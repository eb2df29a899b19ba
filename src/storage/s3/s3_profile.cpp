// The AWS shared files of the credential chain: ~/.aws/credentials and ~/.aws/config
// (as `aws configure` writes them), read with inih.
#include <ini.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "mevbackup/error.hpp"
#include "s3_client.hpp"

namespace mevbackup::s3 {

namespace {

using Section = std::map<std::string, std::string>;
using Ini = std::map<std::string, Section>;

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// A file of the chain, parsed; empty when it does not exist.
Ini read_ini(const std::string& path, bool* found) {
  Ini out;
  std::ifstream f(path, std::ios::binary);
  *found = static_cast<bool>(f);
  if (!f) return out;
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  if (text.size() > (1u << 20)) throw Error(Code::invalid_argument, fmt::format("{} is larger than 1 MiB", path));
  auto handler = [](void* user, const char* section, const char* name, const char* value) -> int {
    (*static_cast<Ini*>(user))[section][name] = value ? value : "";
    return 1;
  };
  int line = ini_parse_string(text.c_str(), handler, &out);
  if (line != 0)
    throw Error(Code::invalid_argument,
                fmt::format("{} is not a valid AWS credentials or config file (line {})", path, line));
  return out;
}

std::string home_file(const char* env_name, const char* rel) {
  if (auto v = env(env_name)) return v;
  const char* home = env("HOME");
  return home ? std::string(home) + "/.aws/" + rel : std::string();
}

}  // namespace

void apply_shared_files(ClientConfig& c, bool keys_from_options) {
  const bool explicit_profile = !c.profile.empty();
  std::string profile = c.profile;
  if (profile.empty())
    if (auto p = env("AWS_PROFILE")) profile = p;
  const bool named = !profile.empty();
  if (profile.empty()) profile = "default";
  const std::string cred_path = home_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
  const std::string conf_path = home_file("AWS_CONFIG_FILE", "config");
  bool have_creds = false, have_conf = false;
  Ini creds = cred_path.empty() ? Ini{} : read_ini(cred_path, &have_creds);
  Ini conf = conf_path.empty() ? Ini{} : read_ini(conf_path, &have_conf);
  const Section* cs = creds.count(profile) ? &creds[profile] : nullptr;
  std::string conf_name = profile == "default" ? "default" : "profile " + profile;
  const Section* ps = conf.count(conf_name) ? &conf[conf_name] : nullptr;
  if (named && !cs && !ps)
    throw Error(Code::invalid_argument,
                fmt::format("AWS profile \"{}\" is in neither {} nor {}", profile, cred_path, conf_path));
  auto get = [&](const char* key) -> std::string {
    if (cs)
      if (auto it = cs->find(key); it != cs->end() && !it->second.empty()) return it->second;
    if (ps)
      if (auto it = ps->find(key); it != ps->end() && !it->second.empty()) return it->second;
    return {};
  };
  // The shared files come after the environment in the chain; an explicit profile (the
  // CLI's --profile) replaces the environment's keys, as `aws --profile` does.
  if (!keys_from_options && (explicit_profile || c.credentials.access_key_id.empty())) {
    std::string id = get("aws_access_key_id"), secret = get("aws_secret_access_key");
    if (!id.empty() || !secret.empty()) {
      if (id.empty() || secret.empty())
        throw Error(Code::invalid_argument,
                    fmt::format("AWS profile \"{}\" has {} but not {}", profile,
                                id.empty() ? "aws_secret_access_key" : "aws_access_key_id",
                                id.empty() ? "aws_access_key_id" : "aws_secret_access_key"));
      c.credentials = {id, secret, get("aws_session_token")};
      c.credential_source = fmt::format("shared credentials file (profile {})", profile);
    } else if (!get("role_arn").empty() || !get("credential_process").empty() || !get("sso_session").empty() ||
               !get("web_identity_token_file").empty()) {
      throw Error(Code::unsupported,
                  fmt::format("AWS profile \"{}\" gets its credentials from {}, which this version does not support "
                              "yet; give static keys (aws_access_key_id) or the AWS_* variables",
                              profile,
                              !get("role_arn").empty()            ? "a role (role_arn)"
                              : !get("credential_process").empty() ? "credential_process"
                                                                   : "SSO or web identity"));
    } else if (explicit_profile) {
      throw Error(Code::auth, fmt::format("AWS profile \"{}\" has no aws_access_key_id", profile));
    }
  }
  if (c.region.empty()) c.region = get("region");
  if (c.endpoint.empty()) {
    std::string ep = get("endpoint_url");
    if (!ep.empty()) c.endpoint = ep;
  }
}

}  // namespace mevbackup::s3
