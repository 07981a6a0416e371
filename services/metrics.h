// In-process metrics in the Prometheus text exposition format (version 0.0.4).
//
// Counters and gauges are doubles keyed by (name, label set); histograms use fixed cumulative buckets.
// Collectors are callbacks run at scrape time to refresh gauges that are cheaper to read on demand
// (jobs by state, queue depth, resident versions). Thread-safe; one mutex, held briefly per update.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace tessera::services {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  Metrics();

  // Declares a metric family (its HELP and TYPE lines). Updating an undeclared name declares it as
  // untyped with no help.
  void Describe(const std::string& name, const std::string& type, const std::string& help);

  void Add(const std::string& name, const Labels& labels, double delta = 1);  // counter
  void Set(const std::string& name, const Labels& labels, double value);      // gauge
  // Removes every series of a gauge family (before a collector re-fills it).
  void ClearFamily(const std::string& name);
  // Histogram with the default latency buckets (seconds, 1 ms .. 60 s).
  void Observe(const std::string& name, const Labels& labels, double value);

  void AddCollector(std::function<void(Metrics&)> collector);

  // The counter/gauge series of one family as (labels, value), for readers in the process (the web
  // console's expert heat map). Collectors are not run.
  std::vector<std::pair<Labels, double>> Series(const std::string& name);

  // Runs the collectors, then renders every family.
  std::string Render();

 private:
  struct Histogram {
    std::vector<double> counts;  // per bucket, non-cumulative
    double sum = 0;
    double count = 0;
  };
  struct Family {
    std::string type = "untyped";
    std::string help;
    std::map<std::string, double> values;         // rendered labels -> value
    std::map<std::string, Labels> labels;         // rendered labels -> the labels (for Series)
    std::map<std::string, Histogram> histograms;  // rendered labels -> histogram
  };
  static std::string RenderLabels(const Labels& labels);

  std::mutex mu_;
  std::map<std::string, Family> families_;
  std::vector<double> buckets_;
  std::mutex collectors_mu_;
  std::vector<std::function<void(Metrics&)>> collectors_;
};

}  // namespace tessera::services
