// Umbrella header of the C++ core.
#pragma once
#include "mevbackup/clock.hpp"
#include "mevbackup/compress.hpp"
#include "mevbackup/digest.hpp"
#include "mevbackup/error.hpp"
#include "mevbackup/fs.hpp"
#include "mevbackup/manifest.hpp"
#include "mevbackup/postgres.hpp"
#include "mevbackup/redis.hpp"
#include "mevbackup/repository.hpp"
#include "mevbackup/storage.hpp"
#include "mevbackup/stream.hpp"
#include "mevbackup/version.hpp"
