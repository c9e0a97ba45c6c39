/* Native CPU kernels of thrifty's fused optimizer steps and block-wise encoding, built on first use by
 * thrifty/_native/__init__.py.
 *
 * Each kernel computes the same numbers, bit for bit, as the eager and torch.compile paths of its
 * optimizer (diffGrad's exp aside): every operation is rounded once (the build passes -ffp-contract=off,
 * so no multiply-add is fused), division and square root are IEEE's, and 8-bit states are decoded as
 * code[c] * absmax and encoded to the nearest code, as thrifty.compress.quant.nearest_code. With AVX-512
 * the loops run 16 lanes at a time (64 codes decoded at once by byte permutes where the CPU has VBMI,
 * else gathers; one gather from a packed table per encoded value); without it, the same arithmetic
 * runs one element at a time. A call takes all the tensors of a param group, cut into work items of
 * whole blocks that OpenMP threads take in order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <omp.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* A 256-entry code map and its nearest-code table: CodeLookup's compact rows packed one int32 each.
 *
 * Row r (as in lookup_compact) covers the floats of one top-16-bit key (row 0 and the last row also
 * cover the keys below and above the table, where the code is constant). Its entry holds, in bits 0-7,
 * the nearest code c of the row's lowest value and, in bits 8-23, a 16-bit threshold t: a value y of
 * the row gets c + 1 when its low 16 bits, complemented for negative y, exceed t, else c. Since a row
 * holds at most one midpoint between codes, t is that midpoint's low 16 bits (complemented for
 * negative rows) or 0xFFFF when the row holds none: one table read per value instead of two. */
typedef struct {
    const float *code;
    const int32_t *entries;
    int32_t low;
    int32_t rows;
} book_t;

/* Below this many elements per thread a tensor is updated by one thread: a parallel region costs more. */
#define GRAIN 32768

static int threads_for(int64_t n, int nthreads) {
    int64_t useful = n / GRAIN;
    if (useful < 1) return 1;
    return useful < nthreads ? (int)useful : nthreads;
}

static inline int32_t float_bits(float x) {
    int32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static inline uint8_t encode1(float y, const book_t *book) {
    int32_t bits = float_bits(y);
    int32_t row = ((bits >> 16) & 0x7FFF) - (book->low - 1);
    row = row < 0 ? 0 : (row > book->rows ? book->rows : row);
    int32_t entry = book->entries[row + (bits < 0 ? book->rows + 1 : 0)];
    int32_t low16 = (bits & 0xFFFF) ^ (bits < 0 ? 0xFFFF : 0);
    return (uint8_t)((entry & 0xFF) + (low16 > ((entry >> 8) & 0xFFFF) ? 1 : 0));
}

static inline float inverse_of(float block_max) { return block_max > 0.0f ? 1.0f / block_max : 0.0f; }

#ifdef __AVX512F__
static inline __mmask16 lanes(int64_t left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1); }

static inline __m512 absolute(__m512 x) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF)));
}

/* Codes of 16 normalised values. ``nonnegative`` (a constant at each call) drops the sign handling for
 * values known to be +0 or positive; ``full`` stores all 16 codes without a mask. */
static inline __attribute__((always_inline)) void encode16(uint8_t *out, __m512 y, const book_t *book, __mmask16 k,
                                                           const int nonnegative, const int full) {
    const __m512i zero = _mm512_setzero_si512(), ones16 = _mm512_set1_epi32(0xFFFF);
    __m512i bits = _mm512_castps_si512(y);
    __m512i row = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x7FFF));
    row = _mm512_sub_epi32(row, _mm512_set1_epi32(book->low - 1));
    __m512i index = _mm512_min_epi32(_mm512_max_epi32(row, zero), _mm512_set1_epi32(book->rows));
    __m512i low16 = _mm512_and_si512(bits, ones16);
    if (!nonnegative) {
        __mmask16 negative = _mm512_cmplt_epi32_mask(bits, zero);
        index = _mm512_mask_add_epi32(index, negative, index, _mm512_set1_epi32(book->rows + 1));
        low16 = _mm512_mask_xor_epi32(low16, negative, low16, ones16);
    }
    __m512i entry = _mm512_i32gather_epi32(index, (const void *)book->entries, 4);
    __mmask16 up = _mm512_cmpgt_epi32_mask(low16, _mm512_srli_epi32(entry, 8));
    __m512i code = _mm512_and_si512(entry, _mm512_set1_epi32(0xFF));
    code = _mm512_mask_add_epi32(code, up, code, _mm512_set1_epi32(1));
    if (full)
        _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(code));
    else
        _mm512_mask_cvtepi32_storeu_epi8(out, k, code);
}

#ifdef __AVX512VBMI__
/* Byte k of every code value, 256 bytes per plane in four registers: 64 codes decode with byte permutes. */
typedef struct {
    __m512i plane[4][4];
} planes_t;

static void make_planes(planes_t *t, const float *code) {
    uint8_t bytes[4][256];
    for (int e = 0; e < 256; e++) {
        uint32_t b = (uint32_t)float_bits(code[e]);
        for (int k = 0; k < 4; k++) bytes[k][e] = (uint8_t)(b >> (8 * k));
    }
    for (int k = 0; k < 4; k++)
        for (int r = 0; r < 4; r++) t->plane[k][r] = _mm512_loadu_si512(bytes[k] + 64 * r);
}

/* Position 16 L + 4 j + i of the permuted codes holds code 16 j + 4 L + i, so that the in-lane byte
 * and word interleaves below leave decoded values 16 j .. 16 j + 15 in out[j]. */
static inline __m512i decode_order(void) {
    uint8_t order[64];
    for (int p = 0; p < 64; p++) order[p] = (uint8_t)(16 * ((p / 4) % 4) + 4 * (p / 16) + p % 4);
    return _mm512_loadu_si512(order);
}

static inline void decode64(const uint8_t *c, __mmask64 k, const planes_t *t, __m512i order, __m512 scale,
                            __m512 out[4]) {
    __m512i v = _mm512_permutexvar_epi8(order, _mm512_maskz_loadu_epi8(k, c));
    __mmask64 high = _mm512_movepi8_mask(v);
    __m512i b[4];
    for (int p = 0; p < 4; p++) {
        __m512i lo = _mm512_permutex2var_epi8(t->plane[p][0], v, t->plane[p][1]);
        __m512i hi = _mm512_permutex2var_epi8(t->plane[p][2], v, t->plane[p][3]);
        b[p] = _mm512_mask_blend_epi8(high, lo, hi);
    }
    __m512i t0 = _mm512_unpacklo_epi8(b[0], b[1]), t1 = _mm512_unpackhi_epi8(b[0], b[1]);
    __m512i t2 = _mm512_unpacklo_epi8(b[2], b[3]), t3 = _mm512_unpackhi_epi8(b[2], b[3]);
    out[0] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(t0, t2)), scale);
    out[1] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(t0, t2)), scale);
    out[2] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(t1, t3)), scale);
    out[3] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(t1, t3)), scale);
}
#define DECODER planes_t
#define MAKE_DECODER(t, code) make_planes(t, code)
#else
/* Without byte permutes: gathers from the 256-entry map. */
typedef struct {
    const float *code;
} gather_t;
#define DECODER gather_t
#define MAKE_DECODER(t, c) ((t)->code = (c))
static inline __m512i decode_order(void) { return _mm512_setzero_si512(); }
static inline void decode64(const uint8_t *c, __mmask64 k, const gather_t *t, __m512i order, __m512 scale,
                            __m512 out[4]) {
    (void)order;
    for (int j = 0; j < 4; j++) {
        __m512i index = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8((__mmask16)(k >> (16 * j)), c + 16 * j));
        out[j] = _mm512_mul_ps(_mm512_i32gather_ps(index, t->code, 4), scale);
    }
}
#endif

static inline __mmask64 lanes64(int64_t left) { return left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1); }
#endif

/* Quantize len values of one block into codes with maximum block_max; writes the block's absmax.
 * ``nonnegative``: every value is +0 or positive (Adam's second moment), which saves the sign handling. */
static void encode_block(const float *x, int64_t len, float block_max, uint8_t *codes, float *absmax,
                         const book_t *book, int nonnegative) {
    float inverse = inverse_of(block_max);
    *absmax = block_max;
    int64_t i = 0;
#ifdef __AVX512F__
    __m512 inv = _mm512_set1_ps(inverse);
    const int64_t whole = len / 16 * 16;
    if (nonnegative)
        for (; i < whole; i += 16) encode16(codes + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv), book, 0, 1, 1);
    else
        for (; i < whole; i += 16) encode16(codes + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv), book, 0, 0, 1);
    if (i < len) {
        __mmask16 k = lanes(len - i);
        encode16(codes + i, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), inv), book, k, 0, 0);
        i = len;
    }
#else
    (void)nonnegative;
#endif
    for (; i < len; i++) codes[i] = encode1(x[i] * inverse, book);
}

/* The codes of quantize_blockwise: n fp32 values against the maxima of their blocks (computed by the caller). */
void thrifty_quantize(const float *x, int64_t n, int64_t block, uint8_t *codes, float *absmax, const book_t *book,
                      int nthreads) {
    const int64_t nblocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) num_threads(threads_for(n, nthreads))
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t start = b * block;
        encode_block(x + start, start + block <= n ? block : n - start, absmax[b], codes + start, absmax + b, book, 0);
    }
}

/* The tensors of one call cut into work items of whole chunks (the last of a tensor may be shorter),
 * which the threads take in order: each tensor is walked front to back, one item after another. */
typedef struct {
    int64_t k;
    const int64_t *sizes;
    const int64_t *chunks; /* elements per item of each tensor */
    int64_t *first;        /* item index of each tensor's first item; first[k] = number of items */
    int64_t total;         /* elements in all tensors */
} work_t;

static int plan(work_t *w, int64_t k, const int64_t *sizes, const int64_t *chunks) {
    w->k = k, w->sizes = sizes, w->chunks = chunks, w->total = 0;
    w->first = malloc((size_t)(k + 1) * sizeof(int64_t));
    if (w->first == NULL) return 0;
    w->first[0] = 0;
    for (int64_t t = 0; t < k; t++) {
        w->first[t + 1] = w->first[t] + (sizes[t] + chunks[t] - 1) / chunks[t];
        w->total += sizes[t];
    }
    return 1;
}

/* Tensor and element range of item i (a binary search over first). */
static inline int64_t locate(const work_t *w, int64_t i, int64_t *start, int64_t *end) {
    int64_t lo = 0, hi = w->k - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (w->first[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    *start = (i - w->first[lo]) * w->chunks[lo];
    *end = *start + w->chunks[lo] < w->sizes[lo] ? *start + w->chunks[lo] : w->sizes[lo];
    return lo;
}

/* Elements per work item: whole blocks of at least this many elements (a multiple of 64). */
#define CHUNK 16384

/* Adam/AdamW with quantized m (signed map) and v (unsigned map) over blocks [b0, b1) of one tensor:
 * thrifty.optim.Adam8bit._rule. hp: 1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2**t), eps,
 * 1 - lr * weight_decay, -lr / (1 - beta1**t). The scratch holds 2 * block floats. */
static void adam8bit_blocks(float *p, const float *g, int64_t n, int64_t block, int64_t b0, int64_t b1, uint8_t *c1,
                            float *a1, const book_t *book1, uint8_t *c2, float *a2, const book_t *book2,
                            const float *hp, const void *d1, const void *d2, float *scratch) {
    const float w1 = hp[0], beta2 = hp[1], w2 = hp[2], correction2 = hp[3], eps = hp[4], decay = hp[5], step = hp[6];
    float *m = scratch, *v = scratch + block;
    (void)d1, (void)d2;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t start = b * block;
        const int64_t len = start + block <= n ? block : n - start;
        float *pb = p + start;
        const float *gb = g + start;
        float max1 = 0.0f, max2 = 0.0f;
        int64_t i = 0;
#ifdef __AVX512F__
        const __m512i order = decode_order();
        const __m512 s1 = _mm512_set1_ps(a1[b]), s2 = _mm512_set1_ps(a2[b]);
        const __m512 vw1 = _mm512_set1_ps(w1), vbeta2 = _mm512_set1_ps(beta2), vw2 = _mm512_set1_ps(w2);
        const __m512 vcorr = _mm512_set1_ps(correction2), veps = _mm512_set1_ps(eps);
        const __m512 vdecay = _mm512_set1_ps(decay), vstep = _mm512_set1_ps(step);
        __m512 vmax1 = _mm512_setzero_ps(), vmax2 = _mm512_setzero_ps();
        /* Whole 64-value steps without masks (every step of a full block of 256), then a masked tail. */
        const int64_t whole = len / 64 * 64;
#define ADAM_STEP(FULL)                                                                                            \
    {                                                                                                              \
        __m512 ms[4], vs[4];                                                                                       \
        const __mmask64 k64 = FULL ? ~(__mmask64)0 : lanes64(len - i);                                           \
        decode64(c1 + start + i, k64, (const DECODER *)d1, order, s1, ms);                                         \
        decode64(c2 + start + i, k64, (const DECODER *)d2, order, s2, vs);                                         \
        for (int j = 0; j < 4 && (FULL || i + 16 * j < len); j++) {                                                \
            const int64_t o = i + 16 * j;                                                                          \
            const __mmask16 k = FULL ? (__mmask16)0xFFFF : lanes(len - o);                                         \
            __m512 mi = ms[j], vi = vs[j];                                                                         \
            __m512 gi = FULL ? _mm512_loadu_ps(gb + o) : _mm512_maskz_loadu_ps(k, gb + o);                         \
            __m512 pi = FULL ? _mm512_loadu_ps(pb + o) : _mm512_maskz_loadu_ps(k, pb + o);                         \
            mi = _mm512_add_ps(mi, _mm512_mul_ps(vw1, _mm512_sub_ps(gi, mi)));                                     \
            vi = _mm512_add_ps(_mm512_mul_ps(vi, vbeta2), _mm512_mul_ps(_mm512_mul_ps(vw2, gi), gi));               \
            __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), vcorr), veps);                          \
            pi = _mm512_add_ps(_mm512_mul_ps(pi, vdecay), _mm512_div_ps(_mm512_mul_ps(vstep, mi), denom));         \
            if (FULL) {                                                                                            \
                _mm512_storeu_ps(pb + o, pi);                                                                      \
                _mm512_storeu_ps(m + o, mi);                                                                       \
                _mm512_storeu_ps(v + o, vi);                                                                       \
            } else {                                                                                               \
                _mm512_mask_storeu_ps(pb + o, k, pi);                                                              \
                _mm512_mask_storeu_ps(m + o, k, mi);                                                               \
                _mm512_mask_storeu_ps(v + o, k, vi);                                                               \
            }                                                                                                      \
            vmax1 = _mm512_mask_max_ps(vmax1, k, vmax1, absolute(mi));                                             \
            vmax2 = _mm512_mask_max_ps(vmax2, k, vmax2, absolute(vi));                                             \
        }                                                                                                          \
    }
        for (; i < whole; i += 64) ADAM_STEP(1)
        for (; i < len; i += 64) ADAM_STEP(0)
#undef ADAM_STEP
        max1 = _mm512_reduce_max_ps(vmax1);
        max2 = _mm512_reduce_max_ps(vmax2);
#endif
        for (; i < len; i++) {
            float mi = book1->code[c1[start + i]] * a1[b];
            float vi = book2->code[c2[start + i]] * a2[b];
            float gi = gb[i];
            mi = mi + w1 * (gi - mi);
            vi = vi * beta2 + (w2 * gi) * gi;
            pb[i] = pb[i] * decay + (step * mi) / (sqrtf(vi) / correction2 + eps);
            m[i] = mi;
            v[i] = vi;
            max1 = fabsf(mi) > max1 ? fabsf(mi) : max1;
            max2 = fabsf(vi) > max2 ? fabsf(vi) : max2;
        }
        encode_block(m, len, max1, c1 + start, a1 + b, book1, 0);
        encode_block(v, len, max2, c2 + start, a2 + b, book2, 1); /* v = beta2 v + (1 - beta2) g g >= +0 */
    }
}

/* SGD with a quantized momentum buffer (signed map) over blocks [b0, b1): thrifty.optim.SGD8bit._rule.
 * hp: momentum, 1 - dampening, weight_decay, -lr, 1 on the first step else 0; flags = nesterov. */
static void sgd8bit_blocks(float *p, const float *g, int64_t n, int64_t block, int64_t b0, int64_t b1, uint8_t *c1,
                           float *a1, const book_t *book1, const float *hp, int nesterov, const void *d1,
                           float *buf) {
    const float momentum = hp[0], damping = hp[1], weight_decay = hp[2], neg_lr = hp[3];
    const int first = hp[4] > 0.0f;
    (void)d1;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t start = b * block;
        const int64_t len = start + block <= n ? block : n - start;
        float *pb = p + start;
        const float *gb = g + start;
        float max1 = 0.0f;
        int64_t i = 0;
#ifdef __AVX512F__
        const __m512i order = decode_order();
        const __m512 s1 = _mm512_set1_ps(a1[b]), vmom = _mm512_set1_ps(momentum);
        const __m512 vdamp = _mm512_set1_ps(damping), vwd = _mm512_set1_ps(weight_decay);
        const __m512 vlr = _mm512_set1_ps(neg_lr);
        __m512 vmax1 = _mm512_setzero_ps();
        for (; i < len; i += 64) {
            __m512 bs[4];
            decode64(c1 + start + i, lanes64(len - i), (const DECODER *)d1, order, s1, bs);
            for (int j = 0; j < 4 && i + 16 * j < len; j++) {
                const int64_t o = i + 16 * j;
                __mmask16 k = lanes(len - o);
                __m512 pi = _mm512_maskz_loadu_ps(k, pb + o);
                __m512 gi = _mm512_add_ps(_mm512_maskz_loadu_ps(k, gb + o), _mm512_mul_ps(vwd, pi));
                __m512 bi = first ? gi : _mm512_add_ps(_mm512_mul_ps(bs[j], vmom), _mm512_mul_ps(vdamp, gi));
                __m512 update = nesterov ? _mm512_add_ps(gi, _mm512_mul_ps(vmom, bi)) : bi;
                _mm512_mask_storeu_ps(pb + o, k, _mm512_add_ps(pi, _mm512_mul_ps(vlr, update)));
                _mm512_mask_storeu_ps(buf + o, k, bi);
                vmax1 = _mm512_mask_max_ps(vmax1, k, vmax1, absolute(bi));
            }
        }
        max1 = _mm512_reduce_max_ps(vmax1);
#endif
        for (; i < len; i++) {
            float gi = gb[i] + weight_decay * pb[i];
            float bi = first ? gi : (book1->code[c1[start + i]] * a1[b]) * momentum + damping * gi;
            float update = nesterov ? gi + momentum * bi : bi;
            pb[i] = pb[i] + neg_lr * update;
            buf[i] = bi;
            max1 = fabsf(bi) > max1 ? fabsf(bi) : max1;
        }
        encode_block(buf, len, max1, c1 + start, a1 + b, book1, 0);
    }
}

/* One step of k tensors of an 8-bit optimizer (kernel 0: Adam/AdamW, 1: SGD): tensor t has sizes[t]
 * elements in blocks of blocks[t], its pointers in ptrs[6 t ..] (parameter, gradient, codes and maxima
 * of the first and the second state) and its hyperparameters in hp[8 t ..]. Returns 0, having changed
 * nothing, if out of memory. */
int thrifty_step8bit(int kernel, int64_t k, const int64_t *ptrs, const int64_t *sizes, const int64_t *blocks,
                     const book_t *b1, const book_t *b2, const float *hp, int flags, int nthreads) {
    int64_t *chunks = malloc((size_t)k * sizeof(int64_t));
    work_t w = {0};
    if (chunks == NULL) return 0;
    int64_t scratch = 0;
    for (int64_t t = 0; t < k; t++) {
        chunks[t] = blocks[t] >= CHUNK ? blocks[t] : CHUNK / blocks[t] * blocks[t];
        scratch = blocks[t] > scratch ? blocks[t] : scratch;
    }
    if (!plan(&w, k, sizes, chunks)) {
        free(chunks);
        return 0;
    }
    const int nt = threads_for(w.total, nthreads);
    float *buffers = malloc((size_t)nt * 2 * (size_t)scratch * sizeof(float));
    if (buffers == NULL) {
        free(w.first);
        free(chunks);
        return 0;
    }
#ifdef __AVX512F__
    DECODER d1, d2;
    MAKE_DECODER(&d1, b1->code);
    if (kernel == 0) MAKE_DECODER(&d2, b2->code);
    const void *pd1 = &d1, *pd2 = &d2;
#else
    const void *pd1 = NULL, *pd2 = NULL;
#endif
#pragma omp parallel num_threads(nt)
    {
        float *buffer = buffers + (size_t)omp_get_thread_num() * 2 * (size_t)scratch;
#pragma omp for schedule(guided)
        for (int64_t i = 0; i < w.first[k]; i++) {
            int64_t start, end;
            const int64_t t = locate(&w, i, &start, &end);
            const int64_t *q = ptrs + 6 * t;
            const int64_t block = blocks[t], first_block = start / block, end_block = (end + block - 1) / block;
            if (kernel == 0)
                adam8bit_blocks((float *)q[0], (const float *)q[1], sizes[t], block, first_block, end_block,
                                (uint8_t *)q[2], (float *)q[3], b1, (uint8_t *)q[4], (float *)q[5], b2, hp + 8 * t,
                                pd1, pd2, buffer);
            else
                sgd8bit_blocks((float *)q[0], (const float *)q[1], sizes[t], block, first_block, end_block,
                               (uint8_t *)q[2], (float *)q[3], b1, hp + 8 * t, flags, pd1, buffer);
        }
    }
    free(buffers);
    free(w.first);
    free(chunks);
    return 1;
}

/* SGD-SaI after its first step, fp32 state, elements [i0, i1): thrifty.optim.sgd_sai._sgd_sai_update.
 * hp: momentum, 1 - lr * weight_decay, lr * gsnr, sign (-1 to maximize). */
static void sgd_sai_range(float *p, const float *g, float *buf, int64_t i0, int64_t i1, const float *hp) {
    const float momentum = hp[0], decay = hp[1], step = hp[2], sign = hp[3];
    const float damping = 1.0f - momentum;
    for (int64_t i = i0; i < i1; i++) {
        float bi = buf[i] * momentum + (g[i] * sign) * damping;
        buf[i] = bi;
        p[i] = p[i] * decay - step * bi;
    }
}

#ifdef __AVX512F__
/* exp(x) for x <= 0 (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r, times 2^n); within
 * about 2 ulp of expf, 0 below -88. */
static inline __m512 exp_nonpositive(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}
#endif

/* diffGrad, fp32 state, elements [i0, i1): thrifty.optim.diffgrad._diffgrad_update (the same operations;
 * exp to about 2 ulp). hp: beta1, beta2, lr * sqrt(1 - beta2**t) / (1 - beta1**t), eps, weight_decay, sign. */
static void diffgrad_range(float *p, const float *grad, float *m, float *v, float *prev, int64_t i0, int64_t i1,
                           const float *hp) {
    const float beta1 = hp[0], beta2 = hp[1], step = hp[2], eps = hp[3], weight_decay = hp[4], sign = hp[5];
    const float w1 = 1.0f - beta1, w2 = 1.0f - beta2;
    int64_t i = i0;
#ifdef __AVX512F__
    for (; i < i1; i += 16) {
        const __mmask16 k = lanes(i1 - i);
        __m512 pi = _mm512_maskz_loadu_ps(k, p + i);
        __m512 g = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, grad + i), _mm512_set1_ps(sign)),
                                 _mm512_mul_ps(_mm512_set1_ps(weight_decay), pi));
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, m + i), _mm512_set1_ps(beta1)),
                                  _mm512_mul_ps(g, _mm512_set1_ps(w1)));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, v + i), _mm512_set1_ps(beta2)),
                                  _mm512_mul_ps(_mm512_mul_ps(g, g), _mm512_set1_ps(w2)));
        __m512 distance = absolute(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, prev + i), g));
        __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), distance));
        __m512 xi = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        __m512 denom = _mm512_add_ps(_mm512_sqrt_ps(vi), _mm512_set1_ps(eps));
        __m512 update = _mm512_div_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(step), xi), mi), denom);
        _mm512_mask_storeu_ps(m + i, k, mi);
        _mm512_mask_storeu_ps(v + i, k, vi);
        _mm512_mask_storeu_ps(prev + i, k, g);
        _mm512_mask_storeu_ps(p + i, k, _mm512_sub_ps(pi, update));
    }
#endif
    for (; i < i1; i++) {
        float g = grad[i] * sign + weight_decay * p[i];
        float mi = m[i] * beta1 + g * w1;
        float vi = v[i] * beta2 + (g * g) * w2;
        float xi = 1.0f / (1.0f + expf(-fabsf(prev[i] - g)));
        m[i] = mi;
        v[i] = vi;
        prev[i] = g;
        p[i] = p[i] - ((step * xi) * mi) / (sqrtf(vi) + eps);
    }
}

/* One step of k fp32 tensors of an elementwise optimizer (kernel 0: SGD-SaI with ptrs p, g, buf per
 * tensor; 1: diffGrad with p, g, m, v, previous g), hyperparameters in hp[8 t ..]. Returns 0, having
 * changed nothing, if out of memory. */
int thrifty_step32bit(int kernel, int64_t k, const int64_t *ptrs, const int64_t *sizes, const float *hp,
                      int nthreads) {
    const int stride = kernel == 0 ? 3 : 5;
    int64_t *chunks = malloc((size_t)k * sizeof(int64_t));
    work_t w = {0};
    if (chunks == NULL) return 0;
    for (int64_t t = 0; t < k; t++) chunks[t] = CHUNK;
    if (!plan(&w, k, sizes, chunks)) {
        free(chunks);
        return 0;
    }
#pragma omp parallel for schedule(guided) num_threads(threads_for(w.total, nthreads))
    for (int64_t i = 0; i < w.first[k]; i++) {
        int64_t start, end;
        const int64_t t = locate(&w, i, &start, &end);
        const int64_t *q = ptrs + stride * t;
        if (kernel == 0)
            sgd_sai_range((float *)q[0], (const float *)q[1], (float *)q[2], start, end, hp + 8 * t);
        else
            diffgrad_range((float *)q[0], (const float *)q[1], (float *)q[2], (float *)q[3], (float *)q[4], start, end,
                           hp + 8 * t);
    }
    free(w.first);
    free(chunks);
    return 1;
}

/* 1 when every value of k fp32 tensors has a finite square (|x| < 2^64: no NaN, no infinity, nothing
 * that overflows when squared), else 0; -1 if out of memory. */
int thrifty_squares_finite(int64_t k, const int64_t *ptrs, const int64_t *sizes, int nthreads) {
    int64_t *chunks = malloc((size_t)k * sizeof(int64_t));
    work_t w = {0};
    if (chunks == NULL) return -1;
    for (int64_t t = 0; t < k; t++) chunks[t] = 4 * CHUNK;
    if (!plan(&w, k, sizes, chunks)) {
        free(chunks);
        return -1;
    }
    int finite = 1;
#pragma omp parallel for schedule(guided) num_threads(threads_for(w.total, nthreads)) reduction(&& : finite)
    for (int64_t i = 0; i < w.first[k]; i++) {
        int64_t start, end;
        const int32_t *x = (const int32_t *)ptrs[locate(&w, i, &start, &end)];
        int32_t special = 0; /* any biased exponent >= 127 + 64: |x| >= 2^64, infinity or NaN */
        for (int64_t j = start; j < end; j++) special |= ((x[j] & 0x7F800000) >= (191 << 23));
        finite = finite && !special;
    }
    free(w.first);
    free(chunks);
    return finite;
}
