// The dashboard's static files (its script and style, and uPlot's), compiled into fujid by
// dashboard_embed.cmake and served under /ui/static/NAME.
#pragma once

namespace fuji::http {

struct DashboardAsset {
  const char* name;          // the file's base name, e.g. "uPlot.iife.min.js"
  const char* content_type;  // "text/javascript; charset=utf-8" or "text/css; charset=utf-8"
  const char* text;          // the file's bytes (text: no NUL)
};

extern const DashboardAsset kDashboardAssets[];
extern const int kNumDashboardAssets;

}  // namespace fuji::http
