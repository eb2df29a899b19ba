// Drives write_drill_report for tests/python/test_drill_report.py, until the C API has
// it: `mevb_drill_report_tool REPORT.json DIR` writes the report into DIR and prints the
// files it wrote as one JSON object; warnings go to stderr. Exit 0, or 1 with the error.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include "mevbackup/drill_report.hpp"
#include "mevbackup/error.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s REPORT.json DIR\n", argv[0]);
    return 2;
  }
  try {
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) throw mevbackup::Error(mevbackup::Code::not_found, std::string("cannot open ") + argv[1]);
    auto report = nlohmann::json::parse(std::string(std::istreambuf_iterator<char>(in), {}));
    auto log = [](mevbackup::LogLevel, const std::string& m) { std::cerr << m << "\n"; };
    auto f = mevbackup::write_drill_report(argv[2], report, log);
    nlohmann::json out = {{"json", f.json},       {"summary", f.summary}, {"prometheus", f.prometheus},
                          {"html", f.html},       {"history", f.history}, {"skipped", f.skipped}};
    std::cout << out.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mevb_drill_report_tool: %s\n", e.what());
    return 1;
  }
}
