// rekey: an encrypted backup re-encrypted to new recipients by rewriting only the age
// headers of its objects (the payload, sealed under the same file key, is copied as it is).
#include <cstring>

#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/maintenance.hpp"
#include "mevbackup/pitr.hpp"

namespace mevbackup {

namespace {

// The stored bytes of an age object with its header replaced: the new header, then the
// old payload. The old bytes are hashed as they are read, to be checked against the
// manifest before anything is committed.
class RekeySource final : public Source {
 public:
  RekeySource(std::unique_ptr<Source> in, const Encryption& keys, std::string what)
      : in_(std::move(in)), keys_(keys), what_(std::move(what)) {}

  size_t read(MutBytes buf) override {
    if (!started_) start();
    if (pos_ < pending_.size()) {
      size_t n = std::min(buf.size(), pending_.size() - pos_);
      std::memcpy(buf.data(), pending_.data() + pos_, n);
      pos_ += n;
      return n;
    }
    size_t n = pull(buf.data(), buf.size());
    return n;
  }
  void abort() noexcept override { in_->abort(); }

  // After the end: the old object's size and SHA-256.
  uint64_t old_size() const { return old_n_; }
  std::string old_sha256() {
    if (!finished_) {
      old_sha_.finish();
      finished_ = true;
    }
    return old_sha_.hex();
  }

 private:
  size_t pull(std::byte* p, size_t n) {
    size_t got = in_->read(MutBytes(p, n));
    old_sha_.update(Bytes(p, got));
    old_n_ += got;
    return got;
  }
  void start() {
    started_ = true;
    std::string head;
    std::vector<std::byte> chunk(64 * 1024);
    size_t hs = 0;
    for (;;) {
      hs = age_header_size(head);  // throws corrupt when it is no age file
      if (hs) break;
      size_t got = pull(chunk.data(), chunk.size());
      if (!got) throw Error(Code::corrupt, fmt::format("{}: the age header ends before its MAC line", what_));
      head.append(reinterpret_cast<const char*>(chunk.data()), got);
    }
    try {
      pending_ = age_rekey_header(std::string_view(head).substr(0, hs), keys_.identities, keys_.recipients);
    } catch (const Error& e) {
      throw Error(e.code(), fmt::format("{}: {}", what_, e.what()));
    }
    pending_.append(head, hs, std::string::npos);
  }

  std::unique_ptr<Source> in_;
  const Encryption& keys_;
  std::string what_;
  bool started_ = false, finished_ = false;
  std::string pending_;
  size_t pos_ = 0;
  Sha256 old_sha_;
  uint64_t old_n_ = 0;
};

struct Written {
  uint64_t size = 0;
  std::string sha256;
};

// Copies the age object `from` (`size` bytes with `sha256`, as its manifest says) into
// `sink` with its header rewritten; commits only when the old bytes matched.
Written rekey_object(Storage& st, const std::string& from, uint64_t size, const std::string& sha256, Sink& sink,
                     const Encryption& keys, const RunContext& ctx) {
  RekeySource src(st.get(from), keys, from);
  Sha256 sha;
  ByteCounter n;
  Written w;
  PipelineOptions po = ctx.pipeline;
  if (!*po.stage_name) po.stage_name = "rekey";
  Pipeline(src)
      .observe(sha)
      .observe(n)
      .before_commit([&] {
        if (src.old_size() != size || src.old_sha256() != sha256)
          throw Error(Code::corrupt, fmt::format("{} ({} bytes, sha256 {}) does not match its manifest ({} bytes, "
                                                 "sha256 {}): not rekeyed",
                                                 from, src.old_size(), src.old_sha256(), size, sha256));
        w.size = n.count();
        w.sha256 = sha.hex();
      })
      .run(sink, ctx.cancel, ctx.progress, po);
  return w;
}

// A backup of one artifact (and the parts a kind keeps beside it, a member list): the
// new id is the first free <id>_N of its directory, as publish names a second backup of
// the same second (the storage settles a race for it).
void rekey_artifact(Storage& st, const Manifest& old, Manifest& m, std::vector<std::string>& written,
                    const Encryption& keys, const RunContext& ctx) {
  auto slash = old.path.rfind('/');
  std::string dir = old.path.substr(0, slash);
  std::string stem = dir + "/" + old.id;
  if (slash == std::string::npos || old.path.rfind(stem, 0) != 0)
    throw Error(Code::unsupported, fmt::format("backup {}: its path {} is not <dir>/<id><ext>", old.id, old.path));
  std::string ext = old.path.substr(stem.size());
  std::vector<Manifest::Part> parts = old.extra_parts();
  for (auto& p : parts)
    if (p.path.rfind(old.path, 0) != 0)
      throw Error(Code::unsupported, fmt::format("backup {}: part {} is not named after its artifact", old.id, p.path));
  int first = 1;
  while (st.stat(fmt::format("{}_{}{}", stem, first, ext)) ||
         st.stat(fmt::format("{}_{}{}{}", stem, first, ext, Manifest::kManifestSuffix)))
    if (++first > 1000) throw Error(Code::exists, fmt::format("no free id for the rekeyed {}", old.id));
  auto sink = st.put_first_free([&](int i) { return fmt::format("{}_{}{}", stem, first + i, ext); }, 1000);
  Written w = rekey_object(st, old.path, old.size, old.sha256, *sink, keys, ctx);
  m.path = sink->key();
  written.push_back(m.path);
  m.id = m.path.substr(dir.size() + 1, m.path.size() - dir.size() - 1 - ext.size());
  m.size = w.size;
  m.sha256 = w.sha256;
  for (auto& p : parts) {
    std::string to = m.path + p.path.substr(old.path.size());
    auto ps = st.put(to);
    Written pw = rekey_object(st, p.path, p.size, p.sha256, *ps, keys, ctx);
    written.push_back(to);
    if (m.source.contains("member_list") && p.path == old.path + Manifest::kMemberListSuffix) {
      m.source["member_list"]["size"] = pw.size;
      m.source["member_list"]["sha256"] = pw.sha256;
    } else {
      throw Error(Code::unsupported, fmt::format("backup {}: no rekey for part {}", old.id, p.path));
    }
  }
}

// A base backup: every part of basebackup/<id>/ (base.tar, the tablespaces' tars, the
// server's backup_manifest) into basebackup/<id>_N/, the first such directory that is
// empty. The tars inside are the same bytes, so the backup_label PostgreSQL wrote (with
// the old id in its label) still matches the manifest's source.label.
void rekey_base_backup(Storage& st, const Manifest& old, Manifest& m, std::vector<std::string>& written,
                       const Encryption& keys, const RunContext& ctx) {
  pitr::basebackup_parts(old);  // throws corrupt unless every part lies at its own path in basebackup/<id>/
  std::string new_dir;
  for (int i = 1;; ++i) {
    if (i > 1000) throw Error(Code::exists, fmt::format("no free id for the rekeyed {}", old.id));
    m.id = fmt::format("{}_{}", old.id, i);
    new_dir = "basebackup/" + m.id;
    if (st.list(new_dir + "/").empty()) break;
  }
  nlohmann::json& files = m.source["files"];
  for (auto& f : files) {
    std::string from = f.at("path").get<std::string>();
    std::string to = new_dir + from.substr(from.rfind('/'));
    auto sink = st.put(to);
    Written w = rekey_object(st, from, f.at("size").get<uint64_t>(), f.at("sha256").get<std::string>(), *sink, keys, ctx);
    written.push_back(to);
    if (from == old.path) {
      m.path = to;
      m.size = w.size;
      m.sha256 = w.sha256;
    }
    f["path"] = to;
    f["size"] = w.size;
    f["sha256"] = w.sha256;
  }
  if (m.path == old.path)
    throw Error(Code::corrupt, fmt::format("base backup {}: its parts do not name its main archive", old.id));
}

}  // namespace

RekeyResult rekey(Repository& repo, const std::string& which, const std::string& kind, const std::string& source,
                  const RunContext& ctx) {
  const Encryption* keys = ctx.encryption.get();
  if (!keys || keys->identities.empty())
    throw Error(Code::invalid_argument, "rekey needs the identity that opens the backup now (--identity FILE)");
  if (!keys->encrypts())
    throw Error(Code::invalid_argument, "rekey needs the new recipients (--recipient age1... or --recipients-file)");
  RepositoryLock lock(repo.storage(), LockKind::shared, ctx);
  const RunContext gctx = lock.guard(ctx);
  Storage& st = repo.storage();
  Manifest old = repo.find(which, kind, source, gctx.log);  // signature checked with verify keys
  RekeyResult res;
  res.old_id = old.id;
  res.before = old.recipients;
  if (old.encryption.empty())
    throw Error(Code::invalid_argument, fmt::format("backup {} is not encrypted: rekey rewrites the recipients of "
                                                    "encrypted backups (a new backup with --recipient encrypts)",
                                                    old.id));
  if (old.encryption != "age")
    throw Error(Code::unsupported, fmt::format("backup {} is encrypted as \"{}\"", old.id, old.encryption));
  // The rekeyed backup is written whole under a new id before the old one is removed: a
  // failure at any point leaves the old backup as it was (and at worst both).
  Manifest m = old;
  std::vector<std::string> written;
  auto take_back = [&] {
    for (auto& k : written) {
      try {
        st.remove(k);
      } catch (...) {
      }
    }
  };
  try {
    if (old.kind == "basebackup")
      rekey_base_backup(st, old, m, written, *keys, gctx);
    else
      rekey_artifact(st, old, m, written, *keys, gctx);
    m.listed_parts.reset();
    m.recipients = keys->recipient_names;
    m.source["rekeyed_from"] = {{"id", old.id}, {"at", format_rfc3339(repo.clock().now())}, {"recipients", old.recipients}};
    std::string vkey = old.path + Verification::kSuffix;
    if (st.stat(vkey)) {  // the payload it verified is the same
      st.write_small(m.path + Verification::kSuffix, st.read_small(vkey, 16 << 20));
      written.push_back(m.path + Verification::kSuffix);
    }
    repo.write_manifest(m);  // signed anew when a signing key is given
  } catch (...) {
    take_back();
    throw;
  }
  repo.remove_backup(old);
  res.new_id = m.id;
  res.after = m.recipients;
  res.manifest = m;
  if (gctx.log)
    gctx.log(LogLevel::info, fmt::format("rekeyed {} as {} ({} recipient(s))", old.id, m.id, m.recipients.size()));
  return res;
}

}  // namespace mevbackup
