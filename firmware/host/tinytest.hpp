// A minimal unit-test harness (no downloads allowed): TEST(name) registers a function, CHECK/CHECK_EQ
// record failures with file:line, main() runs all tests (or those whose name contains argv[1]).
#pragma once
#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace tinytest {

struct Case {
    const char* name;
    std::function<void()> fn;
};

inline std::vector<Case>& registry() {
    static std::vector<Case> r;
    return r;
}
inline int& failures() {
    static int f = 0;
    return f;
}

struct Register {
    Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

inline void fail(const char* file, int line, const std::string& what) {
    ++failures();
    std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
}

template <typename A, typename B>
void check_eq(const A& a, const B& b, const char* ea, const char* eb, const char* file, int line) {
    if (!(a == b)) {
        std::ostringstream os;
        os << ea << " == " << eb << "  (" << a << " vs " << b << ")";
        fail(file, line, os.str());
    }
}

inline int run_all(int argc, char** argv) {
    int ran = 0;
    for (const Case& c : registry()) {
        if (argc > 1 && std::string(c.name).find(argv[1]) == std::string::npos) continue;
        const int before = failures();
        c.fn();
        ++ran;
        std::printf("%s %s\n", failures() == before ? "PASS" : "FAIL", c.name);
    }
    std::printf("%d tests, %d failed checks\n", ran, failures());
    return failures() == 0 && ran > 0 ? 0 : 1;
}

}  // namespace tinytest

#define TT_CAT2(a, b) a##b
#define TT_CAT(a, b) TT_CAT2(a, b)
#define TEST(name)                                                                  \
    static void TT_CAT(tt_fn_, __LINE__)();                                         \
    static tinytest::Register TT_CAT(tt_reg_, __LINE__)(name, TT_CAT(tt_fn_, __LINE__)); \
    static void TT_CAT(tt_fn_, __LINE__)()
#define CHECK(cond) \
    do { if (!(cond)) tinytest::fail(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_EQ(a, b) tinytest::check_eq((a), (b), #a, #b, __FILE__, __LINE__)
