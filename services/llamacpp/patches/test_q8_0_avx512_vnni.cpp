// Checks the AVX-512 VNNI kernels of q8_0-avx512-vnni.patch against a scalar sum on random blocks
// (built and run in the image's llama-cpp stage: a wrong kernel fails the build).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "ggml-cpu.h"
#include "ggml.h"
#define GGML_COMMON_DECL_CPP
#include "ggml-common.h"

struct block_q8_0x4 {  // as ggml-cpu/repack.h: 4 rows' scales, then their bytes 8 at a time
    ggml_half d[4];
    int8_t    qs[128];
};

extern "C" {
void ggml_gemv_q8_0_4x8_q8_0(int n, float * s, size_t bs, const void * vx, const void * vy, int nr, int nc);
void ggml_gemm_q8_0_4x8_q8_0(int n, float * s, size_t bs, const void * vx, const void * vy, int nr, int nc);
}

static double weight_row_dot(const std::vector<block_q8_0x4> & w, int nb, int x, int j,
                             const int8_t * (*act)(int l, int k, const void * ctx), float (*act_d)(int l, const void * ctx),
                             const void * ctx) {
    double sum = 0;
    for (int l = 0; l < nb; l++) {
        const block_q8_0x4 & b = w[x * nb + l];
        int                  si = 0;
        for (int k = 0; k < 4; k++) {
            const int8_t * a = act(l, k, ctx);
            for (int i = 0; i < 8; i++) {
                si += b.qs[k * 32 + j * 8 + i] * a[i];
            }
        }
        sum += si * (double) ggml_fp16_to_fp32(b.d[j]) * act_d(l, ctx);
    }
    return sum;
}

struct rows_ctx {
    const std::vector<block_q8_0x4> * a;
    int                               nb, y, m;
};

struct row_ctx {
    const std::vector<block_q8_0> * a;
};

int main() {
    ggml_cpu_init();  // the fp16 table the kernels read scales through
    if (!ggml_cpu_has_avx512() || !ggml_cpu_has_avx512_vnni()) {
        std::printf("q8_0 AVX-512 VNNI kernels: not built for this CPU, nothing to check\n");
        return 0;
    }
    std::mt19937                          rng(1);
    std::uniform_int_distribution<int>    wq(-128, 127), aq(-127, 127);
    std::uniform_real_distribution<float> scale(0.001f, 0.05f);
    int                                   bad = 0, checked = 0;
    for (int trial = 0; trial < 60; trial++) {
        const int nb = 1 + trial % 7, n = nb * 32, nc = 4 * (1 + (trial * 5) % 9), nr = 4 * (1 + trial % 3), bs = nc + 3;
        std::vector<block_q8_0x4> w(nc / 4 * nb), a(nr / 4 * nb);
        std::vector<block_q8_0>   v(nb);
        for (auto & b : w) {
            for (auto & d : b.d) d = ggml_fp32_to_fp16(scale(rng));
            for (auto & q : b.qs) q = (int8_t) wq(rng);
        }
        for (auto & b : a) {
            for (auto & d : b.d) d = ggml_fp32_to_fp16(scale(rng));
            for (auto & q : b.qs) q = (int8_t) aq(rng);
        }
        for (auto & b : v) {
            b.d = ggml_fp32_to_fp16(scale(rng));
            for (auto & q : b.qs) q = (int8_t) aq(rng);
        }
        std::vector<float> gemm(nr * bs, NAN), gemv(nc, NAN);
        ggml_gemm_q8_0_4x8_q8_0(n, gemm.data(), bs, w.data(), a.data(), nr, nc);
        ggml_gemv_q8_0_4x8_q8_0(n, gemv.data(), nc, w.data(), v.data(), 1, nc);
        auto close = [&](float got, double want, double magnitude) {
            checked++;
            if (!(std::fabs(got - want) <= 1e-5 * magnitude + 1e-6)) {
                if (bad++ < 5) std::printf("trial %d: %g, expected %g\n", trial, got, want);
            }
        };
        const double magnitude = 32.0 * nb * 128 * 128 * 0.05 * 0.05;
        for (int y = 0; y < nr / 4; y++) {
            for (int m = 0; m < 4; m++) {
                rows_ctx ctx{ &a, nb, y, m };
                for (int x = 0; x < nc / 4; x++) {
                    for (int j = 0; j < 4; j++) {
                        const double want = weight_row_dot(
                            w, nb, x, j,
                            [](int l, int k, const void * c) -> const int8_t * {
                                auto r = (const rows_ctx *) c;
                                return (*r->a)[r->y * r->nb + l].qs + k * 32 + r->m * 8;
                            },
                            [](int l, const void * c) -> float {
                                auto r = (const rows_ctx *) c;
                                return ggml_fp16_to_fp32((*r->a)[r->y * r->nb + l].d[r->m]);
                            },
                            &ctx);
                        close(gemm[(y * 4 + m) * bs + x * 4 + j], want, magnitude);
                    }
                }
            }
        }
        row_ctx ctx{ &v };
        for (int x = 0; x < nc / 4; x++) {
            for (int j = 0; j < 4; j++) {
                const double want = weight_row_dot(
                    w, nb, x, j,
                    [](int l, int k, const void * c) -> const int8_t * { return (*((const row_ctx *) c)->a)[l].qs + k * 8; },
                    [](int l, const void * c) -> float { return ggml_fp16_to_fp32((*((const row_ctx *) c)->a)[l].d); },
                    &ctx);
                close(gemv[x * 4 + j], want, magnitude);
            }
        }
    }
    std::printf("q8_0 AVX-512 VNNI kernels: %d of %d sums off\n", bad, checked);
    return bad != 0;
}
