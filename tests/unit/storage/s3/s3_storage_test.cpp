// S3 pieces that need no server: part sizes, URLs, addressing, error parsing, config.
#include <doctest/doctest.h>

#include <cstdlib>

#include "mevbackup/storage.hpp"
#include "storage/s3/s3_client.hpp"
#include "storage/s3/s3_storage.hpp"

using namespace mevbackup;
using namespace mevbackup::s3;

TEST_CASE("s3 part sizes: 10,000 parts hold at least 5 TiB, each within S3's limits") {
  for (uint64_t base : {kMinPartSize, kDefaultPartSize, 16 * kMiB, 64 * kMiB}) {
    uint64_t total = 0;
    uint64_t prev = 0;
    bool within = true, growing = true;
    for (int n = 1; n <= kMaxParts; ++n) {
      uint64_t s = part_size_for(n, base);
      within = within && s >= kMinPartSize && s <= kMaxPartSize;
      growing = growing && s >= prev;  // never shrinks
      prev = s;
      total += s;
    }
    CHECK(within);
    CHECK(growing);
    CHECK(total >= 5ull * 1024 * 1024 * kMiB);
  }
  // Small backups keep small parts.
  CHECK(part_size_for(1, kDefaultPartSize) == 8 * kMiB);
  CHECK(part_size_for(900, kDefaultPartSize) == 8 * kMiB);
  CHECK(part_size_for(901, kDefaultPartSize) == 16 * kMiB);
}

TEST_CASE("s3 URLs") {
  auto u = parse_s3_url("s3://bucket/some/prefix/");
  CHECK(u.bucket == "bucket");
  CHECK(u.prefix == "some/prefix");
  CHECK(parse_s3_url("s3://bucket").prefix.empty());
  CHECK_THROWS_AS(parse_s3_url("s3:///x"), Error);
  CHECK_THROWS_AS(parse_s3_url("s3://b/../x"), Error);
  CHECK_THROWS_AS(parse_s3_url("s3://user:pw@b/x"), Error);
}

TEST_CASE("s3 addressing: path-style for IPs and localhost, virtual-hosted otherwise") {
  ClientConfig c;
  c.credentials = {"AKID", "secret", ""};
  Request r;
  r.key = "db/a b+c.dump.gz";
  std::string host, uri;

  c.endpoint = "http://127.0.0.1:9000";
  CHECK(Client(c, "bkt").url_of(r, &host, &uri) == "http://127.0.0.1:9000/bkt/db/a%20b%2Bc.dump.gz");
  CHECK(host == "127.0.0.1:9000");
  CHECK(uri == "/bkt/db/a%20b%2Bc.dump.gz");

  c.endpoint = "http://localhost:9000";
  CHECK(Client(c, "bkt").url_of(r, &host, &uri) == "http://localhost:9000/bkt/db/a%20b%2Bc.dump.gz");

  c.endpoint = "https://s3.eu-west-1.amazonaws.com";
  CHECK(Client(c, "bkt").url_of(r, &host, &uri) == "https://bkt.s3.eu-west-1.amazonaws.com/db/a%20b%2Bc.dump.gz");
  CHECK(host == "bkt.s3.eu-west-1.amazonaws.com");
  CHECK(uri == "/db/a%20b%2Bc.dump.gz");

  c.force_path_style = true;
  CHECK(Client(c, "bkt").url_of(r, &host, &uri) == "https://s3.eu-west-1.amazonaws.com/bkt/db/a%20b%2Bc.dump.gz");
  c.force_path_style = false;
  // A dotted bucket cannot match the wildcard certificate: path-style.
  CHECK(Client(c, "my.bucket").url_of(r, nullptr, nullptr).rfind("https://s3.eu-west-1.amazonaws.com/my.bucket/", 0) ==
        0);

  // Default endpoint from the region; query strings in canonical order.
  c.endpoint.clear();
  c.region = "eu-central-1";
  Request l;
  l.query = {{"prefix", "db/"}, {"list-type", "2"}};
  CHECK(Client(c, "bkt").url_of(l, nullptr, nullptr) ==
        "https://bkt.s3.eu-central-1.amazonaws.com/?list-type=2&prefix=db%2F");

  c.endpoint = "ftp://x";
  CHECK_THROWS_AS(Client(c, "bkt"), Error);
  c.endpoint = "https://key:secret@host";
  CHECK_THROWS_AS(Client(c, "bkt"), Error);
  c.endpoint = "http://127.0.0.1:1";
  c.unsigned_payload = true;  // only over TLS
  CHECK_THROWS_AS(Client(c, "bkt"), Error);
}

TEST_CASE("s3 TLS verification off needs asking and is logged as a warning") {
  ClientConfig c;
  c.credentials = {"AKID", "secret", ""};
  c.endpoint = "https://objects.example.test";
  std::vector<std::pair<int, std::string>> logged;
  c.log = [&](int level, const std::string& m) { logged.emplace_back(level, m); };
  Client on(c, "bkt");
  CHECK(logged.empty());
  c.verify_tls = false;
  Client off(c, "bkt");
  REQUIRE(logged.size() == 1);
  CHECK(logged[0].first == 2);
  CHECK(logged[0].second.find("verification is OFF") != std::string::npos);
  CHECK(logged[0].second.find("secret") == std::string::npos);
}

TEST_CASE("s3 credentials are required and never echoed") {
  ClientConfig c;
  c.endpoint = "http://127.0.0.1:1";
  c.credentials = {"AKID", "", ""};
  try {
    Client x(c, "bkt");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::auth);
    CHECK(std::string(e.what()).find("AWS_SECRET_ACCESS_KEY") != std::string::npos);
  }
}

TEST_CASE("s3 configuration from the environment") {
  ::setenv("AWS_ACCESS_KEY_ID", "envkey", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
  ::setenv("AWS_SESSION_TOKEN", "envtoken", 1);
  ::unsetenv("AWS_REGION");
  ::setenv("AWS_DEFAULT_REGION", "eu-west-3", 1);
  ::setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9", 1);
  ::setenv("AWS_MAX_ATTEMPTS", "7", 1);
  ClientConfig c;
  c.credentials.access_key_id = "explicit";  // options win over the environment
  apply_environment(c);
  CHECK(c.credentials.access_key_id == "explicit");
  CHECK(c.credentials.secret_access_key == "envsecret");
  CHECK(c.credentials.session_token == "envtoken");
  CHECK(c.region == "eu-west-3");
  CHECK(c.endpoint == "http://127.0.0.1:9");
  CHECK(c.max_attempts == 7);
  ::setenv("AWS_REGION", "ap-south-1", 1);
  ClientConfig d;
  apply_environment(d);
  CHECK(d.region == "ap-south-1");
  for (auto* v : {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
                  "AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS"})
    ::unsetenv(v);
}

TEST_CASE("s3 error bodies and dates are parsed as XML and ISO 8601") {
  auto e = parse_error(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does "
      "not exist.</Message><Key>a&amp;b</Key></Error>");
  CHECK(e.code == "NoSuchKey");
  CHECK(e.message == "The specified key does not exist.");
  CHECK(parse_error("<CompleteMultipartUploadResult/>").code.empty());
  CHECK(parse_error("not xml <Error><Code>X</Code>").code.empty());
  CHECK(parse_iso8601("2026-11-27T05:11:39.000Z") == 1795756299);
  CHECK(parse_iso8601("garbage") == 0);
}

TEST_CASE("s3 storage options: part size limits") {
  StorageOptions o;
  o.access_key_id = "AKID";
  o.secret_access_key = "secret";
  o.endpoint_url = "http://127.0.0.1:1";
  o.part_size = 1024;
  CHECK_THROWS_AS(open_storage("s3://bkt/p", o), Error);
  o.part_size = 0;
  auto st = open_storage("s3://bkt/p/", o);
  CHECK(st->describe() == "s3://bkt/p");
  CHECK_THROWS_AS(st->put("../x"), Error);
}

#include "mevbackup/s3.hpp"

TEST_CASE("s3 lifecycle rule XML: the runbook's policy over the repository's prefix") {
  LifecycleRule r;
  r.transitions = {{30, "GLACIER"}, {90, "DEEP_ARCHIVE"}};
  r.expire_days = 365;
  CHECK(lifecycle_rule_xml("db1/pg", r) ==
        "<Rule><ID>mevbackup db1/pg</ID><Filter><Prefix>db1/pg/</Prefix></Filter><Status>Enabled</Status>"
        "<Transition><Days>30</Days><StorageClass>GLACIER</StorageClass></Transition>"
        "<Transition><Days>90</Days><StorageClass>DEEP_ARCHIVE</StorageClass></Transition>"
        "<Expiration><Days>365</Days></Expiration>"
        "<AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload>"
        "</Rule>");
  LifecycleRule e;
  e.id = "a<b";
  e.expire_days = 10;
  e.abort_incomplete_days = 0;
  CHECK(lifecycle_rule_xml("", e) ==
        "<Rule><ID>a&lt;b</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status>"
        "<Expiration><Days>10</Days></Expiration></Rule>");

  LifecycleRule bad = r;
  bad.transitions = {{90, "GLACIER"}, {30, "DEEP_ARCHIVE"}};
  CHECK_THROWS_AS(lifecycle_rule_xml("p", bad), Error);
  bad = r;
  bad.expire_days = 60;  // before the last transition
  CHECK_THROWS_AS(lifecycle_rule_xml("p", bad), Error);
  bad = r;
  bad.transitions = {{30, "glacier<"}};
  CHECK_THROWS_AS(lifecycle_rule_xml("p", bad), Error);
  CHECK_THROWS_AS(lifecycle_rule_xml("p", LifecycleRule{}), Error);

  // Only S3 storage has lifecycle rules.
  auto local = make_local_storage("/nonexistent/mevb-lifecycle");
  try {
    put_bucket_lifecycle(*local, r);
    FAIL("no error");
  } catch (const Error& err) {
    CHECK(err.code() == Code::unsupported);
  }
}

TEST_CASE("s3 retries follow the AWS SDKs' standard mode") {
  // Transient statuses and throttling codes, whatever the status they come with.
  for (long st : {500L, 502L, 503L, 504L, 429L}) CHECK(retriable_answer(st, ""));
  for (const char* code : {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                           "TooManyRequestsException", "RequestTimeout", "PriorRequestNotComplete"})
    CHECK(retriable_answer(400, code));
  // Everything else fails at once: client errors, 501, other 5xx, a skewed clock.
  for (long st : {400L, 403L, 404L, 409L, 412L, 501L, 505L}) CHECK_FALSE(retriable_answer(st, ""));
  CHECK_FALSE(retriable_answer(403, "AccessDenied"));
  CHECK_FALSE(retriable_answer(403, "RequestTimeTooSkewed"));
  CHECK_FALSE(retriable_answer(404, "NoSuchKey"));
  // Full jitter over an exponential ceiling: 1 s, 2 s, 4 s ... capped at 20 s.
  CHECK(backoff_ceiling_ms(1, 1000, 20000) == 1000);
  CHECK(backoff_ceiling_ms(2, 1000, 20000) == 2000);
  CHECK(backoff_ceiling_ms(5, 1000, 20000) == 16000);
  CHECK(backoff_ceiling_ms(6, 1000, 20000) == 20000);
  CHECK(backoff_ceiling_ms(60, 1000, 20000) == 20000);
  ClientConfig c;
  CHECK(c.max_attempts == 3);
  CHECK(c.retry_base_ms == 1000);
  CHECK(c.retry_cap_ms == 20000);
}

TEST_CASE("s3 CA bundle from the environment, the test backoff not; skew details parsed") {
  ::setenv("AWS_CA_BUNDLE", "/etc/ssl/private-ca.pem", 1);
  ::setenv("MEVBACKUP_S3_RETRY_BASE_MS", "5", 1);  // StorageOptions::retry_base_ms, filled by the CLI
  ClientConfig c;
  apply_environment(c);
  CHECK(c.ca_bundle == "/etc/ssl/private-ca.pem");
  CHECK(c.retry_base_ms == 1000);
  ClientConfig d;
  d.ca_bundle = "/explicit.pem";  // options win
  apply_environment(d);
  CHECK(d.ca_bundle == "/explicit.pem");
  ::unsetenv("AWS_CA_BUNDLE");
  ::unsetenv("MEVBACKUP_S3_RETRY_BASE_MS");
  auto e = parse_error(
      "<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current "
      "time is too large.</Message><RequestTime>20261127T080000Z</RequestTime><ServerTime>2026-11-27T07:44:00Z"
      "</ServerTime></Error>");
  CHECK(e.code == "RequestTimeTooSkewed");
  CHECK(e.request_time == "20261127T080000Z");
  CHECK(e.server_time == "2026-11-27T07:44:00Z");
}
