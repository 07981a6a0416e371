#include "services/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace tessera::services {
namespace {

std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// Appends le="x" to an already rendered label set ("" or "{a=\"b\"}").
std::string WithLe(const std::string& labels, const std::string& le) {
  std::string le_pair = "le=\"" + le + "\"";
  if (labels.empty()) return "{" + le_pair + "}";
  return labels.substr(0, labels.size() - 1) + "," + le_pair + "}";
}

}  // namespace

Metrics::Metrics()
    : buckets_{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60} {}

std::string Metrics::RenderLabels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ",";
    out += labels[i].first + "=\"" + EscapeLabelValue(labels[i].second) + "\"";
  }
  return out + "}";
}

void Metrics::Describe(const std::string& name, const std::string& type, const std::string& help) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = families_[name];
  f.type = type;
  f.help = help;
}

void Metrics::Add(const std::string& name, const Labels& labels, double delta) {
  std::string key = RenderLabels(labels);
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = families_[name];
  f.values[key] += delta;
  f.labels.emplace(key, labels);
}

void Metrics::Set(const std::string& name, const Labels& labels, double value) {
  std::string key = RenderLabels(labels);
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = families_[name];
  f.values[key] = value;
  f.labels.emplace(key, labels);
}

std::vector<std::pair<Labels, double>> Metrics::Series(const std::string& name) {
  std::vector<std::pair<Labels, double>> out;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return out;
  for (const auto& [key, value] : it->second.values) {
    auto l = it->second.labels.find(key);
    out.emplace_back(l == it->second.labels.end() ? Labels{} : l->second, value);
  }
  return out;
}

void Metrics::ClearFamily(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it != families_.end()) {
    it->second.values.clear();
    it->second.labels.clear();
  }
}

void Metrics::Observe(const std::string& name, const Labels& labels, double value) {
  std::string key = RenderLabels(labels);
  std::lock_guard<std::mutex> lock(mu_);
  Histogram& h = families_[name].histograms[key];
  if (h.counts.empty()) h.counts.assign(buckets_.size(), 0);
  auto it = std::lower_bound(buckets_.begin(), buckets_.end(), value);
  if (it != buckets_.end()) h.counts[it - buckets_.begin()] += 1;
  h.sum += value;
  h.count += 1;
}

void Metrics::AddCollector(std::function<void(Metrics&)> collector) {
  std::lock_guard<std::mutex> lock(collectors_mu_);
  collectors_.push_back(std::move(collector));
}

std::string Metrics::Render() {
  {
    std::lock_guard<std::mutex> lock(collectors_mu_);
    for (auto& c : collectors_) c(*this);
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    if (f.values.empty() && f.histograms.empty()) continue;
    if (!f.help.empty()) out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name + " " + f.type + "\n";
    for (const auto& [labels, v] : f.values) out += name + labels + " " + FormatValue(v) + "\n";
    for (const auto& [labels, h] : f.histograms) {
      double cumulative = 0;
      for (size_t i = 0; i < buckets_.size(); ++i) {
        cumulative += h.counts[i];
        char le[32];
        std::snprintf(le, sizeof(le), "%g", buckets_[i]);
        out += name + "_bucket" + WithLe(labels, le) + " " +
               FormatValue(cumulative) + "\n";
      }
      out += name + "_bucket" + WithLe(labels, "+Inf") + " " + FormatValue(h.count) + "\n";
      out += name + "_sum" + labels + " " + FormatValue(h.sum) + "\n";
      out += name + "_count" + labels + " " + FormatValue(h.count) + "\n";
    }
  }
  return out;
}

}  // namespace tessera::services
