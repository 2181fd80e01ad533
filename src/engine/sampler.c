/*
 * Sampling parameters, results and the per-row pieces the decoder runs
 * (see sampler.h).  tb__sample, which runs the decoder, is in
 * sample_one.c, so this file sits below the decoder and calls nothing of
 * it.
 */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "tinkerbell/error.h"

void tb__sampling_params_default(tb__sampling_params_t *p) {
  memset(p, 0, sizeof(*p));
  p->max_tokens = 16;
  p->temperature = 1.0f;
  p->top_k = -1;
  p->top_p = 1.0f;
  p->num_samples = 1;
}

const char *tb__stop_reason_name(tb__stop_reason_t r) {
  return r == TB_STOP_STOP ? "stop" : "length";
}

void tb__sample_result_free(tb__sample_result_t *r) {
  for (size_t i = 0; r->seqs && i < r->num_seqs; i++) {
    free(r->seqs[i].tokens);
    free(r->seqs[i].logprobs);
  }
  free(r->seqs);
  free(r->prompt_logprobs);
  free(r->topk_ids);
  free(r->topk_logprobs);
  memset(r, 0, sizeof(*r));
}

int tb__sampling_params_ok(const tb__sampling_params_t *p, int V) {
  if (p->num_samples < 1 || !(p->temperature >= 0) || !isfinite(p->temperature) ||
      !(p->top_p > 0 && p->top_p <= 1))
    return 0;
  for (size_t i = 0; i < p->num_stop_tokens; i++)
    if (p->stop_tokens[i] < 0 || p->stop_tokens[i] >= V)
      return 0;
  if (p->num_stop_strings > 0 && p->token_bytes == NULL)
    return 0;
  return 1;
}

int tb__hits_stop_string(const tb__buf_t *text, size_t added,
                         const tb__sampling_params_t *p) {
  for (size_t i = 0; i < p->num_stop_strings; i++) {
    size_t m = p->stop_strings[i].len;
    if (m == 0 || m > text->len)
      continue;
    size_t first = text->len - added + 1 > m ? text->len - added + 1 - m : 0;
    for (size_t st = first; st + m <= text->len; st++)
      if (memcmp(text->base + st, p->stop_strings[i].base, m) == 0)
        return 1;
  }
  return 0;
}

int tb__logits_finite(const float *x, size_t n) {
  /* All exponent bits set: NaN or an infinity.  Integer ORs without a
   * branch, so the loop vectorises. */
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t b;
    memcpy(&b, &x[i], sizeof(b));
    bad |= (uint32_t)((b & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

void tb__prompt_score(tb__sample_result_t *out, const float *row,
                      const int32_t *prompt, size_t n, size_t i, size_t V,
                      int32_t *iscratch) {
  if (i + 1 >= n)
    return;
  float lse, lp;
  tb__k_logprobs(&lse, &lp, row, &prompt[i + 1], 1, V, 1);
  if (out->prompt_logprobs)
    out->prompt_logprobs[i + 1] = lp;
  if (out->topk) {
    int32_t *ids = out->topk_ids + (i + 1) * out->topk;
    float *lps = out->topk_logprobs + (i + 1) * out->topk;
    tb__k_topk(ids, lps, iscratch, row, out->topk, V);
    for (size_t k = 0; k < out->topk; k++)
      lps[k] -= lse;
  }
}
