// Fuzzes what the agent does with the bytes a rank writes on its events pipe: the line reader
// (LineReader, as ChildProcess reads events, and cutting overlong lines as it reads a rank's
// stderr), each line's bounded parse (ParseJsonObject), its translation into report entries
// (HandleEvent, malformed events logged as the supervisor does) and the merge of the ranks'
// results (MergeRankResults, as Gang::Run does for a gang of peers). The lines read must put the
// input back together, and no cut line may be longer than its limit.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lib/common/json_lines.h"
#include "lib/common/limits.h"
#include "tests/fuzz/fuzz_file.h"
#include "worker/agent/agent_job.h"
#include "worker/launcher/gang.h"

namespace {

// A cut line's limit: small, so that the fuzzer's inputs reach it.
constexpr size_t kCutLimit = 96;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "fuzz_events: %s\n", what.c_str());
  std::abort();
}

// Every line the reader returns until the end of the file; aborts on an error.
std::vector<std::string> ReadLines(const std::string& path, size_t max_line, fuji::LineReader::Overlong overlong) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die("cannot open the scratch file");
  fuji::LineReader reader(fd, max_line, overlong);
  std::vector<std::string> lines;
  for (;;) {
    auto line = reader.ReadLine(0);
    if (!line.ok()) Die("ReadLine: " + line.status().message());
    if (!line->has_value()) break;
    lines.push_back(std::move(**line));
  }
  ::close(fd);
  return lines;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::string& path = fuji::fuzz::ScratchFile::Get().Write(data, size);

  // The events reader's lines, joined by newlines, are the input (its final newline aside).
  const std::vector<std::string> lines = ReadLines(path, size_t{64} << 20, fuji::LineReader::Overlong::kFail);
  std::string joined;
  for (const std::string& line : lines) joined += line + "\n";
  if (joined != input && joined != input + "\n") Die("the lines read are not the input");
  for (const std::string& line : ReadLines(path, kCutLimit, fuji::LineReader::Overlong::kCut)) {
    if (line.size() > kCutLimit) Die("a cut line is longer than its limit");
  }

  std::vector<nlohmann::json> results;
  for (const std::string& line : lines) {
    fuji::Result<nlohmann::json> event = fuji::ParseJsonObject(line);
    if (!event.ok()) continue;
    for (int32_t rank : {0, 1}) {
      fuji::v1::JobReport part;
      try {
        fuji::agent::HandleEvent(*event, rank, /*now=*/1'700'000'000'000, &part, /*attempt=*/1);
      } catch (const nlohmann::json::exception& e) {
        (void)fuji::limits::CutLine("malformed event (" + std::string(e.what()) + "): " + event->dump());
      }
    }
    try {  // the gang's own reading of an event
      if (event->value("event", "") == "result") results.push_back(event->value("result", nlohmann::json::object()));
    } catch (const nlohmann::json::exception&) {
    }
  }
  if (!results.empty()) {
    results.resize(2, results.front());
    (void)fuji::launch::MergeRankResults(results);
  }
  return 0;
}
