// The stream layer's handles (mevb_source, mevb_filter, mevb_sink) and the run they take
// part in, shared by capi/stream.cpp, capi/storage.cpp and the repository's artifacts.
#pragma once

#include "internal.hpp"

#include "mevbackup/digest.hpp"

struct mevb_source {
  std::unique_ptr<Source> src;
  std::string label;              // "source (file /x)": names the stage in errors
  std::shared_ptr<void> keep;     // what the source reads from (a storage) lives as long
  bool consumed = false;
  mevb_capi::Live<mevb_source> live_;
};

struct mevb_sink {
  std::unique_ptr<Sink> sink;
  std::string label;
  std::shared_ptr<void> keep;
  bool consumed = false;
  mevb_capi::Live<mevb_sink> live_;
};

struct mevb_filter {
  std::unique_ptr<Filter> filter;        // null for an observer and for "none"
  std::unique_ptr<Sha256> sha;           // an observer's
  std::unique_ptr<ByteCounter> counter;  // an observer's
  std::string label;                     // "zstd compressor"
  std::string sha_hex;                   // set when a run that took the observer succeeded
  bool consumed = false;
  mevb_capi::Live<mevb_filter> live_;
};

namespace mevb_capi {

// Rethrows the current exception as an Error whose message starts with `label`.
[[noreturn]] void rethrow_labelled(const std::string& label);

// Wrappers that name their stage in every error they pass on.
class LabelledSource final : public Source {
 public:
  LabelledSource(Source& in, std::string label) : in_(in), label_(std::move(label)) {}
  size_t read(MutBytes buf) override;
  void abort() noexcept override { in_.abort(); }

 private:
  Source& in_;
  std::string label_;
};

class LabelledSink final : public Sink {
 public:
  LabelledSink(Sink& in, std::string label) : in_(in), label_(std::move(label)) {}
  void write(Bytes data) override;
  void commit() override;
  void abort() noexcept override { in_.abort(); }

 private:
  Sink& in_;
  std::string label_;
};

// Takes a source or sink for a run: INVALID_ARGUMENT when NULL or already consumed.
void take(mevb_source* s);
void take(mevb_sink* s);

// A run's context from mevb_run_opts (NULL: defaults): progress (rate-limited to about
// 200 ms), the cancel callback polled with it, and the log. `cancel` is the run's token.
struct RunSetup {
  mevb_run_opts opts;
  std::string stage;
  bool cancelled_by_callback = false;
  RunContext ctx;
};
void setup_run(RunSetup& r, const mevb_run_opts* opts, CancelToken* cancel, const char* default_stage);
// Logs a run's failure through its log callback and prefixes the stage; never returns.
[[noreturn]] void fail_run(RunSetup& r);

}  // namespace mevb_capi
