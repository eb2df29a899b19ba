#include "files_common.hpp"

#include <fnmatch.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "mevbackup/compress.hpp"
#include "mevbackup/files.hpp"

namespace mevbackup {

const std::vector<std::string>& default_secret_excludes() {
  // Names that, by convention, hold credentials or private keys.
  static const std::vector<std::string> list = {
      ".env",      ".env.*",        "*.pem",       "*.key",         "id_rsa*",     "id_dsa*",
      "id_ecdsa*", "id_ed25519*",   "*.p12",       "*.pfx",         "*.jks",       "*.keystore",
      "*.kdbx",    ".pgpass",       ".netrc",      ".git-credentials", ".htpasswd", "secrets/",
      ".secrets/", ".ssh/",         ".gnupg/",     ".aws/",         "credentials.json",
  };
  return list;
}

namespace files {

std::vector<std::string> split_name(const std::string& name) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= name.size()) {
    size_t j = name.find('/', i);
    if (j == std::string::npos) j = name.size();
    std::string part = name.substr(i, j - i);
    if (!part.empty() && part != ".") out.push_back(std::move(part));
    i = j + 1;
  }
  return out;
}

std::string join_name(const std::vector<std::string>& parts, size_t n) {
  std::string out;
  for (size_t i = 0; i < parts.size() && i < n; ++i) {
    if (i) out += '/';
    out += parts[i];
  }
  return out;
}

bool pattern_matches(const std::string& pattern, const std::string& rel, bool is_dir) {
  std::string p = pattern;
  bool dir_only = false;
  while (!p.empty() && p.back() == '/') {
    p.pop_back();
    dir_only = true;
  }
  if (p.empty() || (dir_only && !is_dir)) return false;
  if (p.find('/') == std::string::npos) {
    auto slash = rel.rfind('/');
    std::string last = slash == std::string::npos ? rel : rel.substr(slash + 1);
    return fnmatch(p.c_str(), last.c_str(), 0) == 0;
  }
  while (p.rfind("./", 0) == 0) p.erase(0, 2);
  return fnmatch(p.c_str(), rel.c_str(), 0) == 0;
}

std::string symlink_escape(const std::string& name, const std::string& target) {
  if (target.empty()) return "symlink with an empty target";
  if (target[0] == '/') return fmt::format("symlink to the absolute path \"{}\" leads outside the target", target);
  size_t depth = split_name(name).size() - 1;
  size_t ups = 0;
  bool descended = false;
  size_t i = 0;
  while (i <= target.size()) {
    size_t j = target.find('/', i);
    if (j == std::string::npos) j = target.size();
    std::string part = target.substr(i, j - i);
    i = j + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (descended) return fmt::format("symlink target \"{}\" climbs with \"..\" after a name", target);
      if (++ups > depth) return fmt::format("symlink to \"{}\" leads outside the target", target);
    } else {
      descended = true;
    }
  }
  return "";
}

std::string mode_string(unsigned mode) { return fmt::format("{:04o}", mode & 07777); }


void throw_disk_write_failure(archive* w, const std::string& what) {
  int e = archive_errno(w);
  std::string msg = fmt::format("{}: {}", what, archive_message(w));
  if (e > 0) {
    std::string sys = std::strerror(e);
    if (msg.find(sys) == std::string::npos) msg += ": " + sys;
  }
  throw Error(e == ENOSPC || e == EDQUOT ? Code::no_space : Code::restore_failed, msg);
}

std::string real_dir(const std::string& p) {
  std::error_code ec;
  auto c = std::filesystem::canonical(p, ec);
  if (ec) throw sys_error(ec.value(), fmt::format("cannot resolve {}", p));
  return c.string();
}

void remove_tree(const std::string& p) noexcept {
  if (p.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(p, ec);
}

la_ssize_t ArchiveSourceClient::on_read(archive* a, void* self, const void** out) {
  auto* c = static_cast<ArchiveSourceClient*>(self);
  try {
    *out = c->buf_.data();
    return static_cast<la_ssize_t>(c->source_.read(MutBytes(c->buf_.data(), c->buf_.size())));
  } catch (...) {
    c->error_ = std::current_exception();
    archive_set_error(a, EIO, "reading the archive's stream failed");
    return ARCHIVE_FATAL;
  }
}

namespace {

// Collects a small object read back from storage (bounded by the reader's ByteLimit).
class StringSink final : public Sink {
 public:
  void write(Bytes data) override { text.append(reinterpret_cast<const char*>(data.data()), data.size()); }
  void commit() override { committed = true; }
  void abort() noexcept override { text.clear(); }
  std::string text;
  bool committed = false;
};

}  // namespace

void store_member_list(Storage& storage, Manifest& m, const nlohmann::json& members, const RunContext& ctx) {
  std::string text = members.dump();
  std::vector<std::byte> bytes(text.size());
  std::memcpy(bytes.data(), text.data(), text.size());
  MemorySource source(std::move(bytes));
  StoredDigest d = store_compressed(storage, m.path + Manifest::kMemberListSuffix, source, Compression::gzip, 6, ctx,
                                    "member list");
  m.source["member_list"] = {
      {"size", d.size},           {"sha256", d.sha256},
      {"payload_size", d.payload_size}, {"payload_sha256", d.payload_sha256},
      {"compression", "gzip"},    {"format", "json"},
      {"count", members.size()},
  };
  // The names of the files are as private as their contents: encrypted with them.
  if (ctx.encryption && ctx.encryption->encrypts()) m.source["member_list"]["encryption"] = "age";
}

std::optional<nlohmann::json> load_member_list(Storage& storage, const Manifest& m, const RunContext& ctx) {
  if (!m.source.is_object()) return std::nullopt;
  auto it = m.source.find("member_list");
  if (it == m.source.end()) {
    auto inline_members = m.source.find("members");
    if (inline_members != m.source.end() && inline_members->is_array()) return *inline_members;
    return std::nullopt;
  }
  const std::string key = m.path + Manifest::kMemberListSuffix;
  const nlohmann::json& rec = *it;
  auto field = [&](const char* name) -> const nlohmann::json& {
    auto f = rec.is_object() ? rec.find(name) : rec.end();
    if (f == rec.end() || (std::string(name) == "sha256" ? !f->is_string() : !f->is_number_unsigned()))
      throw Error(Code::corrupt, fmt::format("manifest {}: source.member_list has no valid \"{}\"", m.key(), name));
    return *f;
  };
  Manifest part;
  part.id = m.id;
  part.path = key;
  part.size = field("size").get<uint64_t>();
  part.sha256 = field("sha256").get<std::string>();
  part.payload_size = field("payload_size").get<uint64_t>();
  part.compression = "gzip";
  if (auto e = rec.find("encryption"); e != rec.end() && e->is_string()) {
    part.encryption = e->get<std::string>();
    part.recipients = m.recipients;
  } else if (!m.encryption.empty()) {
    // An encrypted backup's member list is encrypted too: a manifest saying otherwise
    // was edited (a plaintext list would tell a reader what is not the backup's).
    throw Error(Code::corrupt, fmt::format("manifest {}: the backup is encrypted but its member list is said not to be",
                                           m.key()));
  }
  const uint64_t count = field("count").get<uint64_t>();
  // Held in memory to be parsed: bounded whatever a manifest declares (a million
  // members of long names take a few hundred MiB at most).
  constexpr uint64_t kMaxListBytes = uint64_t{1} << 30;
  if (part.payload_size > kMaxListBytes)
    throw Error(Code::corrupt, fmt::format("the member list {} of backup {} declares {} bytes, more than the {} this "
                                           "library reads",
                                           key, m.id, part.payload_size, kMaxListBytes));
  if (!storage.stat(key))
    throw Error(Code::not_found, fmt::format("the member list {} of backup {} is missing from {}", key, m.id,
                                             storage.describe()));
  StringSink sink;
  RunContext quiet = ctx;
  quiet.progress = {};  // a part of the run, not a stage of its own
  quiet.pipeline.stage_name = "member list";
  try {
    read_artifact(storage, part, sink, quiet);
  } catch (const Error& e) {
    if (e.code() == Code::cancelled || e.code() == Code::locked || std::string(e.what()).find(key) != std::string::npos)
      throw;
    throw Error(e.code(), fmt::format("the member list {} of backup {}: {}", key, m.id, e.what()), e.retriable());
  }
  nlohmann::json members = nlohmann::json::parse(sink.text, nullptr, false);
  if (members.is_discarded() || !members.is_array())
    throw Error(Code::corrupt, fmt::format("the member list {} of backup {} is not a JSON array", key, m.id));
  for (auto& j : members)
    if (!j.is_object() || !j.contains("name") || !j["name"].is_string())
      throw Error(Code::corrupt, fmt::format("the member list {} of backup {} has an entry without a name", key, m.id));
  if (members.size() != count)
    throw Error(Code::corrupt, fmt::format("the member list {} of backup {} has {} entries, its manifest says {}", key,
                                           m.id, members.size(), count));
  return members;
}

}  // namespace files

}  // namespace mevbackup
