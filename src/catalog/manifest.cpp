#include "mevbackup/manifest.hpp"

#include <fmt/format.h>

#include "mevbackup/error.hpp"
#include "mevbackup/kinds.hpp"

namespace mevbackup {

nlohmann::json Manifest::to_json() const {
  nlohmann::json j{
      {"manifest_version", kFormatVersion},
      {"id", id},
      {"kind", kind},
      {"path", path},
      {"format", format},
      {"compression", compression},
      {"size", size},
      {"sha256", sha256},
      {"payload_size", payload_size},
      {"payload_sha256", payload_sha256},
      {"started_at", started_at},
      {"finished_at", finished_at},
      {"created_at", started_at},
      {"source_name", source_name},
      {"source", source},
      {"tool", tool},
  };
  if (adopted) j["adopted"] = true;
  j["encrypted"] = !encryption.empty();
  if (!encryption.empty()) j["encryption"] = {{"format", encryption}, {"recipients", recipients}};
  if (!signature_record.is_null()) j["signature"] = signature_record;
  return j;
}

std::vector<Manifest::Part> Manifest::extra_parts() const {
  if (listed_parts) return *listed_parts;
  std::vector<Part> out;
  const BackupKind* k = find_kind(kind);
  if (!k || !k->extra_parts) return out;
  // Only keys beside the artifact, in its own directory: a manifest never names another
  // backup's objects, nor anything outside.
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return out;
  std::string dir = path.substr(0, slash + 1);
  for (auto& p : k->extra_parts(*this))
    if (p.path != path && p.path.size() > dir.size() && p.path.rfind(dir, 0) == 0 &&
        p.path.find('/', dir.size()) == std::string::npos)
      out.push_back(std::move(p));
  return out;
}

std::vector<std::string> Manifest::extra_paths() const {
  std::vector<std::string> out;
  for (auto& p : extra_parts()) out.push_back(p.path);
  return out;
}

Manifest Manifest::summary() const {
  Manifest m = *this;
  m.listed_parts = extra_parts();
  m.source = nlohmann::json::object();
  if (source.is_object())
    for (auto it = source.begin(); it != source.end(); ++it)
      if (it.value().is_primitive() || (it.key() == "files" && it.value().is_array()) ||
          (it.key() == "member_list" && it.value().is_object()))
        m.source[it.key()] = it.value();
  return m;
}

std::string Manifest::to_string() const { return to_json().dump(2) + "\n"; }

Manifest Manifest::from_json(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) {
    return Error(Code::corrupt, fmt::format("manifest {} is invalid: {}", where, what));
  };
  if (!j.is_object()) throw fail("not a JSON object");
  // Only a positive integer is a version: j.value<int>() threw json::type_error for a
  // string and converted an out-of-range double with undefined behaviour (both found by
  // tests/fuzz/manifest_fuzz.cpp), so one broken manifest failed a whole listing.
  auto ver = j.find("manifest_version");
  if (ver == j.end() || !ver->is_number_integer()) throw fail("missing manifest_version");
  // Parsed text holds a positive number as unsigned, a json built in memory as signed.
  if (!ver->is_number_unsigned() && ver->get<int64_t>() < 1) throw fail("missing manifest_version");
  uint64_t version = ver->is_number_unsigned() ? ver->get<uint64_t>() : static_cast<uint64_t>(ver->get<int64_t>());
  if (version < 1) throw fail("missing manifest_version");
  if (version > static_cast<uint64_t>(kFormatVersion))
    throw Error(Code::unsupported,
                fmt::format("manifest {} has version {}; this library reads up to {}", where, version, kFormatVersion));
  Manifest m;
  auto str = [&](const char* k, std::string& out) {
    auto it = j.find(k);
    if (it == j.end() || !it->is_string()) throw fail(fmt::format("field \"{}\" missing or not a string", k));
    out = it->get<std::string>();
  };
  auto num = [&](const char* k, uint64_t& out) {
    auto it = j.find(k);
    if (it == j.end() || !it->is_number_unsigned())
      throw fail(fmt::format("field \"{}\" missing or not a non-negative integer", k));
    out = it->get<uint64_t>();
  };
  str("id", m.id);
  if (!valid_backup_id(m.id)) throw fail("id is not 1-255 characters of [A-Za-z0-9_.-] not starting with '.'");
  str("kind", m.kind);
  str("path", m.path);
  str("format", m.format);
  str("compression", m.compression);
  num("size", m.size);
  str("sha256", m.sha256);
  num("payload_size", m.payload_size);
  str("payload_sha256", m.payload_sha256);
  str("started_at", m.started_at);
  str("finished_at", m.finished_at);
  str("source_name", m.source_name);
  if (m.sha256.size() != 64) throw fail("sha256 is not 64 hex digits");
  if (auto it = j.find("source"); it != j.end() && it->is_object()) m.source = *it;
  if (auto it = j.find("tool"); it != j.end() && it->is_object()) m.tool = *it;
  if (auto it = j.find("adopted"); it != j.end() && it->is_boolean()) m.adopted = it->get<bool>();
  if (auto it = j.find("signature"); it != j.end()) m.signature_record = *it;
  // Written by every version since encryption; absent (older manifests): not encrypted.
  if (auto it = j.find("encrypted"); it != j.end()) {
    if (!it->is_boolean()) throw fail("field \"encrypted\" is not true or false");
    if (it->get<bool>()) {
      auto e = j.find("encryption");
      if (e == j.end() || !e->is_object() || !e->contains("format") || !(*e)["format"].is_string())
        throw fail("\"encrypted\" is true but \"encryption\" does not name its format");
      m.encryption = (*e)["format"].get<std::string>();
      if (m.encryption.empty()) throw fail("\"encryption\" names an empty format");
      if (auto r = e->find("recipients"); r != e->end() && r->is_array())
        for (auto& x : *r)
          if (x.is_string()) m.recipients.push_back(x.get<std::string>());
    }
  }
  return m;
}

bool valid_backup_id(const std::string& id) {
  if (id.empty() || id.size() > 255 || id[0] == '.') return false;
  return id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == std::string::npos;
}

Manifest Manifest::parse(const std::string& text, const std::string& where) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) throw Error(Code::corrupt, fmt::format("manifest {} is not valid JSON", where));
  return from_json(j, where);
}

}  // namespace mevbackup
