// The fsqdeploy C++ runtime: one include for everything.
#pragma once

#include "fsq/backend.hpp"
#include "fsq/bitstream.hpp"
#include "fsq/codec.hpp"
#include "fsq/entropy.hpp"
#include "fsq/error.hpp"
#include "fsq/manifest.hpp"
#include "fsq/tokens.hpp"
