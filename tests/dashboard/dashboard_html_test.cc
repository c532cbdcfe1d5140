// The dashboard's small pieces (daemon/http/dashboard_html): escaping, the form and query
// encoding with its bounds, the cookie header, the token a cookie may hold, times.
#include "daemon/http/dashboard_html.h"

#include <gtest/gtest.h>

namespace fuji::http::dashboard {
namespace {

TEST(DashboardHtmlTest, EscapesWhatHtmlReads) {
  EXPECT_EQ(Escape("<script>alert(\"x\" & 'y')</script>"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;");
  EXPECT_EQ(Escape("plain text 富士"), "plain text 富士");
  EXPECT_EQ(UrlEncode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
}

TEST(DashboardHtmlTest, ParsesFormsWithinBounds) {
  std::map<std::string, std::string> f;
  ASSERT_TRUE(ParseForm("token=fuji_u_1_ab%2Bc&state=&x=a+b", &f));
  EXPECT_EQ(f["token"], "fuji_u_1_ab+c");
  EXPECT_EQ(f["state"], "");
  EXPECT_EQ(f["x"], "a b");
  EXPECT_TRUE(ParseForm("", &f));
  EXPECT_TRUE(f.empty());
  EXPECT_FALSE(ParseForm("a=%zz", &f)) << "a broken escape";
  EXPECT_FALSE(ParseForm("a=%4", &f)) << "a cut escape";
  EXPECT_FALSE(ParseForm("a=1&a=2", &f)) << "a key twice";
  EXPECT_FALSE(ParseForm("a=" + std::string(1025, 'x'), &f)) << "a value over 1024 bytes";
  std::string many;
  for (int i = 0; i < 17; ++i) many += "k" + std::to_string(i) + "=1&";
  EXPECT_FALSE(ParseForm(many, &f)) << "17 fields";
  EXPECT_EQ(PathOf("/ui/?state=RUNNING"), "/ui/");
  EXPECT_EQ(QueryOf("/ui/?state=RUNNING"), "state=RUNNING");
  EXPECT_EQ(QueryOf("/ui/"), "");
}

TEST(DashboardHtmlTest, ReadsTheCookieItIsAskedFor) {
  EXPECT_EQ(CookieValue("a=1; fuji_token=abc; b=2", "fuji_token"), "abc");
  EXPECT_EQ(CookieValue("xfuji_token=abc; fuji_token=def", "fuji_token"), "def");
  EXPECT_EQ(CookieValue("fuji_tokenx=abc", "fuji_token"), "");
  EXPECT_EQ(CookieValue("", "fuji_token"), "");
  EXPECT_TRUE(CookieSafe("fuji_u_1_5e693d9e831ba340df71"));
  EXPECT_FALSE(CookieSafe(""));
  EXPECT_FALSE(CookieSafe("a;b"));
  EXPECT_FALSE(CookieSafe("a b"));
  EXPECT_FALSE(CookieSafe("a\r\nSet-Cookie: x"));
  EXPECT_FALSE(CookieSafe(std::string(1025, 'a')));
}

TEST(DashboardHtmlTest, TimesAndDurations) {
  EXPECT_EQ(Time(0), "-");
  EXPECT_EQ(Time(1796256000000), "2026-12-03 00:00:00");
  EXPECT_EQ(Duration(1234), "1.23 s");
  EXPECT_EQ(Duration(245000), "4 min 5 s");
  EXPECT_EQ(Duration(7380000), "2 h 3 min");
  EXPECT_EQ(Headers()[0].first, "Content-Security-Policy");
  EXPECT_EQ(StaticUrl("app.js").rfind("/ui/static/app.js?v=", 0), 0u);
}

}  // namespace
}  // namespace fuji::http::dashboard
