#include "mevbackup/repository.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "mevbackup/backup_set.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/kinds.hpp"
#include "mevbackup/version.hpp"
#include "../io/byte_limit.hpp"

namespace mevbackup {

std::string kind_directory(const std::string& kind) { return backup_kind(kind).directory; }

bool is_user_kind(const std::string& kind) {
  if (find_kind(kind)) return false;  // a registered kind
  try {
    backup_kind(kind);  // a valid name whose directory no registered kind uses
    return true;
  } catch (const Error&) {
    return false;
  }
}

Repository::Repository(std::unique_ptr<Storage> storage, Clock& clock) : storage_(std::move(storage)), clock_(clock) {}

Repository Repository::open(const std::string& url) { return Repository(open_storage(url)); }
Repository Repository::open(const std::string& url, const StorageOptions& opts) {
  return Repository(open_storage(url, opts));
}

namespace {

// Backups of one source in one second: base, base_1, ... base_<this>.
constexpr int kMaxSameSecond = 1000;

void check_name_prefix(const std::string& p) {
  if (p.empty()) throw Error(Code::invalid_argument, "backup name prefix is empty");
  for (char c : p) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
    if (!ok)
      throw Error(Code::invalid_argument,
                  fmt::format("backup name prefix \"{}\" may hold only letters, digits, '_', '-' and '.'", p));
  }
  if (p[0] == '.') throw Error(Code::invalid_argument, fmt::format("backup name prefix \"{}\" starts with '.'", p));
}

}  // namespace

namespace {

// Checks the first bytes of a stored artifact against the compression its manifest
// names, so a mislabelled artifact fails with a clear message, not a codec error.
class MagicCheck final : public Observer {
 public:
  MagicCheck(Compression expected, std::string path) : expected_(expected), path_(std::move(path)) {}
  void update(Bytes data) override {
    if (done_ || expected_ == Compression::none) return;  // an uncompressed payload may look like anything
    head_.insert(head_.end(), data.begin(), data.begin() + std::min<size_t>(data.size(), 4 - head_.size()));
    if (head_.size() >= 4) check();
  }
  void finish() override {
    if (!done_ && !head_.empty() && expected_ != Compression::none) check();
  }

 private:
  void check() {
    done_ = true;
    auto found = detect_compression(Bytes(head_.data(), head_.size()));
    if (found && *found != expected_)
      throw Error(Code::corrupt, fmt::format("artifact {} holds {} data but its manifest says {}", path_,
                                             compression_name(*found), compression_name(expected_)));
  }
  Compression expected_;
  std::string path_;
  std::vector<std::byte> head_;
  bool done_ = false;
};

}  // namespace

StoredDigest store_compressed(Storage& storage, const std::string& key, Source& source, Compression compression,
                              int level, const RunContext& ctx, const char* stage,
                              const std::function<void(const StoredDigest&)>& before_commit) {
  auto sink = storage.put(key);
  return store_compressed(*sink, source, compression, level, ctx, stage, before_commit);
}

StoredDigest store_compressed(Sink& sink, Source& source, Compression compression, int level, const RunContext& ctx,
                              const char* stage, const std::function<void(const StoredDigest&)>& before_commit) {
  Sha256 payload_sha, stored_sha;
  ByteCounter payload_n, stored_n;
  auto comp = make_compressor(compression, level);
  auto enc = artifact_encryptor(ctx.encryption.get());
  auto throttle = ctx.max_rate ? make_throttle(ctx.max_rate, ctx.cancel) : nullptr;
  Pipeline p(source);
  p.observe(payload_sha).observe(payload_n);
  if (comp) p.then(*comp);
  if (enc) p.then(*enc);
  if (throttle) p.then(*throttle);
  p.observe(stored_sha).observe(stored_n);
  StoredDigest d;
  p.before_commit([&] {
    d.size = stored_n.count();
    d.sha256 = stored_sha.hex();
    d.payload_size = payload_n.count();
    d.payload_sha256 = payload_sha.hex();
    if (before_commit) before_commit(d);
  });
  PipelineOptions po = ctx.pipeline;
  if (!*po.stage_name) po.stage_name = stage;
  p.run(sink, ctx.cancel, ctx.progress, po);
  return d;
}

Manifest Repository::publish(Source& source, const ArtifactSpec& spec, const RunContext& ctx,
                             const std::function<void(Manifest&)>& complete,
                             const std::function<void(Manifest&, const RunContext&)>& store_parts) {
  check_name_prefix(spec.name_prefix);
  RepositoryLock lock(*storage_, LockKind::shared, ctx);  // a prune waits for it (lock.hpp)
  const RunContext gctx = lock.guard(ctx);  // cancelled if the lock is lost
  TimePoint started = clock_.now();
  std::string base = spec.name_prefix + "_" + format_name_stamp(started);
  std::string ext = spec.extension + std::string(compression_suffix(spec.compression));
  const bool encrypt = ctx.encryption && ctx.encryption->encrypts();
  if (encrypt) ext += ".age";  // what `age -d` takes: name.dump.gz.age
  Manifest m;
  // Two runs in the same second get distinct names (base, base_1, base_2, ...); an
  // existing backup is never reused. The first free name is only where the search
  // starts: the storage settles the name race-free (put_first_free), so that two runs
  // racing for it both succeed.
  auto id_for = [&](int i) { return i ? fmt::format("{}_{}", base, i) : base; };
  int first = 0;
  for (;; ++first) {
    std::string path = spec.dir + "/" + id_for(first) + ext;
    if (!storage_->stat(path) && !storage_->stat(path + Manifest::kManifestSuffix)) break;
    if (first > kMaxSameSecond)
      throw Error(Code::exists, fmt::format("cannot find a free name for {} in {}", base, storage_->describe()));
  }
  m.id = id_for(first);
  m.path = spec.dir + "/" + m.id + ext;
  m.kind = spec.kind;
  m.format = spec.format;
  m.compression = std::string(compression_name(spec.compression));
  record_encryption(m, ctx.encryption.get());
  m.started_at = format_rfc3339(started);
  m.source_name = spec.name_prefix;
  m.tool = {{"name", "libmevbackup"}, {"version", kVersionString}};

  auto sink = storage_->put_first_free(
      [&](int i) { return spec.dir + "/" + id_for(first + i) + ext; }, kMaxSameSecond + 1 - first);
  store_compressed(*sink, source, spec.compression, spec.level, gctx, "backup", [&](const StoredDigest& d) {
    m.size = d.size;
    m.sha256 = d.sha256;
    m.payload_size = d.payload_size;
    m.payload_sha256 = d.payload_sha256;
    m.finished_at = format_rfc3339(clock_.now());
    if (complete) complete(m);
  });
  if (sink->key() != m.path) {  // another run took the name meanwhile
    m.path = sink->key();
    m.id = m.path.substr(spec.dir.size() + 1, m.path.size() - spec.dir.size() - 1 - ext.size());
  }
  try {
    if (store_parts) store_parts(m, gctx);
    write_manifest(m);
  } catch (...) {
    // Without its manifest the artifact is not a backup: take it back, with its parts.
    for (auto& key : m.extra_paths()) {
      try {
        storage_->remove(key);
      } catch (...) {
      }
    }
    try {
      storage_->remove(m.path);
    } catch (...) {
    }
    throw;
  }
  if (gctx.log) gctx.log(LogLevel::info, fmt::format("stored {} ({} bytes) in {}", m.path, m.size, storage_->describe()));
  return m;
}

void Repository::restore_stream(const Manifest& m, Sink& sink, const RunContext& ctx) {
  RepositoryLock lock(*storage_, LockKind::shared, ctx);
  read_artifact(*storage_, m, sink, lock.guard(ctx));  // cancelled if the lock is lost
}

namespace {

// The stages of one read of a stored artifact, in the order its bytes meet them:
// throttle; size, SHA-256 and a bound on the stored bytes; decryption (or the check that
// plaintext is what the manifest says); the codec's magic; decompression; a bound on the
// payload. Joined into a Pipeline by read_artifact and into a pull chain by
// artifact_source, so both make the same checks.
struct ArtifactRead {
  ArtifactRead(Storage& storage, const Manifest& manifest, const RunContext& ctx)
      : m(manifest),
        compression(parse_compression(m.compression)),
        magic(compression, m.path),
        plain(m.path),
        stored_limit(m.size, fmt::format("artifact {}", m.path)),
        payload_limit(m.payload_size, fmt::format("the payload of {}", m.path)) {
    auto info = storage.stat(m.path);
    if (!info)
      throw Error(Code::not_found, fmt::format("artifact {} of backup {} is missing from {}", m.path, m.id, storage.describe()));
    if (info->size != m.size)
      throw Error(Code::corrupt, fmt::format("artifact {} has {} bytes, its manifest says {}; refusing to restore it",
                                             m.path, info->size, m.size));
    decrypt = artifact_decryptor(m, ctx.encryption.get());  // throws when no identity is given
    dec = make_decompressor(compression);
    if (ctx.max_rate) throttle = make_throttle(ctx.max_rate, ctx.cancel);
    raw = storage.get(m.path);
  }

  // At the end of the stored bytes (sha finished).
  void check_stored() const {
    if (n.count() != m.size)
      throw Error(Code::corrupt, fmt::format("artifact {}: read {} bytes, manifest says {}", m.path, n.count(), m.size));
    if (sha.hex() != m.sha256)
      throw Error(Code::corrupt, fmt::format("artifact {}: SHA-256 {} does not match the manifest's {}", m.path,
                                             sha.hex(), m.sha256));
  }

  const Manifest m;
  const Compression compression;
  Sha256 sha;
  ByteCounter n;
  MagicCheck magic;
  PlaintextCheck plain;
  // Bounded by the manifest before anything reaches the reader: a restorer or verify
  // never gets more than the backup declared (a decompression bomb fails early).
  ByteLimit stored_limit, payload_limit;
  std::unique_ptr<Filter> throttle, decrypt, dec;
  std::unique_ptr<Source> raw;
};

// The pull chain: each stage a Source over the one before.
class ArtifactSource final : public Source {
 public:
  ArtifactSource(Storage& storage, const Manifest& m, const RunContext& ctx) : r_(storage, m, ctx), cancel_(ctx.cancel) {
    std::unique_ptr<Source> s = std::move(r_.raw);
    if (r_.throttle) s = std::make_unique<FilterSource>(std::move(s), std::move(r_.throttle));
    s = std::make_unique<TapSource>(std::move(s), std::vector<Observer*>{&r_.sha, &r_.n, &r_.stored_limit},
                                    [this] { r_.check_stored(); });
    if (r_.decrypt)
      s = std::make_unique<FilterSource>(std::move(s), std::move(r_.decrypt));
    else
      s = std::make_unique<TapSource>(std::move(s), std::vector<Observer*>{&r_.plain});
    s = std::make_unique<TapSource>(std::move(s), std::vector<Observer*>{&r_.magic});
    if (r_.dec) s = std::make_unique<FilterSource>(std::move(s), std::move(r_.dec));
    chain_ = std::make_unique<TapSource>(std::move(s), std::vector<Observer*>{&r_.payload_limit});
  }
  size_t read(MutBytes buf) override {
    if (cancel_) cancel_->check();
    return chain_->read(buf);
  }
  void abort() noexcept override { chain_->abort(); }

 private:
  ArtifactRead r_;
  CancelToken* cancel_;
  std::unique_ptr<Source> chain_;  // refers to r_'s observers
};

}  // namespace

void read_artifact(Storage& storage, const Manifest& m, Sink& sink, const RunContext& gctx) {
  ArtifactRead r(storage, m, gctx);
  Pipeline p(*r.raw);
  if (r.throttle) p.then(*r.throttle);
  p.observe(r.sha).observe(r.n).observe(r.stored_limit);
  if (r.decrypt)
    p.then(*r.decrypt);
  else
    p.observe(r.plain);
  p.observe(r.magic);
  if (r.dec) p.then(*r.dec);
  p.observe(r.payload_limit);
  p.before_commit([&] { r.check_stored(); });
  PipelineOptions po = gctx.pipeline;
  if (!*po.stage_name) po.stage_name = "restore";
  p.run(sink, gctx.cancel, gctx.progress, po);
}

std::unique_ptr<Source> artifact_source(Storage& storage, const Manifest& m, const RunContext& ctx) {
  return std::make_unique<ArtifactSource>(storage, m, ctx);
}

nlohmann::json Verification::to_json() const {
  nlohmann::json j = {{"verified_at", verified_at}, {"outcome", ok ? "ok" : "failed"}, {"message", message}, {"checks", checks}};
  if (!ok && !last_ok_at.empty()) j["last_ok_at"] = last_ok_at;
  return j;
}

Verification Verification::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("verified_at") || !j["verified_at"].is_string() || !j.contains("outcome") ||
      !j["outcome"].is_string())
    throw Error(Code::corrupt, fmt::format("verification record {} is invalid", where));
  Verification v;
  v.verified_at = j["verified_at"].get<std::string>();
  v.ok = j["outcome"] == "ok";
  v.message = j.value("message", "");
  if (j.contains("checks") && j["checks"].is_array()) v.checks = j["checks"];
  if (!v.ok && j.contains("last_ok_at") && j["last_ok_at"].is_string()) v.last_ok_at = j["last_ok_at"].get<std::string>();
  return v;
}

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

Catalog Repository::catalog(const std::string& kind, const LogFn& log) {
  std::string prefix = kind.empty() ? "" : kind_directory(kind) + "/";
  const std::string msuffix = Manifest::kManifestSuffix, vsuffix = Verification::kSuffix;
  std::vector<ObjectInfo> objects = storage_->list(prefix);
  std::set<std::string> keys;
  for (auto& o : objects) keys.insert(o.key);
  Catalog cat;
  const std::vector<const BackupKind*> kinds = registered_kinds();
  for (auto& obj : objects) {
    const std::string& k = obj.key;
    if (ends_with(k, vsuffix)) continue;
    if (k.rfind(kLockDir, 0) == 0) continue;  // repository locks (lock.hpp)
    if (k.rfind(kSetDir, 0) == 0 && ends_with(k, kSetSuffix)) continue;  // backup sets (backup_set.hpp)
    bool skip = false;
    for (const BackupKind* bk : kinds) {
      for (auto& p : bk->private_prefixes) skip = skip || k.rfind(p, 0) == 0;  // e.g. the WAL archive
      if (!ends_with(k, msuffix)) skip = skip || (bk->owns && bk->owns(k, keys));  // a part of a backup
    }
    if (skip) continue;
    if (!ends_with(k, msuffix)) {
      if (!keys.count(k + msuffix)) cat.incomplete.push_back(obj);
      continue;
    }
    try {
      Manifest m = parse_manifest(storage_->read_small(k, 64 << 20), k);
      if (m.key() != k) throw Error(Code::corrupt, fmt::format("manifest {} describes another artifact ({})", k, m.path));
      if (!kind.empty() && m.kind != kind) continue;
      CatalogEntry e{m.summary(), std::nullopt};
      std::string vkey = e.manifest.path + vsuffix;
      if (keys.count(vkey)) {
        try {
          e.verification = Verification::from_json(nlohmann::json::parse(storage_->read_small(vkey, 16 << 20)), vkey);
        } catch (const std::exception& ex) {
          if (log) log(LogLevel::warning, fmt::format("ignoring {}: {}", vkey, ex.what()));
        }
      }
      cat.backups.push_back(std::move(e));
    } catch (const Error& e) {
      if (log) log(LogLevel::warning, fmt::format("skipping {}: {}", k, e.what()));
    }
  }
  for (auto& o : storage_->list_unfinished(prefix))
    if (o.key.rfind(kLockDir, 0) != 0) cat.incomplete.push_back(o);  // a lock's leftovers are the lock's to clean
  std::sort(cat.backups.begin(), cat.backups.end(), [](const CatalogEntry& a, const CatalogEntry& b) {
    return std::tie(a.manifest.started_at, a.manifest.id) < std::tie(b.manifest.started_at, b.manifest.id);
  });
  return cat;
}

Manifest Repository::parse_manifest(const std::string& text, const std::string& key) const {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) throw Error(Code::corrupt, fmt::format("manifest {} is not valid JSON", key));
  Manifest m = Manifest::from_json(j, key);
  // Checked over the stored JSON itself: fields this version does not know are covered too.
  if (signing_ && signing_->enforced())
    m.signature = check_manifest_signature(j, signing_->verify_keys, &m.signature_problem);
  return m;
}

bool Repository::trusted(const Manifest& m) const {
  return !signing_ || !signing_->enforced() || m.signature == SignatureState::good;
}

void Repository::write_manifest(Manifest& m) {
  m.signature_record = nullptr;  // a manifest written anew is signed anew (or not at all)
  nlohmann::json j = m.to_json();
  if (signing_ && signing_->key) {
    sign_manifest(j, *signing_->key);
    m.signature_record = j["signature"];
  }
  storage_->write_small(m.key(), j.dump(2) + "\n");
}

Manifest Repository::load(const Manifest& listed) {
  std::string k = listed.key();
  Manifest m = parse_manifest(storage_->read_small(k, 64 << 20), k);
  if (m.key() != k || m.id != listed.id)
    throw Error(Code::corrupt, fmt::format("manifest {} now describes another backup ({})", k, m.id));
  if (!trusted(m))
    throw Error(Code::auth, fmt::format("backup {}: {} ({}); refusing it: a backup is trusted only with a manifest "
                                        "signed by a verify key given",
                                        m.id, m.signature_problem, k));
  return m;
}

std::vector<Manifest> Repository::list(const std::string& kind, const LogFn& log) {
  std::vector<Manifest> out;
  for (auto& e : catalog(kind, log).backups) out.push_back(std::move(e.manifest));
  return out;
}

void Repository::record_verification(const Manifest& m, const Verification& given) {
  std::string key = m.path + Verification::kSuffix;
  Verification v = given;
  if (!v.ok && v.last_ok_at.empty() && storage_->stat(key)) {
    try {
      Verification before = Verification::from_json(nlohmann::json::parse(storage_->read_small(key, 16 << 20)), key);
      v.last_ok_at = before.ok ? before.verified_at : before.last_ok_at;
    } catch (const std::exception&) {
      // An unreadable earlier record tells nothing: the new one stands alone.
    }
  }
  // Records are the one thing replaced in place: remove, then publish the new one.
  // A crash in between leaves the backup "unverified", never falsely verified.
  storage_->remove(key);
  storage_->write_small(key, v.to_json().dump(2) + "\n");
}

void Repository::remove_backup(const Manifest& m) {
  storage_->remove(m.path);
  for (auto& key : m.extra_paths()) storage_->remove(key);
  storage_->remove(m.path + Verification::kSuffix);
  storage_->remove(m.key());
}

Manifest Repository::find(const std::string& id_or_latest, const std::string& kind, const std::string& source_name,
                          const LogFn& log) {
  if (id_or_latest.empty()) throw Error(Code::invalid_argument, "no backup named (give an id or \"latest\")");
  auto all = list(kind, log);
  std::vector<Manifest> match;
  for (auto& m : all)
    if (source_name.empty() || m.source_name == source_name) match.push_back(m);
  std::string what = kind.empty() ? "backup" : kind + " backup";
  if (id_or_latest == "latest" && signing_ && signing_->enforced()) {
    // "latest" is the newest backup whose manifest is signed: a planted newer one
    // (unsigned, or signed by another key) is passed over, and said so.
    std::vector<Manifest> good;
    std::string skipped;
    for (auto& m : match) {
      if (trusted(m)) {
        good.push_back(m);
        skipped.clear();  // only those newer than the newest good one are reported
      } else {
        skipped += (skipped.empty() ? "" : ", ") + m.id + " (" + m.signature_problem + ")";
      }
    }
    if (!skipped.empty() && log)
      log(LogLevel::warning, fmt::format("passing over newer backups whose manifests are not signed by a verify key: {}",
                                         skipped));
    if (good.empty() && !match.empty())
      throw Error(Code::auth, fmt::format("no {} in {} has a manifest signed by a verify key ({} found, none trusted: "
                                          "{})",
                                          what, storage_->describe(), match.size(), match.back().signature_problem));
    match = std::move(good);
  }
  if (id_or_latest == "latest") {
    if (match.empty())
      throw Error(Code::not_found, source_name.empty()
                                       ? fmt::format("no {} in {}", what, storage_->describe())
                                       : fmt::format("no {} of \"{}\" in {}", what, source_name, storage_->describe()));
    std::set<std::string> sources;
    for (auto& m : match) sources.insert(m.source_name);
    if (sources.size() > 1) {
      std::string names;
      for (auto& s : sources) names += (names.empty() ? "" : ", ") + s;
      throw Error(Code::invalid_argument,
                  fmt::format("\"latest\" is ambiguous: {} holds backups of {}; name the source", storage_->describe(), names));
    }
    return load(match.back());
  }
  for (auto& m : match)
    if (m.id == id_or_latest || m.path == id_or_latest) return load(m);
  throw Error(Code::not_found, fmt::format("no {} \"{}\" in {}", what, id_or_latest, storage_->describe()));
}

}  // namespace mevbackup
