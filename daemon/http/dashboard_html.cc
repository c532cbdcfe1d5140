// The dashboard's small pieces; see dashboard_html.h.
#include "daemon/http/dashboard_html.h"

#include <ctime>
#include <string_view>

#include "daemon/http/dashboard_assets.h"

namespace fuji::http::dashboard {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A form field's text with %XX and '+' decoded; false for a broken escape.
bool Decode(const std::string& in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      *out += ' ';
    } else if (in[i] == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = HexDigit(in[i + 1]), lo = HexDigit(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      *out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      *out += in[i];
    }
  }
  return true;
}

}  // namespace

HttpHeaders Headers(const std::string& cache_control) {
  return {{"Content-Security-Policy",
           "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"},
          {"X-Content-Type-Options", "nosniff"},
          {"X-Frame-Options", "DENY"},
          {"Referrer-Policy", "no-referrer"},
          {"Cache-Control", cache_control}};
}

std::string StaticUrl(const std::string& name) {
  // Hashed once (FNV-1a of each file): a new build's file gets a new address.
  static const std::map<std::string, std::string> urls = [] {
    std::map<std::string, std::string> out;
    for (int i = 0; i < kNumDashboardAssets; ++i) {
      uint64_t hash = 1469598103934665603ULL;
      for (unsigned char c : std::string_view(kDashboardAssets[i].text)) {
        hash = (hash ^ c) * 1099511628211ULL;
      }
      char hex[20];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
      out[kDashboardAssets[i].name] = std::string("/ui/static/") + kDashboardAssets[i].name + "?v=" + hex;
    }
    return out;
  }();
  auto it = urls.find(name);
  return it == urls.end() ? "/ui/static/" + name : it->second;
}

std::string Escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string UrlEncode(const std::string& text) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool ParseForm(const std::string& text, std::map<std::string, std::string>* fields,
               size_t max_fields, size_t max_value_bytes) {
  fields->clear();
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('&', start);
    if (end == std::string::npos) end = text.size();
    const std::string pair = text.substr(start, end - start);
    start = end + 1;
    if (pair.empty()) {
      if (end == text.size()) break;
      continue;
    }
    const size_t eq = pair.find('=');
    std::string key, value;
    if (!Decode(pair.substr(0, eq), &key)) return false;
    if (eq != std::string::npos && !Decode(pair.substr(eq + 1), &value)) return false;
    if (key.size() > 64 || value.size() > max_value_bytes) return false;
    if (fields->size() >= max_fields || !fields->emplace(key, value).second) return false;
    if (end == text.size()) break;
  }
  return true;
}

std::string PathOf(const std::string& target) { return target.substr(0, target.find('?')); }

std::string QueryOf(const std::string& target) {
  const size_t q = target.find('?');
  return q == std::string::npos ? "" : target.substr(q + 1);
}

std::string CookieValue(const std::string& header, const std::string& name) {
  size_t start = 0;
  while (start < header.size()) {
    size_t end = header.find(';', start);
    if (end == std::string::npos) end = header.size();
    std::string pair = header.substr(start, end - start);
    start = end + 1;
    while (!pair.empty() && pair.front() == ' ') pair.erase(0, 1);
    const size_t eq = pair.find('=');
    if (eq != std::string::npos && pair.compare(0, eq, name) == 0 && eq == name.size()) {
      return pair.substr(eq + 1);
    }
  }
  return "";
}

bool CookieSafe(const std::string& token) {
  if (token.empty() || token.size() > 1024) return false;
  for (char c : token) {
    if (c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == ';' || c == '\\') return false;
  }
  return true;
}

std::string Time(int64_t at_ms) {
  if (at_ms <= 0) return "-";
  const std::time_t seconds = static_cast<std::time_t>(at_ms / 1000);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &utc);
  return text;
}

std::string Duration(int64_t ms) {
  if (ms < 0) return "-";
  char text[48];
  if (ms < 60000) {
    std::snprintf(text, sizeof text, "%.2f s", static_cast<double>(ms) / 1000.0);
  } else if (ms < 3600000) {
    std::snprintf(text, sizeof text, "%lld min %lld s", static_cast<long long>(ms / 60000),
                  static_cast<long long>(ms % 60000 / 1000));
  } else {
    std::snprintf(text, sizeof text, "%lld h %lld min", static_cast<long long>(ms / 3600000),
                  static_cast<long long>(ms % 3600000 / 60000));
  }
  return text;
}

}  // namespace fuji::http::dashboard
