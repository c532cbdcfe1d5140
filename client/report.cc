// Job reports: tables from the results, CSV data, gnuplot charts. See report.h.
#include "client/report.h"

#include "lib/spec/plan_fields.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "lib/common/file_util.h"
#include "lib/spec/plan_fields.h"

namespace fuji::client {
namespace {

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

double Num(const nlohmann::json& j, const char* key, double fallback = 0) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : fallback;
}

std::string StateName(v1::JobState s) {
  std::string name = v1::JobState_Name(s);
  return name.rfind("JOB_STATE_", 0) == 0 ? name.substr(10) : name;
}

std::string Duration(double seconds) {
  if (!(seconds > 0)) return "-";
  if (seconds < 120) return Fmt("%.0f s", seconds);
  if (seconds < 7200) return Fmt("%.0f min", seconds / 60);
  if (seconds < 3 * 86400) return Fmt("%.1f h", seconds / 3600);
  return Fmt("%.1f days", seconds / 86400);
}

// Gnuplot data and labels must not break the files: keep labels to a safe alphabet.
std::string SafeLabel(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '_';
  return out.empty() ? "job" : out;
}

bool HaveGnuplot() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

Result<JobData> FetchJob(DaemonClient& client, int64_t id) {
  JobData d;
  FUJI_ASSIGN_OR_RETURN(d.job, client.GetJob(id));
  d.spec = nlohmann::json::parse(d.job.spec_json(), nullptr, false);
  if (d.spec.is_discarded()) d.spec = nlohmann::json::object();
  // The plan the scheduler chose stands in for the spec's "auto" fields: the report shows what ran.
  const nlohmann::json plan = nlohmann::json::parse(d.job.plan_json(), nullptr, false);
  if (plan.is_object() && plan.value("zero", nlohmann::json()).is_number_integer() &&
      plan.value("offload", nlohmann::json()).is_string()) {
    d.spec = SpecWithPlan(std::move(d.spec), d.job.kind() == "finetune", plan["zero"].get<int>(),
                          plan["offload"].get<std::string>());
  }
  auto result = client.GetResult(id);
  if (result.ok()) {
    d.result = nlohmann::json::parse(result->result_json(), nullptr, false);
    if (d.result.is_discarded()) d.result = nullptr;
  }
  FUJI_ASSIGN_OR_RETURN(d.timings, client.GetTimings(id));
  FUJI_ASSIGN_OR_RETURN(d.samples, client.GetSamples(id));
  if (d.job.kind() == "finetune") {
    FUJI_ASSIGN_OR_RETURN(d.losses, client.GetLosses(id));
  }
  const std::string model = d.spec.value("model", std::string());
  d.label = model.substr(model.find_last_of('/') + 1);
  if (d.label.empty()) d.label = "job" + std::to_string(id);
  return d;
}

Result<std::string> WriteReport(const std::vector<JobData>& jobs, const ReportOptions& options) {
  const std::string& out = options.out_dir;
  std::error_code ec;
  std::filesystem::create_directories(out + "/data", ec);
  if (ec) return InvalidArgument("cannot create " + out + "/data: " + ec.message());
  std::ostringstream md;
  md << "# " << options.title << "\n\n";
  for (const auto& n : options.notes) md << n << "\n";
  if (!options.notes.empty()) md << "\n";

  // ---- inference ----
  std::vector<const JobData*> infers, tunes;
  for (const auto& j : jobs) (j.job.kind() == "finetune" ? tunes : infers).push_back(&j);
  std::ofstream infer_csv(out + "/data/inference.csv");
  infer_csv << "label,parameters,peak_device_mib,peak_host_mib,load_ms,generate_ms\n";
  if (!infers.empty()) {
    md << "## Inference\n\n"
       << "Offload: the plan fujid's scheduler chose for the agent's free memory (or the one asked "
          "for). Time to first token: tokenizing and prefill once the model is loaded. Peak device memory: "
          "the job's processes on the GPU in the agent's nvidia-smi style samples (\"-\" on a CPU "
          "agent); peak host memory: the rank's peak RSS.\n\n"
       << "| job | model | parameters | weights | device | precision | offload | peak device (MiB) | "
          "peak host (MiB) | load (ms) | time to first token (ms) | decode (tokens/s) | total (ms) | state |\n"
       << "|---:|---|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---|\n";
    for (const JobData* d : infers) {
      const nlohmann::json& r = d->result;
      const nlohmann::json t = r.is_object() ? r.value("timings", nlohmann::json::object()) : nlohmann::json::object();
      const nlohmann::json m = r.is_object() ? r.value("memory", nlohmann::json::object()) : nlohmann::json::object();
      const nlohmann::json model = r.is_object() ? r.value("model", nlohmann::json::object()) : nlohmann::json::object();
      int64_t device_peak = 0;
      for (const auto& s : d->samples) {
        if (!s.host_memory()) device_peak = std::max(device_peak, s.process_mib());
      }
      const double params = Num(model, "parameters");
      md << "| " << d->job.id() << " | " << d->label << " | " << (params > 0 ? Fmt("%.2fB", params / 1e9) : "-")
         << " | " << (d->random_weights ? "random" : "given") << " | " << d->spec.value("device", "cpu")
         << " | " << d->spec.value("precision", "fp32") << " | " << d->spec.value("offload", "none") << " | "
         << (device_peak > 0 ? std::to_string(device_peak) : (Num(m, "device_peak_mib") > 0 ? Fmt("%.0f", Num(m, "device_peak_mib")) : "-"))
         << " | " << Fmt("%.0f", Num(m, "peak_rss_mib")) << " | " << Fmt("%.0f", Num(t, "load_ms")) << " | "
         << Fmt("%.1f", Num(t, "tokenize_ms") + Num(t, "prefill_ms")) << " | "
         << Fmt("%.1f", Num(t, "decode_tokens_per_s")) << " | " << Fmt("%.0f", Num(t, "total_ms")) << " | "
         << StateName(d->job.state()) << " |\n";
      infer_csv << SafeLabel(d->label) << "," << params << "," << device_peak << "," << Num(m, "peak_rss_mib") << ","
                << Num(t, "load_ms") << "," << Num(t, "prefill_ms") + Num(t, "decode_ms") << "\n";
    }
    md << "\n";
  }
  infer_csv.close();

  // ---- fine-tuning ----
  if (!tunes.empty()) {
    md << "## Fine-tuning\n\n"
       << "Zero and offload: the plan fujid's scheduler chose for the agent's free memory (or the one "
          "asked for). Step time: tokens per optimizer step over the measured tokens/s. Memory per rank: model "
          "states on the device (peak, as the rank accounts them) and the rank's peak RSS.";
    if (options.corpus_tokens > 0) {
      md << " Time to train: " << Fmt("%.3g", options.corpus_tokens) << " tokens x " << Fmt("%g", options.epochs)
         << " epoch(s) at the measured rate.";
    }
    md << "\n\n| job | model | ranks | zero | offload | precision | step (ms) | tokens/s | first -> last loss | "
          "device states per rank (MiB) | peak RSS per rank (MiB) | time to train | state |\n"
       << "|---:|---|---:|---:|---|---|---:|---:|---|---|---|---:|---|\n";
    for (const JobData* d : tunes) {
      const nlohmann::json& r = d->result;
      const double tps = Num(r, "tokens_per_s");
      const double tokens_per_step = static_cast<double>(d->spec.value("ranks", 1) * d->spec.value("micro_batch", 1) *
                                                         d->spec.value("grad_accum", 1) * d->spec.value("seq_len", 128));
      std::string states, rss, losses = "-";
      if (r.is_object() && r.contains("memory")) {
        for (const auto& m : r["memory"].value("ranks", nlohmann::json::array())) {
          states += (states.empty() ? "" : ", ") + Fmt("%.0f", Num(m, "peak_device_bytes") / 1048576.0);
          rss += (rss.empty() ? "" : ", ") + Fmt("%.0f", Num(m, "peak_rss_bytes") / 1048576.0);
        }
      }
      std::vector<const v1::LossPoint*> train;
      for (const auto& l : d->losses) {
        if (l.split() == "train") train.push_back(&l);
      }
      if (!train.empty()) losses = Fmt("%.3f", train.front()->loss()) + " -> " + Fmt("%.3f", train.back()->loss());
      md << "| " << d->job.id() << " | " << d->label << " | " << d->spec.value("ranks", 1) << " | "
         << d->spec.value("zero", 0) << " | " << d->spec.value("offload", "none") << " | "
         << d->spec.value("precision", "fp32") << " | " << (tps > 0 ? Fmt("%.0f", 1000 * tokens_per_step / tps) : "-")
         << " | " << Fmt("%.0f", tps) << " | " << losses << " | " << (states.empty() ? "-" : states) << " | "
         << (rss.empty() ? "-" : rss) << " | "
         << (tps > 0 && options.corpus_tokens > 0 ? Duration(options.corpus_tokens * options.epochs / tps) : "-")
         << " | " << StateName(d->job.state()) << " |\n";
      std::ofstream loss_csv(out + "/data/losses-" + std::to_string(d->job.id()) + ".csv");
      loss_csv << "step,loss,split\n";
      for (const auto& l : d->losses) loss_csv << l.step() << "," << l.loss() << "," << l.split() << "\n";
    }
    md << "\n";
  }

  // ---- memory over time, per job ----
  for (const auto& d : jobs) {
    std::ofstream csv(out + "/data/memory-" + std::to_string(d.job.id()) + ".csv");
    csv << "seconds,process_mib,device_index\n";
    const int64_t t0 = d.samples.empty() ? 0 : d.samples.front().at_ms();
    for (const auto& s : d.samples) {
      csv << (static_cast<double>(s.at_ms() - t0) / 1000.0) << "," << s.process_mib() << "," << s.device_index() << "\n";
    }
  }

  // ---- charts ----
  std::ostringstream gp;
  gp << "set terminal pngcairo size 900,500 noenhanced\nset datafile separator ','\nset key outside right\n"
     << "set grid ytics\n";
  std::vector<std::pair<std::string, std::string>> charts;
  if (!infers.empty()) {
    gp << "set output 'memory-per-model.png'\nset title 'Peak memory per model (MiB)'\nset style data histograms\n"
       << "set style histogram clustered\nset style fill solid 0.8\nset boxwidth 0.8\nset xtics rotate by -30\n"
       << "plot 'data/inference.csv' using 4:xtic(1) title 'host (peak RSS)', '' using 3 title 'device (samples)'\n";
    gp << "set output 'time-per-model.png'\nset title 'Time per model (ms): load and generation'\n"
       << "set style histogram rowstacked\n"
       << "plot 'data/inference.csv' using 5:xtic(1) title 'load', '' using 6 title 'prefill + decode'\n";
    charts.push_back({"memory-per-model.png", "Peak memory per model"});
    charts.push_back({"time-per-model.png", "Time per model, load and generation"});
  }
  gp << "unset style\nset style data lines\nset xtics norotate\nset output 'memory-over-time.png'\n"
     << "set title 'Memory of each job over time (MiB, from the samples)'\nset xlabel 'seconds since the first sample'\n"
     << "plot";
  bool first = true;
  for (const auto& d : jobs) {
    if (d.samples.empty()) continue;
    gp << (first ? " " : ", ") << "'data/memory-" << d.job.id() << ".csv' every ::1 using 1:2 with lines title 'job "
       << d.job.id() << " " << SafeLabel(d.label) << "'";
    first = false;
  }
  if (first) gp << " 0 notitle";
  gp << "\n";
  charts.push_back({"memory-over-time.png", "Memory over time per job"});
  if (!tunes.empty()) {
    gp << "set output 'loss-curves.png'\nset title 'Loss per step'\nset xlabel 'step'\nplot";
    bool f = true;
    for (const JobData* d : tunes) {
      const std::string file = "data/losses-" + std::to_string(d->job.id()) + ".csv";
      gp << (f ? " " : ", ") << "'" << file << "' every ::1 using 1:(strcol(3) eq 'train' ? $2 : NaN) with linespoints title 'job "
         << d->job.id() << " train', '" << file << "' every ::1 using 1:(strcol(3) eq 'eval' ? $2 : NaN) with linespoints title 'job "
         << d->job.id() << " held-out'";
      f = false;
    }
    gp << "\n";
    charts.push_back({"loss-curves.png", "Loss curves"});
  }
  {
    std::ofstream(out + "/charts.gp") << gp.str();
  }
  if (HaveGnuplot()) {
    const std::string cmd = "cd " + ShellQuote(out) + " && gnuplot charts.gp 2> gnuplot.log";
    const int rc = std::system(cmd.c_str());
    if (rc != 0) return Internal("gnuplot failed on " + out + "/charts.gp (see gnuplot.log)");
    md << "## Charts\n\n";
    for (const auto& [file, title] : charts) md << "![" << title << "](" << file << ")\n\n";
  } else {
    md << "Charts: gnuplot is not installed (scripts/bootstrap installs gnuplot-nox); `gnuplot charts.gp` in this "
          "directory draws them from data/.\n";
  }
  const std::string path = out + "/report.md";
  FUJI_RETURN_IF_ERROR(WriteFileAtomically(path, md.str()));
  return path;
}

}  // namespace fuji::client
