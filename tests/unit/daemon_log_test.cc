// fujid's log lines (lib/common/log.h): the program's name, the UTC time to the millisecond,
// the level and the message, on one line whatever the message holds.
#include <gtest/gtest.h>

#include "lib/common/log.h"

namespace fuji::log {
namespace {

// 2026-12-02T17:28:06.123Z
constexpr int64_t kAtMs = 1796232486123;

TEST(LogTest, ALineIsProgramTimeLevelAndMessage) {
  EXPECT_EQ(FormatLine("fujid", kAtMs, Level::kWarn, "lease check failed (UNAVAILABLE)"),
            "fujid: 2026-12-02T17:28:06.123Z WARN lease check failed (UNAVAILABLE)");
  EXPECT_EQ(FormatLine("fujid", 0, Level::kInfo, "listening"),
            "fujid: 1970-01-01T00:00:00.000Z INFO listening");
  EXPECT_EQ(FormatLine("fujid", 5, Level::kError, "x"), "fujid: 1970-01-01T00:00:00.005Z ERROR x");
}

TEST(LogTest, AMessageStaysOnOneLine) {
  EXPECT_EQ(FormatLine("fujid", kAtMs, Level::kInfo, "agent a\nfujid: forged\r\tline"),
            "fujid: 2026-12-02T17:28:06.123Z INFO agent a fujid: forged  line");
}

}  // namespace
}  // namespace fuji::log
