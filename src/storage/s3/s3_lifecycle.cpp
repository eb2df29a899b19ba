// Bucket lifecycle rules for a repository's prefix (`mevbackup lifecycle`).
#include <pugixml.hpp>

#include <fmt/format.h>

#include "mevbackup/storage.hpp"
#include "s3_client.hpp"
#include "s3_storage.hpp"
#include "mevbackup/s3.hpp"

namespace mevbackup {

std::string lifecycle_rule_xml(const std::string& prefix, const LifecycleRule& rule) {
  auto bad = [](const std::string& why) { return Error(Code::invalid_argument, "lifecycle rule: " + why); };
  if (rule.transitions.empty() && rule.expire_days <= 0) throw bad("give at least one transition or an expiration");
  int last = 0;
  for (auto& t : rule.transitions) {
    if (t.days <= last) throw bad(fmt::format("transition days must be positive and increasing ({} after {})", t.days, last));
    if (t.storage_class.empty() ||
        t.storage_class.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != std::string::npos)
      throw bad(fmt::format("\"{}\" is not a storage class", t.storage_class));
    last = t.days;
  }
  if (rule.expire_days < 0 || (rule.expire_days > 0 && rule.expire_days <= last))
    throw bad(fmt::format("expiration after {} days must come after the last transition ({} days)", rule.expire_days,
                          last));
  pugi::xml_document doc;
  auto r = doc.append_child("Rule");
  std::string filter_prefix = prefix.empty() ? "" : prefix + "/";
  r.append_child("ID").text().set((rule.id.empty() ? "mevbackup " + (prefix.empty() ? "*" : prefix) : rule.id).c_str());
  r.append_child("Filter").append_child("Prefix").text().set(filter_prefix.c_str());
  r.append_child("Status").text().set("Enabled");
  for (auto& t : rule.transitions) {
    auto x = r.append_child("Transition");
    x.append_child("Days").text().set(t.days);
    x.append_child("StorageClass").text().set(t.storage_class.c_str());
  }
  if (rule.expire_days > 0) r.append_child("Expiration").append_child("Days").text().set(rule.expire_days);
  if (rule.abort_incomplete_days > 0)
    r.append_child("AbortIncompleteMultipartUpload").append_child("DaysAfterInitiation").text().set(
        rule.abort_incomplete_days);
  return s3::xml_of(doc);
}

void put_bucket_lifecycle(Storage& storage, const LifecycleRule& rule) {
  auto* st = dynamic_cast<s3::S3Target*>(&storage);
  if (!st)
    throw Error(Code::unsupported, fmt::format("{} is not S3 storage: lifecycle rules are an S3 feature", storage.describe()));
  std::string prefix = st->prefix();
  std::string rule_xml = lifecycle_rule_xml(prefix, rule);
  s3::Client& c = st->client();
  auto unsupported = [&](const Error& e) {
    return Error(Code::unsupported, fmt::format("the server of {} does not support bucket lifecycle rules ({})",
                                                storage.describe(), e.what()));
  };
  // Read what is there, so that other rules of the bucket survive.
  pugi::xml_document doc;
  try {
    s3::Request get;
    get.method = "GET";
    get.query = {{"lifecycle", ""}};
    get.accept = {404};
    s3::Response resp = c.perform(get);
    if (resp.status == 200 && !doc.load_buffer(resp.body.data(), resp.body.size()))
      throw Error(Code::io, fmt::format("lifecycle configuration of {}: malformed XML", storage.describe()));
  } catch (const Error& e) {
    if (e.code() == Code::unsupported) throw unsupported(e);
    throw;
  }
  pugi::xml_node conf = doc.child("LifecycleConfiguration");
  if (!conf) {
    doc.reset();
    conf = doc.append_child("LifecycleConfiguration");
    conf.append_attribute("xmlns") = "http://s3.amazonaws.com/doc/2006-03-01/";
  }
  pugi::xml_document mine;
  mine.load_string(rule_xml.c_str());
  std::string id = mine.child("Rule").child_value("ID");
  for (pugi::xml_node r = conf.child("Rule"); r;) {
    pugi::xml_node next = r.next_sibling("Rule");
    if (id == r.child_value("ID")) conf.remove_child(r);
    r = next;
  }
  conf.append_copy(mine.child("Rule"));
  std::string body = s3::xml_of(doc);
  s3::Request put;
  put.method = "PUT";
  put.query = {{"lifecycle", ""}};
  put.body = body;
  put.headers = {{"Content-Type", "application/xml"}, {"Content-MD5", s3::md5_base64(body)}};
  try {
    c.perform(put);
  } catch (const Error& e) {
    if (e.code() == Code::unsupported) throw unsupported(e);
    throw;
  }
}

}  // namespace mevbackup
