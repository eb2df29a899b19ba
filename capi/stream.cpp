// The stream layer of the C API: sources, filters and sinks from the caller's callbacks,
// files and codecs, and a run over them (mevb_pipeline_run). A thin shim over
// mevbackup::Pipeline; every stage's error is passed on with the stage's name.
#include <chrono>
#include <unordered_set>

#include "mevbackup/file_stream.hpp"
#include "stream_internal.hpp"

using namespace mevb_capi;

namespace mevb_capi {

void rethrow_labelled(const std::string& label) {
  try {
    throw;
  } catch (const Error& e) {
    throw Error(e.code(), label + ": " + e.what(), e.retriable());
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(Code::internal, label + ": internal error: " + e.what());
  } catch (...) {
    throw Error(Code::internal, label + ": internal error: unknown exception");
  }
}

size_t LabelledSource::read(MutBytes buf) {
  try {
    return in_.read(buf);
  } catch (...) {
    rethrow_labelled(label_);
  }
}

void LabelledSink::write(Bytes data) {
  try {
    in_.write(data);
  } catch (...) {
    rethrow_labelled(label_);
  }
}

void LabelledSink::commit() {
  try {
    in_.commit();
  } catch (...) {
    rethrow_labelled(label_ + ": commit failed");
  }
}

void take(mevb_source* s) {
  require(s, "source");
  if (s->consumed) throw invalid(s->label + " was already used by a run; create a new one");
  s->consumed = true;
}

void take(mevb_sink* s) {
  require(s, "sink");
  if (s->consumed) throw invalid(s->label + " was already used by a run; create a new one");
  s->consumed = true;
}

void setup_run(RunSetup& r, const mevb_run_opts* opts, CancelToken* cancel, const char* default_stage) {
  r.opts = mevb_run_opts MEVB_RUN_OPTS_INIT;
  read_opts(opts, r.opts, "mevb_run_opts");
  r.stage = r.opts.stage && *r.opts.stage ? r.opts.stage : default_stage;
  r.ctx.cancel = cancel;
  r.ctx.pipeline.stage_name = r.stage.c_str();
  if (r.opts.chunk_size) r.ctx.pipeline.chunk_size = r.opts.chunk_size;
  if (r.opts.log) {
    auto log = r.opts.log;
    auto lu = r.opts.log_user;
    r.ctx.log = [log, lu](LogLevel lvl, const std::string& msg) { log(static_cast<int>(lvl), msg.c_str(), lu); };
  }
  if (r.opts.progress || r.opts.cancel) {
    // The pipeline asks often (so that a cancel is noticed soon); the caller's progress
    // callback hears about every 200 ms and at the end.
    r.ctx.pipeline.progress_interval = std::chrono::milliseconds(20);
    auto last = std::make_shared<std::chrono::steady_clock::time_point>();
    RunSetup* rp = &r;
    r.ctx.progress = [rp, last](const Progress& p) {
      const mevb_run_opts& o = rp->opts;
      if (o.cancel && o.cancel(o.cancel_user) != 0) {
        rp->cancelled_by_callback = true;
        return false;
      }
      if (!o.progress) return true;
      auto now = std::chrono::steady_clock::now();
      if (!p.done && now - *last < std::chrono::milliseconds(200)) return true;
      *last = now;
      mevb_progress cp{sizeof(mevb_progress), p.stage, p.bytes_in, p.bytes_out, p.elapsed_s, p.done ? 1 : 0};
      return o.progress(&cp, o.progress_user) == 0;
    };
  }
}

void fail_run(RunSetup& r) {
  std::string why;
  try {
    throw;
  } catch (const Error& e) {
    if (e.code() == Code::cancelled && r.cancelled_by_callback) why = "cancelled by the cancel callback";
    else if (e.code() == Code::cancelled) why = "cancelled";
    else why = e.what();
    if (r.ctx.log) r.ctx.log(LogLevel::error, r.stage + ": " + why);
    throw Error(e.code(), r.stage + ": " + why, e.retriable());
  } catch (const std::bad_alloc&) {
    throw;
  } catch (...) {
    rethrow_labelled(r.stage);
  }
}

}  // namespace mevb_capi

namespace {

Code status_code(int rc) {
  if (rc > 0 && rc <= MEVB_ERR_LOCKED) return static_cast<Code>(rc);
  return Code::io;  // a status this library does not know
}

std::string status_text(int rc) { return fmt::format("status {} ({})", rc, mevb_status_str(rc)); }

class CallbackSource final : public Source {
 public:
  CallbackSource(mevb_read_cb read_cb, mevb_close_cb close_cb, void* user)
      : read_(read_cb), close_(close_cb), user_(user) {}
  ~CallbackSource() override {
    if (close_) close_(user_);
  }
  size_t read(MutBytes buf) override {
    size_t got = 0;
    int rc = read_(user_, buf.data(), buf.size(), &got);
    if (rc != 0) throw Error(status_code(rc), "the read callback returned " + status_text(rc));
    if (got > buf.size())
      throw Error(Code::invalid_argument,
                  fmt::format("the read callback reported {} bytes read into a buffer of {}", got, buf.size()));
    return got;
  }

 private:
  mevb_read_cb read_;
  mevb_close_cb close_;
  void* user_;
};

class CallbackSink final : public Sink {
 public:
  CallbackSink(mevb_write_cb write_cb, mevb_commit_cb commit_cb, mevb_abort_cb abort_cb, void* user)
      : write_(write_cb), commit_(commit_cb), abort_(abort_cb), user_(user) {}
  ~CallbackSink() override { abort(); }
  void write(Bytes data) override {
    if (done_) throw Error(Code::internal, "write after the sink was finished");
    int rc = write_(user_, data.data(), data.size());
    if (rc != 0) throw Error(status_code(rc), "the write callback returned " + status_text(rc));
  }
  void commit() override {
    if (done_) throw Error(Code::internal, "commit after the sink was finished");
    int rc = commit_(user_);
    if (rc != 0) throw Error(status_code(rc), "the commit callback returned " + status_text(rc));
    done_ = true;
  }
  void abort() noexcept override {
    if (done_) return;
    done_ = true;
    if (abort_) abort_(user_);
  }

 private:
  mevb_write_cb write_;
  mevb_commit_cb commit_;
  mevb_abort_cb abort_;
  void* user_;
  bool done_ = false;
};

// A filter that names itself in every error it raises.
class LabelledFilter final : public Filter {
 public:
  LabelledFilter(Filter& in, std::string label) : in_(in), label_(std::move(label)) {}
  bool process(InBuf& in, OutBuf& out, bool finish) override {
    try {
      return in_.process(in, out, finish);
    } catch (...) {
      rethrow_labelled(label_);
    }
  }
  const char* name() const override { return in_.name(); }

 private:
  Filter& in_;
  std::string label_;
};

Compression compression_of(int c) {
  switch (c) {
    case MEVB_COMPRESSION_NONE: return Compression::none;
    case MEVB_COMPRESSION_GZIP: return Compression::gzip;
    case MEVB_COMPRESSION_ZSTD: return Compression::zstd;
    default: throw invalid(fmt::format("compression {} is not a mevb_compression (NONE, GZIP or ZSTD)", c));
  }
}

template <class T>
T* created(T** out, std::unique_ptr<T> h) {
  *out = h.release();
  return *out;
}

}  // namespace

extern "C" {

int mevb_source_new_callbacks(mevb_source** out, mevb_read_cb read, mevb_close_cb close, void* user) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(reinterpret_cast<void*>(read), "read");
    auto s = std::make_unique<mevb_source>();
    s->src = std::make_unique<CallbackSource>(read, close, user);
    s->label = "source (callbacks)";
    created(out, std::move(s));
  });
}

int mevb_source_new_fd(mevb_source** out, int fd, int close_fd) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    auto s = std::make_unique<mevb_source>();
    s->label = fmt::format("source (file descriptor {})", fd);
    s->src = make_fd_source(fd, close_fd != 0, fmt::format("file descriptor {}", fd));
    created(out, std::move(s));
  });
}

int mevb_source_new_path(mevb_source** out, const char* path) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(path, "path");
    auto s = std::make_unique<mevb_source>();
    s->label = fmt::format("source (file {})", path);
    s->src = make_file_source(path);
    created(out, std::move(s));
  });
}

void mevb_source_free(mevb_source* source) {
  if (live(source)) delete source;
}

int mevb_sink_new_callbacks(mevb_sink** out, mevb_write_cb write, mevb_commit_cb commit, mevb_abort_cb abort,
                            void* user) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(reinterpret_cast<void*>(write), "write");
    require(reinterpret_cast<void*>(commit), "commit");
    auto s = std::make_unique<mevb_sink>();
    s->sink = std::make_unique<CallbackSink>(write, commit, abort, user);
    s->label = "sink (callbacks)";
    created(out, std::move(s));
  });
}

int mevb_sink_new_path(mevb_sink** out, const char* path, int replace) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(path, "path");
    auto s = std::make_unique<mevb_sink>();
    s->label = fmt::format("sink (file {})", path);
    s->sink = make_file_sink(path, replace != 0);
    created(out, std::move(s));
  });
}

void mevb_sink_free(mevb_sink* sink) {
  if (!live(sink)) return;
  if (sink->sink) sink->sink->abort();  // nothing is committed by a free
  delete sink;
}

int mevb_filter_new_compressor(mevb_filter** out, int compression, int level) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    Compression c = compression_of(compression);
    auto f = std::make_unique<mevb_filter>();
    f->label = fmt::format("{} compressor", compression_name(c));
    f->filter = make_compressor(c, level);
    created(out, std::move(f));
  });
}

int mevb_filter_new_decompressor(mevb_filter** out, int compression) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    Compression c = compression_of(compression);
    auto f = std::make_unique<mevb_filter>();
    f->label = fmt::format("{} decompressor", compression_name(c));
    f->filter = make_decompressor(c);
    created(out, std::move(f));
  });
}

int mevb_filter_new_throttle(mevb_filter** out, uint64_t bytes_per_second) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    auto f = std::make_unique<mevb_filter>();
    f->filter = make_throttle(bytes_per_second);
    f->label = f->filter->name();
    created(out, std::move(f));
  });
}

int mevb_filter_new_observer(mevb_filter** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    auto f = std::make_unique<mevb_filter>();
    f->label = "observer";
    f->sha = std::make_unique<Sha256>();
    f->counter = std::make_unique<ByteCounter>();
    created(out, std::move(f));
  });
}

uint64_t mevb_filter_observed_bytes(const mevb_filter* filter) {
  return live(filter) && filter->counter ? filter->counter->count() : 0;
}

const char* mevb_filter_observed_sha256(const mevb_filter* filter) {
  return live(filter) && filter->sha ? filter->sha_hex.c_str() : nullptr;
}

void mevb_filter_free(mevb_filter* filter) {
  if (live(filter)) delete filter;
}

int mevb_run_opts_init(mevb_run_opts* opts, size_t size) { return opts_init(opts, size, mevb_run_opts MEVB_RUN_OPTS_INIT); }

int mevb_pipeline_run(mevb_source* source, mevb_filter* const* filters, size_t n, mevb_sink* sink,
                      const mevb_run_opts* opts) {
  return guard([&] {
    require(source, "source");
    require(sink, "sink");
    if (n && !filters) throw invalid("filters must not be NULL when n is not 0");
    std::unordered_set<const mevb_filter*> seen;
    for (size_t i = 0; i < n; ++i) {
      if (!filters[i]) throw invalid(fmt::format("filters[{}] is NULL", i));
      if (!live(filters[i]))
        throw invalid(fmt::format("filters[{}] is not a live filter handle: it was freed already, or is of another type", i));
      if (filters[i]->consumed)
        throw invalid(fmt::format("filters[{}] ({}) was already used by a run; create a new one", i, filters[i]->label));
      if (!seen.insert(filters[i]).second) throw invalid(fmt::format("filters[{}] appears twice in the run", i));
    }
    if (source->consumed) throw invalid(source->label + " was already used by a run; create a new one");
    if (sink->consumed) throw invalid(sink->label + " was already used by a run; create a new one");
    CancelToken cancel;
    RunSetup run;
    setup_run(run, opts, &cancel, "pipeline");
    take(source);
    take(sink);
    for (size_t i = 0; i < n; ++i) filters[i]->consumed = true;

    LabelledSource src(*source->src, source->label);
    LabelledSink snk(*sink->sink, sink->label);
    std::vector<std::unique_ptr<LabelledFilter>> wrapped;
    Pipeline p(src);
    for (size_t i = 0; i < n; ++i) {
      mevb_filter& f = *filters[i];
      if (f.filter) {
        wrapped.push_back(std::make_unique<LabelledFilter>(*f.filter, fmt::format("filter {} ({})", i, f.label)));
        p.then(*wrapped.back());
      } else if (f.sha) {
        p.observe(*f.sha).observe(*f.counter);
      }
    }
    try {
      p.run(snk, &cancel, run.ctx.progress, run.ctx.pipeline);
    } catch (...) {
      fail_run(run);
    }
    for (size_t i = 0; i < n; ++i)
      if (filters[i]->sha) filters[i]->sha_hex = filters[i]->sha->hex();
    if (run.ctx.log) run.ctx.log(LogLevel::info, fmt::format("{}: {} committed", run.stage, sink->label));
  });
}

}  // extern "C"
