// The one exception type for user-facing failures.
#pragma once

#include <stdexcept>

namespace fsq {

/// Every refusal (a malformed bitstream, a manifest whose files do not match, an image outside
/// [0, 1], a missing backend) is an Error whose message is one line naming the component, what
/// was wrong and what to do, as the Python runtime words it:
/// "bitstream: corrupted payload (payload CRC32 mismatch). Note: ...".
/// Anything else escaping the library is a bug.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace fsq
