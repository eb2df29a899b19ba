// SigV4 against published vectors: the AWS SigV4 test suite (service "service",
// us-east-1, 20150830T123600Z, key AKIDEXAMPLE) and the S3 examples of the S3 API
// reference (examplebucket, 20130524T000000Z, key AKIAIOSFODNN7EXAMPLE).
#include <doctest/doctest.h>

#include "storage/s3/sigv4.hpp"

using namespace mevbackup::s3;

namespace {

const Credentials kSuite{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};
const Credentials kS3Doc{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};

SigningInput suite(const std::string& method, const std::string& uri, Pairs query = {}, Pairs extra = {}) {
  SigningInput in;
  in.method = method;
  in.canonical_uri = uri;
  in.query = std::move(query);
  in.headers = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
  for (auto& h : extra) in.headers.push_back(h);
  in.payload_hash = kEmptySha256;
  in.amz_date = "20150830T123600Z";
  in.region = "us-east-1";
  in.service = "service";
  return in;
}

SigningInput s3doc(const std::string& method, const std::string& uri, Pairs query = {}, Pairs extra = {}) {
  SigningInput in;
  in.method = method;
  in.canonical_uri = uri;
  in.query = std::move(query);
  in.headers = {{"Host", "examplebucket.s3.amazonaws.com"}};
  for (auto& h : extra) in.headers.push_back(h);
  in.payload_hash = kEmptySha256;
  in.amz_date = "20130524T000000Z";
  in.region = "us-east-1";
  in.service = "s3";
  return in;
}

std::string header(const Pairs& h, const std::string& name) {
  for (auto& [k, v] : h)
    if (k == name) return v;
  return "<none>";
}

}  // namespace

TEST_CASE("sigv4 suite: get-vanilla") {
  Signed s = sign_v4(suite("GET", "/"), kSuite);
  CHECK(s.canonical_request ==
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(s.string_to_sign ==
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");
  CHECK(s.authorization ==
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST_CASE("sigv4 suite: get-vanilla-query-order-key-case") {
  Signed s = sign_v4(suite("GET", "/", {{"Param2", "value2"}, {"Param1", "value1"}}), kSuite);
  CHECK(s.canonical_request.find("\nParam1=value1&Param2=value2\n") != std::string::npos);
  CHECK(s.string_to_sign.substr(s.string_to_sign.rfind('\n') + 1) ==
        "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0");
  CHECK(s.signature == "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
}

TEST_CASE("sigv4 suite: get-vanilla-query-order-value") {
  Signed s = sign_v4(suite("GET", "/", {{"Param1", "value2"}, {"Param1", "value1"}}), kSuite);
  CHECK(s.signature == "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694");
}

TEST_CASE("sigv4 suite: post-x-www-form-urlencoded") {
  SigningInput in = suite("POST", "/", {}, {{"Content-Type", "application/x-www-form-urlencoded"}});
  in.payload_hash = sha256_hex("Param1=value1");
  CHECK(in.payload_hash == "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
  Signed s = sign_v4(in, kSuite);
  CHECK(s.canonical_request ==
        "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n"
        "x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n"
        "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
  CHECK(s.string_to_sign.substr(s.string_to_sign.rfind('\n') + 1) ==
        "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281");
  CHECK(s.signature == "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
}

TEST_CASE("sigv4 suite: get-header-value-trim and get-header-value-order") {
  Signed s = sign_v4(suite("GET", "/", {}, {{"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}}), kSuite);
  CHECK(s.canonical_request.find("\nmy-header1:value1\nmy-header2:\"a b c\"\n") != std::string::npos);
  CHECK(s.signed_headers == "host;my-header1;my-header2;x-amz-date");
  CHECK(s.signature == "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736");

  Signed o = sign_v4(suite("GET", "/", {},
                           {{"My-Header1", "value4"}, {"My-Header1", "value1"}, {"My-Header1", "value3"},
                            {"My-Header1", "value2"}}),
                     kSuite);
  CHECK(o.canonical_request.find("\nmy-header1:value4,value1,value3,value2\n") != std::string::npos);
  CHECK(o.string_to_sign.substr(o.string_to_sign.rfind('\n') + 1) ==
        "31ce73cd3f3d9f66977ad3dd957dc47af14df92fcd8509f59b349e9137c58b86");
  CHECK(o.signature == "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01");
}

TEST_CASE("sigv4 suite: get-utf8 and get-unreserved") {
  CHECK(uri_encode("/\xE1\x88\xB4", false) == "/%E1%88%B4");
  Signed s = sign_v4(suite("GET", uri_encode("/\xE1\x88\xB4", false)), kSuite);
  CHECK(s.signature == "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85");
  std::string unreserved = "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  CHECK(uri_encode(unreserved, false) == unreserved);
  CHECK(sign_v4(suite("GET", unreserved), kSuite).signature ==
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f");
}

TEST_CASE("sigv4 S3 examples: x-amz-content-sha256 is signed, the path is encoded once") {
  Signed s;
  // GET Object with a Range: the payload hash is that of the empty body.
  Pairs h = sign_s3(s3doc("GET", "/test.txt", {}, {{"Range", "bytes=0-9"}}), kS3Doc, &s);
  CHECK(s.canonical_request ==
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
        "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(s.string_to_sign.substr(s.string_to_sign.rfind('\n') + 1) ==
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  CHECK(s.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  CHECK(header(h, "x-amz-content-sha256") == kEmptySha256);
  CHECK(header(h, "x-amz-date") == "20130524T000000Z");
  CHECK(header(h, "Authorization") == s.authorization);

  // PUT Object: '$' in the key is %24 in the canonical URI; the body's hash is signed.
  SigningInput put = s3doc("PUT", "/" + uri_encode("test$file.text", false), {},
                           {{"Date", "Fri, 24 May 2013 00:00:00 GMT"}, {"x-amz-storage-class", "REDUCED_REDUNDANCY"}});
  put.payload_hash = sha256_hex("Welcome to Amazon S3.");
  CHECK(put.payload_hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  sign_s3(put, kS3Doc, &s);
  CHECK(s.canonical_request.rfind("PUT\n/test%24file.text\n\n", 0) == 0);
  CHECK(s.string_to_sign.substr(s.string_to_sign.rfind('\n') + 1) ==
        "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
  CHECK(s.signed_headers == "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class");
  CHECK(s.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");

  // GET Bucket (list objects): query parameters sorted.
  sign_s3(s3doc("GET", "/", {{"prefix", "J"}, {"max-keys", "2"}}), kS3Doc, &s);
  CHECK(s.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST_CASE("sigv4 S3: UNSIGNED-PAYLOAD and session tokens") {
  SigningInput in = s3doc("PUT", "/key");
  in.payload_hash = kUnsignedPayload;
  Signed s;
  Pairs h = sign_s3(in, Credentials{"AKID", "secret", "token/with+chars"}, &s);
  CHECK(header(h, "x-amz-content-sha256") == "UNSIGNED-PAYLOAD");
  CHECK(header(h, "x-amz-security-token") == "token/with+chars");
  CHECK(s.canonical_request.substr(s.canonical_request.rfind('\n') + 1) == "UNSIGNED-PAYLOAD");
  CHECK(s.signed_headers == "host;x-amz-content-sha256;x-amz-date;x-amz-security-token");
  // The secret never appears in anything that is sent.
  for (auto& [k, v] : h) CHECK(v.find("secret") == std::string::npos);
  // A different payload hash is a different signature.
  in.payload_hash = kEmptySha256;
  Signed s2;
  sign_s3(in, Credentials{"AKID", "secret", "token/with+chars"}, &s2);
  CHECK(s2.signature != s.signature);
}

TEST_CASE("sigv4 encoding helpers") {
  CHECK(uri_encode("a b+c/d", true) == "a%20b%2Bc%2Fd");
  CHECK(uri_encode("a b+c/d", false) == "a%20b%2Bc/d");
  CHECK(canonical_query({{"prefix", "db/x"}, {"list-type", "2"}, {"continuation-token", "a+b="}}) ==
        "continuation-token=a%2Bb%3D&list-type=2&prefix=db%2Fx");
  CHECK(canonical_query({{"uploads", ""}}) == "uploads=");
  CHECK(md5_base64("") == "1B2M2Y8AsgTpgAmY7PhCfg==");
  CHECK(amz_date(1440938160) == "20150830T123600Z");
}
