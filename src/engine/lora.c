/*
 * LoRA adapter layout, initialisation and tensor naming (see lora.h).
 */
#include "engine/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "tinkerbell/error.h"

static const char *const target_names[TB_LORA_LAYER_TARGETS] = {
  "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
  "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
  "mlp.down_proj",
};

const tb__lora_group_t tb__lora_groups[TB_LORA_LAYER_GROUPS] = {
  { TB_LORA_Q, 3 }, { TB_LORA_O, 1 }, { TB_LORA_GATE, 2 }, { TB_LORA_DOWN, 1 },
};

int tb__lora_config_validate(const tb__lora_config_t *c, const char **why) {
  const char *w = NULL;
  if (c->rank < 1)
    w = "rank must be at least 1";
  else if (!c->train_attn && !c->train_mlp && !c->train_unembed)
    w = "at least one of train_attn, train_mlp, train_unembed must be true";
  else if (!isfinite(c->alpha))
    w = "alpha must be finite";
  if (why)
    *why = w;
  return w ? TB_EINVAL : 0;
}

/* The one walk that decides where every tensor lives.  Fills lora->slots
 * and lora->num_params; allocates nothing. */
static void point_views(tb__lora_t *lora) {
  const tb__model_config_t *m = &lora->model;
  const tb__lora_config_t *c = &lora->config;
  size_t C = (size_t)m->hidden_size, I = (size_t)m->intermediate_size;
  size_t qd = (size_t)m->num_heads * (size_t)m->head_dim;
  size_t kvd = (size_t)m->num_kv_heads * (size_t)m->head_dim;
  /* (in, out) of q, k, v, o, gate, up, down */
  const size_t in[TB_LORA_LAYER_TARGETS] = { C, C, C, qd, C, C, I };
  const size_t out[TB_LORA_LAYER_TARGETS] = { qd, kvd, kvd, C, I, I, C };
  size_t r = lora->rank, off = 0;

  for (int l = 0; l < m->num_layers; l++) {
    tb__lora_slot_t *layer = &lora->slots[(size_t)l * TB_LORA_LAYER_TARGETS];
    for (int g = 0; g < TB_LORA_LAYER_GROUPS; g++) {
      int t0 = (int)tb__lora_groups[g].first, n = tb__lora_groups[g].count;
      for (int t = t0; t < t0 + n; t++) {
        tb__lora_slot_t *s = &layer[t];
        memset(s, 0, sizeof(*s));
        s->in = in[t];
        s->out = out[t];
        s->on = t <= TB_LORA_O ? c->train_attn : c->train_mlp;
        if (s->on) {
          s->a_off = off;
          off += r * s->in;
        }
      }
      for (int t = t0; t < t0 + n; t++)
        if (layer[t].on) {
          layer[t].b_off = off;
          off += layer[t].out * r;
        }
    }
  }
  tb__lora_slot_t *u = &lora->slots[lora->num_slots - 1];
  memset(u, 0, sizeof(*u));
  u->in = C;
  u->out = (size_t)m->vocab_size;
  u->on = c->train_unembed;
  if (u->on) {
    u->a_off = off;
    off += r * u->in;
    u->b_off = off;
    off += u->out * r;
  }
  lora->num_params = off;
}

int tb__lora_init(tb__lora_t *lora, const tb__model_config_t *m,
                  const tb__lora_config_t *c) {
  memset(lora, 0, sizeof(*lora));
  if (tb__lora_config_validate(c, NULL) != 0 ||
      tb__model_config_validate(m, NULL) != 0)
    return TB_EINVAL;
  lora->config = *c;
  if (!(lora->config.alpha > 0))
    lora->config.alpha = TB_LORA_DEFAULT_ALPHA;
  lora->model = *m;
  lora->rank = (size_t)c->rank;
  lora->scale = lora->config.alpha / (float)c->rank;
  lora->num_slots = (size_t)m->num_layers * TB_LORA_LAYER_TARGETS + 1;
  lora->slots = calloc(lora->num_slots, sizeof(*lora->slots));
  if (lora->slots == NULL)
    return TB_ENOMEM;
  point_views(lora);

  /* One allocation for the four buffers keeps them together. */
  size_t n = lora->num_params;
  float *all = calloc(4 * n, sizeof(float));
  if (all == NULL) {
    tb__lora_free(lora);
    return TB_ENOMEM;
  }
  lora->params = all;
  lora->grads = all + n;
  lora->adam_m = all + 2 * n;
  lora->adam_v = all + 3 * n;

  /* Each A gets its own stream derived from the seed, so the values of one
   * tensor do not depend on which other targets are on. */
  uint64_t state = c->seed;
  for (size_t i = 0; i < lora->num_slots; i++) {
    uint64_t tensor_seed = tb__k_splitmix64(&state);
    const tb__lora_slot_t *s = &lora->slots[i];
    if (!s->on)
      continue;
    tb__k_rng_t rng;
    tb__k_rng_seed(&rng, tensor_seed);
    float bound = (float)(1.0 / sqrt((double)s->in));
    tb__k_rng_fill_uniform(lora->params + s->a_off, &rng, -bound, bound,
                           lora->rank * s->in);
  }
  return 0;
}

void tb__lora_free(tb__lora_t *lora) {
  free(lora->params);  /* the base of all four buffers */
  free(lora->slots);
  memset(lora, 0, sizeof(*lora));
}

TB__K_VECTORISED
void tb__lora_add_grads(tb__lora_t *lora, const float *shard, size_t p0,
                        size_t p1) {
  float *g = lora->grads;
  for (size_t i = p0; i < p1; i++)
    g[i] += shard[i];
}

void tb__lora_zero_grads(tb__lora_t *lora) {
  tb__k_zero(lora->grads, lora->num_params);
}

size_t tb__lora_num_tensors(const tb__lora_t *lora) {
  size_t n = 0;
  for (size_t i = 0; i < lora->num_slots; i++)
    n += lora->slots[i].on ? 2 : 0;
  return n;
}

int tb__lora_tensor(const tb__lora_t *lora, size_t i, char *name, size_t cap,
                    size_t shape[2], size_t *offset) {
  for (size_t k = 0; k < lora->num_slots; k++) {
    const tb__lora_slot_t *s = &lora->slots[k];
    if (!s->on)
      continue;
    if (i >= 2) {
      i -= 2;
      continue;
    }
    int is_b = i == 1, n;
    const char *ab = is_b ? "lora_B" : "lora_A";
    if (k == lora->num_slots - 1)
      n = snprintf(name, cap, "base_model.model.lm_head.%s.weight", ab);
    else
      n = snprintf(name, cap, "base_model.model.model.layers.%zu.%s.%s.weight",
                   k / TB_LORA_LAYER_TARGETS,
                   target_names[k % TB_LORA_LAYER_TARGETS], ab);
    if (n < 0 || (size_t)n >= cap)
      return TB_EINVAL;
    shape[0] = is_b ? s->out : lora->rank;
    shape[1] = is_b ? lora->rank : s->in;
    *offset = is_b ? s->b_off : s->a_off;
    return 0;
  }
  return TB_EINVAL;
}
