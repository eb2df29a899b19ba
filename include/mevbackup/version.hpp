#pragma once
namespace mevbackup {
// Kept in step with the project version in CMakeLists.txt and meson.build.
inline constexpr int kVersionMajor = 0;
inline constexpr int kVersionMinor = 1;
inline constexpr int kVersionPatch = 0;
inline constexpr const char* kVersionString = "0.1.0";
}  // namespace mevbackup
