/*
 * Sampling parameters, results, the per-row pieces the decoder runs, and
 * tb__sample: one request decoded on the calling thread (see sampler.h).
 */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/decode.h"
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

int tb__sample(tb__llama_ws_t *ws, const tb__weights_t *w, const tb__lora_t *lora,
               const int32_t *prompt, size_t n, const tb__sampling_params_t *p,
               tb__sample_result_t *out) {
  (void)ws;  /* the decoder keeps its own buffers */
  memset(out, 0, sizeof(*out));
  const tb__model_config_t *m = &w->config;
  if (n == 0 || !tb__sampling_params_ok(p, m->vocab_size))
    return TB_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (prompt[i] < 0 || prompt[i] >= m->vocab_size)
      return TB_EINVAL;

  /* A pool of exactly what this request may need, no prefix cache, and
   * the weights as they are: one request, one thread. */
  tb__dec_opts_t opts = { 0 };
  opts.no_prefix_cache = 1;
  opts.work_items = 1;
  opts.weights = TB_DEC_WEIGHTS_F32;
  opts.block_tokens = 16;
  size_t kv_floats = (size_t)m->num_kv_heads * (size_t)m->head_dim;
  size_t block_bytes = 2 * (size_t)m->num_layers * opts.block_tokens *
                       kv_floats * sizeof(float);
  size_t need = tb__dec_blocks_needed(opts.block_tokens, n, p);
  opts.kv_bytes = (need > 0 ? need : 1) * block_bytes;

  tb__dec_t dec;
  int rc = tb__dec_init_sync(&dec, w, &opts);
  if (rc != 0)
    return rc;
  tb__dec_adapter_t ad = { lora, { 0, 0 } };
  tb__dec_seq_t *s = NULL;
  rc = tb__dec_seq_new(&dec, &ad, prompt, n, p, &s, NULL);
  if (rc == 0)
    rc = tb__dec_seq_add(s);
  while (rc == 0 && tb__dec_running(&dec) > 0)
    rc = tb__dec_step_sync(&dec);
  if (rc == 0) {
    if (s->state == TB_DEC_DONE)
      tb__dec_seq_take(s, out);
    else
      rc = s->status != 0 ? s->status : TB_ECANCELED;
  }
  if (s != NULL)
    tb__dec_seq_free(s);
  tb__dec_free_sync(&dec);
  return rc;
}
