// A small unsigned big integer: the mixed-radix value V of one patch needs up to bits_per_patch
// bits (hundreds for [8]*64, more for exotic levels), and byte counts like ceil(N * b / 8) can
// exceed 64 bits in a crafted header. Only what the format needs: multiply-add and divide by a
// 32-bit number, compare with zero, print in decimal.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fsq::detail {

class Limbs {
public:
    explicit Limbs(std::uint64_t value = 0, std::size_t min_limbs = 0) : limbs_(std::max<std::size_t>(min_limbs, 2)) {
        limbs_[0] = static_cast<std::uint32_t>(value);
        limbs_[1] = static_cast<std::uint32_t>(value >> 32);
    }

    void clear() { std::fill(limbs_.begin(), limbs_.end(), 0u); }

    std::uint32_t limb(std::size_t i) const { return i < limbs_.size() ? limbs_[i] : 0u; }
    void set_limb(std::size_t i, std::uint32_t v) {
        if (i >= limbs_.size()) limbs_.resize(i + 1, 0u);
        limbs_[i] = v;
    }

    /// this = this * m + a.
    void mul_add(std::uint32_t m, std::uint64_t a) {
        std::uint64_t carry = a;
        for (std::uint32_t& limb : limbs_) {
            const std::uint64_t t = std::uint64_t{limb} * m + (carry & 0xFFFFFFFFu);
            limb = static_cast<std::uint32_t>(t);
            carry = (t >> 32) + (carry >> 32);
        }
        for (; carry; carry >>= 32) limbs_.push_back(static_cast<std::uint32_t>(carry));
    }

    /// this = this / m; returns this % m. m > 0.
    std::uint32_t divmod(std::uint32_t m) {
        std::uint64_t r = 0;
        for (std::size_t i = limbs_.size(); i-- > 0;) {
            const std::uint64_t t = (r << 32) | limbs_[i];
            limbs_[i] = static_cast<std::uint32_t>(t / m);
            r = t % m;
        }
        return static_cast<std::uint32_t>(r);
    }

    /// this = this - 1; this > 0.
    void sub_one() {
        for (std::uint32_t& limb : limbs_) {
            if (limb-- != 0) return;
        }
    }

    bool is_zero() const {
        return std::all_of(limbs_.begin(), limbs_.end(), [](std::uint32_t l) { return l == 0; });
    }

    std::size_t bit_length() const {
        for (std::size_t i = limbs_.size(); i-- > 0;) {
            if (limbs_[i]) {
                std::size_t n = 0;
                for (std::uint32_t v = limbs_[i]; v; v >>= 1) ++n;
                return 32 * i + n;
            }
        }
        return 0;
    }

    bool fits_u64() const { return bit_length() <= 64; }
    std::uint64_t to_u64() const { return (std::uint64_t{limb(1)} << 32) | limb(0); }

    std::string to_decimal() const {
        Limbs rest = *this;
        std::string digits;
        do {
            std::string chunk = std::to_string(rest.divmod(1000000000u));
            if (!rest.is_zero()) chunk.insert(0, 9 - chunk.size(), '0');
            digits.insert(0, chunk);
        } while (!rest.is_zero());
        return digits;
    }

private:
    std::vector<std::uint32_t> limbs_;  // little-endian
};

}  // namespace fsq::detail
