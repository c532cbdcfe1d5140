// Small pieces the dashboard's pages are made of: HTML escaping, the query and form encodings
// (application/x-www-form-urlencoded), cookies, and times. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "daemon/http/http_server.h"

namespace fuji::http::dashboard {

// The headers of every dashboard answer: a Content-Security-Policy of 'self' only (no inline
// script or style, no framing, forms post to fujid only), nosniff, no referrer, and
// `cache_control`.
HttpHeaders Headers(const std::string& cache_control = "no-store");

// A static file's address with its content's hash (/ui/static/app.js?v=1a2b...), so a browser
// may keep it for a day and still fetches a new build's.
std::string StaticUrl(const std::string& name);

// Text made safe inside an element or a quoted attribute (& < > " ').
std::string Escape(const std::string& text);
// A value made safe inside a URL's query (RFC 3986 unreserved characters kept, the rest %XX).
std::string UrlEncode(const std::string& text);

// "a=1&b=x%20y" as a map; '+' is a space. At most `max_fields` fields and `max_value_bytes` per
// value are kept: false when the text has more, a %-escape that does not decode, or a key twice.
bool ParseForm(const std::string& text, std::map<std::string, std::string>* fields,
               size_t max_fields = 16, size_t max_value_bytes = 1024);

// The path of a request's target (before '?') and its query (after; "" when none).
std::string PathOf(const std::string& target);
std::string QueryOf(const std::string& target);

// The value of cookie `name` in a Cookie header ("" when absent).
std::string CookieValue(const std::string& header, const std::string& name);

// Whether `token` may be held in a cookie and sent as gRPC metadata: 1..1024 printable ASCII
// characters, none of space " , ; \ (RFC 6265's cookie-octet).
bool CookieSafe(const std::string& token);

// Milliseconds since the epoch as "2026-12-03 19:58:56" (UTC); "-" for 0.
std::string Time(int64_t at_ms);
// A duration in milliseconds as "1.23 s", "4 min 5 s", "2 h 3 min".
std::string Duration(int64_t ms);

}  // namespace fuji::http::dashboard
