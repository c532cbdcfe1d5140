// metrics::Registry: the Prometheus text format 0.0.4 (HELP/TYPE lines, label escaping,
// cumulative histogram buckets with +Inf, _sum and _count) and its bounds (label length, series).
#include "daemon/server/metrics.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace fuji::metrics {
namespace {

TEST(MetricsTest, EscapesLabelValuesAsTheFormatSays) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("a\"b"), "a\\\"b");
  EXPECT_EQ(EscapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(EscapeLabelValue("a\nb"), "a\\nb");
  EXPECT_EQ(EscapeLabelValue("日本"), "日本");
}

TEST(MetricsTest, FormatsValues) {
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(-2), "-2");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
}

TEST(MetricsTest, CountersAndGaugesRenderWithHelpTypeAndEscapedLabels) {
  Registry r;
  r.Define("fuji_x_total", Type::kCounter, "Things\nseen.", {"method", "code"});
  r.Define("fuji_g", Type::kGauge, "A gauge.", {});
  r.Add("fuji_x_total", {"/a.B/C", "OK"});
  r.Add("fuji_x_total", {"/a.B/C", "OK"}, 2);
  r.Add("fuji_x_total", {"say \"hi\"\n", "OK"});
  r.Set("fuji_g", {}, 1.5);
  r.Add("fuji_undefined", {});           // ignored
  r.Add("fuji_x_total", {"one label"});  // wrong arity: ignored
  r.Set("fuji_x_total", {"a", "b"}, 9);  // wrong type: ignored
  EXPECT_EQ(r.Value("fuji_x_total", {"/a.B/C", "OK"}), 3);
  const std::string text = r.Text();
  EXPECT_NE(text.find("# HELP fuji_x_total Things\\nseen.\n# TYPE fuji_x_total counter\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("fuji_x_total{method=\"/a.B/C\",code=\"OK\"} 3\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("fuji_x_total{method=\"say \\\"hi\\\"\\n\",code=\"OK\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE fuji_g gauge\nfuji_g 1.5\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("fuji_x_total{method=\"a\""), std::string::npos) << text;
  EXPECT_EQ(text.find("undefined"), std::string::npos) << text;
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Registry r;
  r.Define("fuji_h_seconds", Type::kHistogram, "Latency.", {"kind"}, {0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 2.0, 20.0}) r.Observe("fuji_h_seconds", {"infer"}, v);
  const std::string expected =
      "# HELP fuji_h_seconds Latency.\n"
      "# TYPE fuji_h_seconds histogram\n"
      "fuji_h_seconds_bucket{kind=\"infer\",le=\"0.1\"} 2\n"
      "fuji_h_seconds_bucket{kind=\"infer\",le=\"1\"} 3\n"
      "fuji_h_seconds_bucket{kind=\"infer\",le=\"10\"} 4\n"
      "fuji_h_seconds_bucket{kind=\"infer\",le=\"+Inf\"} 5\n"
      "fuji_h_seconds_sum{kind=\"infer\"} 22.65\n"
      "fuji_h_seconds_count{kind=\"infer\"} 5\n";
  EXPECT_EQ(r.Text().substr(0, expected.size()), expected) << r.Text();
}

TEST(MetricsTest, UnlabelledHistogramPutsLeAlone) {
  Registry r;
  r.Define("fuji_c_seconds", Type::kHistogram, "Commits.", {}, {1});
  r.Observe("fuji_c_seconds", {}, 0.5);
  const std::string text = r.Text();
  EXPECT_NE(text.find("fuji_c_seconds_bucket{le=\"1\"} 1\nfuji_c_seconds_bucket{le=\"+Inf\"} 1\n"
                      "fuji_c_seconds_sum 0.5\nfuji_c_seconds_count 1\n"),
            std::string::npos)
      << text;
}

TEST(MetricsTest, LabelValuesAreCutAndSeriesBounded) {
  Registry r;
  r.Define("fuji_jobish", Type::kGauge, "Per job.", {"job"}, {}, /*max_series=*/3);
  r.Set("fuji_jobish", {std::string(1000, 'x')}, 1);
  EXPECT_EQ(r.Value("fuji_jobish", {std::string(kMaxLabelBytes, 'x')}), 1);
  // A cut never splits a UTF-8 character: 127 ASCII bytes then a 3-byte character.
  r.Set("fuji_jobish", {std::string(kMaxLabelBytes - 1, 'y') + "日本"}, 2);
  EXPECT_NE(r.Text().find("job=\"" + std::string(kMaxLabelBytes - 1, 'y') + "\"} 2"),
            std::string::npos)
      << r.Text();
  r.Set("fuji_jobish", {"third"}, 3);
  r.Set("fuji_jobish", {"fourth"}, 4);  // past max_series: dropped, and counted
  EXPECT_EQ(r.Value("fuji_jobish", {"fourth"}), 0);
  EXPECT_NE(r.Text().find("fuji_metrics_dropped_series_total 1\n"), std::string::npos) << r.Text();
  r.Remove("fuji_jobish", {"third"});
  r.Set("fuji_jobish", {"fourth"}, 4);  // room again
  EXPECT_EQ(r.Value("fuji_jobish", {"fourth"}), 4);
  r.Clear("fuji_jobish");
  EXPECT_EQ(r.Text().find("fuji_jobish{"), std::string::npos);
}

}  // namespace
}  // namespace fuji::metrics
