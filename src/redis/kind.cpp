// The Redis kind (kinds.hpp): RDB snapshots in redis/, whose structure verify checks
// as the payload streams by.
#include "../catalog/builtin_kinds.hpp"
#include "mevbackup/redis.hpp"

namespace mevbackup {

namespace {

class RdbCheck final : public PayloadCheck {
 public:
  explicit RdbCheck(const Manifest& m) : rdb_(m) {}
  void update(Bytes data) override { rdb_.update(data); }
  void finish() override { rdb_.finish(); }
  std::string name() const override { return "rdb"; }
  std::string result(const RunContext& ctx) override { return rdb_.verify(ctx); }

 private:
  RdbPayloadCheck rdb_;
};

}  // namespace

BackupKind redis_kind() {
  BackupKind k;
  k.name = "redis";
  k.directory = "redis";
  k.payload_check = [](const Manifest& m) -> std::unique_ptr<PayloadCheck> { return std::make_unique<RdbCheck>(m); };
  return k;
}

}  // namespace mevbackup
