"""Loaded (through PYTHONPATH) by the Python tests of a sanitizer build: see
tests/CMakeLists.txt, "Sanitizer build", and docs/fuzzing.md.

The test's interpreter starts with LD_PRELOAD=libasan.so (the library it loads with
ctypes is instrumented, and ASan must be the first library of the process) and with
ASAN_OPTIONS=detect_leaks=0 (CPython leaves its own objects unfreed at exit). The
processes the tests start must inherit neither: the CLI and the C programs are
instrumented themselves and run with leak detection (MEVB_CHILD_ASAN_OPTIONS), and the
servers (postgres, redis-server, node) are not instrumented at all. A Python started by
a test (which may load the library too) finds no ASan in its process and starts again
with it, as the test's interpreter did.
"""
import os

_runtime = os.environ.get("MEVB_ASAN_RUNTIME")
if _runtime:
    with open("/proc/self/maps") as _maps:
        _loaded = "libasan" in _maps.read()
    if not _loaded:
        with open("/proc/self/cmdline", "rb") as _f:
            _argv = _f.read().split(b"\0")[:-1]
        _env = dict(os.environ, LD_PRELOAD=_runtime, ASAN_OPTIONS="detect_leaks=0")
        os.execve("/proc/self/exe", _argv, _env)
    os.environ.pop("LD_PRELOAD", None)
    _child = os.environ.get("MEVB_CHILD_ASAN_OPTIONS")
    if _child:
        os.environ["ASAN_OPTIONS"] = _child
    else:
        os.environ.pop("ASAN_OPTIONS", None)

# Debian's own sitecustomize, which this file shadows.
try:
    import apport_python_hook
except ImportError:
    pass
else:
    apport_python_hook.install()
