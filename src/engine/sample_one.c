/*
 * tb__sample: one request decoded on the calling thread, as one sequence
 * on a synchronous decoder of its own (see sampler.h).
 *
 * Non-goals: sharing steps between requests (the server's scheduler is to
 * do that over one decoder per model).
 */
#include "engine/sampler.h"

#include <string.h>

#include "engine/decode.h"
#include "tinkerbell/error.h"

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
   * the weights as they are: one request, one thread, and no cap on the
   * rows of a step, since nobody waits behind it. */
  tb__dec_opts_t opts = { 0 };
  opts.no_prefix_cache = 1;
  opts.max_decode_rows = SIZE_MAX;
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
