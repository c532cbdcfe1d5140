// FUJI_MULTIVERSION before a hot loop's function: GCC builds it for AVX-512, AVX2 and baseline
// x86-64 and picks one at run time (target_clones), so one binary without -march runs fast on
// every x86-64. Elsewhere (other compilers, other CPUs) it is the one plain function.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FUJI_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FUJI_MULTIVERSION
#endif
